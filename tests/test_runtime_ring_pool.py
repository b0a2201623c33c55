"""The numpy ring pooling (lpn_edge.runtime.ring_pool) against the PyTorch model's partition and heads."""

from __future__ import annotations

import subprocess
import sys
from functools import cache

import numpy as np
import pytest
import torch

from lpn_edge.errors import LpnEdgeError
from lpn_edge.model import partition
from lpn_edge.runtime import ring_pool

# (H, W, n): even square, odd, non-square, small maps that are resized (5x5 n=4, 3x7 n=2, 6x6 n=8), one part,
# and maps resized along one axis only.
GEOMETRIES = [(16, 16, 4), (15, 15, 4), (12, 20, 4), (8, 8, 4), (5, 5, 4), (3, 7, 2), (6, 6, 8), (16, 16, 1),
              (17, 9, 3), (4, 12, 3), (1, 1, 2)]
KINDS = ["ring", "ring_outer_first", "row", "column"]
POOLS = ["avg", "max", "avg+max"]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


@pytest.mark.parametrize("height,width,parts", GEOMETRIES)
@pytest.mark.parametrize("kind", KINDS)
def test_masks_and_areas_equal_the_model_partition(height, width, parts, kind):
    masks, areas = ring_pool.part_masks(kind, height, width, parts)
    reference_masks, reference_areas = partition.partition_masks(kind, height, width, parts)
    assert np.array_equal(masks, reference_masks.numpy())
    assert np.array_equal(areas, reference_areas.numpy())


@pytest.mark.parametrize("height,width,parts", GEOMETRIES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pool", POOLS)
def test_pooled_parts_equal_the_model_partition(height, width, parts, kind, pool):
    generator = np.random.default_rng(height * 100 + width * 10 + parts)
    feature_map = generator.standard_normal((2, 6, height, width)).astype(np.float32)
    expected = partition.pool_parts(torch.from_numpy(feature_map), parts, kind, pool).numpy()
    actual = ring_pool.pool_parts(feature_map, parts, kind, pool)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert relative_error(actual, expected) <= 1e-6


@pytest.mark.parametrize("height,width,parts", [(16, 16, 4), (15, 15, 4), (5, 5, 4), (3, 7, 2)])
@pytest.mark.parametrize("pool", POOLS)
def test_nhwc_and_fp16_inputs_give_the_nchw_float32_result(height, width, parts, pool):
    generator = np.random.default_rng(7)
    half = generator.standard_normal((3, 5, height, width)).astype(np.float16)
    expected = ring_pool.pool_parts(half.astype(np.float32), parts, "ring", pool)
    assert np.array_equal(ring_pool.pool_parts(half, parts, "ring", pool), expected)
    assert np.array_equal(
        ring_pool.pool_parts(half.transpose(0, 2, 3, 1), parts, "ring", pool, layout="nhwc"), expected
    )


def test_resize_taps_equal_torch_bilinear():
    for in_len, out_len in [(5, 8), (3, 4), (7, 9), (1, 3), (2, 16)]:
        for align in (True, False):
            basis = torch.eye(in_len, dtype=torch.float32).reshape(in_len, 1, 1, in_len)
            expected = torch.nn.functional.interpolate(basis, size=(1, out_len), mode="bilinear",
                                                       align_corners=align).reshape(in_len, out_len).numpy()
            i0, i1, w0, w1 = ring_pool.resize_taps(in_len, out_len, align)
            actual = np.zeros((in_len, out_len), np.float32)
            np.add.at(actual, (i0, np.arange(out_len)), w0)
            np.add.at(actual, (i1, np.arange(out_len)), w1)
            assert np.allclose(actual, expected, atol=1e-7), (in_len, out_len, align)


@cache
def _model(parts: int, pool: str, kind: str):
    from conftest import randomise_batchnorm

    from lpn_edge.config import ModelConfig
    from lpn_edge.model import build_model

    torch.manual_seed(parts)
    config = ModelConfig(backbone="resnet18", num_classes=3, image_size=(64, 64), parts=parts, pool=pool,
                         bottleneck=24, satellite_partition=kind)
    model = build_model(config).eval()
    randomise_batchnorm(model, seed=parts)
    return model


def _folded_heads(model, flip: bool) -> tuple[np.ndarray, np.ndarray, float]:
    from lpn_edge.export.split import fold_heads

    heads = fold_heads(model, "drone", (16, 16), flip_summed=flip)
    return heads["weight"], heads["bias"], float(heads["bias_scale"])


@pytest.mark.parametrize("height,width,parts", [(16, 16, 4), (15, 15, 4), (12, 20, 4), (8, 8, 4), (5, 5, 4),
                                                (3, 7, 2)])
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("kind", ["ring", "ring_outer_first", "row"])
@pytest.mark.parametrize("flip", [False, True])
def test_embedding_equals_the_model_embedding(height, width, parts, pool, kind, flip):
    model = _model(parts, pool, kind)
    generator = np.random.default_rng(height * 31 + width)
    maps = torch.relu(torch.from_numpy(generator.standard_normal((2, 2, 512, height, width)).astype(np.float32)))
    with torch.no_grad():
        features = model.bottlenecks_from_map(maps[0], "drone")
        if flip:
            features = features + model.bottlenecks_from_map(maps[1], "drone")
        from lpn_edge.model.lpn import normalise_parts

        expected = normalise_parts(features).numpy()
    weight, bias, bias_scale = _folded_heads(model, flip)
    mirror = maps[1].numpy() if flip else None
    for layout, feature_map in (("nchw", maps[0].numpy()), ("nhwc", maps[0].numpy().transpose(0, 2, 3, 1))):
        if mirror is not None and layout == "nhwc":
            mirror = mirror.transpose(0, 2, 3, 1)
        actual = ring_pool.pool_and_embed(feature_map, weight, bias, bias_scale, kind=kind, pool=pool, layout=layout,
                                          mirror=mirror)
        assert actual.shape == expected.shape == (2, 24 * parts)
        assert relative_error(actual, expected) <= 1e-5
        assert np.allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-6)


def test_fp16_map_embedding_is_close_to_the_fp32_model():
    model = _model(4, "avg", "ring")
    generator = np.random.default_rng(3)
    feature_map = np.maximum(generator.standard_normal((2, 512, 16, 16)), 0).astype(np.float32)
    with torch.no_grad():
        from lpn_edge.model.lpn import normalise_parts

        expected = normalise_parts(model.bottlenecks_from_map(torch.from_numpy(feature_map), "drone")).numpy()
    weight, bias, bias_scale = _folded_heads(model, False)
    actual = ring_pool.pool_and_embed(feature_map.astype(np.float16), weight, bias, bias_scale)
    cosine = (actual * expected).sum(1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999


def test_bad_options_and_shapes_are_one_clear_error():
    with pytest.raises(LpnEdgeError, match="partition kind must be one of"):
        ring_pool.pool_parts(np.zeros((1, 2, 4, 4), np.float32), 2, "spiral")
    with pytest.raises(LpnEdgeError, match="layout must be one of"):
        ring_pool.pool_parts(np.zeros((1, 2, 4, 4), np.float32), 2, layout="chw")
    with pytest.raises(LpnEdgeError, match="4-d float array"):
        ring_pool.pool_parts(np.zeros((2, 4, 4), np.float32), 2)
    with pytest.raises(LpnEdgeError, match="do not fit"):
        ring_pool.embed_pooled(np.zeros((1, 3, 2), np.float32), np.zeros((2, 4, 5), np.float32), np.zeros((2, 4)))


def test_runtime_modules_import_without_torch():
    """Nothing under lpn_edge.runtime may import torch, onnx or the torch-side packages (a drone has none)."""
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        banned = ('torch', 'torchvision', 'onnx', 'lpn_edge.export', 'lpn_edge.train', 'lpn_edge.model',\n"
        "                  'lpn_edge.eval', 'pycuda', 'cuda')\n"
        "        if any(name == b or name.startswith(b + '.') for b in banned):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pkgutil, lpn_edge.runtime as runtime\n"
        "for info in pkgutil.iter_modules(runtime.__path__):\n"
        "    importlib.import_module('lpn_edge.runtime.' + info.name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
