"""Export stage: ONNX, TensorRT engines, AOTInductor packages, int8 quantization, parity checks, metadata.

Names are imported lazily (this package is imported by the command line, whose `--help` must stay instant):
`export_model`, `ExportResult`, `read_onnx_metadata`, `split_head_embedding`, `load_split_heads`,
`check_engine_sidecar`, `FORMATS`, `PARITY_THRESHOLDS`.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "export_model": "lpn_edge.export.pipeline",
    "ExportResult": "lpn_edge.export.pipeline",
    "read_onnx_metadata": "lpn_edge.export.metadata",
    "split_head_embedding": "lpn_edge.export.split_heads",
    "load_split_heads": "lpn_edge.export.split_heads",
    "check_engine_sidecar": "lpn_edge.export.sidecar",
    "FORMATS": "lpn_edge.export.formats",
    "PARITY_THRESHOLDS": "lpn_edge.export.parity",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lpn_edge.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
