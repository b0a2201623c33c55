"""The CUDA kernels' index arithmetic and loops, compiled by nvcc and run on the CPU, against the numpy reference.

tests/cuda/ring_geometry_harness.cu includes lpn_edge/runtime/kernels/ring_geometry.cuh and runs the pooling and
heads loops of ring_pool.cu over the grid on the host; tests/cuda/topk_harness.cu does the same for topk.cu's
selection. Skipped when nvcc is not on the machine. No GPU is used.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lpn_edge.runtime import matching, ring_pool

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "lpn_edge" / "runtime" / "kernels"
GEOMETRIES = [(16, 16, 4), (15, 15, 4), (12, 20, 4), (8, 8, 4), (5, 5, 4), (3, 7, 2), (6, 6, 8), (17, 9, 3)]
KINDS = ["ring", "ring_outer_first", "row", "column"]
POOLS = ["avg", "max", "avg+max"]


def nvcc_path() -> str | None:
    return shutil.which("nvcc") or next((str(p) for p in [Path("/usr/local/cuda/bin/nvcc")] if p.exists()), None)


def build(tmp_path_factory, source: str) -> Path:
    nvcc = nvcc_path()
    if nvcc is None:
        pytest.skip("nvcc is not on this machine")
    out = tmp_path_factory.mktemp("harness") / Path(source).stem
    result = subprocess.run([nvcc, "-O1", "-std=c++14", "-I", str(KERNELS), "-o", str(out),
                             str(ROOT / "tests" / "cuda" / source)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return build(tmp_path_factory, "ring_geometry_harness.cu")


@pytest.fixture(scope="module")
def topk_harness(tmp_path_factory) -> Path:
    return build(tmp_path_factory, "topk_harness.cu")


def run(harness: Path, *args) -> None:
    result = subprocess.run([str(harness), *map(str, args)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def test_half_to_float_is_exact_for_every_bit_pattern(harness, tmp_path):
    run(harness, "half", tmp_path / "half.bin")
    actual = np.fromfile(tmp_path / "half.bin", np.float32)
    expected = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    finite = ~np.isnan(expected)
    assert np.array_equal(actual[finite].view(np.uint32), expected[finite].view(np.uint32))  # -0.0 included
    assert np.isnan(actual[~finite]).all()


@pytest.mark.parametrize("height,width,parts", GEOMETRIES + [(1, 1, 2), (2, 9, 3), (16, 16, 1)])
@pytest.mark.parametrize("kind", KINDS)
def test_cell_membership_and_boxes_equal_the_reference(harness, tmp_path, height, width, parts, kind):
    run(harness, "cells", kind, height, width, parts, tmp_path / "cells.bin")
    out = np.fromfile(tmp_path / "cells.bin", np.int32)
    h2, w2 = ring_pool.grid_size(kind, height, width, parts)
    assert out[:3].tolist() == [h2, w2, int((h2, w2) != (height, width))]
    cells = out[4 : 4 + h2 * w2].reshape(h2, w2)
    boxes = out[4 + h2 * w2 :].reshape(parts, 2, 4)
    assert boxes.tolist() == [
        [list(outer), list(inner)] for outer, inner in ring_pool.part_boxes(kind, height, width, parts)
    ]
    masks, _ = ring_pool.part_masks(kind, height, width, parts)
    if kind in ("row", "column"):
        assert (cells == -1).all()
    else:
        assert np.array_equal(cells, masks.argmax(0)) and masks.sum(0).min() == 1


@pytest.mark.parametrize("height,width,parts", GEOMETRIES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pool", POOLS)
def test_pooling_loops_equal_the_numpy_reference(harness, tmp_path, height, width, parts, kind, pool):
    generator = np.random.default_rng(height * 1000 + width * 10 + parts)
    batch, channels = 2, 5
    maps = generator.standard_normal((2, batch, channels, height, width)).astype(np.float32)
    for dtype in ("f32", "f16"):
        array = maps.astype(np.float16) if dtype == "f16" else maps
        for layout, mode in (("nchw", "warp"), ("nhwc", "thread"), ("nchw", "thread"), ("nhwc", "warp")):
            data = array if layout == "nchw" else array.transpose(0, 1, 3, 4, 2)
            for flip in (False, True):
                data[0].tofile(tmp_path / "map.bin")
                data[1].tofile(tmp_path / "mirror.bin")
                run(harness, "pool", kind, pool, layout, dtype, mode, batch, channels, height, width, parts,
                    tmp_path / "map.bin", tmp_path / "mirror.bin" if flip else "-", tmp_path / "out.bin")
                expected = ring_pool.pool_parts(data[0], parts, kind, pool, layout, data[1] if flip else None)
                actual = np.fromfile(tmp_path / "out.bin", np.float32).reshape(expected.shape)
                assert relative_error(actual, expected) <= 1e-5, (dtype, layout, mode, flip)


@pytest.mark.parametrize("batch,in_channels,parts,bottleneck,bias_scale",
                         [(3, 70, 4, 40, 1.0), (2, 33, 1, 17, 2.0), (1, 512, 8, 512, 2.0), (2, 96, 3, 5, 1.0)])
def test_heads_and_normalisation_loops_equal_the_numpy_reference(harness, tmp_path, batch, in_channels, parts,
                                                                  bottleneck, bias_scale):
    generator = np.random.default_rng(in_channels)
    pooled = generator.random((batch, in_channels, parts), dtype=np.float32)
    weight = generator.standard_normal((parts, bottleneck, in_channels)).astype(np.float32) * 0.1
    bias = generator.standard_normal((parts, bottleneck)).astype(np.float32)
    for name, array in (("pooled", pooled), ("weight", weight), ("bias", bias)):
        array.tofile(tmp_path / f"{name}.bin")
    run(harness, "heads", batch, in_channels, parts, bottleneck, bias_scale, tmp_path / "pooled.bin",
        tmp_path / "weight.bin", tmp_path / "bias.bin", tmp_path / "out.bin")
    actual = np.fromfile(tmp_path / "out.bin", np.float32).reshape(batch, bottleneck * parts)
    expected = ring_pool.embed_pooled(pooled, weight, bias, bias_scale)
    assert relative_error(actual, expected) <= 1e-5


@pytest.mark.parametrize("queries,gallery,dim,k,threads", [(1, 1000, 64, 10, 256), (3, 777, 33, 5, 64),
                                                          (2, 50, 16, 50, 32), (4, 4096, 8, 64, 256)])
def test_topk_selection_loops_equal_the_numpy_reference(topk_harness, tmp_path, queries, gallery, dim, k, threads):
    generator = np.random.default_rng(gallery)
    # Small integers: every dot product is exact in fp32 whatever the summation order, and there are many ties.
    query = generator.integers(-3, 4, (queries, dim)).astype(np.float32)
    rows = generator.integers(-3, 4, (gallery, dim)).astype(np.float16)
    rows[gallery // 2] = rows[gallery // 3]  # duplicated rows: exact ties
    query.tofile(tmp_path / "query.bin")
    rows.tofile(tmp_path / "gallery.bin")
    chunk = max(1, gallery // 3)
    run(topk_harness, queries, gallery, dim, k, threads, chunk, tmp_path / "query.bin", tmp_path / "gallery.bin",
        tmp_path / "indices.bin", tmp_path / "scores.bin")
    indices, scores = matching.exact_topk(query, rows, k)
    assert np.array_equal(np.fromfile(tmp_path / "indices.bin", np.int64).reshape(queries, k), indices)
    assert np.array_equal(np.fromfile(tmp_path / "scores.bin", np.float32).reshape(queries, k), scores)
