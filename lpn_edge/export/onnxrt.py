"""Running an exported ONNX graph with ONNX Runtime's CPU provider (the parity backend available everywhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError

BACKEND = "onnxruntime-cpu"
BATCH = 16


def run_onnx(path: Path, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """(N, 3, H, W) float32 images -> the graph's single output for all N, computed in batches of `batch`.

    Uses the CPU provider only, named explicitly, so the figures never come from another provider by accident.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception classes for unloadable graphs
        raise LpnEdgeError(f"ONNX Runtime cannot load {path.name} ({type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0][:200]})") from None
    (output,) = session.get_outputs()
    input_name = session.get_inputs()[0].name
    chunks = [session.run([output.name], {input_name: np.ascontiguousarray(images[i:i + batch])})[0]
              for i in range(0, len(images), batch)]
    return np.concatenate(chunks)
