"""The CPU exact top-k (lpn_edge.runtime.matching) against a brute-force full sort."""

from __future__ import annotations

import numpy as np
import pytest
from matching_helpers import unit_gallery_memmap

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.matching import exact_topk


def brute_force(query: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.atleast_2d(query).astype(np.float32) @ gallery.astype(np.float32).T
    order = np.array([sorted(range(len(row)), key=lambda i: (-row[i], i))[:k] for row in scores])
    return order, np.take_along_axis(scores, order, 1)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1 << 16])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_ties_go_to_the_smaller_index_across_chunks(chunk_rows, dtype):
    generator = np.random.default_rng(chunk_rows)
    query = generator.integers(-2, 3, (3, 6)).astype(np.float32)
    gallery = generator.integers(-2, 3, (300, 6)).astype(dtype)  # many exactly equal scores
    for k in (1, 5, 37, 300):
        indices, scores = exact_topk(query, gallery, k, chunk_rows=chunk_rows)
        expected_indices, expected_scores = brute_force(query, gallery, k)
        assert indices.dtype == np.int64 and scores.dtype == np.float32 and indices.shape == (3, k)
        assert np.array_equal(indices, expected_indices) and np.array_equal(scores, expected_scores)


def test_random_unit_features_and_memmap_gallery(tmp_path):
    gallery, mapped = unit_gallery_memmap(tmp_path, 5000, 32, seed=0)
    query = gallery[[10, 4000]] + 0.01
    indices, scores = exact_topk(query[0], mapped, 10, chunk_rows=999)
    expected_indices, expected_scores = brute_force(query[0], mapped[:], 10)
    assert np.array_equal(indices, expected_indices) and np.allclose(scores, expected_scores, rtol=0, atol=1e-6)
    assert exact_topk(query, mapped, 1)[0][:, 0].tolist() == [10, 4000]


def test_signed_zero_scores_tie():
    gallery = np.array([[-0.0], [0.0], [-0.0]], np.float32)
    assert exact_topk(np.array([1.0], np.float32), gallery, 3)[0].tolist() == [[0, 1, 2]]


def test_bad_inputs_are_one_clear_error():
    gallery = np.zeros((4, 3), np.float16)
    with pytest.raises(LpnEdgeError, match="k must be between 1 and the gallery size 4"):
        exact_topk(np.zeros(3, np.float32), gallery, 5)
    with pytest.raises(LpnEdgeError, match="does not fit a gallery of dimension 3"):
        exact_topk(np.zeros(4, np.float32), gallery, 1)
    with pytest.raises(LpnEdgeError, match="float16 or float32"):
        exact_topk(np.zeros(3, np.float32), gallery.astype(np.int8), 1)
    with pytest.raises(LpnEdgeError, match="not finite"):
        exact_topk(np.full(3, np.inf, np.float32), np.ones((4, 3), np.float32), 1)
