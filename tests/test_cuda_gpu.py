"""GPU parity of the CUDA kernels (marker `gpu`): skipped unless pycuda or cuda-python finds a CUDA device.

Ring pooling + heads (RingPoolKernel) against the numpy reference for every partition kind, pooling mode,
layout, dtype, flip and the odd / non-square / small-map geometries (fp32: relative error <= 1e-5; fp16 input:
cosine >= 0.9999 to the fp32 map's embedding), against LPN.embed of a PyTorch model, and GPU top-k (GpuMatcher)
against matching.exact_topk, ties included, resident and streamed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime import cuda_kernels as ck, matching, ring_pool

pytestmark = pytest.mark.gpu

GEOMETRIES = [(16, 16, 4), (15, 15, 4), (12, 20, 4), (8, 8, 4), (5, 5, 4), (3, 7, 2), (6, 6, 8), (17, 9, 3)]
KINDS = ["ring", "ring_outer_first", "row", "column"]
POOLS = ["avg", "max", "avg+max"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("kernel-cache"))
    try:
        yield ck.open_backend(os.environ.get("LPN_EDGE_CUDA_BACKEND") or None)
    except LpnEdgeError as error:
        pytest.skip(str(error))
    finally:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous


def relative_error(actual, expected) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def min_cosine(a, b) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


@pytest.mark.parametrize("height,width,parts", GEOMETRIES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pool", POOLS)
def test_ring_pool_kernel_equals_the_numpy_reference(backend, height, width, parts, kind, pool):
    generator = np.random.default_rng(height * 100 + width + parts)
    batch, channels, bottleneck = 3, 48, 64
    in_channels = 2 * channels if pool == "avg+max" else channels
    weight = (generator.standard_normal((parts, bottleneck, in_channels)) / np.sqrt(in_channels)).astype(np.float32)
    bias = (generator.standard_normal((parts, bottleneck)) * 0.1).astype(np.float32)
    maps = np.maximum(generator.standard_normal((2, batch, channels, height, width)), 0).astype(np.float32)
    kernel = ck.RingPoolKernel(weight, bias, 2.0, kind=kind, pool=pool, backend=backend)
    try:
        for layout in ("nchw", "nhwc"):
            data = maps if layout == "nchw" else np.ascontiguousarray(maps.transpose(0, 1, 3, 4, 2))
            for flip in (False, True):
                mirror = data[1] if flip else None
                expected = ring_pool.pool_and_embed(data[0], weight, bias, 2.0, kind=kind, pool=pool, layout=layout,
                                                    mirror=mirror)
                expected_pooled = ring_pool.pool_parts(data[0], parts, kind, pool, layout, mirror)
                actual, pooled = kernel.pool_and_embed(data[0], mirror, layout=layout, return_pooled=True)
                assert relative_error(pooled, expected_pooled) <= 1e-5, (layout, flip, "f32 pooled")
                assert relative_error(actual, expected) <= 1e-5, (layout, flip, "f32")
                half = data.astype(np.float16)
                actual16, pooled16 = kernel.pool_and_embed(half[0], half[1] if flip else None, layout=layout,
                                                           return_pooled=True)
                same_input = ring_pool.pool_parts(half[0], parts, kind, pool, layout, half[1] if flip else None)
                assert relative_error(pooled16, same_input) <= 1e-5, (layout, flip, "f16 pooled")
                assert min_cosine(actual16, expected) >= 0.9999, (layout, flip, "f16")
    finally:
        kernel.close()


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("image_size", [(64, 64), (80, 48)])
def test_ring_pool_kernel_equals_the_model_embedding(backend, pool, image_size):
    torch = pytest.importorskip("torch")
    from conftest import randomise_batchnorm

    from lpn_edge.config import ModelConfig
    from lpn_edge.export.split import fold_heads
    from lpn_edge.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", num_classes=3, image_size=image_size, pool=pool)).eval()
    randomise_batchnorm(model)
    images = torch.randn(2, 3, *image_size)
    with torch.no_grad():
        expected = model.embed(images, "drone", flip=True).numpy()
        feature_map = model.feature_map(images, "drone").numpy()
        mirror = model.feature_map(torch.flip(images, dims=[3]), "drone").numpy()
    heads = fold_heads(model, "drone", feature_map.shape[-2:], flip_summed=True)
    kernel = ck.RingPoolKernel(heads["weight"], heads["bias"], float(heads["bias_scale"]), pool=pool, backend=backend)
    try:
        assert relative_error(kernel.pool_and_embed(feature_map, mirror), expected) <= 1e-5
        nhwc = kernel.pool_and_embed(feature_map.transpose(0, 2, 3, 1), mirror.transpose(0, 2, 3, 1), layout="nhwc")
        assert relative_error(nhwc, expected) <= 1e-5
        half = kernel.pool_and_embed(feature_map.astype(np.float16), mirror.astype(np.float16))
        assert min_cosine(half, expected) >= 0.9999
    finally:
        kernel.close()


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("queries", [1, 7])
def test_gpu_topk_equals_the_cpu_topk_with_ties(backend, resident, queries):
    generator = np.random.default_rng(queries)
    size, dim = 100_003, 64
    # Small integers: every score is exact in float32 whatever the summation order, and many are equal.
    gallery = generator.integers(-2, 3, (size, dim)).astype(np.float16)
    gallery[70_000:70_010] = gallery[5]  # deliberate duplicates across segments
    query = generator.integers(-2, 3, (queries, dim)).astype(np.float32)
    query[0] = gallery[5]
    budget = None if resident else 30_000 * dim * 2
    matcher = ck.GpuMatcher(gallery, max_device_bytes=budget, backend=backend)
    try:
        assert matcher.resident is resident
        for k in (1, 10, 64):
            indices, scores = matcher.search(query, k)
            expected_indices, expected_scores = matching.exact_topk(query, gallery, k)
            assert np.array_equal(indices, expected_indices), k
            assert np.array_equal(scores, expected_scores), k
        assert matcher.search(query[0], 11)[0][0].tolist() == [5, *range(70_000, 70_010)]
    finally:
        matcher.close()


def test_gpu_topk_of_unit_features_matches_up_to_rounding(backend):
    generator = np.random.default_rng(0)
    gallery = generator.standard_normal((200_000, 512)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    gallery = gallery.astype(np.float16)
    query = gallery[[3, 150_000]].astype(np.float32) + generator.standard_normal((2, 512)).astype(np.float32) * 0.05
    matcher = ck.GpuMatcher(gallery, backend=backend)
    try:
        indices, scores = matcher.search(query, 10)
    finally:
        matcher.close()
    expected_indices, expected_scores = matching.exact_topk(query, gallery, 10)
    assert np.allclose(scores, expected_scores, rtol=0, atol=1e-5)
    # Any difference must be a near-tie: the CPU scores of the GPU's picks equal the CPU's top-k scores.
    picked = np.take_along_axis(query @ gallery.astype(np.float32).T, indices, 1)
    assert np.allclose(picked, expected_scores, rtol=0, atol=1e-5)
    assert indices[:, 0].tolist() == [3, 150_000] == expected_indices[:, 0].tolist()
