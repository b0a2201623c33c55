"""The artifact contract: what an exported file says about itself, how it is read back and checked (DESIGN.md 5).

One metadata dict (`artifact_metadata`) travels
  * in an ONNX file's `metadata_props`: one entry per key, each value JSON-encoded (`encode_metadata`), read back
    with ONNX Runtime's own model metadata (`read_onnx_metadata`), so the `onnx` package is not needed to read it;
  * in the `.json` sidecar beside a TensorRT engine or a pt2 package (`sidecar_path`, `write_sidecar`,
    `read_sidecar`), together with what the artifact was built for (precision, TensorRT / CUDA versions, GPU);
  * in a split-heads `.npz` (`lpn_edge.runtime.split_heads`).
`check_engine_sidecar` refuses an engine built for another machine with one clear line before TensorRT deserialises
anything (a serialized engine is tied to its TensorRT version and GPU; elsewhere it crashes or fails obscurely).
Pure Python plus onnxruntime for ONNX files: tested everywhere, used by the exporter to write what it reads here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write_text, file_fingerprint
from lpn_edge.runtime.preprocessing import preprocessing_spec

LAYOUT = "channel*n+part"  # embedding index = channel * n + part (the authors' layout)
SIDECAR_FORMAT = "lpn-edge-artifact"
# Keys that must be equal between an engine's sidecar and the machine loading it, with what to call them.
ENGINE_MUST_MATCH = {
    "tensorrt_version": "TensorRT version",
    "gpu_name": "GPU",
    "compute_capability": "GPU compute capability",
}


def artifact_metadata(config: dict, *, view: str, flip: bool, size: tuple[int, int], source: Path,
                      source_fingerprint: str, output: str, opset: int | None = None) -> dict[str, Any]:
    """The description every exported artifact carries.

    config: the checkpoint's RunConfig as a dict. output: "embedding" (N, bottleneck * n) or "feature_map"
    (N, C, h, w) for the split graph. size: (H, W) input pixels.
    """
    from lpn_edge import __version__

    model = config["model"]
    partition = model["ground_partition"] if view in ("ground", "google") else model["satellite_partition"]
    meta: dict[str, Any] = {
        "config": config,
        "preprocessing": preprocessing_spec(size),
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


def encode_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """The ONNX `metadata_props` form of `meta`: {key: JSON text} (inverse of `decode_metadata`)."""
    return {key: json.dumps(value, sort_keys=True) for key, value in meta.items()}


def decode_metadata(props: Mapping[str, str], where: str | Path) -> dict[str, Any]:
    """{key: JSON text} -> the metadata dict; LpnEdgeError naming `where` when it is not lpn-edge metadata."""
    meta = {}
    for key, text in props.items():
        try:
            meta[key] = json.loads(text)
        except json.JSONDecodeError:
            raise LpnEdgeError(f"{where}: metadata entry {key!r} is not JSON; not an lpn-edge export") from None
    if "source_fingerprint" not in meta:
        raise LpnEdgeError(f"{where} carries no lpn-edge metadata (exported by another tool?)")
    return meta


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dict an lpn-edge ONNX file carries, read through ONNX Runtime (no `onnx` package needed).

    The session is made on the CPU provider with graph optimisations off: only the file's header is wanted.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise LpnEdgeError(f"ONNX file {path} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception classes for unreadable files
        raise LpnEdgeError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    return decode_metadata(session.get_modelmeta().custom_metadata_map, path)


def sidecar_path(artifact: str | Path) -> Path:
    """`model.engine` -> `model.engine.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write `meta` as the JSON sidecar at `path` (atomically), tagged with `SIDECAR_FORMAT`."""
    return atomic_write_text(path, json.dumps({"format": SIDECAR_FORMAT, **meta}, indent=2, sort_keys=True) + "\n")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar's dict; LpnEdgeError when it is missing, not JSON or not an lpn-edge sidecar."""
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


def read_artifact_sidecar(path: Path, what: str) -> dict[str, Any]:
    """The sidecar of the artifact at `path`, checked to describe this very file (fingerprint); `what` names the
    artifact in the message ("engine", "package")."""
    meta = read_sidecar(sidecar_path(path))
    recorded = meta.get("artifact_fingerprint")
    if recorded != file_fingerprint(path):
        raise LpnEdgeError(f"sidecar {sidecar_path(path).name} describes another file (fingerprint {recorded}), not "
                           f"{path.name}; re-export the {what}")
    return meta


def check_engine_sidecar(engine_path: str | Path, runtime_info: Mapping[str, str],
                         precision: str | None = None) -> dict[str, Any]:
    """Return the engine's sidecar metadata if the engine fits `runtime_info`, else raise LpnEdgeError.

    runtime_info: {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
    "cuda_version": "12.6"} of the machine about to load the engine (`trt_engine.runtime_info`). Checked: the
    sidecar exists and describes this very file (fingerprint), the TensorRT version, GPU name and compute capability
    are equal, the CUDA major version is equal; with `precision` ("fp32", "fp16", "int8"), the engine's too.
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise LpnEdgeError(f"TensorRT engine {engine_path} does not exist")
    meta = read_artifact_sidecar(engine_path, "engine")
    for key, what in ENGINE_MUST_MATCH.items():
        if key not in runtime_info:
            raise LpnEdgeError(f"runtime_info lacks {key!r} (needed to check {engine_path.name})")
        if str(meta.get(key)) != str(runtime_info[key]):
            raise LpnEdgeError(f"{engine_path.name} was built for {what} {meta.get(key)}, this machine has "
                               f"{runtime_info[key]}; rebuild it here with `lpn-edge export --trt`")
    built_cuda, here_cuda = str(meta.get("cuda_version", "")), str(runtime_info.get("cuda_version", ""))
    if built_cuda.split(".")[0] != here_cuda.split(".")[0]:
        raise LpnEdgeError(f"{engine_path.name} was built with CUDA {built_cuda}, this machine has CUDA {here_cuda}; "
                           "rebuild it here with `lpn-edge export --trt`")
    if precision is not None and meta.get("precision") != precision:
        raise LpnEdgeError(f"{engine_path.name} is a {meta.get('precision')} engine, not {precision}; export one with "
                           f"`lpn-edge export --trt --{precision}`")
    return meta
