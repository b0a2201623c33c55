"""ONNX export of a tiny LPN (ResNet-18, 64x64): parity, dynamic batch, metadata, the pooling MatMul, split graph."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
import pytest
import torch
from export_helpers import REAL_DATA, SMALL_PARITY, make_checkpoint

from lpn_edge.checkpoint import load_model
from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.export.onnx_export import pooling_nodes
from lpn_edge.export.parity import PARITY_THRESHOLDS, ParityThreshold
from lpn_edge.export.pooling import ring_weights
from lpn_edge.fileio import file_fingerprint
from lpn_edge.runtime.artifact import read_onnx_metadata
from lpn_edge.runtime.onnx_runner import run_onnx
from lpn_edge.runtime.split_heads import load_split_heads, split_head_embedding


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export shared by the tests of this module: full + split graphs, test-time flip on."""
    root = tmp_path_factory.mktemp("onnx")
    ckpt = make_checkpoint(root / "tiny.pt")
    result = export_model(ckpt, root / "out", ExportOptions(formats={"onnx"}, split=True, **SMALL_PARITY))
    return ckpt, root / "out", result


def test_artifacts_and_parity_figures(exported):
    _ckpt, out, result = exported
    assert sorted(p.name for p in result.paths()) == ["tiny-drone.onnx", "tiny-drone.split.npz",
                                                      "tiny-drone.split.onnx"]
    assert sorted(p.name for p in out.iterdir()) == ["tiny-drone.onnx", "tiny-drone.split.npz", "tiny-drone.split.onnx"]
    expected_sets = {"random", "u1652-mosaic"} if REAL_DATA else {"random"}
    for artifact in ("tiny-drone.onnx", "tiny-drone.split.onnx"):
        figures = [f for f in result.parity if f.artifact == artifact]
        assert {f.image_set for f in figures} == expected_sets
        for f in figures:
            assert f.min_cosine >= 0.99999 and f.top1_same == f.queries == 8 and f.images == 24
    onnx.checker.check_model(str(out / "tiny-drone.onnx"), full_check=True)


def test_dynamic_batch_matches_pytorch_at_batch_1_and_7(exported):
    ckpt, out, _result = exported
    model = load_model(ckpt)
    graph = onnx.load(str(out / "tiny-drone.onnx"))
    assert graph.graph.input[0].name == "images" and graph.graph.output[0].name == "embedding"
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    for batch in (1, 7):
        images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        onnx_emb = run_onnx(out / "tiny-drone.onnx", images.numpy())
        with torch.no_grad():
            torch_emb = model.embed(images, "drone").numpy()
        assert onnx_emb.shape == (batch, 2048)
        np.testing.assert_allclose(np.linalg.norm(onnx_emb, axis=1), 1.0, atol=1e-5)
        assert ((onnx_emb * torch_emb).sum(1) >= 0.99999).all()


def test_pooling_is_one_matmul_with_the_ring_weights(exported):
    ckpt, out, _result = exported
    ring = ring_weights(load_model(ckpt), "drone", (64, 64))
    assert ring.shape == (16, 4)  # 64 px / 16 = 4x4 map; rings of 2x2 and the rest (resized rule aside)
    graph = onnx.load(str(out / "tiny-drone.onnx"))
    assert len(pooling_nodes(graph, ring)) >= 1
    assert pooling_nodes(graph, ring * 1.01) == []  # the check looks at the values, not just the shape
    assert pooling_nodes(onnx.load(str(out / "tiny-drone.split.onnx")), ring) == []


def test_metadata_round_trip(exported):
    ckpt, out, _result = exported
    meta = read_onnx_metadata(out / "tiny-drone.onnx")
    assert meta["config"]["model"]["backbone"] == "resnet18"
    assert meta["config"]["model"]["image_size"] == [64, 64]
    assert meta["preprocessing"] == {"size": [64, 64], "resize": "bicubic", "channel_order": "RGB", "scale": "1/255",
                                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW",
                                     "dtype": "float32"}
    assert (meta["parts"], meta["layout"], meta["view"], meta["flip"]) == (4, "channel*n+part", "drone", True)
    assert meta["source_fingerprint"] == file_fingerprint(ckpt)
    assert meta["embedding_dim"] == 2048 and meta["output"] == "embedding" and meta["precision"] == "fp32"
    assert meta["opset"] == onnx.load(str(out / "tiny-drone.onnx")).opset_import[0].version >= 17
    assert meta["lpn_edge_version"] and meta["export_date"].endswith("+00:00")
    split_meta = read_onnx_metadata(out / "tiny-drone.split.onnx")
    assert split_meta["output"] == "feature_map" and split_meta["flip_summed"] is True
    assert split_meta["feature_size"] == [4, 4]


def test_read_onnx_metadata_refuses_foreign_files(tmp_path):
    path = tmp_path / "plain.onnx"
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(LpnEdgeError, match="carries no lpn-edge metadata"):
        read_onnx_metadata(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(LpnEdgeError, match="junk.onnx"):
        read_onnx_metadata(tmp_path / "junk.onnx")


def test_split_graph_plus_numpy_heads_equals_the_full_model(exported):
    ckpt, out, _result = exported
    model = load_model(ckpt)
    heads = load_split_heads(out / "tiny-drone.split.npz")
    assert float(heads["bias_scale"]) == 2.0  # flip summed in the graph: the bias counts twice
    assert json.loads(str(heads["metadata"]))["flip_summed"] is True
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    feature_map = run_onnx(out / "tiny-drone.split.onnx", images.numpy())
    assert feature_map.shape == (5, 512, 4, 4)
    with torch.no_grad():
        expected = model.embed(images, "drone", flip=True).numpy()
    got = split_head_embedding(feature_map, heads)
    assert ((got * expected).sum(1) >= 0.99999).all()


def test_split_heads_file_needs_no_pickle(exported):
    _ckpt, out, _result = exported
    with zipfile.ZipFile(out / "tiny-drone.split.npz") as archive:
        names = sorted(archive.namelist())
    assert names == ["bias.npy", "bias_scale.npy", "metadata.npy", "ring_weights.npy", "weight.npy"]
    with np.load(out / "tiny-drone.split.npz", allow_pickle=False) as data:
        assert data["weight"].shape == (4, 512, 512) and data["ring_weights"].dtype == np.float32


def test_no_flip_non_square_size_override(exported, tmp_path):
    """--no-flip, --size 96,64 (non-square, not the config's size), split heads with bias counted once."""
    ckpt, _out, _result = exported
    result = export_model(ckpt, tmp_path / "out", ExportOptions(formats={"onnx"}, split=True, flip=False, size=(96, 64),
                                                                parity_queries=4, parity_gallery=8))
    assert all(f.passed for f in result.parity)
    meta = read_onnx_metadata(tmp_path / "out" / "tiny-drone.onnx")
    assert meta["flip"] is False and meta["preprocessing"]["size"] == [96, 64]
    heads = load_split_heads(tmp_path / "out" / "tiny-drone.split.npz")
    assert float(heads["bias_scale"]) == 1.0 and heads["ring_weights"].shape == (6 * 4, 4)
    model = load_model(ckpt)
    images = torch.randn(3, 3, 96, 64, generator=torch.Generator().manual_seed(5))
    got = split_head_embedding(run_onnx(tmp_path / "out" / "tiny-drone.split.onnx", images.numpy()), heads)
    with torch.no_grad():
        expected = model.embed(images, "drone", flip=False).numpy()
    assert ((got * expected).sum(1) >= 0.99999).all()


def test_failed_parity_leaves_no_artifact(exported, tmp_path, monkeypatch):
    """An impossible threshold makes the check fail: the error names the figures and nothing is left behind."""
    ckpt, _out, _result = exported
    out = tmp_path / "out"
    out.mkdir()
    (out / "tiny-drone.onnx").write_bytes(b"an older export that must survive")
    monkeypatch.setitem(PARITY_THRESHOLDS, "fp32", ParityThreshold(1.5, 1.5, 1.0))
    with pytest.raises(LpnEdgeError, match=r"parity check failed, artifact not kept: tiny-drone.onnx .*cosine min"):
        export_model(ckpt, out, ExportOptions(formats={"onnx"}, parity_queries=2, parity_gallery=4))
    assert [p.name for p in out.iterdir()] == ["tiny-drone.onnx"]
    assert (out / "tiny-drone.onnx").read_bytes() == b"an older export that must survive"


@pytest.mark.parametrize("pool", ["max", "avg+max"])
def test_max_and_avg_max_pooling_export_with_parity(tmp_path, pool):
    """Non-avg pooling exports (masked ReduceMax per ring; avg+max also the ring MatMul) and matches PyTorch."""
    ckpt = make_checkpoint(tmp_path / "m.pt", pool=pool)
    result = export_model(ckpt, tmp_path / "out", ExportOptions(formats={"onnx"}, parity_queries=4,
                                                                parity_gallery=8))
    from lpn_edge.export.pooling import max_pooling_nodes, pooling_signature

    assert result.parity and all(f.passed for f in result.parity)
    path = tmp_path / "out" / "m-drone.onnx"
    assert read_onnx_metadata(path)["pool"] == pool
    model = load_model(ckpt)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.embed(images, "drone").numpy()
    got = run_onnx(path, images.numpy())
    assert got.shape == expected.shape == (3, 2048)
    assert ((got * expected).sum(1) >= 0.99999).all()
    graph = onnx.load(str(path))
    signature = pooling_signature(model, "drone", (64, 64))
    found = max_pooling_nodes(graph, signature.masks)
    assert sorted(found) == [0, 1, 2, 3] and all(len(nodes) == 2 for nodes in found.values())  # image + mirror
    assert max_pooling_nodes(graph, np.roll(signature.masks, 1, axis=2)) == {}  # masks are compared by value
    assert bool(pooling_nodes(graph, signature.ring_weights)) == (pool == "avg+max")


def test_pooling_check_names_what_is_missing(exported):
    """The avg graph has no masked ReduceMax: checking it as a max graph fails with a one-line message."""
    from lpn_edge.export.pooling import PoolingSignature, pooling_outputs, pooling_signature

    ckpt, out, _result = exported
    graph = onnx.load(str(out / "tiny-drone.onnx"))
    signature = pooling_signature(load_model(ckpt), "drone", (64, 64))
    assert len(pooling_outputs(graph, signature)) == 2  # one MatMul for the image, one for its mirror
    as_max = PoolingSignature("max", signature.ring_weights, signature.masks)
    with pytest.raises(LpnEdgeError, match=r"^no masked ReduceMax for part\(s\) \[0, 1, 2, 3\]"):
        pooling_outputs(graph, as_max)
