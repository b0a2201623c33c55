"""Timing statistics in the style of trtexec: min, median, mean, p90, p99 and throughput of a list of samples, and
the timing loop that collects them (warm-up calls first; several callables interleaved round-robin so that a load
change on a shared machine hits all of them alike, which keeps the ratios between them honest).

numpy only; a `sync` callable (e.g. torch.cuda.synchronize) is called before each clock read for asynchronous
devices.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

STAT_KEYS = ("min_ms", "median_ms", "mean_ms", "p90_ms", "p99_ms", "max_ms", "throughput")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between the two nearest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(seconds: Sequence[float], items: int = 1) -> dict[str, float]:
    """Samples in seconds (one call each, processing `items` items) -> the statistics in milliseconds, and
    throughput in items per second at the median (what a steady stream of such calls sustains)."""
    if not seconds:
        raise ValueError("no timing samples")
    ms = [s * 1e3 for s in seconds]
    median = percentile(ms, 50)
    return {"min_ms": min(ms), "median_ms": median, "mean_ms": sum(ms) / len(ms), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms),
            "throughput": items / (median / 1e3) if median > 0 else float("inf"), "samples": len(ms)}


def measure(functions: Mapping[str, Callable[[], object]], iters: int, warmup: int,
            sync: Callable[[], None] | None = None, settle: float = 0.0) -> dict[str, list[float]]:
    """Run each callable `warmup` times, then `iters` timed calls, round-robin (a, b, a, b, ...): {name: seconds}.

    settle: seconds to wait, untimed, before each timed call of a multi-threaded CPU callable. A thread pool's
    workers keep spinning for a while after their call returns (ONNX Runtime's by default), and spinning workers of
    the previous callable slowed the next one by 25 % on two cores (93 ms against 75 ms, the same session measured
    with and without a 50 ms pause); the pause lets them go to sleep first.
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    clock = time.perf_counter
    for _ in range(iters):
        for name, function in functions.items():
            if settle > 0:
                time.sleep(settle)
            if sync is not None:
                sync()
            start = clock()
            function()
            if sync is not None:
                sync()
            times[name].append(clock() - start)
    return times


def ratio(figure: Mapping[str, float], reference: Mapping[str, float], key: str = "median_ms") -> float:
    """figure / reference of one statistic (< 1: faster than the reference)."""
    return figure[key] / reference[key] if reference[key] > 0 else float("nan")
