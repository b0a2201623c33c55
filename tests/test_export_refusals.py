"""Refused options and inputs: each stops before any work with one line that says what and what to do."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from test_export_fixtures import make_checkpoint, write_calibration_folder

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import export_model
from lpn_edge.export.formats import FORMATS, check_request, parse_batch, parse_size, precision_from_flags

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
    (dict(formats={"onnx"}, calib_dir="."), "--calib is only used with --int8"),
    (dict(formats={"onnx"}, precision="int8", calib_dir="/no/such/dir"), "--calib /no/such/dir is not a folder"),
    (dict(formats={"pt2"}, split=True), "--split is not available for --pt2"),
    (dict(formats={"onnx"}, precision="bf16"), "precision must be one of fp32, fp16, int8; got 'bf16'"),
    (dict(formats={"onnx"}, opset=13), "opset must be >= 17, got 13"),
    (dict(formats={"onnx"}, batch=(8, 4, 32)), "--batch must satisfy 1 <= MIN <= OPT <= MAX; got 8:4:32"),
    (dict(formats={"onnx"}, size=(16, 256)), "--size must be H,W with both >= 32 pixels"),
])
def test_refused_combinations(kwargs, message):
    with pytest.raises(LpnEdgeError) as error:
        check_request(**kwargs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_trt_implies_onnx_and_is_built_after_it():
    request = check_request({"trt"}, precision="fp16")
    assert request.formats == {"onnx", "trt"} and request.build_order == ("onnx", "trt")


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
    assert FORMATS["trt"].needs_calibration("int8") and not FORMATS["trt"].needs_calibration("fp16")


def test_model_dependent_refusals(ckpt, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(LpnEdgeError, match=r"--size 72,64 is not a multiple of the backbone stride 16 "
                                           r"\(resnet18, stride 1\); e.g. 80,64"):
        export_model(ckpt, out, {"onnx"}, size=(72, 64))
    with pytest.raises(LpnEdgeError, match="view 'aerial' is not part of this 3-view model; expected one of "
                                           "satellite, drone, ground"):
        export_model(ckpt, out, {"onnx"}, view="aerial")
    assert not out.exists() or not any(out.iterdir())


def test_split_refused_for_max_pooling(tmp_path):
    ckpt = make_checkpoint(tmp_path / "max.pt", pool="max")
    with pytest.raises(LpnEdgeError, match="--split needs avg pooling .*this checkpoint uses pool 'max'"):
        export_model(ckpt, tmp_path / "out", {"onnx"}, split=True)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(LpnEdgeError, match="does not exist"):
        export_model(tmp_path / "missing.pt", tmp_path / "out", {"onnx"})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(LpnEdgeError, match="junk.pt is not a readable lpn-edge checkpoint"):
        export_model(junk, tmp_path / "out", {"onnx"})
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(LpnEdgeError, match="plain.pt is not an lpn-edge checkpoint"):
        export_model(plain, tmp_path / "out", {"onnx"})


def test_too_few_calibration_images(ckpt, tmp_path):
    calib = write_calibration_folder(tmp_path / "calib", 5)
    with pytest.raises(LpnEdgeError, match=f"--calib {calib} holds 5 images; int8 calibration needs at least 32"):
        export_model(ckpt, tmp_path / "out", {"onnx"}, precision="int8", calib_dir=calib)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_trt_without_tensorrt_is_one_line_before_any_export(ckpt, tmp_path):
    with pytest.raises(LpnEdgeError) as error:
        export_model(ckpt, tmp_path / "out", {"trt"})
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
    help_text = runner.invoke(app, ["export", "--help"]).output
    assert "Example: lpn-edge export runs/demo/lpn.pt --onnx --trt --fp16" in help_text


def test_command_module_imports_no_heavy_packages():
    code = ("import sys, lpn_edge.export.cli; "
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'numpy', 'tensorrt') if m in sys.modules]; "
            "print(heavy)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
