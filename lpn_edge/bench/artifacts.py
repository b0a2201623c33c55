"""The benchmark's subjects on disk: what an artifact says about itself, and the checkpoint of the reference."""

from __future__ import annotations

import functools
from pathlib import Path

from lpn_edge.bench.options import BenchOptions
from lpn_edge.errors import LpnEdgeError

CHECKPOINT_SUFFIXES = (".pt", ".pth")
ENGINE_SUFFIXES = (".engine",)  # what `open_encoder` opens as a TensorRT engine


def artifact_info(path: Path) -> dict:
    """An ONNX artifact's metadata (empty for foreign graphs); engines: their sidecar when present. Read once per
    version of the file (reading an ONNX file's metadata loads the whole graph)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return {}
    return dict(_artifact_info(Path(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _artifact_info(path: Path, _mtime_ns: int, _size: int) -> dict:
    from lpn_edge.runtime.artifact import read_onnx_metadata, read_sidecar, sidecar_path

    try:
        if path.suffix == ".onnx":
            return read_onnx_metadata(path)
        if sidecar_path(path).is_file():
            return read_sidecar(sidecar_path(path))
    except LpnEdgeError:
        pass
    return {}


def find_reference(options: BenchOptions) -> Path | None:
    """--reference, else the first checkpoint among --model, else the checkpoint an artifact names, found in the
    artifact's folder or the one above it."""
    if options.reference is not None:
        return options.reference
    for model in options.models:
        if model.suffix in CHECKPOINT_SUFFIXES:
            return model
    for model in options.models:
        name = artifact_info(model).get("source_checkpoint")
        for folder in (model.parent, model.parent.parent):
            if name and (folder / name).is_file():
                return folder / name
    return None


def reference_model(path: Path, device: str = "cpu"):
    from lpn_edge.checkpoint import checkpoint_config, load_model, read_checkpoint

    config = checkpoint_config(read_checkpoint(path), path)
    return load_model(path, device).eval(), config
