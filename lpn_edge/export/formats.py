"""The one table of export formats and the options each accepts, and the checks that refuse a bad request.

Like Ultralytics' exporter: every format is a row (suffix, precisions, split, calibration, Python module), and a
request is checked against the table before any work starts, so a combination that makes no sense stops with one
line that says which options clash and what would work. This module imports nothing heavy: the command line uses
it to refuse bad options instantly.

Precision decisions (documented here because the table enforces them):
  * ONNX is always written in fp32: it is the portable master artifact, and ONNX Runtime's CPU provider does not
    compute in fp16. ``--onnx --int8 --calib DIR`` additionally writes an explicit-quantization (Q/DQ) ONNX, which
    ONNX Runtime and every TensorRT version consume. ``--onnx --fp16`` alone is refused: an fp16 ONNX exists only as
    the input a strongly typed TensorRT (>= 10.12) fp16 build parses (written beside the engine by ``--trt --fp16``).
  * TensorRT engines are fp32, fp16 or int8 (int8 needs calibration images).
  * pt2 (AOTInductor) packages are fp32 only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpn_edge.errors import LpnEdgeError

PRECISIONS = ("fp32", "fp16", "int8")
MIN_CALIBRATION_IMAGES = 32


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table."""

    name: str  # the value in `formats` and the command-line flag without "--"
    suffix: str  # file suffix of the main artifact
    precisions: tuple[str, ...]  # precisions this format can be written in
    accepts_split: bool  # can also write the backbone-only graph (feature map out) for the runtime's ring kernel
    python_modules: tuple[str, ...]  # imports needed to write and check it
    install_hint: str  # what to do when python_module is missing
    description: str

    def needs_calibration(self, precision: str) -> bool:
        return precision == "int8"


FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (
        ExportFormat("onnx", ".onnx", ("fp32", "int8"), True, ("onnx", "onnxscript", "onnxruntime"),
                     'pip install "lpn-edge[onnx]"',
                     "ONNX graph (opset >= 17, dynamic batch), checked with ONNX Runtime CPU; int8 = Q/DQ ONNX"),
        ExportFormat("trt", ".engine", ("fp32", "fp16", "int8"), True, ("tensorrt",),
                     'pip install "lpn-edge[trt]" on x86-64 Linux, or use the TensorRT that JetPack ships on Jetson',
                     "TensorRT engine built from the ONNX for this GPU, with a sidecar .json"),
        ExportFormat("pt2", ".pt2", ("fp32",), False, ("torch",),
                     'pip install "lpn-edge[train]"',
                     "AOTInductor package: compiled model that runs without the model's Python code"),
    )
}


@dataclass(frozen=True)
class ExportRequest:
    """A checked export request: every field is valid and the combination makes sense."""

    formats: frozenset[str]  # what will be built ("trt" adds "onnx")
    requested: frozenset[str]  # what the user asked for
    precision: str
    calib_dir: Path | None
    view: str
    batch: tuple[int, int, int]
    size: tuple[int, int] | None
    split: bool
    flip: bool
    opset: int
    workspace_mb: int

    @property
    def build_order(self) -> tuple[str, ...]:
        """Formats in the order they are built (ONNX first: TensorRT builds from it)."""
        return tuple(name for name in FORMATS if name in self.formats)


def parse_batch(text: str) -> tuple[int, int, int]:
    """"MIN:OPT:MAX" -> (min, opt, max) with 1 <= min <= opt <= max."""
    pieces = text.split(":")
    try:
        values = tuple(int(p) for p in pieces)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise LpnEdgeError(f"--batch must be MIN:OPT:MAX with three integers, e.g. 1:8:32; got {text!r}")
    return check_batch(values)  # type: ignore[arg-type]


def check_batch(batch: tuple[int, int, int]) -> tuple[int, int, int]:
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise LpnEdgeError(f"--batch must satisfy 1 <= MIN <= OPT <= MAX; got {lo}:{opt}:{hi}")
    return (lo, opt, hi)


def parse_size(text: str) -> tuple[int, int]:
    """"H,W" -> (H, W) in pixels."""
    pieces = text.replace("x", ",").split(",")
    try:
        values = tuple(int(p) for p in pieces)
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 1:
        raise LpnEdgeError(f"--size must be H,W in pixels, e.g. 256,256; got {text!r}")
    return values  # type: ignore[return-value]


def check_request(formats: set[str] | frozenset[str], precision: str = "fp32", calib_dir: Path | str | None = None,
                  view: str = "drone", batch: tuple[int, int, int] = (1, 8, 32),
                  size: tuple[int, int] | None = None, split: bool = False, flip: bool = True, opset: int = 18,
                  workspace_mb: int = 2048) -> ExportRequest:
    """Refuse every combination that makes no sense, before any work; return the checked request.

    Model-dependent checks (view, size vs backbone stride, split vs pool) are in `check_against_model`.
    """
    formats = requested = frozenset(formats)
    if not formats:
        raise LpnEdgeError("choose at least one export format: --onnx, --trt or --pt2")
    unknown = sorted(formats - set(FORMATS))
    if unknown:
        raise LpnEdgeError(f"unknown export format {unknown[0]!r}; expected one of {', '.join(FORMATS)}")
    if "trt" in formats:
        formats = formats | {"onnx"}  # the engine is built from the ONNX graph
    if precision not in PRECISIONS:
        raise LpnEdgeError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    for name in sorted(formats):
        fmt = FORMATS[name]
        # fp16 reaches ONNX only as an intermediate of the TensorRT build, so --trt --fp16 is fine.
        if precision not in fmt.precisions and not (name == "onnx" and "trt" in formats):
            raise LpnEdgeError(_precision_refusal(name, precision))
        if split and not fmt.accepts_split:
            raise LpnEdgeError(f"--split is not available for --{name} (the split graph feeds the runtime's ring "
                               f"kernel; formats that accept it: "
                               f"{', '.join('--' + f.name for f in FORMATS.values() if f.accepts_split)})")
    if precision == "int8" and calib_dir is None:
        raise LpnEdgeError(f"--int8 needs --calib DIR: a folder of at least {MIN_CALIBRATION_IMAGES} images like the "
                           "ones the model will see")
    if precision != "int8" and calib_dir is not None:
        raise LpnEdgeError("--calib is only used with --int8 (calibration images set the int8 scales)")
    if calib_dir is not None and not Path(calib_dir).is_dir():
        raise LpnEdgeError(f"--calib {calib_dir} is not a folder")
    if opset < 17:
        raise LpnEdgeError(f"opset must be >= 17, got {opset}")
    if workspace_mb < 1:
        raise LpnEdgeError(f"workspace_mb must be >= 1, got {workspace_mb}")
    if size is not None and (len(size) != 2 or min(size) < 32):
        raise LpnEdgeError(f"--size must be H,W with both >= 32 pixels; got {size}")
    return ExportRequest(formats=formats, requested=requested, precision=precision, calib_dir=Path(calib_dir) if calib_dir else None,
                         view=view, batch=check_batch(tuple(batch)), size=tuple(size) if size else None,
                         split=split, flip=flip, opset=opset, workspace_mb=workspace_mb)


def check_against_model(request: ExportRequest, model_config, stride_of_backbone: int) -> tuple[int, int]:
    """Checks that need the checkpoint's config; returns the image size (H, W) to export at.

    `model_config` is a `ModelConfig`; `stride_of_backbone` is how much the backbone shrinks the input (16 or 32).
    """
    size = request.size or tuple(model_config.image_size)
    bad = [s for s in size if s % stride_of_backbone]
    if bad:
        raise LpnEdgeError(f"--size {size[0]},{size[1]} is not a multiple of the backbone stride "
                           f"{stride_of_backbone} ({model_config.backbone}, stride {model_config.stride}); e.g. "
                           f"{_round(size[0], stride_of_backbone)},{_round(size[1], stride_of_backbone)}")
    if request.split and model_config.pool != "avg":
        raise LpnEdgeError(f"--split needs avg pooling (the split heads pool with one linear ring-weight matrix); "
                           f"this checkpoint uses pool {model_config.pool!r}")
    return size  # type: ignore[return-value]


def check_modules(request: ExportRequest) -> None:
    """Every Python module the requested formats need must be importable; checked before any work."""
    import importlib.util

    for name in request.build_order:
        fmt = FORMATS[name]
        missing = [m for m in fmt.python_modules if importlib.util.find_spec(m) is None]
        if missing:
            raise LpnEdgeError(f"--{name} needs the Python package {missing[0]!r}, which is not installed: "
                               f"{fmt.install_hint}")


def _precision_refusal(name: str, precision: str) -> str:
    fmt = FORMATS[name]
    if name == "onnx" and precision == "fp16":
        return ("--fp16 applies to TensorRT engines: add --trt (the ONNX itself stays fp32; ONNX Runtime's CPU "
                "provider does not compute in fp16)")
    return f"--{name} supports {', '.join(fmt.precisions)}, not {precision}; export --{name} on its own run"


def _round(value: int, multiple: int) -> int:
    """The next multiple of `multiple` at or above `value`."""
    return -(-value // multiple) * multiple


def precision_from_flags(fp16: bool, int8: bool) -> str:
    if fp16 and int8:
        raise LpnEdgeError("--fp16 and --int8 exclude each other: choose one precision")
    return "fp16" if fp16 else "int8" if int8 else "fp32"
