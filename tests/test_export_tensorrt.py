"""TensorRT: the engine sidecar check (pure Python, runs everywhere) and engine builds (need TensorRT and a GPU).

The engine tests are marked `trt` and `gpu` and skip cleanly without TensorRT or CUDA; nothing here pretends that
TensorRT ran.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
import torch
from export_helpers import SMALL_PARITY, export_tiny_onnx, make_checkpoint, write_calibration_folder

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import ExportOptions, export_model
from lpn_edge.export.trt_plan import LayerInfo, check_gpu, fp32_tail_layers, onnx_layers, plan_build
from lpn_edge.fileio import file_fingerprint
from lpn_edge.runtime.artifact import check_engine_sidecar, write_sidecar
from lpn_edge.runtime.cuda_buffers import cuda_version_text

HERE = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "cuda_version": "12.6"}


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "m.fp16.engine"
    path.write_bytes(b"pretend serialized engine bytes")
    write_sidecar(tmp_path / "m.fp16.engine.json", {**HERE, "precision": "fp16", "view": "drone",
                                                    "artifact_fingerprint": file_fingerprint(path)})
    return path


def test_sidecar_accepts_the_machine_it_was_built_for(engine):
    meta = check_engine_sidecar(engine, HERE)
    assert meta["precision"] == "fp16" and meta["format"] == "lpn-edge-artifact"
    assert check_engine_sidecar(engine, {**HERE, "cuda_version": "12.2"})  # same CUDA major is fine


@pytest.mark.parametrize("change, message", [
    ({"tensorrt_version": "10.7.0"}, "m.fp16.engine was built for TensorRT version 10.3.0, this machine has 10.7.0; "
                                     "rebuild it here with `lpn-edge export --trt`"),
    ({"gpu_name": "NVIDIA H100 80GB HBM3"}, "built for GPU Orin, this machine has NVIDIA H100 80GB HBM3"),
    ({"compute_capability": "9.0"}, "built for GPU compute capability 8.7, this machine has 9.0"),
    ({"cuda_version": "13.0"}, "built with CUDA 12.6, this machine has CUDA 13.0"),
])
def test_sidecar_refuses_another_machine(engine, change, message):
    with pytest.raises(LpnEdgeError) as error:
        check_engine_sidecar(engine, {**HERE, **change})
    assert message in str(error.value)


def test_sidecar_refuses_missing_or_foreign(engine, tmp_path):
    engine.write_bytes(b"another engine now")
    with pytest.raises(LpnEdgeError, match="sidecar m.fp16.engine.json describes another file"):
        check_engine_sidecar(engine, HERE)
    (tmp_path / "m.fp16.engine.json").unlink()
    with pytest.raises(LpnEdgeError, match="sidecar .*m.fp16.engine.json is missing"):
        check_engine_sidecar(engine, HERE)
    (tmp_path / "m.fp16.engine.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(LpnEdgeError, match="is not an lpn-edge sidecar"):
        check_engine_sidecar(engine, HERE)


@pytest.mark.parametrize("version, strong, network_flags", [
    ("10.3.0.30", False, ()), ("10.11.0", False, ()), ("10.12.0", True, ("STRONGLY_TYPED",)),
    ("10.14.1", True, ("STRONGLY_TYPED",)), ("11.0.0", True, ()),
])
def test_build_plan_gives_one_artifact_per_precision(version, strong, network_flags):
    """fp16: fp16 ONNX strongly typed from 10.12, else FP16 + precision constraints on the tail; int8: the Q/DQ
    ONNX everywhere (no implicit calibrator); TF32 always cleared."""
    fp16, int8, fp32 = (plan_build(version, p) for p in ("fp16", "int8", "fp32"))
    for plan in (fp16, int8, fp32):
        assert plan.strongly_typed is strong and plan.network_flags == network_flags
        assert plan.cleared_flags == ("TF32",)
    if strong:
        assert (fp16.onnx, fp16.builder_flags, fp16.fp32_tail_constraints) == ("fp16", (), False)
        assert int8.builder_flags == ()
    else:
        assert (fp16.onnx, fp16.builder_flags, fp16.fp32_tail_constraints) == \
            ("fp32", ("FP16", "OBEY_PRECISION_CONSTRAINTS"), True)
        assert int8.builder_flags == ("INT8",)
    assert int8.onnx == "int8" and not int8.fp32_tail_constraints
    assert (fp32.onnx, fp32.builder_flags, fp32.fp32_tail_constraints) == ("fp32", (), False)


def test_build_plan_refusals():
    with pytest.raises(LpnEdgeError, match=r"^--trt needs TensorRT >= 10, found 8.6$"):
        plan_build("8.6.1", "fp16")
    with pytest.raises(LpnEdgeError, match="cannot read the TensorRT version 'ten'"):
        plan_build("ten", "fp16")
    with pytest.raises(LpnEdgeError, match="fp32, fp16 or int8, got 'bf16'"):
        plan_build("10.3.0", "bf16")


def test_fp32_tail_walk_on_a_small_network():
    """Constants feeding only the tail are pinned with it; shape arithmetic (integer outputs) and the backbone not."""
    layers = [
        LayerInfo("conv", ("images",), ("features",), (True,)),
        LayerInfo("ring", (), ("ring_weights",), (True,)),
        LayerInfo("pool", ("features", "ring_weights"), ("pooled",), (True,)),
        LayerInfo("shape", ("pooled",), ("pooled_shape",), (False,)),
        LayerInfo("head_w", (), ("w",), (True,)),
        LayerInfo("head", ("pooled", "w", "pooled_shape"), ("bottleneck",), (True,)),
        LayerInfo("norm", ("bottleneck",), ("embedding",), (True,)),
    ]
    pinned = [layers[i].name for i in fp32_tail_layers(layers, ["pooled"])]
    assert pinned == ["ring", "pool", "head_w", "head", "norm"]
    with pytest.raises(LpnEdgeError, match="cannot pin the fp32 tail: no layer produces amax_9"):
        fp32_tail_layers(layers, ["amax_9"])


@pytest.fixture(scope="module")
def avg_max_graph(tmp_path_factory):
    """An exported avg+max graph (both pooling forms: ring MatMul and masked ReduceMax) and its pooled tensors."""
    from lpn_edge.checkpoint import load_model
    from lpn_edge.export.pooling import pooling_outputs, pooling_signature

    ckpt, path = export_tiny_onnx(tmp_path_factory.mktemp("tail"), pool="avg+max")
    proto = onnx.load(str(path))
    return proto, pooling_outputs(proto, pooling_signature(load_model(ckpt), "drone", (64, 64)))


def test_fp32_tail_of_the_exported_graph_is_pooling_onwards(avg_max_graph):
    proto, pooled = avg_max_graph
    nodes = proto.graph.node
    tail = fp32_tail_layers(onnx_layers(proto), pooled)
    ops = {nodes[i].op_type for i in tail}
    assert {"MatMul", "ReduceMax", "Gemm", "BatchNormalization", "Div"} <= ops
    assert not ops & {"Conv", "Relu", "MaxPool", "Resize", "Where"}  # the backbone and the pooling's masking
    output_producer = next(i for i, n in enumerate(nodes) if "embedding" in n.output)
    assert output_producer in tail
    # Every float node downstream of the pooled tensors is in the tail: nothing after pooling runs fp16.
    downstream, reach = set(), set(pooled)
    for i, node in enumerate(nodes):
        if set(node.output) & set(pooled) or set(node.input) & reach:
            downstream.add(i)
            reach.update(node.output)
    layers = onnx_layers(proto)
    assert {i for i in downstream if all(layers[i].float_outputs)} == set(tail)


def test_weak_and_strong_fp16_keep_the_same_layers_fp32(avg_max_graph):
    """The layers pinned under weak typing (10.x < 10.12) are the ones the fp16 ONNX keeps fp32 (>= 10.12)."""
    from onnx import TensorProto

    from lpn_edge.export.fp16 import convert_to_fp16

    proto, pooled = avg_max_graph
    pinned = {proto.graph.node[i].name for i in fp32_tail_layers(onnx_layers(proto), pooled)}
    converted = convert_to_fp16(proto, keep_fp32_from=pooled)
    inferred = onnx.shape_inference.infer_shapes(converted).graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.value_info) + list(inferred.output)}
    original = {n.name for n in proto.graph.node}
    fp32_nodes = {n.name for n in converted.graph.node if n.name in original and n.output and
                  all(types.get(o) == TensorProto.FLOAT for o in n.output)}
    fp16_nodes = {n.name for n in converted.graph.node if n.name in original and
                  any(types.get(o) == TensorProto.FLOAT16 for o in n.output)}
    assert pinned and pinned <= fp32_nodes and not pinned & fp16_nodes
    convs = {n.name for n in proto.graph.node if n.op_type == "Conv"}
    assert convs <= fp16_nodes


def test_gpu_check_names_the_cause():
    with pytest.raises(LpnEdgeError, match=r"^--trt builds for the GPU it runs on, and the CUDA driver sees no GPU"):
        check_gpu(0, "12.6")
    note = check_gpu(1, None)
    assert note.startswith("torch is a CPU-only build (torch.version.cuda is None)") and "engine is built" in note
    assert check_gpu(2, "12.6") is None


def test_cuda_version_is_the_driver_version_as_major_minor():
    assert [cuda_version_text(v) for v in (12060, 11080, 13000, 12020)] == ["12.6", "11.8", "13.0", "12.2"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_memory_round_trip_and_release():
    from lpn_edge.runtime.cuda_buffers import cuda_memory

    with cuda_memory() as memory:
        data = np.arange(12, dtype=np.float32)
        pointer = memory.alloc(data.nbytes)
        memory.to_device(pointer, data)
        back = np.empty_like(data)
        memory.synchronize(memory.stream())
        memory.to_host(back, pointer)
        assert (back == data).all()
        assert re.fullmatch(r"\d+\.\d+", memory.device_info()["cuda_version"])
    assert memory.live == (0, 0)


def needs_tensorrt(test):
    """Marks `trt` and `gpu`; skipped without CUDA here, and without TensorRT by `_tensorrt_and_runtime`."""
    for mark in (pytest.mark.trt, pytest.mark.gpu,
                 pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")):
        test = mark(test)
    return test


def _tensorrt_and_runtime():
    trt = pytest.importorskip("tensorrt")
    from lpn_edge.runtime.cuda_buffers import cuda_memory
    from lpn_edge.runtime.trt_engine import runtime_info

    return trt, runtime_info(trt, cuda_memory())


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("split", [False, True])
def test_engine_parity(tmp_path, precision, split):
    trt, info = _tensorrt_and_runtime()
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    result = export_model(ckpt, tmp_path / "out", ExportOptions(formats={"trt"}, precision=precision, batch=(1, 4, 8),
                                                                split=split, **SMALL_PARITY))
    stem = "tiny-drone.split" if split else "tiny-drone"
    engine = tmp_path / "out" / f"{stem}.{precision}.engine"
    assert engine in result.paths()
    engine_figures = [f for f in result.parity if f.backend.startswith("tensorrt")]
    assert engine_figures and all(f.passed for f in engine_figures)
    meta = check_engine_sidecar(engine, info)
    assert meta["precision"] == precision and meta["tensorrt_version"] == trt.__version__


@needs_tensorrt
def test_int8_engine_parity(tmp_path):
    _trt, info = _tensorrt_and_runtime()
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    calib = write_calibration_folder(tmp_path / "calib", 32)
    result = export_model(ckpt, tmp_path / "out", ExportOptions(formats={"trt"}, precision="int8", calib=calib,
                                                                batch=(1, 8, 8), **SMALL_PARITY))
    engine = tmp_path / "out" / "tiny-drone.int8.engine"
    assert all(f.passed for f in result.parity)
    assert check_engine_sidecar(engine, info)["precision"] == "int8"


@needs_tensorrt
def test_failed_engine_parity_leaves_no_engine_and_no_fp16_onnx(tmp_path, monkeypatch):
    """The fp16 ONNX a strongly typed build parses is staged with the engine: a failed check removes both."""
    from lpn_edge.export.parity import PARITY_THRESHOLDS, ParityThreshold

    _tensorrt_and_runtime()
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.setitem(PARITY_THRESHOLDS, "fp16", ParityThreshold(1.5, 1.5, 1.0))
    with pytest.raises(LpnEdgeError, match="parity check failed, artifact not kept: tiny-drone.fp16.engine"):
        export_model(ckpt, tmp_path / "out", ExportOptions(formats={"trt"}, precision="fp16", batch=(1, 4, 8),
                                                           **SMALL_PARITY))
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not [name for name in left if name.endswith((".engine", ".fp16.onnx")) or name.startswith(".tmp-")]
