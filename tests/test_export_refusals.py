"""Refused options and inputs: each stops before any work with one line that says what and what to do."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from export_helpers import make_checkpoint, write_calibration_folder

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.export.formats import FORMATS
from lpn_edge.export.options import DEFAULTS, check_options, parse_batch, parse_size, precision_from_flags

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("refusals") / "tiny.pt")


@pytest.mark.parametrize("kwargs, message", [
    (dict(formats=set()), "choose at least one export format: --onnx, --trt or --pt2"),
    (dict(formats={"tflite"}), "unknown export format 'tflite'; expected one of onnx, trt, pt2"),
    (dict(formats={"onnx"}, precision="fp16"), "--fp16 applies to TensorRT engines: add --trt"),
    (dict(formats={"pt2"}, precision="fp16"), "--pt2 supports fp32, not fp16"),
    (dict(formats={"trt", "pt2"}, precision="fp16"), "--pt2 supports fp32, not fp16"),
    (dict(formats={"onnx"}, precision="int8"), "--int8 needs --calib DIR: a folder of at least 32 images"),
    (dict(formats={"onnx"}, calib="."), "--calib is only used with --int8"),
    (dict(formats={"onnx"}, precision="int8", calib="/no/such/dir"), "--calib /no/such/dir is not a folder"),
    (dict(formats={"pt2"}, split=True), "--split is not available for --pt2"),
    (dict(formats={"onnx"}, precision="bf16"), "precision must be one of fp32, fp16, int8; got 'bf16'"),
    (dict(formats={"onnx"}, opset=13), "opset must be >= 17, got 13"),
    (dict(formats={"trt"}, batch=(8, 4, 32)), "--batch must satisfy 1 <= MIN <= OPT <= MAX; got 8:4:32"),
    (dict(formats={"onnx"}, size=(16, 256)), "--size must be H,W with both >= 32 pixels"),
    (dict(formats={"onnx"}, parity_data="/no/such/dir"), "--parity-data /no/such/dir is not a folder"),
    # format-specific options that no chosen format uses are refused, not dropped
    (dict(formats={"onnx"}, batch=(1, 4, 8)), "--batch is not used by --onnx (it applies to --trt and --pt2); "
                                              "leave it out"),
    (dict(formats={"onnx", "pt2"}, workspace_mb=512), "--workspace-mb is not used by --onnx --pt2 (it applies to "
                                                      "--trt); leave it out"),
    (dict(formats={"pt2"}, opset=17), "--opset is not used by --pt2 (it applies to --onnx and --trt)"),
])
def test_refused_combinations(kwargs, message):
    with pytest.raises(LpnEdgeError) as error:
        check_options(ExportOptions(**kwargs))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs", [
    dict(formats={"trt"}, batch=(1, 4, 8), workspace_mb=512, opset=17),  # TensorRT builds from the ONNX: opset
    dict(formats={"onnx", "pt2"}, batch=(1, 4, 8), opset=17),  # each option used by one of the formats
    dict(formats={"onnx"}, batch=DEFAULTS.batch),  # equal to the default: not given
])
def test_options_used_by_some_chosen_format_are_accepted(kwargs):
    check_options(ExportOptions(**kwargs))


def test_trt_implies_onnx_and_is_built_after_it():
    options = ExportOptions(formats={"trt"}, precision="fp16")
    check_options(options)
    assert options.formats == {"trt"} and options.build_order == ("onnx", "trt")


def test_options_are_frozen_and_normalised():
    options = ExportOptions(formats=["onnx"], batch=[1, 2, 3], calib="calib", parity_data="data")
    assert options.formats == frozenset({"onnx"}) and options.batch == (1, 2, 3)
    assert options.calib == Path("calib") and options.parity_data == Path("data")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch = (1, 1, 1)


@pytest.mark.parametrize("text, message", [
    ("8", "--batch must be MIN:OPT:MAX with three integers, e.g. 1:8:32; got '8'"),
    ("1:x:4", "--batch must be MIN:OPT:MAX with three integers"),
    ("0:1:4", "1 <= MIN <= OPT <= MAX; got 0:1:4"),
])
def test_bad_batch_strings(text, message):
    with pytest.raises(LpnEdgeError, match=message.replace("(", r"\(")):
        parse_batch(text)


def test_batch_and_size_strings_parse():
    assert parse_batch("1:8:32") == (1, 8, 32)
    assert parse_size("256,256") == (256, 256)
    with pytest.raises(LpnEdgeError, match="--size must be H,W in pixels, e.g. 256,256; got '256'"):
        parse_size("256")
    with pytest.raises(LpnEdgeError, match="--fp16 and --int8 exclude each other"):
        precision_from_flags(True, True)


def test_format_table_rows():
    assert FORMATS["onnx"].suffix == ".onnx" and FORMATS["trt"].suffix == ".engine" and FORMATS["pt2"].suffix == ".pt2"
    assert FORMATS["trt"].precisions == ("fp32", "fp16", "int8") and FORMATS["pt2"].precisions == ("fp32",)
    assert FORMATS["onnx"].accepts_split and not FORMATS["pt2"].accepts_split
    assert FORMATS["trt"].builds_from == ("onnx",)
    assert [f.flag for f in FORMATS.values()] == ["--onnx", "--trt", "--pt2"]
    from lpn_edge.export.pipeline import ExportJob

    assert all(callable(getattr(ExportJob, fmt.builder)) for fmt in FORMATS.values())


def test_every_option_default_lives_in_export_options():
    """The command line's defaults are ExportOptions' (a changed default reaches the CLI without an edit there)."""
    import inspect

    from lpn_edge.export.cli import export_command

    params = inspect.signature(export_command).parameters
    assert params["view"].default.default == DEFAULTS.view and params["opset"].default.default == DEFAULTS.opset
    assert params["workspace_mb"].default.default == DEFAULTS.workspace_mb
    assert parse_batch(params["batch"].default.default) == DEFAULTS.batch
    assert params["no_flip"].default.default is (not DEFAULTS.flip) and params["parity_data"].default.default is None


def test_model_dependent_refusals(ckpt, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(LpnEdgeError, match=r"--size 72,64 is not a multiple of the backbone stride 16 "
                                           r"\(resnet18, stride 1\); e.g. 80,64"):
        export_model(ckpt, out, ExportOptions(formats={"onnx"}, size=(72, 64)))
    with pytest.raises(LpnEdgeError, match="view 'aerial' is not part of this 3-view model; expected one of "
                                           "satellite, drone, ground"):
        export_model(ckpt, out, ExportOptions(formats={"onnx"}, view="aerial"))
    assert not out.exists() or not any(out.iterdir())


def test_split_refused_for_max_pooling(tmp_path):
    ckpt = make_checkpoint(tmp_path / "max.pt", pool="max")
    with pytest.raises(LpnEdgeError, match="--split needs avg pooling .*this checkpoint uses pool 'max'"):
        export_model(ckpt, tmp_path / "out", ExportOptions(formats={"onnx"}, split=True))


def test_bad_checkpoints(tmp_path):
    with pytest.raises(LpnEdgeError, match="does not exist"):
        export_model(tmp_path / "missing.pt", tmp_path / "out", ExportOptions(formats={"onnx"}))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint")
    # torch's safe loader refuses these bytes itself (newer torch) or fails to read them (older): one line either way
    with pytest.raises(LpnEdgeError, match="junk.pt is not (a readable|an) lpn-edge checkpoint"):
        export_model(junk, tmp_path / "out", ExportOptions(formats={"onnx"}))
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(LpnEdgeError, match="plain.pt is not an lpn-edge checkpoint"):
        export_model(plain, tmp_path / "out", ExportOptions(formats={"onnx"}))


def test_too_few_calibration_images(ckpt, tmp_path):
    calib = write_calibration_folder(tmp_path / "calib", 5)
    with pytest.raises(LpnEdgeError, match=rf"--calib {calib} holds 5 images \(.*\); int8 calibration needs at "
                                           "least 32"):
        export_model(ckpt, tmp_path / "out", ExportOptions(formats={"onnx"}, precision="int8", calib=calib))


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_trt_without_tensorrt_is_one_line_before_any_export(ckpt, tmp_path):
    with pytest.raises(LpnEdgeError) as error:
        export_model(ckpt, tmp_path / "out", ExportOptions(formats={"trt"}))
    assert str(error.value) == ('--trt needs the Python package \'tensorrt\', which is not installed: pip install '
                                '"lpn-edge[trt]" on x86-64 Linux, or use the TensorRT that JetPack ships on Jetson')
    assert not (tmp_path / "out").exists()  # refused before the ONNX export


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_command_line_prints_one_line_and_exits_2(ckpt, tmp_path):
    import typer
    from typer.testing import CliRunner

    from lpn_edge.cli import friendly_errors
    from lpn_edge.export.cli import export_command

    app = typer.Typer()
    app.command("export")(friendly_errors(export_command))
    app.command("other")(lambda: None)  # two commands, so typer keeps the "export" sub-command name
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(ckpt), "--trt", "--fp16", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --trt needs the Python package 'tensorrt'")
    result = runner.invoke(app, ["export", str(ckpt), "--onnx", "--batch", "4", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--batch must be MIN:OPT:MAX" in result.output
    result = runner.invoke(app, ["export", str(ckpt), "--onnx", "--batch", "1:4:8", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.strip() == ("error: --batch is not used by --onnx (it applies to "
                                                               "--trt and --pt2); leave it out")
    help_text = runner.invoke(app, ["export", "--help"]).output
    assert "Example: lpn-edge export demo-out/lpn/model.pt --onnx --split" in help_text
    assert "--parity-data" in help_text and "1:8:32" in help_text  # the defaults come from ExportOptions


def test_command_module_imports_no_heavy_packages():
    code = ("import sys, lpn_edge.export.cli; "
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'numpy', 'tensorrt') if m in sys.modules]; "
            "print(heavy)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
