"""The one table of export formats: file suffix, command-line flag and help, precisions, the options each uses,
what it is built from, and which step of the export job builds it.

Like Ultralytics' exporter: every format is a row, and `options.check_options` checks a request against the table
before any work starts, so a combination that makes no sense stops with one line that says which options clash and
what would work. This module imports nothing heavy: the command line reads it to build its help.

Precision decisions (documented here because the table enforces them):
  * ONNX is always written in fp32: it is the portable master artifact, and ONNX Runtime's CPU provider does not
    compute in fp16. ``--onnx --int8 --calib DIR`` additionally writes two explicit-quantization (Q/DQ) ONNX
    graphs: ``.int8.onnx`` laid out for TensorRT (every version builds int8 engines from it) and ``.int8-cpu.onnx``
    laid out for ONNX Runtime's CPU int8 kernels (`int8_placements`). ``--onnx --fp16`` alone is refused: an fp16
    ONNX exists only as the input a strongly typed TensorRT (>= 10.12) fp16 build parses (written beside the engine
    by ``--trt --fp16``).
  * TensorRT engines are fp32, fp16 or int8 (int8 needs calibration images).
  * pt2 (AOTInductor) packages are fp32 only.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table."""

    name: str  # the value in `ExportOptions.formats`
    flag: str  # the command-line flag that asks for it
    suffix: str  # file suffix of the main artifact
    precisions: tuple[str, ...]  # precisions this format can be written in
    accepts_split: bool  # can also write the backbone-only graph (feature map out) for the runtime's ring kernel
    options: frozenset[str]  # the format-specific `ExportOptions` fields it uses (others given are refused)
    builds_from: tuple[str, ...]  # formats written first because this one is built from them
    builder: str  # the `pipeline.ExportJob` method that writes and checks it
    python_modules: tuple[str, ...]  # imports needed to write and check it
    install_hint: str  # what to do when a python module is missing
    help: str  # one line for the command line's help


FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (  # in build order: a format comes after the ones it is built from
        ExportFormat("onnx", "--onnx", ".onnx", ("fp32", "int8"), True, frozenset({"opset"}), (), "build_onnx",
                     ("onnx", "onnxscript", "onnxruntime"), 'pip install "lpn-edge[onnx]"',
                     "Write the ONNX graph (opset >= 17, dynamic batch), checked with ONNX Runtime on the CPU."),
        ExportFormat("trt", "--trt", ".engine", ("fp32", "fp16", "int8"), True,
                     frozenset({"batch", "workspace_mb", "opset"}), ("onnx",), "build_trt", ("tensorrt",),
                     'pip install "lpn-edge[trt]" on x86-64 Linux, or use the TensorRT that JetPack ships on Jetson',
                     "Build a TensorRT engine for this GPU, with a sidecar .json (writes the ONNX first)."),
        ExportFormat("pt2", "--pt2", ".pt2", ("fp32",), False, frozenset({"batch"}), (), "build_pt2", ("torch",),
                     'pip install "lpn-edge[train]"',
                     "Compile an AOTInductor package (.pt2) that runs without the model's Python code."),
    )
}


def flags(names) -> str:
    """{"onnx", "trt"} -> "--onnx --trt" (table order)."""
    return " ".join(fmt.flag for fmt in FORMATS.values() if fmt.name in names)
