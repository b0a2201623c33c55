"""`lpn-edge export`: parse the options, call `export_model`, print what was written and the parity figures.

Only typer, pathlib and typing are imported at the top: the command line imports this module to build its help,
which must stay instant. Register with `app.command("export")(friendly_errors(export_command))`.
"""

from pathlib import Path
from typing import Optional

import typer


def export_command(
    ckpt: Path = typer.Argument(..., help="lpn-edge checkpoint (.pt) to export."),
    onnx: bool = typer.Option(False, "--onnx", help="Write the ONNX graph (opset >= 17, dynamic batch)."),
    trt: bool = typer.Option(False, "--trt", help="Build a TensorRT engine for this GPU (writes the ONNX first)."),
    pt2: bool = typer.Option(False, "--pt2", help="Compile an AOTInductor package (.pt2)."),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 TensorRT engine."),
    int8: bool = typer.Option(False, "--int8", help="int8: Q/DQ ONNX and/or int8 engine; needs --calib."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of >= 32 calibration images for --int8."),
    view: str = typer.Option("drone", "--view", help="View whose embedding is exported: satellite, drone, ground."),
    batch: str = typer.Option("1:8:32", "--batch", help="MIN:OPT:MAX batch sizes for the engine profile / pt2."),
    size: Optional[str] = typer.Option(None, "--size", help="Input size H,W in pixels (default: the model's)."),
    split: bool = typer.Option(False, "--split", help="Also write the backbone-only graph and its heads (.npz)."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Leave test-time flip out of the graph."),
    out: Path = typer.Option(Path("export"), "--out", help="Output folder."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (>= 17; torch exports the full graph at 18)."),
    workspace_mb: int = typer.Option(2048, "--workspace-mb", help="TensorRT builder workspace in MiB."),
):
    """Export a checkpoint to ONNX, TensorRT and/or AOTInductor and check each artifact against PyTorch.

    Example: lpn-edge export demo-out/lpn/model.pt --onnx --split --out demo-out/export  (after lpn-edge demo)
    On a GPU with TensorRT: lpn-edge export demo-out/lpn/model.pt --trt --fp16
    """
    from lpn_edge.export.formats import parse_batch, parse_size, precision_from_flags
    from lpn_edge.export.pipeline import export_model

    if out.exists() and not out.is_dir():
        from lpn_edge.errors import LpnEdgeError

        raise LpnEdgeError(f"--out {out} is a file; give a folder for the exported artifacts")
    formats = {name for name, wanted in (("onnx", onnx), ("trt", trt), ("pt2", pt2)) if wanted}
    result = export_model(
        ckpt, out, formats, precision=precision_from_flags(fp16, int8), calib_dir=calib, view=view,
        batch=parse_batch(batch), size=parse_size(size) if size is not None else None, split=split,
        flip=not no_flip, opset=opset, workspace_mb=workspace_mb, progress=typer.echo,
    )
    for artifact in result.artifacts:
        typer.echo(f"wrote {artifact.path} ({artifact.format}, {artifact.precision}, {artifact.role})")
    typer.echo(f"parity: all {len(result.parity)} checks passed")
