"""The matching engines behind open_matcher (numpy, FAISS, GPU) return identical top-k, ties included."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from matching_helpers import exact_ranking, unit_gallery_memmap

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.match_engines import open_matcher
from lpn_edge.runtime.matching import NumpyMatcher, exact_topk

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def _gpu_available() -> bool:
    try:
        from lpn_edge.runtime.cuda_kernels import open_backend

        open_backend()
        return True
    except Exception:  # noqa: BLE001 - no binding, no device, no driver
        return False


def available_engines() -> list[str]:
    return ["numpy"] + (["faiss"] if HAS_FAISS else []) + (["gpu"] if _gpu_available() else [])


def tied_gallery(dtype, size=2000, dim=48, seed=0):
    """Values k/8 with |k| <= 4: exact in fp16, and every product and sum is exact in float32 whatever the order,
    so all engines must agree to the bit. Many equal scores: duplicated rows and a small value range."""
    generator = np.random.default_rng(seed)
    gallery = generator.integers(-4, 5, (size, dim)).astype(np.float32) / 8
    gallery[100:160] = gallery[7]  # 61 copies of one row: a tie that runs across k + the FAISS margin
    gallery[-30:] = gallery[7]
    gallery[500:520] = 0.0  # zeros and negative zeros
    gallery[510:520] = -0.0
    queries = generator.integers(-4, 5, (6, dim)).astype(np.float32) / 8
    queries[0] = gallery[7]  # its best match is the 61-times tied row
    queries[5] = 0.0  # every score 0: the top-k is rows 0..k-1
    return gallery.astype(dtype), queries


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_all_engines_agree_on_a_gallery_with_ties(dtype):
    gallery, queries = tied_gallery(dtype)
    # FAISS with two threads, so that the 6 queries take its own path (see the next test)
    engines = {name: open_matcher(gallery, name, **({"threads": 2} if name == "faiss" else {}))
               for name in available_engines()}
    assert {m.engine for m in engines.values()} == set(engines)
    for k in (1, 5, 17, 40, 64):
        expected_indices, expected_scores = exact_ranking(queries, gallery, k)
        reference = exact_topk(queries, gallery, k)
        assert np.array_equal(reference[0], expected_indices)
        for name, matcher in engines.items():
            indices, scores = matcher.search(queries, k)
            assert indices.dtype == np.int64 and scores.dtype == np.float32 and indices.shape == (6, k), name
            assert np.array_equal(indices, expected_indices), (name, k)
            assert np.array_equal(scores, expected_scores), (name, k)
            one_i, one_s = matcher.search(queries[0], k)  # a single (D,) query
            assert np.array_equal(one_i, expected_indices[:1]) and np.array_equal(one_s, expected_scores[:1])
    assert np.array_equal(engines["numpy"].search(queries, 5)[0][0], [7, 100, 101, 102, 103])


@pytest.mark.skipif(not HAS_FAISS, reason="needs faiss")
def test_faiss_engine_hands_many_queries_to_the_numpy_engine():
    """FAISS scans the gallery once per query: past FAISS_QUERIES_PER_THREAD queries per thread the numpy engine's
    one pass answers (the same answer), and FAISS is not asked."""
    from lpn_edge.runtime.matching import FAISS_QUERIES_PER_THREAD

    gallery, queries = tied_gallery(np.float16)
    queries = np.concatenate([queries] * 2)  # 12
    matcher = open_matcher(gallery, "faiss", threads=2)
    asked = []
    real_search = matcher.index.search

    class Counting:
        def search(self, batch, wanted):
            asked.append(len(batch))
            return real_search(batch, wanted)

    matcher.index = Counting()
    expected = exact_ranking(queries, gallery, 5)
    for count in (2 * FAISS_QUERIES_PER_THREAD, 2 * FAISS_QUERIES_PER_THREAD + 1):
        asked.clear()
        indices, scores = matcher.search(queries[:count], 5)
        assert np.array_equal(indices, expected[0][:count]) and np.array_equal(scores, expected[1][:count])
        assert bool(asked) == (count <= 2 * FAISS_QUERIES_PER_THREAD), count


def test_numpy_engine_blocks_and_select_windows_do_not_change_the_answer():
    gallery, queries = tied_gallery(np.float16, size=700, dim=20, seed=3)
    expected = exact_ranking(queries, gallery, 33)
    for block_rows, select_rows in [(1, 1), (7, 50), (64, 64), (1000, 1 << 16)]:
        result = NumpyMatcher(gallery, block_rows=block_rows, select_rows=select_rows).search(queries, 33)
        assert np.array_equal(result[0], expected[0]) and np.array_equal(result[1], expected[1])


def test_fp16_bit_widening_is_exact_for_every_fp16_value():
    finite = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = finite[np.isfinite(finite)]  # subnormals, zeros of both signs, the largest values
    gallery = np.zeros((len(finite), 2), np.float16)
    gallery[:, 0] = finite
    scores = NumpyMatcher(gallery).scores(np.array([[1.0, 0.0]], np.float32), 0, len(finite),
                                          np.empty((1, len(finite)), np.float32))
    assert np.array_equal(scores[0], finite.astype(np.float32))


def test_random_unit_embeddings_numpy_engine_matches_exact_topk(tmp_path):
    gallery, mapped = unit_gallery_memmap(tmp_path, 3000, 256, seed=1)
    noise = np.random.default_rng(2).standard_normal((2, 256)).astype(np.float32)
    queries = gallery[[3, 2000]] + 0.01 * noise
    expected_indices, expected_scores = exact_topk(queries, mapped, 10)
    for name in available_engines():
        indices, scores = open_matcher(mapped, name).search(queries, 10)
        assert np.array_equal(indices, expected_indices), name
        np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=2e-6)
    assert expected_indices[0, 0] == 3 and expected_indices[1, 0] == 2000


def test_engine_choice_and_refusals(monkeypatch):
    gallery, queries = tied_gallery(np.float32, size=50, dim=8)
    assert open_matcher(gallery, "auto").engine in set(available_engines())
    with pytest.raises(LpnEdgeError, match="must be one of numpy, faiss, gpu, auto"):
        open_matcher(gallery, "annoy")
    with pytest.raises(LpnEdgeError, match="between 1 and the gallery size 50"):
        open_matcher(gallery, "numpy").search(queries, 51)
    with pytest.raises(LpnEdgeError, match=r"options \(block_rows\) belong to one engine; name it"):
        open_matcher(gallery, "auto", block_rows=8)  # once silently dropped
    assert open_matcher(gallery, "numpy", block_rows=8).search(queries, 3)[0].shape == (len(queries), 3)
    with pytest.raises(LpnEdgeError, match="does not fit a gallery of dimension 8"):
        open_matcher(gallery, "numpy").search(np.zeros((1, 9), np.float32), 1)
    bad = gallery.astype(np.float16)
    bad[3, 2] = np.inf
    with pytest.raises(LpnEdgeError, match="infinities or NaNs"):
        open_matcher(bad, "numpy")
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)
    with pytest.raises(LpnEdgeError, match=r"lpn-edge\[faiss\]"):
        open_matcher(gallery, "faiss")
    if not _gpu_available():
        assert open_matcher(gallery, "auto").engine == "numpy"
        with pytest.raises(LpnEdgeError):
            open_matcher(gallery, "gpu")


def near_tie_gallery(dtype, size=4000, dim=512, seed=5):
    """Rows that differ from one another by a few float32 ulps of their score: the float32 first pass orders them
    by its rounding, not by their exact scores, so only the margin and the exact second pass get them right."""
    generator = np.random.default_rng(seed)
    base = generator.standard_normal(dim)
    base /= np.linalg.norm(base)
    gallery = base + 1e-6 * generator.standard_normal((size, dim))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    gallery = gallery.astype(dtype)
    queries = (base + 1e-3 * generator.standard_normal((3, dim))).astype(np.float32)
    return gallery, queries


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_numpy_engine_float32_pass_keeps_every_exact_top_k_row(dtype, monkeypatch):
    """The float32 first pass keeps the rows within its error margin of the k-th best, so near-ties it cannot
    order still come out in their exact order; with no margin the same search goes wrong (the margin matters)."""
    gallery, queries = near_tie_gallery(dtype)
    expected = exact_ranking(queries, gallery, 10)
    matcher = NumpyMatcher(gallery, select_rows=1000)
    float32_order = np.argsort(-(queries @ gallery.astype(np.float32).T), axis=1, kind="stable")[:, :10]
    assert not np.array_equal(float32_order, expected[0])  # float32 alone does not give the exact ranking here
    indices, scores = matcher.search(queries, 10)
    assert np.array_equal(indices, expected[0]) and np.array_equal(scores, expected[1])
    monkeypatch.setattr(NumpyMatcher, "margin", lambda self, q: np.zeros(len(q), np.float32))
    assert not np.array_equal(matcher.search(queries, 10)[0], expected[0])


def test_auto_takes_the_first_engine_of_its_order_that_opens(monkeypatch):
    import lpn_edge.runtime.match_engines as engines
    gallery, _queries = tied_gallery(np.float16, size=50)

    def no_gpu(gallery, **options):
        raise LpnEdgeError("no CUDA backend")

    monkeypatch.setattr(engines, "_gpu_matcher", no_gpu)  # the order's first choice fails to open here
    assert open_matcher(gallery, "auto").engine == ("faiss" if HAS_FAISS else "numpy")
    if HAS_FAISS:  # the locate loop: FAISS with one thread, named or chosen
        assert open_matcher(gallery, "auto", one_query=True).threads == 1
        assert open_matcher(gallery, "faiss", one_query=True).threads == 1
        assert open_matcher(gallery, "faiss").threads is None
        assert open_matcher(gallery, "faiss", one_query=True, threads=2).threads == 2  # asked for: it wins
        import faiss

        faiss.omp_set_num_threads(2)
        open_matcher(gallery, "faiss", one_query=True).search(_queries[:1], 3)
        assert faiss.omp_get_max_threads() == 1  # set before the search: FAISS keeps one count per process
        with pytest.raises(LpnEdgeError, match="FAISS threads must be at least 1, got 0"):
            open_matcher(gallery, "faiss", threads=0)
    with pytest.raises(LpnEdgeError, match="no CUDA backend"):  # asked for by name: its failure is the answer
        open_matcher(gallery, "gpu")
