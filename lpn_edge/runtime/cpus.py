"""Which CPU cores the runtime runs on: a core list from the command line, and pinning the process to it.

Beside other work (a drone's companion computer) the encoder holds up best on cores of its own: one ONNX Runtime
thread per reserved core, the process pinned to those cores *before* the session is created, so that its thread
pool inherits the mask and `onnx_runner.physical_cores` counts only them (BENCHMARKS.md "Under load": pinned to
the free core, the per-frame p99 stayed within 1.05x of the idle median; two threads sharing a core with a
competing process went to 1.7-2.3x). Linux only (`os.sched_setaffinity`).
"""

from __future__ import annotations

import os

from lpn_edge.errors import LpnEdgeError


def parse_cpus(text: str) -> tuple[int, ...]:
    """"0", "0,2", "2-3" or "0,2-3" -> sorted distinct core numbers."""
    cores: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",")):
            low, _, high = part.partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError
            cores.update(range(first, last + 1))
    except ValueError:
        raise LpnEdgeError(f"--cpus takes core numbers and ranges such as 0, 0,1 or 2-3; got {text!r}") from None
    return tuple(sorted(cores))


def pin_to_cpus(cores: tuple[int, ...]) -> None:
    """Restrict this process (and the threads it creates afterwards) to `cores`; each must be one it may use."""
    if not hasattr(os, "sched_setaffinity"):
        raise LpnEdgeError("--cpus needs Linux (os.sched_setaffinity); on this system pin the process with the "
                           "operating system's own tool")
    allowed = sorted(os.sched_getaffinity(0))
    outside = [core for core in cores if core not in allowed]
    if not cores or outside:
        raise LpnEdgeError(f"--cpus {','.join(map(str, cores)) or '(none)'}: core "
                           f"{outside[0] if outside else '?'} is not available to this process; it may use cores "
                           f"{','.join(map(str, allowed))}")
    os.sched_setaffinity(0, set(cores))
