"""int8 Q/DQ ONNX (checked on ONNX Runtime CPU with the int8 thresholds) and the fp16 ONNX converter."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from export_helpers import SMALL_PARITY, export_tiny_onnx, make_checkpoint, write_calibration_folder
from onnx import TensorProto, numpy_helper

from lpn_edge.checkpoint import load_model
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.export.fp16 import convert_to_fp16
from lpn_edge.export.onnx_export import pooling_nodes
from lpn_edge.export.parity import PARITY_THRESHOLDS
from lpn_edge.export.pooling import ring_weights
from lpn_edge.export.quantize import quantize_per_channel
from lpn_edge.runtime.artifact import read_onnx_metadata
from lpn_edge.runtime.onnx_runner import run_onnx


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    ckpt = make_checkpoint(root / "tiny.pt")
    calib = write_calibration_folder(root / "calib", 32)
    result = export_model(ckpt, root / "out", ExportOptions(formats={"onnx"}, precision="int8", calib=calib, split=True,
                                                            **SMALL_PARITY))
    return ckpt, root / "out", result


@pytest.mark.slow
def test_int8_qdq_onnx_meets_the_int8_thresholds(int8_export):
    _ckpt, out, result = int8_export
    assert {p.name for p in result.paths()} >= {"tiny-drone.int8.onnx", "tiny-drone.split.int8.onnx",
                                                "tiny-drone.int8-cpu.onnx", "tiny-drone.split.int8-cpu.onnx"}
    limit = PARITY_THRESHOLDS["int8"]
    int8_figures = [f for f in result.parity if f.precision == "int8"]
    assert {f.artifact for f in int8_figures} == {"tiny-drone.int8.onnx", "tiny-drone.split.int8.onnx",
                                                  "tiny-drone.int8-cpu.onnx", "tiny-drone.split.int8-cpu.onnx"}
    for f in int8_figures:
        assert f.min_cosine >= limit.min_cosine and f.mean_cosine >= limit.mean_cosine
        assert f.top1_agreement >= limit.min_top1_agreement
        assert f.mean_cosine < 0.99999  # it really is quantized: not bit-identical to fp32
    assert any("Conv nodes quantized" in note for note in result.notes)
    assert any("ONNX Runtime CPU placement" in note for note in result.notes)


def _optimised_ops(path, tmp_path) -> Counter:
    """Operator counts of the graph ONNX Runtime's CPU provider really runs (its optimised, fused graph)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # fusions, no NCHWc layout
    options.optimized_model_filepath = str(tmp_path / f"optimised-{path.name}")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.slow
def test_int8_cpu_graph_runs_as_int8_kernels_on_onnx_runtime(int8_export, tmp_path):
    """The CPU placement becomes QLinearConv on ONNX Runtime, every backbone Conv of it; the TensorRT placement
    leaves the Convs in fp32 there (why both are written)."""
    _ckpt, out, _result = int8_export
    cpu = _optimised_ops(out / "tiny-drone.int8-cpu.onnx", tmp_path)
    convs = Counter(n.op_type for n in onnx.load(str(out / "tiny-drone.onnx")).graph.node)["Conv"]
    assert cpu["QLinearConv"] == convs and cpu["Conv"] + cpu["FusedConv"] == 0
    assert cpu["QLinearAdd"] == 16  # ResNet-18's residual Adds, image and mirror
    tensorrt = _optimised_ops(out / "tiny-drone.int8.onnx", tmp_path)
    assert tensorrt["QLinearConv"] == 0
    # uint8 weights: ONNX Runtime's uint8 x int8 kernels saturate on x86 CPUs without VNNI (quantize_cpu docstring)
    graph = onnx.load(str(out / "tiny-drone.int8-cpu.onnx")).graph
    initializers = {init.name: init for init in graph.initializer}
    dequantized = {node.output[0]: initializers.get(node.input[0]) for node in graph.node
                   if node.op_type == "DequantizeLinear"}
    weights = [dequantized.get(node.input[1]) for node in graph.node if node.op_type == "Conv"]
    assert len(weights) == convs and all(w is not None and w.data_type == TensorProto.UINT8 for w in weights)
    meta = read_onnx_metadata(out / "tiny-drone.int8-cpu.onnx")
    assert meta["precision"] == "int8" and meta["int8_target"] == "onnxruntime-cpu"
    assert read_onnx_metadata(out / "tiny-drone.int8.onnx")["int8_target"] == "tensorrt"
    assert meta["source_fingerprint"] == read_onnx_metadata(out / "tiny-drone.onnx")["source_fingerprint"]


@pytest.mark.slow
def test_int8_graph_structure(int8_export):
    _ckpt, out, _result = int8_export
    graph = onnx.load(str(out / "tiny-drone.int8.onnx"))
    ops = Counter(n.op_type for n in graph.graph.node)
    convs = ops["Conv"]
    consumers = Counter(i for n in graph.graph.node for i in n.input)
    quantized = [n.output[0] for n in graph.graph.node if n.op_type == "QuantizeLinear"]
    assert len(set(quantized)) == len(quantized)  # one pair per tensor, shared by all its consumers
    assert ops["DequantizeLinear"] == ops["QuantizeLinear"] + convs // 2  # activations, and weights once per pair
    int8_weights = [i for i in graph.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8_weights) == convs // 2  # flip shares weights between the image and its mirror
    for node in graph.graph.node:
        if node.op_type == "Conv":
            assert node.input[0].endswith("_dq") and node.input[1].endswith("_dq")
    meta = read_onnx_metadata(out / "tiny-drone.int8.onnx")
    assert meta["precision"] == "int8" and "Conv nodes quantized" in meta["quantization"]
    assert meta["source_fingerprint"] == read_onnx_metadata(out / "tiny-drone.onnx")["source_fingerprint"]
    assert all(consumers[q] == 1 for q in quantized)


@pytest.mark.slow
def test_int8_residual_blocks_stay_int8_end_to_end(int8_export):
    """NVIDIA's Q/DQ placement for ResNets: BatchNorm folded into its Conv, every Conv's inputs dequantized, every
    residual Add's identity input dequantized and its other input the block's last Conv (fused by TensorRT)."""
    _ckpt, out, _result = int8_export
    graph = onnx.load(str(out / "tiny-drone.int8.onnx"))
    nodes = graph.graph.node
    producer = {o: n for n in nodes for o in n.output}
    readers = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)

    def dequantized(name):
        return name in producer and producer[name].op_type == "DequantizeLinear"

    # Only the heads' BatchNorm1d remain (4 parts x image and mirror); none follows a Conv.
    norms = [n for n in nodes if n.op_type == "BatchNormalization"]
    assert len(norms) == 8 and not [n for n in norms if producer[n.input[0]].op_type == "Conv"]
    residual = [n for n in nodes if n.op_type == "Add" and "Relu" in readers.get(n.output[0], [])]
    assert len(residual) == 16  # ResNet-18: 8 blocks, image and mirror
    for add in residual:
        assert sorted(dequantized(i) for i in add.input) == [False, True], add.name
        main = producer[next(i for i in add.input if not dequantized(i))]
        assert main.op_type == "Conv" and dequantized(main.input[0]) and dequantized(main.input[1])
    # Downsample blocks: the identity is the downsample Conv's output, quantized on its own.
    identities = [producer[next(i for i in add.input if dequantized(i))] for add in residual]
    from_conv = [dq for dq in identities if producer[producer[dq.input[0]].input[0]].op_type == "Conv"]
    assert len(from_conv) == 6  # layer2, layer3, layer4 first blocks, image and mirror


@pytest.mark.slow
def test_int8_onnx_accuracy_against_fp32_on_onnx_runtime(int8_export):
    """The Q/DQ graph against the fp32 graph it came from, on the calibration photos: cosine >= 0.98 for every
    image and >= 0.99 on average (measured 0.988 / 0.992 with the shared University-1652 photos)."""
    from lpn_edge.export.calibration import calibration_images

    _ckpt, out, _result = int8_export
    images = calibration_images(out.parent / "calib", (64, 64), minimum=1).first(32)
    fp32, int8 = run_onnx(out / "tiny-drone.onnx", images), run_onnx(out / "tiny-drone.int8.onnx", images)
    cosine = (fp32 * int8).sum(1)
    assert cosine.min() >= 0.98 and cosine.mean() >= 0.99
    assert cosine.mean() < 0.99999  # really quantized


def test_the_cpu_int8_graph_is_written_only_when_onnx_is_asked_for():
    from lpn_edge.export.int8_placements import placements_for

    assert [p.suffix for p in placements_for({"onnx"})] == ["int8", "int8-cpu"]
    assert [p.suffix for p in placements_for({"onnx", "trt"})] == ["int8", "int8-cpu"]
    assert [p.suffix for p in placements_for({"trt"})] == ["int8"]  # the ONNX is only the engine's input


def test_per_channel_quantization_round_trip():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * np.arange(1, 9)[:, None, None, None]
    quantized, scales = quantize_per_channel(weight, axis=0)
    assert quantized.dtype == np.int8 and scales.shape == (8,)
    assert np.abs(quantized).max() == 127
    restored = quantized.astype(np.float32) * scales[:, None, None, None]
    assert np.abs(restored - weight).max() <= scales.max() / 2 + 1e-7
    np.testing.assert_allclose(scales, np.abs(weight).reshape(8, -1).max(1) / 127, rtol=1e-6)
    _q, column_scales = quantize_per_channel(weight.reshape(8, -1).T.copy(), axis=1)
    np.testing.assert_allclose(column_scales, scales, rtol=1e-6)


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    return export_tiny_onnx(tmp_path_factory.mktemp("fp16"))


def test_fp16_converter_keeps_float32_io_and_the_tail_in_fp32(fp32_onnx, tmp_path):
    """ONNX Runtime CPU runs fp16 nodes it has no kernel for in fp32, so this checks the converted graph's
    structure and the fp16 rounding of its weights; fp16 arithmetic itself is TensorRT's."""
    ckpt, source = fp32_onnx
    proto = onnx.load(str(source))
    ring = ring_weights(load_model(ckpt), "drone", (64, 64))
    keep = [name for node in pooling_nodes(proto, ring) for name in node.output]
    converted = convert_to_fp16(proto, keep_fp32_from=keep)
    path = tmp_path / "fp16.onnx"
    onnx.save(converted, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    assert converted.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert converted.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    initialisers = {i.name: i for i in converted.graph.initializer}
    conv_weights = [initialisers[n.input[1]] for n in converted.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.data_type == TensorProto.FLOAT16 for w in conv_weights)
    gemm_weights = [initialisers[n.input[1]] for n in converted.graph.node if n.op_type == "Gemm"]
    assert gemm_weights and all(w.data_type == TensorProto.FLOAT for w in gemm_weights)  # heads stay fp32
    assert len(pooling_nodes(converted, ring)) >= 1  # pooling MatMul untouched, fp32
    images = np.random.default_rng(2).standard_normal((6, 3, 64, 64), dtype=np.float32)
    reference, half = run_onnx(source, images), run_onnx(path, images)
    cosine = (reference * half).sum(1)
    assert cosine.min() >= PARITY_THRESHOLDS["fp16"].min_cosine
    assert cosine.min() < 0.9999999  # the weights really were rounded to fp16
    first = converted.graph.node[0]
    assert first.op_type == "Cast" and first.input[0] == "images"


def test_fp16_converter_on_a_graph_without_kept_region(fp32_onnx, tmp_path):
    _ckpt, source = fp32_onnx
    converted = convert_to_fp16(onnx.load(str(source)))
    values = [numpy_helper.to_array(i) for i in converted.graph.initializer]
    assert not any(v.dtype == np.float32 and v.size > 64 for v in values)  # every large float tensor is fp16
    onnx.save(converted, str(tmp_path / "all16.onnx"))
    images = np.random.default_rng(3).standard_normal((2, 3, 64, 64), dtype=np.float32)
    out = run_onnx(tmp_path / "all16.onnx", images)
    assert out.dtype == np.float32 and ((out * run_onnx(source, images)).sum(1) >= 0.999).all()


def test_calibration_folder_is_streamed_in_batches(tmp_path):
    """--calib decodes a batch at a time: the object holds paths only, and its batches are exactly the images."""
    import dataclasses

    from lpn_edge.errors import LpnEdgeError
    from lpn_edge.export.calibration import calibration_images
    from lpn_edge.runtime.preprocessing import find_images, preprocess

    folder = write_calibration_folder(tmp_path / "calib", 10)
    calibration = calibration_images(folder, (64, 64), minimum=10)
    assert len(calibration) == 10
    assert not [f for f in dataclasses.fields(calibration) if isinstance(getattr(calibration, f.name), np.ndarray)]
    batches = list(calibration.batches(4))
    assert [len(b) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(batches), preprocess(find_images(folder), (64, 64)))
    assert calibration.first(3).shape == (3, 3, 64, 64)
    with pytest.raises(LpnEdgeError, match="holds 10 images .*needs at least 32"):
        calibration_images(folder, (64, 64), minimum=32)
