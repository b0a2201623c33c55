"""Exact nearest-neighbour matching by inner product, in numpy: the CPU engine and the GPU kernel's reference.

  query    (Q, D) or (D,) float32 embeddings (unit norm, lpn_edge's layout)
  gallery  (G, D) float16 or float32, any array numpy can slice (an np.memmap works: it is read chunk by chunk)
  k        1 <= k <= G
  returns  indices (Q, k) int64 gallery rows and scores (Q, k) float32, best first

Scores are the float32 inner products of the query with the gallery rows upcast to float32 (an fp16 gallery is
upcast exactly). Order: higher score first; equal scores by ascending gallery index (-0.0 equals +0.0). The
gallery is scored in chunks of `chunk_rows` rows with a running top-k, so memory is bounded by Q * chunk_rows
scores whatever G. `kernels/topk.cu` computes the same result on the GPU (identical when every score is exact in
float32, e.g. small-integer data; otherwise the two can differ where scores agree to the last float32 bits, since
the summation orders differ).

Note: lpn_edge.eval.metrics ranks the *full* gallery for the benchmark protocol and orders ties the other way
(larger index first, numpy's stable argsort reversed); this module is the runtime's retrieval, not the benchmark.
"""

from __future__ import annotations

import numpy as np

from lpn_edge.errors import LpnEdgeError

DEFAULT_CHUNK_ROWS = 1 << 16


def _as_queries(query: np.ndarray, dim: int) -> np.ndarray:
    query = np.asarray(query, dtype=np.float32)
    if query.ndim == 1:
        query = query[None]
    if query.ndim != 2 or query.shape[1] != dim:
        raise LpnEdgeError(f"query of shape {query.shape} does not fit a gallery of dimension {dim}; "
                           f"expected (Q, {dim}) or ({dim},)")
    return query


def check_gallery(gallery: np.ndarray) -> None:
    if gallery.ndim != 2 or gallery.dtype not in (np.float16, np.float32):
        raise LpnEdgeError(f"gallery must be a (G, D) float16 or float32 array; got shape {gallery.shape}, "
                           f"dtype {gallery.dtype}")


def _select(scores: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each row of (Q, m) scores with (Q, m) indices, best first, ties by ascending index."""
    if scores.shape[1] > k:
        # Keep every entry strictly above the k-th largest score, then the tied entries with the smallest indices.
        kth = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k][:, None]
        keep = scores > kth
        tied = scores == kth
        room = k - keep.sum(axis=1, keepdims=True)
        # rank of each tied entry among its row's tied entries in ascending index order
        order = np.argsort(np.where(tied, indices, np.iinfo(np.int64).max), axis=1, kind="stable")
        tie_rank = np.empty_like(order)
        np.put_along_axis(tie_rank, order, np.arange(scores.shape[1])[None].repeat(len(scores), 0), axis=1)
        keep |= tied & (tie_rank < room)
        rows, cols = np.nonzero(keep)
        scores = scores[rows, cols].reshape(len(scores), k)
        indices = indices[rows, cols].reshape(len(indices), k)
    order = np.lexsort((indices, -scores), axis=-1)
    return np.take_along_axis(indices, order, 1), np.take_along_axis(scores, order, 1)


def exact_topk(query: np.ndarray, gallery: np.ndarray, k: int,
               chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k gallery rows of each query by inner product (see the module docstring for shapes and order)."""
    check_gallery(gallery)
    size, dim = gallery.shape
    queries = _as_queries(query, dim)
    if not 1 <= k <= size:
        raise LpnEdgeError(f"k must be between 1 and the gallery size {size}; got {k}")
    if chunk_rows < 1:
        raise LpnEdgeError(f"chunk_rows must be >= 1; got {chunk_rows}")
    best_indices = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for start in range(0, size, chunk_rows):
        rows = np.asarray(gallery[start : start + chunk_rows], dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            scores = queries @ rows.T
        if not np.isfinite(scores).all():
            query_row, gallery_row = np.argwhere(~np.isfinite(scores))[0]
            raise LpnEdgeError(f"score of query {query_row} with gallery row {start + gallery_row} is not finite; "
                               "expected finite embeddings of moderate size (unit norm)")
        indices = np.broadcast_to(np.arange(start, start + len(rows), dtype=np.int64), scores.shape)
        best_indices, best_scores = _select(np.concatenate([best_scores, scores], 1),
                                            np.concatenate([best_indices, indices], 1), k)
    return np.ascontiguousarray(best_indices), np.ascontiguousarray(best_scores, dtype=np.float32)
