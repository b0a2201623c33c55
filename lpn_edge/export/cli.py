"""`lpn-edge export`: parse the options, call `export_model`, print what was written and the parity figures.

Defaults, flags and the formats' help come from `ExportOptions` / `OPTION_FLAGS` (`export.options`) and the format
table (`export.formats`); nothing is repeated here. Only typer, pathlib, typing and those two light modules are
imported at the top: the command line imports this module to build its help, which must stay instant. Register
with `app.command("export")(friendly_errors(export_command))`.
"""

from pathlib import Path

import typer

from lpn_edge.export.formats import FORMATS
from lpn_edge.export.options import DEFAULTS, MIN_CALIBRATION_IMAGES, OPTION_FLAGS, batch_text


def export_command(
    ckpt: Path = typer.Argument(..., help="lpn-edge checkpoint (.pt) to export."),
    onnx: bool = typer.Option(False, FORMATS["onnx"].flag, help=FORMATS["onnx"].help),
    trt: bool = typer.Option(False, FORMATS["trt"].flag, help=FORMATS["trt"].help),
    pt2: bool = typer.Option(False, FORMATS["pt2"].flag, help=FORMATS["pt2"].help),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 TensorRT engine."),
    int8: bool = typer.Option(False, "--int8", help="int8: Q/DQ ONNX and/or int8 engine; needs --calib."),
    calib: Path | None = typer.Option(DEFAULTS.calib, OPTION_FLAGS["calib"],
                                         help=f"Folder of >= {MIN_CALIBRATION_IMAGES} calibration images for --int8."),
    view: str = typer.Option(DEFAULTS.view, OPTION_FLAGS["view"],
                             help="View whose embedding is exported: satellite, drone, ground."),
    batch: str = typer.Option(batch_text(DEFAULTS.batch), OPTION_FLAGS["batch"],
                              help="MIN:OPT:MAX batch sizes for the engine profile / pt2 (--trt, --pt2)."),
    size: str | None = typer.Option(None, OPTION_FLAGS["size"],
                                       help="Input size H,W in pixels (default: the model's)."),
    split: bool = typer.Option(DEFAULTS.split, OPTION_FLAGS["split"],
                               help="Also write the backbone-only graph and its heads (.npz)."),
    no_flip: bool = typer.Option(not DEFAULTS.flip, OPTION_FLAGS["flip"],
                                 help="Leave test-time flip out of the graph."),
    out: Path = typer.Option(Path("export"), "--out", help="Output folder."),
    opset: int = typer.Option(DEFAULTS.opset, OPTION_FLAGS["opset"],
                              help="ONNX opset (>= 17; torch exports the full graph at 18)."),
    workspace_mb: int = typer.Option(DEFAULTS.workspace_mb, OPTION_FLAGS["workspace_mb"],
                                     help="TensorRT builder workspace in MiB (--trt)."),
    parity_data: Path | None = typer.Option(DEFAULTS.parity_data, OPTION_FLAGS["parity_data"],
                                               help="Folder of real photos (University-1652 layout: drone/, "
                                                    "satellite/) for a second parity set; default random images only."),
):
    """Export a checkpoint to ONNX, TensorRT and/or AOTInductor and check each artifact against PyTorch.

    Example: lpn-edge export demo-out/lpn/model.pt --onnx --split --out demo-out/export  (after lpn-edge demo)
    On a GPU with TensorRT: lpn-edge export demo-out/lpn/model.pt --trt --fp16
    """
    from lpn_edge.errors import LpnEdgeError
    from lpn_edge.export.options import ExportOptions, parse_batch, parse_size, precision_from_flags
    from lpn_edge.export.pipeline import export_model

    if out.exists() and not out.is_dir():
        raise LpnEdgeError(f"--out {out} is a file; give a folder for the exported artifacts")
    formats = {name for name, wanted in (("onnx", onnx), ("trt", trt), ("pt2", pt2)) if wanted}
    options = ExportOptions(formats=frozenset(formats), precision=precision_from_flags(fp16, int8), calib=calib,
                            view=view, batch=parse_batch(batch), size=parse_size(size) if size is not None else None,
                            split=split, flip=not no_flip, opset=opset, workspace_mb=workspace_mb,
                            parity_data=parity_data)
    result = export_model(ckpt, out, options, progress=typer.echo)
    for artifact in result.artifacts:
        typer.echo(f"wrote {artifact.path} ({artifact.format}, {artifact.precision}, {artifact.role})")
    typer.echo(f"parity: all {len(result.parity)} checks passed")
