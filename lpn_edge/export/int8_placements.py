"""The int8 ONNX graphs `lpn-edge export --onnx --int8` writes: one per consumer, because where the Q/DQ pairs go
decides which kernels a runtime can fuse them into.

    <stem>.int8.onnx      TensorRT placement (`quantize`): Conv inputs and residual identities quantized, Conv
                          outputs fp32 so TensorRT fuses Conv + Add + ReLU; what every TensorRT int8 engine is
                          built from. ONNX Runtime runs it, but as fp32 Convs between Q/DQ pairs (no speed-up).
    <stem>.int8-cpu.onnx  ONNX Runtime CPU placement (`quantize_cpu`): Q/DQ on both sides of every Conv, which
                          ONNX Runtime's CPU provider fuses into int8 QLinearConv / QLinearAdd kernels.
Each is written, then checked against PyTorch at the int8 thresholds like every other artifact. `--trt --int8`
alone writes only the TensorRT one: there the ONNX is the step before the engine, and the CPU graph's check must not
stop an engine build (`placements_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Int8Placement:
    suffix: str  # the file is <stem>.<suffix>.onnx
    target: str  # the runtime the Q/DQ layout is for; written to the metadata as "int8_target"

    def quantize(self, source: Path, destination: Path, calibration, metadata: dict | None = None) -> str:
        """Write the int8 graph of the fp32 lpn-edge ONNX `source` to `destination`, with the source's metadata
        (`metadata` when the caller holds it, else read from `source`) plus precision, int8_target and the
        quantizer's summary (returned, one line)."""
        from lpn_edge.export.onnx_graph import rewrite_onnx_metadata

        if metadata is None:
            from lpn_edge.runtime.artifact import read_onnx_metadata

            metadata = read_onnx_metadata(source)
        if self.target == "tensorrt":
            from lpn_edge.export.quantize import quantize_int8

            summary = quantize_int8(source, destination, calibration).summary()
        else:
            from lpn_edge.export.quantize_cpu import quantize_int8_cpu

            summary = quantize_int8_cpu(source, destination, calibration)
        rewrite_onnx_metadata(destination, {**metadata, "precision": "int8",
                                            "int8_target": self.target, "quantization": summary})
        return summary


INT8_PLACEMENTS = (Int8Placement("int8", "tensorrt"), Int8Placement("int8-cpu", "onnxruntime-cpu"))


def placements_for(formats) -> tuple[Int8Placement, ...]:
    """The int8 graphs an export of `formats` writes: the TensorRT one always (engines are built from it), the CPU
    one when ONNX itself is asked for."""
    return tuple(p for p in INT8_PLACEMENTS if p.target == "tensorrt" or "onnx" in formats)
