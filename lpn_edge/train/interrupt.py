"""Ctrl-C and SIGTERM ask the training loop to stop at the next step boundary (and save) instead of dying."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopRequest:
    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None


@contextmanager
def graceful_stop():
    """Yield a StopRequest that becomes true on SIGINT/SIGTERM; a second Ctrl-C interrupts at once."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if request and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signal_name = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
