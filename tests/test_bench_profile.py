"""`lpn_edge.bench.profile`: ONNX Runtime's per-node profile summed by operator and conv shape, with FLOPs that
are checked against convolutions whose arithmetic is worked out by hand here."""

from __future__ import annotations

import numpy as np
import pytest

from lpn_edge.bench.profile import conv_flops, format_profile, profile_onnx_cpu, summarise_events
from lpn_edge.errors import LpnEdgeError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _save(tmp_path, nodes, inputs, initializers, name):
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(array, key) for key, array in initializers.items()])
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def grouped_conv_graph(tmp_path):
    """x (N, 4, 10, 10) -> grouped 3x3 Conv (2 groups, 8 outputs, padding 1) -> ReLU -> y (N, 8, 10, 10)."""
    rng = np.random.default_rng(1)
    weights = {"w": rng.standard_normal((8, 2, 3, 3)).astype(np.float32), "b": np.zeros(8, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=2, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 10, 10])
    return _save(tmp_path, nodes, [x], weights, "grouped")


def qlinear_conv_graph(tmp_path):
    """float x (N, 3, 12, 12) -> uint8 -> 1x1 QLinearConv, 5 outputs, stride 2 -> float y (N, 5, 6, 6): the weight
    is pre-packed by ONNX Runtime, so the profile itself does not list it."""
    rng = np.random.default_rng(2)
    scalars = {"s": np.array(0.02, np.float32), "z": np.array(128, np.uint8)}
    weights = {"w": rng.integers(0, 256, (5, 3, 1, 1), dtype=np.uint8), "ws": np.full(5, 0.01, np.float32),
               "wz": np.full(5, 128, np.uint8), **scalars}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "s", "z", "w", "ws", "wz", "s", "z"], ["yq"], strides=[2, 2]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 12, 12])
    return _save(tmp_path, nodes, [x], weights, "qlinear")


def test_conv_flops_by_hand():
    # 8 outputs of 10 x 10, each a sum over 2 input channels (4 in 2 groups) x 3 x 3 taps: 2 FLOPs per product
    assert conv_flops((8, 2, 3, 3), (1, 8, 10, 10)) == 2 * 8 * 100 * 2 * 9
    assert conv_flops((5, 3, 1, 1), (3, 6, 6, 5)) == 2 * 3 * 36 * 5 * 3  # layout-free: NHWC output, same count


def test_profile_of_a_grouped_conv(tmp_path):
    profile = profile_onnx_cpu(grouped_conv_graph(tmp_path), batch=3, threads=1, runs=2, warmup=1)
    (shape,) = profile.convs
    assert shape.weight == (8, 2, 3, 3) and shape.nodes == 1
    assert profile.conv_flops == 3 * 2 * 8 * 100 * 2 * 9
    assert profile.runs == 2 and profile.batch == 3 and profile.kernel_seconds >= profile.conv_seconds > 0
    assert profile.floor_seconds() == pytest.approx(profile.kernel_seconds)  # one shape: it is its own fastest
    assert set(profile.as_dict()) >= {"kernel_ms", "conv_gflop", "floor_ms", "operators", "convs"}


def test_profile_finds_the_prepacked_weight_of_a_qlinear_conv(tmp_path):
    profile = profile_onnx_cpu(qlinear_conv_graph(tmp_path), batch=2, threads=1, runs=1)
    (shape,) = profile.convs
    assert shape.weight == (5, 3, 1, 1) and profile.conv_flops == 2 * 2 * 36 * 5 * 3
    assert "QLinearConv" in profile.operators


def _events(run_windows, nodes):
    """A hand-made ONNX Runtime profile: `model_run` windows (ts, dur) and Node kernel events (name, op, ts, dur)."""
    events = [{"cat": "Session", "name": "model_run", "ts": ts, "dur": dur} for ts, dur in run_windows]
    events += [{"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "output_type_shape": [{"float": [1, 4, 2, 2]}]}}
               for name, op, ts, dur in nodes]
    return events


def test_summary_counts_only_the_last_runs_and_averages_them():
    events = _events([(0, 100), (200, 100), (400, 100)],
                     [("c", "Conv", 10, 5000), ("r", "Relu", 20, 9000),  # warm-up run: left out
                      ("c", "Conv", 210, 40), ("r", "Relu", 220, 10),
                      ("c", "Conv", 410, 60), ("r", "Relu", 420, 30)])
    profile = summarise_events(events, runs=2, weight_shapes={"c": (4, 3, 3, 3)})
    assert profile.operators == {"Conv": (pytest.approx(50e-6), 1), "Relu": (pytest.approx(20e-6), 1)}
    (shape,) = profile.convs
    assert shape.flops == conv_flops((4, 3, 3, 3), (1, 4, 2, 2)) and shape.seconds == pytest.approx(50e-6)
    text = format_profile(profile, reference_ms=1.0, target=0.05)  # 50 us budget, 20 us of it not convolutions
    assert "ABOVE the fastest shape's rate" in text  # the convs would need 50/30 of the rate they ran at
    assert "1.000 of the measured time" in text  # one conv shape: it is its own fastest
    assert "below the fastest shape's rate" in format_profile(profile, reference_ms=1.0, target=0.1)
    with pytest.raises(LpnEdgeError, match="holds 3 runs, fewer than the 4"):
        summarise_events(events, runs=4, weight_shapes={"c": (4, 3, 3, 3)})
    with pytest.raises(LpnEdgeError, match="no weight shape for convolution 'c'"):
        summarise_events(events, runs=1, weight_shapes={})
    without_convs = summarise_events([e for e in events if e["name"] != "c_kernel_time"], runs=2, weight_shapes={})
    assert format_profile(without_convs, reference_ms=1.0, target=0.5).endswith("no floor to give")


def test_profile_refuses_bad_input(tmp_path):
    with pytest.raises(LpnEdgeError, match="no such ONNX file"):
        profile_onnx_cpu(tmp_path / "absent.onnx")
    with pytest.raises(LpnEdgeError, match="at least 1"):
        profile_onnx_cpu(grouped_conv_graph(tmp_path), runs=0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, "height", 10])
    dynamic = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [x], {}, "dynamic")
    with pytest.raises(LpnEdgeError, match="only the batch dimension may be dynamic"):
        profile_onnx_cpu(dynamic)
