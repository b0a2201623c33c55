"""Tests of lpn_edge.eval.metrics against hand-computed values and a plain per-query loop.

Most cases score with an identity gallery: gallery_features = I (G, G), so a query feature *is* its score
vector and each ranking can be written down directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from metrics_helpers import loop_evaluation

from lpn_edge.errors import LpnEdgeError
from lpn_edge.eval import metrics
from lpn_edge.eval.metrics import (
    evaluate_retrieval,
    format_metrics_table,
    per_query_metrics,
    rank_gallery,
)


def evaluate_scores(scores, query_labels, gallery_labels):
    """evaluate_retrieval where scores (Q, G) are given directly (identity gallery features)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float32))
    gallery = np.eye(scores.shape[1], dtype=np.float32)
    return evaluate_retrieval(scores, np.asarray(query_labels), gallery, np.asarray(gallery_labels))


def descending_scores(gallery_size):
    """Scores whose ranking is the gallery order: item j ranks j-th."""
    return np.linspace(1.0, 0.0, gallery_size, dtype=np.float32)


def test_single_match_at_rank_zero():
    result = evaluate_scores([0.9, 0.5, 0.1], [7], [7, 1, 2])
    assert result == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "R@top1%": 1.0, "AP": 1.0}


def test_single_match_at_rank_three():
    labels = [0, 1, 2, 7, 3, 4, 5, 6, 8, 9, 10, 11]  # G = 12, match at position 3
    result = evaluate_scores(descending_scores(12), [7], labels)
    # AP: i=0, r=3: precision 1/4, old precision 0/3 -> (0 + 1/4) / 2.
    assert result["AP"] == pytest.approx(0.125)
    # round(0.12) = 0 -> R@top1% = CMC[0].
    assert (result["R@1"], result["R@5"], result["R@10"], result["R@top1%"]) == (0.0, 1.0, 1.0, 0.0)


def test_several_matches_trapezoid_ap():
    # Matches (label 5) at ranks 0, 2, 5.
    labels = [5, 1, 5, 2, 3, 5, 4, 6, 7, 8, 9]
    result = evaluate_scores(descending_scores(11), [5], labels)
    # i=0 r=0: (1 + 1)/2 = 1; i=1 r=2: (1/2 + 2/3)/2 = 7/12; i=2 r=5: (2/5 + 3/6)/2 = 9/20; mean of the three.
    assert result["AP"] == pytest.approx((1 + 7 / 12 + 9 / 20) / 3)
    assert result["AP"] == pytest.approx(61 / 90)
    assert result["R@1"] == 1.0


def test_junk_in_front_of_matches_is_removed():
    # Ranking: junk, junk, match, other, match -> after junk removal matches at ranks 0 and 2.
    labels = [-1, -1, 4, 9, 4]
    per_query = per_query_metrics(
        descending_scores(5)[None], np.array([4]), np.eye(5, dtype=np.float32), np.array(labels)
    )
    assert per_query.first_match_rank.tolist() == [0]
    # i=0 r=0: 1; i=1 r=2: (1/2 + 2/3)/2 = 7/12; mean of two = 19/24.
    assert per_query.average_precision[0] == pytest.approx(19 / 24)
    assert per_query.gallery_size == 5  # junk still counts in G


def test_query_without_match_counts_in_denominator():
    scores = [[0.9, 0.1, 0.0], [0.9, 0.1, 0.0]]
    result = evaluate_scores(scores, [1, 42], [1, 2, 3])
    assert result == {"R@1": 0.5, "R@5": 0.5, "R@10": 0.5, "R@top1%": 0.5, "AP": 0.5}
    per_query = per_query_metrics(np.array(scores, np.float32), np.array([1, 42]), np.eye(3), np.array([1, 2, 3]))
    assert per_query.first_match_rank.tolist() == [0, -1]
    assert per_query.average_precision.tolist() == [1.0, 0.0]


def test_equal_scores_rank_larger_gallery_index_first():
    equal = np.full(4, 0.5, dtype=np.float32)
    # Match at index 0 ranks last (rank 3): AP 1/8; match at index 3 ranks first.
    assert evaluate_scores(equal, [3], [3, 1, 2, 0])["AP"] == pytest.approx(0.125)
    assert evaluate_scores(equal, [0], [3, 1, 2, 0])["AP"] == 1.0
    partial_tie = np.array([[0.2, 0.7, 0.7, 0.1]], dtype=np.float32)
    assert rank_gallery(partial_tie, np.eye(4)).tolist() == [[2, 1, 0, 3]]


def test_negative_zero_ties_with_positive_zero():
    # Tested on the sorting helper: a BLAS sum rarely returns -0.0, but argsort treats it as equal to +0.0.
    scores = np.array([[0.0, -0.0, 0.0, -1.0], [-0.0, 0.0, -0.0, 1.0]], dtype=np.float32)
    expected = np.argsort(scores, axis=1, kind="stable")[:, ::-1]
    assert expected.tolist() == [[2, 1, 0, 3], [3, 2, 1, 0]]
    np.testing.assert_array_equal(metrics._descending_order(scores), expected)


def test_top1_percent_uses_bankers_rounding():
    # G = 250: round(2.5) = 2 (round-half-up would give 3), so R@top1% = CMC[2]: first match rank <= 2.
    labels = np.arange(250)
    scores = descending_scores(250)
    assert evaluate_scores(scores, [2], labels)["R@top1%"] == 1.0
    assert evaluate_scores(scores, [3], labels)["R@top1%"] == 0.0
    # G = 951 (University-1652 satellite gallery): round(9.51) = 10, so rank 10 counts and rank 11 does not.
    labels, scores = np.arange(951), descending_scores(951)
    assert evaluate_scores(scores, [10], labels)["R@top1%"] == 1.0
    assert evaluate_scores(scores, [11], labels)["R@top1%"] == 0.0
    assert evaluate_scores(scores, [10], labels)["R@10"] == 0.0


def test_recall_beyond_gallery_size_is_last_cmc_entry():
    result = evaluate_scores([0.9, 0.5, 0.1], [2], [0, 1, 2])  # G = 3, match at rank 2
    assert (result["R@1"], result["R@5"], result["R@10"]) == (0.0, 1.0, 1.0)


def random_task(seed, integer_features):
    """50 queries x 180 gallery items; labels repeat, ~15% gallery junk, some queries without a match.

    Integer-valued features make many exact score ties (and exact float32 sums), exercising the tie rule.
    """
    rng = np.random.default_rng(seed)
    if integer_features:
        query_features = rng.integers(-2, 3, size=(50, 4)).astype(np.float32)
        gallery_features = rng.integers(-2, 3, size=(180, 4)).astype(np.float32)
    else:
        query_features = rng.standard_normal((50, 32))
        gallery_features = rng.standard_normal((180, 32))
    gallery_labels = rng.integers(0, 30, size=180)
    gallery_labels[rng.random(180) < 0.15] = -1
    query_labels = rng.integers(0, 35, size=50)  # labels 30..34 never occur in the gallery
    return query_features, query_labels, gallery_features, gallery_labels


@pytest.mark.parametrize("integer_features", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plain_loop_on_random_data(seed, integer_features):
    task = random_task(seed, integer_features)
    assert not np.isin(task[1], task[3]).all(), "the task should hold queries without a match"
    expected = loop_evaluation(*task)
    result = evaluate_retrieval(*task)
    assert result.keys() == expected.keys()
    for name, value in expected.items():
        assert isinstance(result[name], float)
        assert result[name] == pytest.approx(value, abs=1e-12), name


def test_small_chunks_give_identical_results(monkeypatch):
    task = random_task(3, integer_features=True)
    whole = per_query_metrics(*task)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 7 * 180)  # 7 queries per chunk, last chunk partial
    chunked = per_query_metrics(*task)
    np.testing.assert_array_equal(chunked.first_match_rank, whole.first_match_rank)
    np.testing.assert_array_equal(chunked.average_precision, whole.average_precision)


def test_rank_gallery_matches_stable_argsort():
    query_features, _, gallery_features, _ = random_task(4, integer_features=True)
    scores = query_features @ gallery_features.T
    expected = np.argsort(scores, axis=1, kind="stable")[:, ::-1]
    np.testing.assert_array_equal(rank_gallery(query_features, gallery_features), expected)
    np.testing.assert_array_equal(rank_gallery(query_features, gallery_features, k=5), expected[:, :5])
    for bad_k in (0, 181):
        with pytest.raises(LpnEdgeError, match=f"k={bad_k}"):
            rank_gallery(query_features, gallery_features, k=bad_k)


def test_subset_and_cmc():
    scores = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1], [0.9, 0.5, 0.1]], dtype=np.float32)
    per_query = per_query_metrics(scores, np.array([0, 2, 9]), np.eye(3), np.array([0, 1, 2]))
    assert per_query.first_match_rank.tolist() == [0, 2, -1]
    np.testing.assert_allclose(per_query.cmc(), [1 / 3, 1 / 3, 2 / 3])
    far = per_query.subset(np.array([False, True, False]))
    assert far.summary()["R@1"] == 0.0
    assert far.summary()["AP"] == pytest.approx(1 / 6)  # i=0, r=2: (0 + 1/3) / 2


def test_format_metrics_table():
    row = {"R@1": 0.9123, "R@5": 0.95, "R@10": 0.961, "R@top1%": 0.97, "AP": 0.9212}
    table = format_metrics_table({"drone->satellite": row})
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "task"
    cells = [cell.strip() for cell in lines[2].split("|")[1:-1]]
    assert cells == ["drone->satellite", "91.23", "95.00", "96.10", "97.00", "92.12"]
    with pytest.raises(LpnEdgeError, match="'broken'.*AP"):
        format_metrics_table({"broken": {"R@1": 1.0}})


@pytest.mark.parametrize(
    ("query_features", "gallery_features", "message"),
    [
        (np.zeros((3,)), np.zeros((4, 8)), r"query_features has shape \(3,\)"),
        (np.zeros((3, 8)), np.zeros((0, 8)), r"gallery_features has shape \(0, 8\)"),
        (np.zeros((3, 8)), np.zeros((4, 6)), r"\(3, 8\) and gallery_features \(4, 6\)"),
        (np.zeros((3, 8), dtype=np.int64), np.zeros((4, 8)), "dtype int64"),
        (np.array([[0.0, np.nan]] * 3), np.zeros((4, 2)), "query_features row 0 holds NaN"),
        (np.zeros((3, 2)), np.array([[0.0, 1.0]] * 3 + [[np.inf, 0.0]]), "gallery_features row 3"),
    ],
)
def test_feature_validation(query_features, gallery_features, message):
    with pytest.raises(LpnEdgeError, match=message):
        evaluate_retrieval(query_features, np.zeros(3, int), gallery_features, np.zeros(4, int))


@pytest.mark.parametrize(
    ("query_labels", "gallery_labels", "message"),
    [
        (np.zeros(2, int), np.zeros(4, int), r"query_labels has shape \(2,\); expected \(3,\)"),
        (np.zeros(3, int), np.zeros((4, 1), int), r"gallery_labels has shape \(4, 1\); expected \(4,\)"),
        (np.zeros(3), np.zeros(4, int), "query_labels has dtype float64"),
        (np.array([0, -1, 0]), np.zeros(4, int), r"query_labels\[1\] is -1"),
    ],
)
def test_label_validation(query_labels, gallery_labels, message):
    with pytest.raises(LpnEdgeError, match=message):
        evaluate_retrieval(np.zeros((3, 2)), query_labels, np.zeros((4, 2)), gallery_labels)


def test_overflowing_scores_are_refused():
    huge = np.full((1, 2), 3e38, dtype=np.float32)
    with pytest.raises(LpnEdgeError, match="query 0 overflow"):
        evaluate_retrieval(huge, np.zeros(1, int), huge, np.zeros(1, int))
