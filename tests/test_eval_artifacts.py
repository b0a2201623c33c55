"""`lpn-edge eval` of exported artifacts through the runtime encoders: the same metrics as the checkpoint in fp32,
`--compare` (side-by-side metrics, cosines, top-1 agreement), one artifact for both directions when satellite and
drone share weights, `--gallery-model` when they do not, and the refusals."""

import json

import pytest
import torch
from conftest import randomise_batchnorm
from data_helpers import make_university_tree
from typer.testing import CliRunner

from lpn_edge.checkpoint import save_checkpoint
from lpn_edge.cli import app
from lpn_edge.config import ModelConfig, RunConfig
from lpn_edge.errors import LpnEdgeError
from lpn_edge.eval.evaluate import EvalOptions, evaluate
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.model import build_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_university_tree(tmp_path_factory.mktemp("world"), classes=["0001", "0002", "0003"], drones=2)


def _checkpoint(root, share_weights: bool, seed: int = 0):
    config = RunConfig(model=ModelConfig(backbone="resnet18", num_classes=3, image_size=(64, 64),
                                         share_weights=share_weights))
    torch.manual_seed(seed)
    model = build_model(config.model)
    randomise_batchnorm(model)
    return save_checkpoint(root / "model.pt", model, config)


def _export(ckpt, view: str):
    export_model(ckpt, ckpt.parent / "out", ExportOptions(formats={"onnx"}, view=view, parity_queries=2,
                                                          parity_gallery=2))
    return ckpt.parent / "out" / f"{ckpt.stem}-{view}.onnx"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    ckpt = _checkpoint(tmp_path_factory.mktemp("shared"), share_weights=True)
    return ckpt, _export(ckpt, "drone")


def test_artifact_metrics_equal_the_checkpoints_and_compare_reports_the_difference(shared, world, tmp_path):
    ckpt, onnx = shared
    expected = evaluate(ckpt, world, EvalOptions(progress=False, out_json=tmp_path / "ckpt.json"))
    result = CliRunner().invoke(app, ["eval", str(onnx), "--data", str(world), "--compare", str(ckpt),
                                      "--json", str(tmp_path / "onnx.json")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "onnx.json").read_text())
    assert set(payload["metrics"]) == {"drone2sat", "sat2drone"}  # one drone artifact serves both directions
    for task, metrics in payload["metrics"].items():
        assert metrics == pytest.approx(expected.metrics[task], abs=1e-9)
        assert payload["comparison"]["metrics"][task] == pytest.approx(expected.metrics[task], abs=1e-9)
        figures = payload["comparison"]["agreement"][task]
        assert figures["min_cosine"] >= 0.99999 and figures["mean_cosine"] >= figures["min_cosine"]
        assert figures["top1_agreement"] == 1.0
    assert payload["artifacts"][str(onnx)]["provider"] == "CPUExecutionProvider"
    for row in ("| drone2sat (artifact)", "| drone2sat (checkpoint)", "| sat2drone (artifact)",
                "| task      | mean cosine |  min cosine | top-1 agreement |", "100.00% |"):
        assert row in result.output
    plain = evaluate(onnx, world, EvalOptions(progress=False, task="drone2sat", out_json=tmp_path / "plain.json"))
    assert plain.comparison is None and plain.table().startswith("| task")


def test_unshared_weights_need_the_other_views_artifact(world, tmp_path):
    ckpt = _checkpoint(tmp_path, share_weights=False)
    drone = _export(ckpt, "drone")
    with pytest.raises(LpnEdgeError, match=r"drone2sat needs the satellite view, and model-drone.onnx serves drone "
                                           r"only .*--view satellite.*--gallery-model"):
        evaluate(drone, world, EvalOptions(progress=False, out_json=tmp_path / "x.json"))
    satellite = _export(ckpt, "satellite")
    got = evaluate(drone, world, EvalOptions(progress=False, gallery_model=satellite, out_json=tmp_path / "a.json"))
    expected = evaluate(ckpt, world, EvalOptions(progress=False, out_json=tmp_path / "c.json"))
    for task in ("drone2sat", "sat2drone"):
        assert got.metrics[task] == pytest.approx(expected.metrics[task], abs=1e-9)


def test_refusals(shared, world, tmp_path):
    ckpt, onnx = shared
    other = _checkpoint(tmp_path, share_weights=True, seed=1)
    with pytest.raises(LpnEdgeError, match="is not the checkpoint model-drone.onnx was exported from"):
        evaluate(onnx, world, EvalOptions(progress=False, compare=other, out_json=tmp_path / "x.json"))
    with pytest.raises(LpnEdgeError, match="--gallery-model and --compare apply to exported artifacts"):
        evaluate(ckpt, world, EvalOptions(progress=False, compare=ckpt, out_json=tmp_path / "x.json"))
    with pytest.raises(LpnEdgeError, match="--plots draws the checkpoint's feature maps"):
        evaluate(onnx, world, EvalOptions(progress=False, plots=1, out_json=tmp_path / "x.json"))
    with pytest.raises(LpnEdgeError, match="exported with test-time flip; evaluate it with"):
        evaluate(onnx, world, EvalOptions(progress=False, flip=False, out_json=tmp_path / "x.json"))
    result = CliRunner().invoke(app, ["eval", str(onnx), "--data", str(world), "--device", "gpu"])
    assert result.exit_code != 0 and "device must be one of cpu, cuda, tensorrt; got 'gpu'" in result.output
