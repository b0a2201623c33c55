"""int8 for ONNX Runtime's CPU provider: an fp32 ONNX graph -> a QDQ graph that ONNX Runtime runs in int8.

`quantize` places Q/DQ the way TensorRT wants it: each Conv's inputs are quantized but its output is left in fp32 so
that TensorRT fuses Conv + residual Add + ReLU. ONNX Runtime's CPU provider turns DequantizeLinear -> Conv into
an int8 QLinearConv only when the Conv's output goes through QuantizeLinear too; on the TensorRT graph it runs fp32
Convs between the Q/DQ pairs, slower than the fp32 graph (BENCHMARKS.md "int8 on ONNX Runtime's CPU provider").
So the CPU artifact uses ONNX Runtime's own placement, from its quantization tool (`onnxruntime.quantization`):
  * BatchNormalization folded into its Conv first (`quantize.fold_batch_norms`), so the folded weight is quantized;
  * `quantize_static` in QDQ format on the backbone's Conv, residual Add, Relu and MaxPool nodes: uint8
    activations with an asymmetric per-tensor scale and zero point (min-max over the calibration images), uint8
    weights with per-output-channel scales and zero points (see below). ONNX Runtime fuses these into
    QLinearConv / QLinearAdd at session start.
  * the ring pooling, the heads (and the Add that sums the image's and the mirror's pooled features) and the
    normalisation tail stay fp32, as in `quantize`: < 0.1 % of the work, and where the heads magnify errors.
The weights are uint8 (per-channel, asymmetric), not int8: on an x86 CPU without VNNI (AVX2, AVX-512 before
Cascade Lake, AMD before Zen 4) ONNX Runtime multiplies uint8 x int8 with an instruction that sums pairs of products
in int16 and saturates, so the same graph gave different embeddings on different CPUs (on an AVX2 EPYC the tiny
test model fell to cosine 0.92 and failed its parity check, on an AVX-512 VNNI one it passed). uint8 x uint8 has no
saturating path: its integer products are exact on every CPU. Measured on a 2-core AVX2 EPYC, 2026-12-02 (BENCHMARKS.md
"int8 weights"): on the demo's trained model `eval --compare` gave cosine >= 0.99947 to the checkpoint (int8
weights: 0.98900; 7-bit int8 weights, ONNX Runtime's `reduce_range`: 0.99887); the ResNet-50 bench subject took
1.37x the time of int8 weights (374 against 272 ms, one thread). On Arm both run on the
same dot-product kernels; on x86 with VNNI uint8 weights give up the VNNI kernels (not measured here). ONNX Runtime's
session option that converts int8 weights at load time (`session.x64quantprecision`) fails to load this graph
(1.32.0: "Attempt to replace the existing tensor").
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from lpn_edge.export.quantize import calibration_batches, fold_batch_norms, residual_adds

CPU_QUANTIZED_OPS = ("Conv", "Add", "Relu", "MaxPool")
CPU_CALIBRATION_BATCH = 1  # images per calibration run (ONNX Runtime's calibrator keeps every output of every run)


def quantize_int8_cpu(source: Path, destination: Path, calibration) -> str:
    """Write the ONNX Runtime CPU int8 version of the ONNX graph `source` to `destination`; returns a summary line.

    calibration: (N, 3, H, W) float32 preprocessed images (the graph's `images` input) or a `CalibrationImages`.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(source))
    folded = fold_batch_norms(model)
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"lpn_edge_node_{index}"  # the tool selects nodes by name
    backbone_adds = {model.graph.node[index].name for index, _identity in residual_adds(model)}
    other_adds = [node.name for node in model.graph.node if node.op_type == "Add" and node.name not in backbone_adds]
    input_name = model.graph.input[0].name

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration_batches(calibration, CPU_CALIBRATION_BATCH))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch, np.float32)}

    with tempfile.TemporaryDirectory(prefix="lpn-edge-int8-") as scratch:
        # quantize_static reads a file and writes its calibration graph beside it: keep both out of the out dir
        folded_path = Path(scratch) / "folded.onnx"
        onnx.save(model, str(folded_path))
        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)  # the tool logs advice to the root logger ("consider pre-processing")
        try:
            quantize_static(str(folded_path), str(destination), Images(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(CPU_QUANTIZED_OPS), nodes_to_exclude=other_adds,
                            per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        finally:
            logging.disable(muted)
    onnx.checker.check_model(str(destination), full_check=True)
    quantized = onnx.load(str(destination), load_external_data=False)
    convs = sum(1 for node in quantized.graph.node if node.op_type == "Conv")
    return (f"ONNX Runtime CPU placement ({convs} Convs with uint8 activations and per-channel uint8 weights, "
            f"min-max scales over {len(calibration)} calibration images, {folded} BatchNorms folded)")
