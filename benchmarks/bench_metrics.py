"""Time evaluate_retrieval on the University-1652 Drone->Satellite shape: 37,855 queries x 951 gallery, D=2048.

Random unit features (one true match per query, as in University-1652), so only the speed is meaningful.
Run: .venv/bin/python benchmarks/bench_metrics.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from lpn_edge.eval.metrics import evaluate_retrieval

QUERIES, GALLERY, DIM = 37_855, 951, 2048


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """(rows, dim) float32 random unit vectors."""
    features = rng.standard_normal((rows, dim), dtype=np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    query_features, gallery_features = unit_rows(rng, QUERIES, DIM), unit_rows(rng, GALLERY, DIM)
    # 701 classes in the gallery plus 250 distractor classes, the University-1652 test split's structure.
    gallery_labels = np.arange(GALLERY)
    query_labels = rng.integers(0, 701, size=QUERIES)

    print(f"{QUERIES} x {GALLERY} x {DIM}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    for repeat in range(args.repeats):
        start = time.perf_counter()
        metrics = evaluate_retrieval(query_features, query_labels, gallery_features, gallery_labels)
        print(f"run {repeat}: {time.perf_counter() - start:.2f} s  {metrics}")


if __name__ == "__main__":
    main()
