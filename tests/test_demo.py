"""`lpn-edge demo --quick` end to end: the main job a newcomer runs first."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lpn_edge.cli import app


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == {"LPN (4 parts)", "baseline (1 part)"}
    for name, model in summary["models"].items():
        assert Path(model["checkpoint"]).is_file() and Path(model["metrics_json"]).is_file()
        for task in ("drone2sat", "sat2drone"):
            assert 0.0 <= model["metrics"][task]["R@1"] <= 1.0
            assert f"| {name}: {task}" in result.output
    assert all(Path(p).is_file() for p in summary["onnx"]["artifacts"])
    assert summary["onnx"]["parity"] and all(line.endswith("ok") for line in summary["onnx"]["parity"])
    assert Path(summary["preview"]).is_file() and Path(summary["geo_csv"]).is_file()
    # results.md holds the very table the run printed, for README to quote; no resume-only copies are left
    results = (out / "results.md").read_text()
    table = [line for line in result.output.splitlines() if line.startswith("| ")]
    assert table and all(line in results for line in table) and "--quick" in results
    assert not list(out.rglob("last.pt"))
    # training talks: a progress line at least at the end of every epoch, with the pace and the time left
    assert all(f"epoch {e}/4, step 4/4" in result.output for e in (1, 4)) and "img/s, about " in result.output
    # a second run into the same directory is refused rather than mixing two demos
    again = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
