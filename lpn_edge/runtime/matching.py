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


def select_topk(scores: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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
        best_indices, best_scores = select_topk(np.concatenate([best_scores, scores], 1),
                                            np.concatenate([best_indices, indices], 1), k)
    return np.ascontiguousarray(best_indices), np.ascontiguousarray(best_scores, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Engines: one `search(queries, k)` for numpy, FAISS and the GPU, same answer (see open_matcher)

ENGINES = ("numpy", "faiss", "gpu", "auto")
_F16_SCALE = np.float32(2.0**112)  # fp16 bits << 13 read as fp32 = the fp16 value * 2**-112, subnormals included
_F16_MASK = np.int32(-0x70002000)  # 0x8FFFE000: sign, then the 15 exponent/mantissa bits at fp32 positions 27..13
_BLOCK_ELEMENTS = 1 << 17  # rows x dim per scoring step: fits L2, and stays under OpenBLAS's threading threshold


_PAD_INDEX = np.iinfo(np.int64).max  # index of a padding entry in (Q, w) candidate arrays (score -inf)
_UNIT_ROUNDOFF = 2.0**-24  # float32


def _widen(rows: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """fp16 rows -> float32 rows holding value * 2**-112 exactly (subnormals included), written into the leading
    rows of the int32 `buffer`: the fp16 bits shifted to the fp32 positions by two integer ufuncs (numpy's own
    fp16 -> fp32 cast is scalar code, ~10x slower)."""
    target = buffer[: len(rows)]
    np.left_shift(np.asarray(rows).view(np.int16), 13, out=target, dtype=np.int32)  # sign-extended: 31..28 = sign
    np.bitwise_and(target, _F16_MASK, out=target)
    return target.view(np.float32)


def _scan_gallery(gallery: np.ndarray, buffer: np.ndarray) -> tuple[bool, float]:
    """(every value finite, an upper bound on the largest row norm) of an fp16 or fp32 gallery, read block by
    block through `buffer` (int32, as `_widen` uses it)."""
    fp16 = gallery.dtype == np.float16
    largest = 0.0
    for start in range(0, len(gallery), len(buffer)):
        rows = np.asarray(gallery[start : start + len(buffer)])
        if fp16:
            if ((rows.view(np.int16) & 0x7C00) == 0x7C00).any():
                return False, 0.0
            block = _widen(rows, buffer)
        else:
            block = rows.astype(np.float32, copy=False)
            if not np.isfinite(block).all():
                return False, 0.0
        with np.errstate(over="ignore"):
            squares = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        if len(squares):
            largest = max(largest, float(np.sqrt(squares.max())) * (float(_F16_SCALE) if fp16 else 1.0))
    return True, largest * (1 + 1e-6)


class NumpyMatcher:
    """Exact top-k on the CPU with numpy + BLAS, bounded memory, any gallery numpy can slice (np.memmap, an index).

    Two passes, so that the answer is exact and the gallery is read once, fast:
      1. every row scored in float32 (sgemv / sgemm), block by block, and only the rows that can still be in the
         top k kept: those within a margin of the k-th best float32 score. The margin is twice the bound on float32
         rounding of a D-term dot product (gamma_D |q| max|g|, Higham's bound, which holds for any summation order
         BLAS picks), plus a few ulps: every row of the exact top k survives.
      2. the survivors (k plus the near-ties, a handful) rescored exactly as `rescore` says: summed in float64 and
         rounded once to float32, so a row's score does not depend on where it sat in a block (BLAS sums float32
         rows in kernel-dependent orders: two identical rows could differ in the last bit and a tie be broken by
         position instead of by index), then ranked by the rule of exact_topk (ties by ascending index).
    numpy has no fp16 arithmetic and its fp16 -> fp32 cast is scalar code (~1.3 ns per element), so an fp16 gallery
    is read in blocks of ~128k elements (64 rows of 2048: L2-resident) whose fp16 bits are widened to fp32 bit
    patterns with two integer ufuncs (value * 2**-112, exact) and multiplied with the query scaled by 2**112 (exact).
    The constructor reads the gallery once (finite values, largest row norm for the margin).
    """

    engine = "numpy"

    def __init__(self, gallery: np.ndarray, *, block_rows: int | None = None, select_rows: int = 1 << 16) -> None:
        gallery = gallery if hasattr(gallery, "dtype") else np.asarray(gallery)
        check_gallery(gallery)
        self.gallery = gallery
        self.size, self.dim = gallery.shape
        self.block_rows = block_rows or max(1, _BLOCK_ELEMENTS // max(1, self.dim))
        self.select_rows = max(self.block_rows, select_rows)
        self._buffer = np.empty((self.block_rows, self.dim), np.int32)  # fp16 bits widened, read as float32
        finite, self.largest_norm = _scan_gallery(gallery, self._buffer)
        if not finite:
            raise LpnEdgeError(f"gallery holds {'fp16 ' if gallery.dtype == np.float16 else ''}infinities or NaNs; "
                               "expected finite unit-norm embeddings")

    def scores(self, queries: np.ndarray, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """out[:, :stop - start] = exact float32 scores (float64 sums) of (Q, D) queries against gallery rows
        start..stop-1."""
        return _score(self.gallery, queries, start, stop, out, self._buffer, exact=True)

    def margin(self, queries: np.ndarray) -> np.ndarray:
        """(Q,) float32 score distance below the k-th best float32 score within which a row may still be in the
        exact top k (see the class docstring)."""
        dim = self.dim
        gamma = dim * _UNIT_ROUNDOFF / (1 - dim * _UNIT_ROUNDOFF)
        scale = np.linalg.norm(queries.astype(np.float64), axis=1) * self.largest_norm
        return ((2 * gamma + 8 * _UNIT_ROUNDOFF) * 1.01 * scale).astype(np.float32)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) or (D,) float32 queries -> indices (Q, k) int64, scores (Q, k) float32, as exact_topk."""
        queries = np.ascontiguousarray(_as_queries(query, self.dim))
        if not 1 <= k <= self.size:
            raise LpnEdgeError(f"k must be between 1 and the gallery size {self.size}; got {k}")
        margin = self.margin(queries)
        out = np.empty((len(queries), min(self.size, self.select_rows)), np.float32)
        kept_indices = np.zeros((len(queries), 0), np.int64)
        kept_scores = np.zeros((len(queries), 0), np.float32)
        for start in range(0, self.size, self.select_rows):
            stop = min(self.size, start + self.select_rows)
            scores = _score(self.gallery, queries, start, stop, out, self._buffer, exact=False)
            if not np.isfinite(scores).all():
                query_row, gallery_row = np.argwhere(~np.isfinite(scores))[0]
                raise LpnEdgeError(f"score of query {query_row} with gallery row {start + gallery_row} is not "
                                   "finite; expected finite embeddings of moderate size (unit norm)")
            indices = np.broadcast_to(np.arange(start, stop, dtype=np.int64), scores.shape)
            block_scores, block_indices = _near_top(scores, indices, k, margin)
            kept_scores, kept_indices = _near_top(np.concatenate([kept_scores, block_scores], 1),
                                                  np.concatenate([kept_indices, block_indices], 1), k, margin)
        exact = np.full(kept_indices.shape, -np.inf, np.float32)
        for number, (picks, query) in enumerate(zip(kept_indices, queries)):
            real = picks != _PAD_INDEX
            exact[number, real] = self.rescore(query[None], picks[real][None])[0]
        best_indices, best_scores = select_topk(exact, kept_indices, k)
        return np.ascontiguousarray(best_indices), np.ascontiguousarray(best_scores, dtype=np.float32)

    def rescore(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(Q, m) float32 scores of each query with its own m gallery rows (indices (Q, m)), computed as `scores`."""
        result = np.empty(rows.shape, np.float32)
        for number, (query, picks) in enumerate(zip(queries, rows)):
            order = np.argsort(picks, kind="stable")
            picked = np.asarray(self.gallery[picks[order]])  # ascending rows: sequential reads of a memmap
            out = np.empty((1, len(picks)), np.float32)
            result[number, order] = _score(picked, query[None], 0, len(picks), out, self._buffer, exact=True)[0]
        return result


def _score(gallery: np.ndarray, queries: np.ndarray, start: int, stop: int, out: np.ndarray,
           buffer: np.ndarray, exact: bool) -> np.ndarray:
    """out[:, :stop - start] = queries @ gallery[start:stop].T, block by block (see NumpyMatcher): summed in float32
    by BLAS, or with `exact` in float64 and rounded once to float32."""
    block_rows = len(buffer)
    fp16 = gallery.dtype == np.float16
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = queries * _F16_SCALE if fp16 else queries
    if fp16 and not np.isfinite(scaled).all():  # |q| > 2**16: cannot scale, upcast instead
        fp16, scaled = False, queries
    scaled = scaled.astype(np.float64 if exact else np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for begin in range(start, stop, block_rows):
            end = min(stop, begin + block_rows)
            rows = gallery[begin:end]
            block = _widen(rows, buffer) if fp16 else np.asarray(rows, dtype=np.float32)
            if exact:
                block = block.astype(np.float64)
            if len(queries) == 1:
                out[0, begin - start : end - start] = block @ scaled[0]
            else:
                out[:, begin - start : end - start] = scaled @ block.T
    return out[:, : stop - start]


def _near_top(scores: np.ndarray, indices: np.ndarray, k: int, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of (Q, m) scores / gallery indices within `margin` (Q,) of each row's k-th best score (ties and
    near-ties included), compacted to (Q, w) arrays padded with -inf / _PAD_INDEX, each row's entries in their
    original order. Linear time (partition)."""
    count = scores.shape[1]
    if count <= k:
        return scores.copy(), np.array(indices)
    kth = np.partition(scores, count - k, axis=1)[:, count - k]
    keep = scores >= (kth - margin)[:, None]
    rows, cols = np.nonzero(keep)  # row-major: each row's columns ascending
    per_row = keep.sum(1)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    width = int(per_row.max())
    kept_scores = np.full((len(scores), width), -np.inf, np.float32)
    kept_indices = np.full((len(scores), width), _PAD_INDEX, np.int64)
    kept_scores[rows, slot] = scores[rows, cols]
    kept_indices[rows, slot] = indices[rows, cols]
    return kept_scores, kept_indices


FAISS_QUERIES_PER_THREAD = 4  # FAISS scans the gallery once per query; past this many queries per thread the numpy
# engine's one pass is faster. 100k x 2048 fp16, 2-core AVX2 EPYC, 2026-12-02: FAISS on one thread 227 / 480 ms for
# 4 / 8 queries, on two 120 / 225 / 534 ms for 4 / 8 / 16, numpy 289-312 ms for 2 to 16 queries


class FaissMatcher:
    """Exact top-k with FAISS (the `[faiss]` extra): a flat inner-product index, then the numpy engine's rule.

    fp32 galleries go into IndexFlatIP; fp16 galleries into a flat IndexScalarQuantizer(QT_fp16), which stores the
    same fp16 values (decoded exactly to fp32, scored in fp32, half the memory of IndexFlatIP and ~2x faster, SIMD
    F16C). FAISS orders ties its own way and sums in its own order, so its answer is only a candidate list: k + 16
    candidates are rescored from the gallery exactly as the numpy engine scores them and ranked by the same rule;
    while a candidate list's last FAISS score is not clearly below the k-th rescored score (a tie or a near-tie
    runs across the boundary), FAISS is asked for twice as many. The gallery is copied into FAISS (memory). More
    than `FAISS_QUERIES_PER_THREAD` queries per FAISS thread go to the numpy engine instead (the same answer).
    `threads`: FAISS's OpenMP threads for this matcher's searches (set before each one, since FAISS keeps the count
    per process); None searches with the process's current count (FAISS's default is a thread per core, but a
    matcher with `threads` set changes it for the whole process).
    """

    engine = "faiss"

    def __init__(self, gallery: np.ndarray, *, add_rows: int = 1 << 14, margin: int = 16,
                 threads: int | None = None) -> None:
        import faiss  # the [faiss] extra

        if threads is not None and threads < 1:
            raise LpnEdgeError(f"FAISS threads must be at least 1, got {threads}")
        self._faiss, self.threads = faiss, threads
        gallery = gallery if hasattr(gallery, "dtype") else np.asarray(gallery)
        self._numpy = NumpyMatcher(gallery)
        self.size, self.dim = gallery.shape
        self.margin = margin
        if gallery.dtype == np.float16:
            self.index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16,
                                                    faiss.METRIC_INNER_PRODUCT)
        else:
            self.index = faiss.IndexFlatIP(self.dim)
        for start in range(0, self.size, add_rows):
            self.index.add(np.ascontiguousarray(gallery[start : start + add_rows], dtype=np.float32))
        self.largest_norm = self._numpy.largest_norm

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) or (D,) float32 queries -> indices (Q, k) int64, scores (Q, k) float32, as the numpy engine."""
        queries = np.ascontiguousarray(_as_queries(query, self.dim))
        if not 1 <= k <= self.size:
            raise LpnEdgeError(f"k must be between 1 and the gallery size {self.size}; got {k}")
        threads = self.threads or self._faiss.omp_get_max_threads()
        if len(queries) > FAISS_QUERIES_PER_THREAD * threads:
            return self._numpy.search(queries, k)  # its blocked sgemm reads the gallery once for all queries
        # bound on |FAISS score - numpy score| (two float32 sums of the same D products, Cauchy-Schwarz)
        tolerance = 2 * self.dim * 2.0**-24 * np.linalg.norm(queries.astype(np.float64), axis=1) * self.largest_norm
        wanted = min(self.size, k + self.margin)
        if self.threads is not None:
            self._faiss.omp_set_num_threads(self.threads)
        while True:
            faiss_scores, candidates = self.index.search(queries, wanted)
            if (candidates < 0).any():
                raise LpnEdgeError("FAISS returned fewer candidates than asked; the gallery holds non-finite values?")
            scores = self._numpy.rescore(queries, candidates)
            indices, best = select_topk(scores, candidates.astype(np.int64), k)
            settled = faiss_scores[:, -1].astype(np.float64) < best[:, -1].astype(np.float64) - tolerance
            if wanted == self.size or settled.all():
                return np.ascontiguousarray(indices), np.ascontiguousarray(best, dtype=np.float32)
            wanted = min(self.size, 2 * wanted)
