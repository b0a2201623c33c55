"""Retrieval metrics identical to the LPN authors' ``evaluate_gpu.py`` (wtyhub/LPN, commit c4f521a).

Pure numpy, vectorised over queries, memory bounded by scoring the queries in chunks.

Protocol (DESIGN.md section 4), per query:

- ``score = gallery_features @ query_feature`` in float32 (the reference casts to ``torch.FloatTensor``);
  the gallery is ranked by descending score.
- Gallery items labelled ``-1`` are junk and are removed from the ranking; a rank ``r`` below is the 0-based
  position after that removal.
- CMC (length G, the full gallery size junk included) is 1 from the rank of the first true match onwards.
- AP is the trapezoid rule over the true matches: for the i-th true match (0-based) at rank ``r_i``,
  ``ap += (1 / ngood) * (old_precision + precision) / 2`` with ``precision = (i + 1) / (r_i + 1)`` and
  ``old_precision = i / r_i`` (1.0 when ``r_i == 0``).
- A query without any true match in the gallery adds 0 to CMC and AP but counts in the denominator.

Summary: ``R@K = CMC[K - 1]`` and ``R@top1% = CMC[round(0.01 * G)]`` with Python's ``round`` (banker's rounding,
as the reference: G=250 gives CMC[2]), averaged over all queries. This is not torchreid's mAP.

Where this module deliberately differs from the reference (which has no rule or crashes):

- Ties: the reference ranks with ``np.argsort(score)[::-1]``, whose order among equal scores depends on numpy's
  unstable sort. Here ties are ordered as ``np.argsort(score, kind="stable")[::-1]``: among equal scores the
  item with the larger gallery index ranks first.
- ``K > G``: the reference raises IndexError; here ``R@K`` is the last CMC entry, i.e. the fraction of queries
  with any true match (every rank is below G, so ``first_rank <= K - 1`` already says this).
- A query labelled ``-1`` makes the reference crash (its "true matches" are the junk it removed); it is refused.
- Scores are computed on the CPU with numpy/BLAS rather than cuBLAS, so they can differ from the reference in the
  last float32 bit (BLAS kernels also round differently for different query-chunk shapes); only items whose
  scores agree to about 1e-7 relative can swap places (37,855 x 951 random unit features, query chunks of 275
  vs 1,102 rows: one query's first-match rank moved by one).
- Recalls are float64 fractions (the reference divides a float32 CMC); the difference is below 1e-7. Per-query AP
  and the AP mean add the same terms in the same order as the reference, so they match it bit for bit for the
  same ranking.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from lpn_edge.errors import LpnEdgeError

JUNK_LABEL = -1
RECALL_KS = (1, 5, 10)
METRIC_NAMES = ("R@1", "R@5", "R@10", "R@top1%", "AP")

# Score matrices are built for this many (query, gallery) pairs at a time: 256K entries keep every per-chunk
# array (float32 scores, uint64 keys, int64 order and ranks) at 2 MB whatever the gallery size, and cache-sized
# chunks sort 2-3x faster than 1M-entry ones (measured on 2 CPU cores) while BLAS stays efficient.
_CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class PerQueryMetrics:
    """Per-query retrieval results, the raw material of every summary and of subset analyses.

    Attributes:
        first_match_rank: (Q,) int64, 0-based rank (after junk removal) of the first true match, -1 when the
            gallery holds no true match for that query.
        average_precision: (Q,) float64, the reference's trapezoid AP, 0.0 when there is no true match.
        gallery_size: G, the full gallery length junk included (sets the CMC length and the top-1% index).
    """

    first_match_rank: np.ndarray
    average_precision: np.ndarray
    gallery_size: int

    def subset(self, selection: np.ndarray) -> PerQueryMetrics:
        """The same results restricted to some queries (boolean mask (Q,) or index array), e.g. one drone
        distance group; its summary then averages over the selected queries only."""
        return PerQueryMetrics(
            first_match_rank=self.first_match_rank[selection],
            average_precision=self.average_precision[selection],
            gallery_size=self.gallery_size,
        )

    def cmc(self) -> np.ndarray:
        """(G,) float64 mean CMC curve: entry k is the fraction of queries whose first true match has rank <= k."""
        found = self.first_match_rank[self.first_match_rank >= 0]
        first_hits = np.bincount(found, minlength=self.gallery_size)  # queries whose first match is at rank k
        return np.cumsum(first_hits) / max(len(self.first_match_rank), 1)

    def recall_at(self, k: int) -> float:
        """CMC[k - 1] as a fraction of all queries (for k > G: the last CMC entry, see module notes)."""
        if k < 1:
            raise LpnEdgeError(f"recall cut-off k={k} is invalid; expected k >= 1")
        return self._fraction_ranked_within(k - 1)

    def summary(self) -> dict[str, float]:
        """The reference's printed numbers as fractions in [0, 1]: keys R@1, R@5, R@10, R@top1%, AP."""
        if len(self.first_match_rank) == 0:
            raise LpnEdgeError("cannot summarise retrieval over 0 queries; expected at least one query")
        result = {f"R@{k}": self.recall_at(k) for k in RECALL_KS}
        # Mirrors the reference's CMC[round(len(gallery_label) * 0.01)]: an index, so R@(that + 1).
        result["R@top1%"] = self._fraction_ranked_within(round(self.gallery_size * 0.01))
        # cumsum adds sequentially like the reference's loop (np.mean's pairwise sum can differ in the last bit).
        result["AP"] = float(np.cumsum(self.average_precision)[-1] / len(self.average_precision))
        return result

    def _fraction_ranked_within(self, max_rank: int) -> float:
        hits = (self.first_match_rank >= 0) & (self.first_match_rank <= max_rank)
        return float(hits.mean())


def evaluate_retrieval(
    query_features: np.ndarray,
    query_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
) -> dict[str, float]:
    """Benchmark metrics of one retrieval task, exactly as the reference ``evaluate_gpu.py`` computes them.

    Args:
        query_features: (Q, D) float, one embedding per query (unit norm in practice; not required).
        query_labels: (Q,) integer class ids; -1 is refused.
        gallery_features: (G, D) float.
        gallery_labels: (G,) integer class ids; -1 marks junk items, removed from every ranking.

    Returns:
        {"R@1", "R@5", "R@10", "R@top1%", "AP"} as Python floats, fractions in [0, 1] of all Q queries.
    """
    return per_query_metrics(query_features, query_labels, gallery_features, gallery_labels).summary()


def per_query_metrics(
    query_features: np.ndarray,
    query_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
) -> PerQueryMetrics:
    """First-match rank and AP of every query (shapes as in :func:`evaluate_retrieval`)."""
    queries, galleries = _validate_features(query_features, gallery_features)
    query_labels, gallery_labels = _validate_labels(query_labels, gallery_labels, len(queries), len(galleries))
    first_ranks = np.empty(len(queries), dtype=np.int64)
    average_precisions = np.empty(len(queries), dtype=np.float64)
    for start, order in _ranked_chunks(queries, galleries):
        stop = start + len(order)
        ranked_labels = gallery_labels[order]  # (q, G) labels in ranking order
        first_ranks[start:stop], average_precisions[start:stop] = _rank_statistics(
            ranked_labels, query_labels[start:stop]
        )
    return PerQueryMetrics(first_ranks, average_precisions, gallery_size=len(galleries))


def rank_gallery(query_features: np.ndarray, gallery_features: np.ndarray, k: int | None = None) -> np.ndarray:
    """Gallery indices by descending score, ties broken by the larger gallery index (the module's tie rule).

    Args:
        query_features: (Q, D) float.
        gallery_features: (G, D) float.
        k: how many to keep per query, 1 <= k <= G; None keeps the whole ranking.

    Returns:
        (Q, k) int64 gallery indices, best first. Junk labels play no part here: this ranks features only.
    """
    queries, galleries = _validate_features(query_features, gallery_features)
    keep = len(galleries) if k is None else int(k)
    if not 1 <= keep <= len(galleries):
        raise LpnEdgeError(f"k={k} is out of range; expected 1 <= k <= gallery size {len(galleries)}")
    top = np.empty((len(queries), keep), dtype=np.int64)
    for start, order in _ranked_chunks(queries, galleries):
        top[start : start + len(order)] = order[:, :keep]
    return top


def format_metrics_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A paper-style Markdown table: one row per model/task, columns R@1 R@5 R@10 R@top1% AP in percent.

    Args:
        rows: name -> metrics dict as returned by :func:`evaluate_retrieval` (fractions in [0, 1]).
    """
    if not rows:
        raise LpnEdgeError("format_metrics_table got no rows; expected at least one name -> metrics entry")
    name_width = max(len("task"), *(len(name) for name in rows))
    header = f"| {'task':<{name_width}} | " + " | ".join(f"{m:>7}" for m in METRIC_NAMES) + " |"
    rule = f"|{'-' * (name_width + 2)}|" + "|".join("-" * 8 + ":" for _ in METRIC_NAMES) + "|"
    lines = [header, rule]
    for name, metrics in rows.items():
        missing = [m for m in METRIC_NAMES if m not in metrics]
        if missing:
            raise LpnEdgeError(f"metrics of row {name!r} lack {missing}; expected keys {list(METRIC_NAMES)}")
        cells = " | ".join(f"{100.0 * float(metrics[m]):>7.2f}" for m in METRIC_NAMES)
        lines.append(f"| {name:<{name_width}} | {cells} |")
    return "\n".join(lines)


def _ranked_chunks(queries: np.ndarray, galleries: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first query index, (q, G) int64 gallery order) for consecutive query chunks.

    Inputs are float32 (see _validate_features); one BLAS matmul per chunk.
    """
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // len(galleries))
    for start in range(0, len(queries), rows_per_chunk):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below, with the row
            scores = queries[start : start + rows_per_chunk] @ galleries.T  # (q, G) float32
        if not np.isfinite(scores).all():
            row = start + int(np.argmin(np.isfinite(scores).all(axis=1)))
            raise LpnEdgeError(
                f"scores of query {row} overflow float32; expected features of moderate size (unit norm)"
            )
        yield start, _descending_order(scores)


def _descending_order(scores: np.ndarray) -> np.ndarray:
    """(q, G) float32 scores -> (q, G) int64 indices by descending score; equal scores: larger index first.

    Identical to ``np.argsort(row, kind="stable")[::-1]`` per row, but 2-5x faster: each entry becomes one
    uint64 key (order-preserving score bits << 32 | gallery index). Keys are unique, so a plain ascending
    sort orders by (score, index) exactly as the stable argsort does, and reversing gives the tie rule.
    """
    gallery_size = scores.shape[1]
    if gallery_size > 1 << 32:
        raise LpnEdgeError(f"gallery of {gallery_size} items is too large; expected at most 2**32 items")
    keys = _order_preserving_bits(scores).astype(np.uint64) << np.uint64(32)
    keys |= np.arange(gallery_size, dtype=np.uint64)
    keys.sort(axis=1)
    return (keys[:, ::-1] & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _order_preserving_bits(scores: np.ndarray) -> np.ndarray:
    """float32 array -> uint32 array whose unsigned order is the float order (finite values).

    Standard IEEE trick: set the sign bit of non-negative floats, flip all bits of negative ones. Adding +0.0
    first turns -0.0 into +0.0, which argsort also treats as equal.
    """
    bits = np.ascontiguousarray(scores + np.float32(0.0), dtype=np.float32).view(np.uint32)
    negative = bits >= np.uint32(0x80000000)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


def _rank_statistics(ranked_labels: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First-match rank and trapezoid AP of each query from its ranked gallery labels.

    Args:
        ranked_labels: (q, G) gallery labels in ranking order (junk still in place).
        labels: (q,) query labels, none equal to JUNK_LABEL (so a true match is never junk).

    Returns:
        (q,) int64 first-match ranks (-1 when none) and (q,) float64 APs (0.0 when none).
    """
    query_count = len(labels)
    # Rank after junk removal of every position = how many non-junk items come before it.
    rank_after_junk = np.cumsum(ranked_labels != JUNK_LABEL, axis=1) - 1
    # True matches in row-major order: grouped by query, best rank first, like the reference's rows_good.
    match_query, match_position = np.nonzero(ranked_labels == labels[:, None])
    rank = rank_after_junk[match_query, match_position]  # r_i
    match_count = np.bincount(match_query, minlength=query_count)  # ngood
    first_match = np.cumsum(match_count) - match_count  # index into the match list of each query's first match
    match_number = np.arange(len(match_query)) - first_match[match_query]  # i

    precision = (match_number + 1) / (rank + 1)
    old_precision = np.divide(match_number, rank, out=np.ones(len(rank)), where=rank > 0)
    # Same operation order as the reference, d_recall * (old + precision) / 2, and bincount adds the terms
    # sequentially in match order as its loop does, so each AP is bit-identical for the same ranking.
    terms = (1.0 / match_count[match_query]) * (old_precision + precision) / 2
    average_precision = np.bincount(match_query, weights=terms, minlength=query_count)

    has_match = match_count > 0
    first_rank = np.full(query_count, -1, dtype=np.int64)
    first_rank[has_match] = rank[first_match[has_match]]
    return first_rank, average_precision


def _validate_features(query_features: np.ndarray, gallery_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check (Q, D) and (G, D) float, non-empty, finite; return both as C-contiguous float32 (the reference's
    FloatTensor cast)."""
    checked = []
    for name, features in (("query_features", query_features), ("gallery_features", gallery_features)):
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
            raise LpnEdgeError(f"{name} has shape {features.shape}; expected a non-empty 2-D array (N, D)")
        if features.dtype.kind != "f":
            raise LpnEdgeError(f"{name} has dtype {features.dtype}; expected a floating-point array")
        _check_finite(name, features)
        checked.append(np.ascontiguousarray(features, dtype=np.float32))
    queries, galleries = checked
    if queries.shape[1] != galleries.shape[1]:
        raise LpnEdgeError(
            f"query_features {queries.shape} and gallery_features {galleries.shape} differ in feature size; "
            "expected the same D"
        )
    return queries, galleries


def _check_finite(name: str, features: np.ndarray) -> None:
    """Raise on the first row holding NaN or inf; checks row chunks so no full-size mask is allocated."""
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // features.shape[1])
    for start in range(0, len(features), rows_per_chunk):
        finite_rows = np.isfinite(features[start : start + rows_per_chunk]).all(axis=1)
        if not finite_rows.all():
            row = start + int(np.argmin(finite_rows))
            raise LpnEdgeError(f"{name} row {row} holds NaN or inf; expected finite features")


def _validate_labels(
    query_labels: np.ndarray, gallery_labels: np.ndarray, query_count: int, gallery_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check (Q,) and (G,) integer labels matching the feature counts; no query labelled -1."""
    checked = []
    for name, labels, count in (
        ("query_labels", query_labels, query_count),
        ("gallery_labels", gallery_labels, gallery_count),
    ):
        labels = np.asarray(labels)
        if labels.shape != (count,):
            raise LpnEdgeError(f"{name} has shape {labels.shape}; expected ({count},), one label per feature row")
        if labels.dtype.kind not in "iu":
            raise LpnEdgeError(f"{name} has dtype {labels.dtype}; expected integer class ids")
        checked.append(labels.astype(np.int64))
    queries, galleries = checked
    junk_queries = np.flatnonzero(queries == JUNK_LABEL)
    if len(junk_queries):
        raise LpnEdgeError(
            f"query_labels[{junk_queries[0]}] is {JUNK_LABEL} (junk); expected a class id: a junk query has no "
            "defined true matches (the reference crashes on it)"
        )
    return queries, galleries
