"""Ctrl-C and SIGTERM ask the training loop to stop at the next step boundary (and save) instead of dying.

With several processes a signal may reach one rank only (or the ranks at different moments): the loop turns the
local requests into one agreed decision per step (`distributed.max_over_ranks`), so every rank stops after the same
step and rank 0 saves.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopRequest:
    def __init__(self) -> None:
        self.signum = 0  # the signal received by this process, 0 while none

    @property
    def signal_name(self) -> str | None:
        return signal_name(self.signum)

    def __bool__(self) -> bool:
        return self.signum != 0

    def agree(self, signum: int) -> None:
        """Take on the stop the ranks agreed on (a signal that reached another rank)."""
        self.signum = self.signum or signum


def signal_name(signum: int) -> str | None:
    return signal.Signals(signum).name if signum else None


@contextmanager
def graceful_stop(escalate: bool = True):
    """Yield a StopRequest that becomes true on SIGINT/SIGTERM.

    With `escalate` (one process) a second Ctrl-C interrupts at once. Under torchrun (`escalate=False`) it does not:
    the launcher forwards the terminal's Ctrl-C to workers that got it already, and kills workers that outlive its
    own shutdown timeout anyway. There, once a stop was requested, SIGINT and SIGTERM stay ignored after the block:
    the first rank to exit makes torchrun send SIGTERM to the others, which are on their way out with their own exit
    status and must not die of it.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if escalate and request and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signum = request.signum or signum

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if request and not escalate else handler)
