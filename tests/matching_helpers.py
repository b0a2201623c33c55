"""Galleries and reference rankings shared by the matching tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def unit_gallery_memmap(folder: Path, rows: int, dim: int, seed: int) -> tuple[np.ndarray, np.memmap]:
    """Random unit-norm rows: (the float32 gallery, its fp16 copy written to `folder` and memory-mapped read-only)."""
    gallery = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    path = Path(folder) / f"gallery-{rows}x{dim}.f16"
    gallery.astype(np.float16).tofile(path)
    return gallery, np.memmap(path, dtype=np.float16, mode="r", shape=gallery.shape)


def exact_ranking(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The engines' rule on the whole gallery: float64 sums rounded once to float32, higher first, ties by index."""
    scores = (np.atleast_2d(queries).astype(np.float64) @ gallery.astype(np.float64).T).astype(np.float32)
    order = np.lexsort((np.broadcast_to(np.arange(len(gallery)), scores.shape), -scores), axis=-1)[:, :k]
    return order, np.take_along_axis(scores, order, 1)
