"""Refusing a TensorRT engine built for another machine: compare its sidecar with the runtime's description.

A serialized engine is tied to the TensorRT version and the GPU it was built on; loading it elsewhere crashes or
fails obscurely. `check_engine_sidecar` turns that into one clear message before deserialising anything. Pure
Python (no TensorRT needed), so it is tested everywhere.
"""

from __future__ import annotations

from pathlib import Path

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.metadata import read_sidecar, sidecar_path

# Keys that must be equal between the sidecar and the runtime, with what to say when they are not.
MUST_MATCH = {
    "tensorrt_version": "TensorRT version",
    "gpu_name": "GPU",
    "compute_capability": "GPU compute capability",
}


def check_engine_sidecar(engine_path: str | Path, runtime_info: dict) -> dict:
    """Return the engine's sidecar metadata if the engine fits `runtime_info`, else raise LpnEdgeError.

    runtime_info: {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
    "cuda_version": "12.6"} of the machine about to load the engine. Checked: the sidecar exists and describes this
    very file (fingerprint), the TensorRT version, GPU name and compute capability are equal, the CUDA major
    version is equal.
    """
    from lpn_edge.fileio import file_fingerprint

    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise LpnEdgeError(f"TensorRT engine {engine_path} does not exist")
    meta = read_sidecar(sidecar_path(engine_path))
    recorded = meta.get("artifact_fingerprint")
    if recorded != file_fingerprint(engine_path):
        raise LpnEdgeError(f"sidecar {sidecar_path(engine_path).name} describes another file (fingerprint "
                           f"{recorded}), not {engine_path.name}; re-export the engine")
    for key, what in MUST_MATCH.items():
        if key not in runtime_info:
            raise LpnEdgeError(f"runtime_info lacks {key!r} (needed to check {engine_path.name})")
        if str(meta.get(key)) != str(runtime_info[key]):
            raise LpnEdgeError(f"{engine_path.name} was built for {what} {meta.get(key)}, this machine has "
                               f"{runtime_info[key]}; rebuild it here with `lpn-edge export --trt`")
    built_cuda, here_cuda = str(meta.get("cuda_version", "")), str(runtime_info.get("cuda_version", ""))
    if built_cuda.split(".")[0] != here_cuda.split(".")[0]:
        raise LpnEdgeError(f"{engine_path.name} was built with CUDA {built_cuda}, this machine has CUDA {here_cuda}; "
                           "rebuild it here with `lpn-edge export --trt`")
    return meta
