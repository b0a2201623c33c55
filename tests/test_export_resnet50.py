"""The paper's model size: ResNet-50 LPN at 256x256 (16x16 map, 4 rings) exported to ONNX and checked on CPU."""

from __future__ import annotations

import onnx
import pytest
from export_helpers import REAL_DATA, make_checkpoint

from lpn_edge.checkpoint import load_model
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.export.onnx_export import pooling_nodes
from lpn_edge.export.pooling import ring_weights


@pytest.mark.slow
def test_resnet50_lpn_onnx_parity(tmp_path):
    ckpt = make_checkpoint(tmp_path / "r50.pt", backbone="resnet50", size=(256, 256), samples=16)
    result = export_model(ckpt, tmp_path / "out", ExportOptions(formats={"onnx"}, parity_queries=4, parity_gallery=8,
                                                                parity_data=REAL_DATA))
    assert {f.image_set for f in result.parity} == ({"random", "u1652-mosaic"} if REAL_DATA else {"random"})
    for figures in result.parity:
        assert figures.passed and figures.min_cosine >= 0.99999 and figures.top1_same == 4
    ring = ring_weights(load_model(ckpt), "drone", (256, 256))
    # DESIGN.md section 3: 16x16 map, n = 4 -> 1/16, 1/64, 1/144, 1/256 per cell (outer-square areas).
    assert sorted(set(ring.max(axis=0).round(8))) == sorted({round(1 / a, 8) for a in (16, 64, 144, 256)})
    assert pooling_nodes(onnx.load(str(tmp_path / "out" / "r50-drone.onnx")), ring)
