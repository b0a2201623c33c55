"""Artifact metadata: what an exported file is, where it came from and how to feed it (DESIGN.md section 5).

The same dict travels in an ONNX file's `metadata_props` (one entry per key, each value JSON-encoded so that
`read_onnx_metadata` returns exactly what was written) and in the `.json` sidecar beside a TensorRT engine or a
pt2 package.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.images import preprocessing

LAYOUT = "channel*n+part"  # embedding index = channel * n + part (the authors' layout)
SIDECAR_FORMAT = "lpn-edge-artifact"


def artifact_metadata(config: dict, *, view: str, flip: bool, size: tuple[int, int], source: Path,
                      source_fingerprint: str, output: str, opset: int | None = None) -> dict[str, Any]:
    """The description every exported artifact carries.

    config: the checkpoint's RunConfig as a dict. output: "embedding" (N, bottleneck * n) or "feature_map"
    (N, C, h, w) for the split graph.
    """
    from lpn_edge import __version__

    model = config["model"]
    partition = model["ground_partition"] if view in ("ground", "google") else model["satellite_partition"]
    meta: dict[str, Any] = {
        "config": config,
        "preprocessing": preprocessing(size),
        "input": "images",
        "output": output,
        "parts": model["parts"],
        "partition": partition,
        "pool": model["pool"],
        "layout": LAYOUT,
        "embedding_dim": model["bottleneck"] * model["parts"],
        "view": view,
        "flip": flip,
        "source_checkpoint": Path(source).name,
        "source_fingerprint": source_fingerprint,
        "lpn_edge_version": __version__,
        "export_date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if opset is not None:
        meta["opset"] = opset
    return meta


def set_onnx_metadata(model_proto, meta: dict[str, Any]) -> None:
    """Replace the ModelProto's metadata_props with `meta` (values JSON-encoded)."""
    del model_proto.metadata_props[:]
    for key, value in meta.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value, sort_keys=True)


def rewrite_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Replace the metadata of the ONNX file at `path` (e.g. a converted copy that must state its own precision)."""
    import onnx

    proto = onnx.load(str(path))
    set_onnx_metadata(proto, meta)
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dict an lpn-edge ONNX file carries (inverse of `set_onnx_metadata`)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise LpnEdgeError(f"ONNX file {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a non-ONNX file
        raise LpnEdgeError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    meta = {}
    for entry in proto.metadata_props:
        try:
            meta[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            raise LpnEdgeError(f"{path}: metadata entry {entry.key!r} is not JSON; not an lpn-edge export") from None
    if "source_fingerprint" not in meta:
        raise LpnEdgeError(f"{path} carries no lpn-edge metadata (exported by another tool?)")
    return meta


def write_sidecar(path: Path, meta: dict[str, Any]) -> Path:
    """Write `meta` as the JSON sidecar at `path` (atomically)."""
    from lpn_edge.fileio import atomic_write_text

    return atomic_write_text(path, json.dumps({"format": SIDECAR_FORMAT, **meta}, indent=2, sort_keys=True) + "\n")


def read_sidecar(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LpnEdgeError(f"sidecar {path} is missing: it describes the artifact beside it; re-export") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise LpnEdgeError(f"sidecar {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise LpnEdgeError(f"{path} is not an lpn-edge sidecar (format should be {SIDECAR_FORMAT!r})")
    return data


def sidecar_path(artifact: Path) -> Path:
    """`model.engine` -> `model.engine.json`."""
    return artifact.with_name(artifact.name + ".json")
