"""Time exact top-k matching of 1 query against a 100k x 2048 fp16 gallery, against the memory floor.

The floor is measured in the same run: the time to read the gallery once from memory (a uint64 sum over its bytes,
and a bitwise-or reduce; the faster counts). Engines: numpy (lpn_edge.runtime.matching.NumpyMatcher, blocked fp16
bit-widening + sgemv), the naive numpy path (exact_topk: fp16 -> fp32 cast of 65k-row chunks + matmul) and FAISS
when installed (flat fp16 scalar-quantizer index, exact, 1 OpenMP thread and all threads). Random unit rows: only
the speed is meaningful. Prints medians and ratios to the floor and writes JSON.

Run: .venv/bin/python benchmarks/bench_matching.py [--rows 100000] [--dim 2048] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from lpn_edge.bench.match import synthetic_gallery
from lpn_edge.bench.stats import measure
from lpn_edge.runtime.match_engines import open_matcher
from lpn_edge.runtime.matching import exact_topk


def timed(function, repeats: int) -> list[float]:
    """Seconds of `repeats` calls after one warm-up call (page faults, first-call allocations)."""
    return measure({"call": function}, repeats, warmup=1)["call"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="bench_matching.json")
    parser.add_argument("--skip-naive", action="store_true", help="Leave out the slow exact_topk path.")
    args = parser.parse_args()

    gallery = synthetic_gallery(args.rows, args.dim, seed=0)
    query = gallery[12345 % args.rows].astype(np.float32)[None] + np.float32(0.01)
    words = gallery.reshape(-1).view(np.uint64)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1 query x {args.rows} x {args.dim} fp16 ({gallery.nbytes / 2**20:.0f} MiB), k={args.k}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"load average {load:.2f}")
    results: dict[str, list[float]] = {
        "floor: uint64 sum": timed(lambda: words.sum(), args.repeats),
        "floor: bitwise_or reduce": timed(lambda: np.bitwise_or.reduce(words), args.repeats),
    }
    floor = min(statistics.median(results["floor: uint64 sum"]), statistics.median(results["floor: bitwise_or reduce"]))
    numpy_engine = open_matcher(gallery, "numpy")
    results["numpy engine"] = timed(lambda: numpy_engine.search(query, args.k), args.repeats)
    reference = numpy_engine.search(query, args.k)[0]
    if not args.skip_naive:
        results["exact_topk (fp16 cast + matmul)"] = timed(lambda: exact_topk(query, gallery, args.k),
                                                           max(1, args.repeats // 2))
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        build = time.perf_counter()
        faiss_engine = open_matcher(gallery, "faiss")
        print(f"faiss index built in {time.perf_counter() - build:.2f} s (faiss {faiss.__version__})")
        assert np.array_equal(faiss_engine.search(query, args.k)[0], reference)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        results["faiss engine, 1 thread"] = timed(lambda: faiss_engine.search(query, args.k), args.repeats)
        faiss.omp_set_num_threads(threads)
        results[f"faiss engine, {threads} threads"] = timed(lambda: faiss_engine.search(query, args.k), args.repeats)
    summary = {}
    for name, times in results.items():
        median = statistics.median(times)
        summary[name] = {"median_ms": median * 1e3, "min_ms": min(times) * 1e3, "times_ms": [t * 1e3 for t in times],
                         "ratio_to_floor": median / floor}
        print(f"{name:34s} median {median * 1e3:8.1f} ms  min {min(times) * 1e3:8.1f} ms  "
              f"{median / floor:5.2f}x the floor")
    with open(args.json, "w") as handle:
        json.dump({"rows": args.rows, "dim": args.dim, "k": args.k, "repeats": args.repeats, "cpus": os.cpu_count(),
                   "load_average": load, "floor_ms": floor * 1e3, "numpy": np.__version__, "results": summary},
                  handle, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
