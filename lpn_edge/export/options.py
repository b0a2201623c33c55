"""`ExportOptions`: every export option and its default, in one place, and the checks that refuse a bad request.

The command line (`export.cli`) takes its defaults and flags from here, `export_model` takes an `ExportOptions`;
nothing else repeats a default. An option is "given" when it differs from its default; a format-specific option
given while no chosen format uses it (the `options` column of `formats.FORMATS`, e.g. `--batch` with `--onnx`
alone) is refused with one line, never silently dropped. Imports nothing heavy (the command line's help).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.formats import FORMATS, PRECISIONS, flags

MIN_CALIBRATION_IMAGES = 32


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how. Sizes in pixels; batch sizes in images.

    formats: subset of `FORMATS` ("onnx", "trt", "pt2"; "trt" builds from "onnx", which is then written too).
    precision: "fp32", "fp16" (TensorRT only) or "int8" (needs `calib`, a folder of >= 32 images).
    view: the view whose embedding is exported. batch: (min, opt, max) for the TensorRT profile and the pt2 batch
    range (the ONNX batch is unbounded). size: (H, W) input, None = the checkpoint's image_size. split: also write
    the backbone-only graph (feature map (N, C, h, w) out) and its folded heads (.npz). flip: bake test-time flip
    into the graphs. opset: ONNX opset (>= 17). workspace_mb: TensorRT builder workspace, MiB.
    parity_queries + parity_gallery: images per parity set; parity_data: a folder in University-1652 layout
    (drone/, satellite/) whose photos form a second parity set (None: random images only).
    """

    formats: frozenset[str] = frozenset()
    precision: str = "fp32"
    calib: Path | None = None
    view: str = "drone"
    batch: tuple[int, int, int] = (1, 8, 32)
    size: tuple[int, int] | None = None
    split: bool = False
    flip: bool = True
    opset: int = 18
    workspace_mb: int = 2048
    parity_queries: int = 32
    parity_gallery: int = 64
    parity_data: Path | None = None

    def __post_init__(self) -> None:  # plain types whatever the caller passed (a set, a list, a str path)
        normal = dict(formats=frozenset(self.formats), batch=tuple(int(b) for b in self.batch),
                      size=tuple(int(s) for s in self.size) if self.size is not None else None,
                      calib=Path(self.calib) if self.calib is not None else None,
                      parity_data=Path(self.parity_data) if self.parity_data is not None else None)
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    @property
    def build_order(self) -> tuple[str, ...]:
        """The formats that are written, with the ones they are built from, in table (build) order."""
        wanted = set(self.formats) | {base for name in self.formats if name in FORMATS
                                      for base in FORMATS[name].builds_from}
        return tuple(name for name in FORMATS if name in wanted)

    def replace(self, **changes) -> ExportOptions:
        return dataclasses.replace(self, **changes)


DEFAULTS = ExportOptions()
# The command-line flag of each option, for messages and for the command line itself.
OPTION_FLAGS = {"precision": "--fp16/--int8", "calib": "--calib", "view": "--view", "batch": "--batch",
                "size": "--size", "split": "--split", "flip": "--no-flip", "opset": "--opset",
                "workspace_mb": "--workspace-mb", "parity_data": "--parity-data"}


def check_options(options: ExportOptions) -> None:
    """Refuse every combination that makes no sense, before any work (one line each).

    Model-dependent checks (view, size vs backbone stride, split vs pool) are in `check_against_model`.
    """
    if not options.formats:
        names = [fmt.flag for fmt in FORMATS.values()]
        raise LpnEdgeError(f"choose at least one export format: {', '.join(names[:-1])} or {names[-1]}")
    unknown = sorted(options.formats - set(FORMATS))
    if unknown:
        raise LpnEdgeError(f"unknown export format {unknown[0]!r}; expected one of {', '.join(FORMATS)}")
    if options.precision not in PRECISIONS:
        raise LpnEdgeError(f"precision must be one of {', '.join(PRECISIONS)}; got {options.precision!r}")
    built = options.build_order
    for name in built:
        fmt = FORMATS[name]
        # a format written only because another builds from it takes that one's precision (the fp16 engine is
        # built from an fp32 ONNX and its fp16 copy), so only the requested formats are checked
        if name in options.formats and options.precision not in fmt.precisions:
            raise LpnEdgeError(_precision_refusal(name, options.precision))
        if options.split and not fmt.accepts_split:
            raise LpnEdgeError(f"--split is not available for {fmt.flag} (the split graph feeds the runtime's ring "
                               f"kernel; formats that accept it: "
                               f"{', '.join(f.flag for f in FORMATS.values() if f.accepts_split)})")
    _refuse_unused(options, built)
    if options.precision == "int8" and options.calib is None:
        raise LpnEdgeError(f"--int8 needs --calib DIR: a folder of at least {MIN_CALIBRATION_IMAGES} images like the "
                           "ones the model will see")
    if options.precision != "int8" and options.calib is not None:
        raise LpnEdgeError("--calib is only used with --int8 (calibration images set the int8 scales)")
    if options.calib is not None and not options.calib.is_dir():
        raise LpnEdgeError(f"--calib {options.calib} is not a folder")
    if options.parity_data is not None and not options.parity_data.is_dir():
        raise LpnEdgeError(f"--parity-data {options.parity_data} is not a folder")
    if options.opset < 17:
        raise LpnEdgeError(f"opset must be >= 17, got {options.opset}")
    if options.workspace_mb < 1:
        raise LpnEdgeError(f"workspace_mb must be >= 1, got {options.workspace_mb}")
    if options.size is not None and (len(options.size) != 2 or min(options.size) < 32):
        raise LpnEdgeError(f"--size must be H,W with both >= 32 pixels; got {options.size}")
    if min(options.parity_queries, options.parity_gallery) < 1:
        raise LpnEdgeError(f"parity_queries and parity_gallery must be >= 1; got {options.parity_queries} and "
                           f"{options.parity_gallery}")
    check_batch(options.batch)


def _refuse_unused(options: ExportOptions, built: tuple[str, ...]) -> None:
    """A format-specific option given (not its default) while none of the `built` formats uses it."""
    specific = sorted(set().union(*(fmt.options for fmt in FORMATS.values())))
    for name in specific:
        if getattr(options, name) == getattr(DEFAULTS, name) or any(name in FORMATS[b].options for b in built):
            continue
        users = [fmt.flag for fmt in FORMATS.values() if name in fmt.options]
        raise LpnEdgeError(f"{OPTION_FLAGS[name]} is not used by {flags(options.formats)} (it applies to "
                           f"{' and '.join(users)}); leave it out")


def parse_batch(text: str) -> tuple[int, int, int]:
    """"MIN:OPT:MAX" -> (min, opt, max) with 1 <= min <= opt <= max."""
    try:
        values = tuple(int(p) for p in text.split(":"))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise LpnEdgeError(f"--batch must be MIN:OPT:MAX with three integers, e.g. 1:8:32; got {text!r}")
    return check_batch(values)  # type: ignore[arg-type]


def batch_text(batch: tuple[int, int, int]) -> str:
    """(1, 8, 32) -> "1:8:32" (the form `parse_batch` reads)."""
    return ":".join(str(b) for b in batch)


def check_batch(batch: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(batch) != 3:
        raise LpnEdgeError(f"--batch must be MIN:OPT:MAX, three sizes; got {batch}")
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise LpnEdgeError(f"--batch must satisfy 1 <= MIN <= OPT <= MAX; got {lo}:{opt}:{hi}")
    return (lo, opt, hi)


def parse_size(text: str) -> tuple[int, int]:
    """"H,W" (or "HxW") -> (H, W) in pixels."""
    try:
        values = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 1:
        raise LpnEdgeError(f"--size must be H,W in pixels, e.g. 256,256; got {text!r}")
    return values  # type: ignore[return-value]


def precision_from_flags(fp16: bool, int8: bool) -> str:
    if fp16 and int8:
        raise LpnEdgeError("--fp16 and --int8 exclude each other: choose one precision")
    return "fp16" if fp16 else "int8" if int8 else "fp32"


def check_against_model(options: ExportOptions, model_config, stride_of_backbone: int) -> tuple[int, int]:
    """Checks that need the checkpoint's config; returns the image size (H, W) to export at.

    `model_config` is a `ModelConfig`; `stride_of_backbone` is how much the backbone shrinks the input (16 or 32).
    """
    size = options.size or tuple(model_config.image_size)
    if any(s % stride_of_backbone for s in size):
        raise LpnEdgeError(f"--size {size[0]},{size[1]} is not a multiple of the backbone stride "
                           f"{stride_of_backbone} ({model_config.backbone}, stride {model_config.stride}); e.g. "
                           f"{_round(size[0], stride_of_backbone)},{_round(size[1], stride_of_backbone)}")
    if options.split and model_config.pool != "avg":
        raise LpnEdgeError(f"--split needs avg pooling (the split heads pool with one linear ring-weight matrix); "
                           f"this checkpoint uses pool {model_config.pool!r}")
    return size  # type: ignore[return-value]


def check_modules(options: ExportOptions) -> None:
    """Every Python module the formats to build need must be importable; checked before any work."""
    import importlib.util

    for name in options.build_order:
        fmt = FORMATS[name]
        missing = [m for m in fmt.python_modules if importlib.util.find_spec(m) is None]
        if missing:
            raise LpnEdgeError(f"{fmt.flag} needs the Python package {missing[0]!r}, which is not installed: "
                               f"{fmt.install_hint}")


def _precision_refusal(name: str, precision: str) -> str:
    fmt = FORMATS[name]
    if name == "onnx" and precision == "fp16":
        return ("--fp16 applies to TensorRT engines: add --trt (the ONNX itself stays fp32; ONNX Runtime's CPU "
                "provider does not compute in fp16)")
    return f"{fmt.flag} supports {', '.join(fmt.precisions)}, not {precision}; export {fmt.flag} on its own run"


def _round(value: int, multiple: int) -> int:
    """The next multiple of `multiple` at or above `value`."""
    return -(-value // multiple) * multiple
