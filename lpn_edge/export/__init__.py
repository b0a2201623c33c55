"""Export stage: ONNX, TensorRT engines, AOTInductor packages, int8 quantization, parity checks.

The build side of the artifact contract: it writes what `lpn_edge.runtime` reads, by importing it (never the
reverse). Modules, one concern each:
    options       ExportOptions (every option and default) and the checks that refuse a bad request
    formats       the format table: suffix, flag, precisions, options used, builder
    pipeline      export_model: the export job that composes the format modules and owns the parity checks
    parity        parity image sets, thresholds, figures and the check
    reference     the PyTorch fp32 reference embeddings
    calibration   int8 calibration images, decoded a batch at a time
    pooling       the exportable embedding module and how its pooling is found in the ONNX graph
    split         the split export's torch side (backbone-only module, BatchNorm-folded heads)
    onnx_export   torch -> ONNX (dynamic batch, metadata, checks)
    onnx_graph    ModelProto helpers: graph surgery, metadata_props
    fp16          fp16 copy of an ONNX graph
    int8_placements  the int8 graphs --int8 writes: quantize (TensorRT's Q/DQ placement), quantize_cpu (ONNX
                  Runtime CPU's)
    tensorrt, trt_plan  building TensorRT engines; the per-version build decisions
    pt2           AOTInductor packages
    cli           `lpn-edge export`

Names are imported lazily (this package is imported by the command line, whose `--help` must stay instant):
`export_model`, `ExportOptions`, `ExportResult`, `FORMATS`, `PARITY_THRESHOLDS`; the reading side
(`read_onnx_metadata`, `check_engine_sidecar`, `load_split_heads`, `split_head_embedding`) is `lpn_edge.runtime`'s.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "export_model": "lpn_edge.export.pipeline",
    "ExportResult": "lpn_edge.export.pipeline",
    "ExportOptions": "lpn_edge.export.options",
    "FORMATS": "lpn_edge.export.formats",
    "PARITY_THRESHOLDS": "lpn_edge.export.parity",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lpn_edge.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
