"""`lpn-edge demo --quick` end to end: the main job a newcomer runs first."""

import json
from pathlib import Path

import pytest
from PIL import Image
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
    # the ONNX model, evaluated through the runtime encoders, reported beside its checkpoint (fp32: the same figures)
    lpn = summary["models"]["LPN (4 parts)"]["metrics"]
    for task in ("drone2sat", "sat2drone"):
        assert f"| LPN (4 parts), ONNX: {task}" in result.output
        assert summary["onnx"]["metrics"][task]["R@1"] == pytest.approx(lpn[task]["R@1"], abs=0.011)
    # the drone ONNX serves drone and satellite (shared weights); the street tasks need a ground artifact
    assert set(summary["onnx"]["metrics"]) == {"drone2sat", "sat2drone"} | {
        f"drone2sat [{g}]" for g in ("short", "middle", "long")} & set(lpn)
    assert any(note.startswith("ground2sat needs the ground view") for note in summary["onnx"]["notes"])
    rows = [line.split("|")[1].strip() for line in result.output.splitlines() if line.startswith("| ")]
    last_checkpoint_row = max(i for i, row in enumerate(rows) if row.startswith("LPN (4 parts): "))
    assert rows.index("LPN (4 parts), ONNX: drone2sat") == last_checkpoint_row + 1
    assert summary["onnx"]["parity"] and all(line.endswith("ok") for line in summary["onnx"]["parity"])
    assert Path(summary["preview"]).is_file() and Path(summary["geo_csv"]).is_file()
    # results.md holds the very table the run printed, for README to quote; no resume-only copies are left
    results = (out / "results.md").read_text()
    table = [line for line in result.output.splitlines() if line.startswith("| ")]
    assert table and all(line in results for line in table) and "--quick" in results
    assert not list(out.rglob("last.pt"))
    # training talks: a progress line at least at the end of every epoch, with the pace and the time left
    assert all(f"epoch {e}/4, step 4/4" in result.output for e in (1, 4)) and "img/s, about " in result.output
    # the flight over an unseen area, located with the ONNX model through the runtime: figures, map, results.md
    flight = summary["flight"]
    assert flight["tiles"] == 144 and flight["frames"] == 16 and flight["seed"] != 0
    truth = flight["locate"]["truth"]
    assert truth["position"] == "view_latitude/view_longitude" and truth["error"]["frames"] == 16
    assert truth["track"]["frames"] == 16 and truth["error"]["median_m"] >= 0 and 0 <= truth["hits"]["top5"] <= 1
    with Image.open(flight["map"]) as image:
        assert image.format == "PNG" and flight["map"] == str(out / "flight-map.png")
    assert "with --track: position error over 16 frames" in result.output
    assert "Flight over an area the model never saw" in results and "with `--track`" in results
    assert len(Path(flight["locate_log"]).read_text().splitlines()) > 16
    # a second run into the same directory is refused rather than mixing two demos
    again = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
