"""The command line itself: instant help, examples in every command's help, one-line errors, data commands."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lpn_edge.cli import app

COMMANDS = ["", "data", "index", "demo", "inspect", "convert-official", "train", "eval", "synth", "export",
            "data check", "index tile", "synth-flight",
            "index build", "index info", "index merge", "locate", "bench"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0 and "Example: lpn-edge" in result.output


def test_help_does_not_import_torch():
    # lazy imports keep `lpn-edge --help` instant: building the app must not pull in torch or onnx
    code = "import sys, lpn_edge.cli; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_synth_then_data_check(tmp_path):
    runner = CliRunner()
    world = tmp_path / "world"
    result = runner.invoke(app, ["synth", str(world), "--locations", "4", "--drone-per-location", "3", "--size",
                                 "48", "--distractors", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "2 train, 2 test, 2 distractor tiles" in result.output
    check = runner.invoke(app, ["data", "check", str(world), "--per-class"])
    assert check.exit_code == 0 and "layout  university1652" in check.output and "usable  yes" in check.output
    # per class: 2 training locations with 1 satellite tile and 3 drone views each
    assert "class  satellite  drone  street  google" in check.output
    assert len([line for line in check.output.splitlines() if line.split()[1:3] == ["1", "3"]]) >= 2
    again = runner.invoke(app, ["synth", str(world), "--locations", "4"])
    assert again.exit_code == 2 and "error:" in again.output


def test_data_check_exit_codes_for_unusable_trees(tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    unusable = runner.invoke(app, ["data", "check", str(tmp_path / "empty")])
    assert unusable.exit_code == 2 and "usable  NO" in unusable.output
    missing = runner.invoke(app, ["data", "check", str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_inspect_prints_the_embedding_shape():
    from pathlib import Path

    import lpn_edge

    config = Path(lpn_edge.__file__).parent / "configs" / "cpu-small.yaml"
    result = CliRunner().invoke(app, ["inspect", str(config)])
    assert result.exit_code == 0 and "feature map (1, 512, 8, 8)" in result.output
    assert "embedding (1, 2048)" in result.output


def test_train_needs_exactly_one_of_out_and_resume(tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one of --out" in result.output


def test_missing_optional_package_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a drone without PyTorch
    from pathlib import Path

    import lpn_edge

    result = CliRunner().invoke(app, ["inspect", str(Path(lpn_edge.__file__).parent / "configs" / "cpu-small.yaml")])
    assert result.exit_code == 2
    assert "needs the Python package 'torch'" in result.output and 'lpn-edge[train]' in result.output
    assert "Traceback" not in result.output
