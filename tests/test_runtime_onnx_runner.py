"""ONNX Runtime providers are chosen by name, reported, and never fall back silently."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.onnx_runner import PROVIDERS, OnnxRunner, provider_names, run_onnx


@pytest.fixture(scope="module")
def doubling_graph(tmp_path_factory):
    """images (N, 3, 4, 4) -> out = 2 * images, dynamic batch."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["images", "two"], ["out"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 4, 4])], [two])
    path = tmp_path_factory.mktemp("ort") / "double.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_cpu_runs_and_reports_the_provider_used(doubling_graph):
    images = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    runner = OnnxRunner(doubling_graph, providers=("cpu",), batch=2)
    assert runner.providers == ["CPUExecutionProvider"] and runner.backend == "onnxruntime-cpu"
    np.testing.assert_array_equal(runner.run(images), 2 * images)
    np.testing.assert_array_equal(run_onnx(doubling_graph, images), 2 * images)
    for device_only in (runner.bind, runner.run_bound):  # I/O binding to device buffers: GPU sessions only
        with pytest.raises(LpnEdgeError, match="I/O binding needs a GPU provider"):
            device_only(images[:2])


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_missing_cuda_is_an_error_not_a_cpu_run(doubling_graph):
    with pytest.raises(LpnEdgeError, match=r"^ONNX Runtime provider 'cuda' is not available in this onnxruntime "
                                           r".*\(it has: .*cpu.*\) \(pip install \"lpn-edge\[gpu\]\""):
        OnnxRunner(doubling_graph, providers=("cuda", "cpu"))


def test_a_provider_onnxruntime_drops_is_an_error(doubling_graph, monkeypatch):
    """ORT warns and runs on the CPU when a listed provider fails to load; the runner refuses instead."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is really available here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.warns(UserWarning), pytest.raises(LpnEdgeError, match="did not enable CUDAExecutionProvider"):
        OnnxRunner(doubling_graph, providers=("cuda", "cpu"))


@pytest.mark.parametrize("providers, message", [
    (("gpu",), "unknown ONNX Runtime provider 'gpu'; expected one of cpu, cuda, tensorrt"),
    ("cpu", "providers must be a non-empty sequence of names"),
    ((), "providers must be a non-empty sequence of names"),
])
def test_provider_names_are_checked(providers, message):
    with pytest.raises(LpnEdgeError, match=message):
        provider_names(providers)


def test_short_names_map_to_ort_names():
    assert provider_names(("cpu",)) == ["CPUExecutionProvider"]
    assert PROVIDERS["cuda"] == "CUDAExecutionProvider" and PROVIDERS["tensorrt"] == "TensorrtExecutionProvider"


def test_default_session_gives_up_spinning_and_uses_the_cores_it_may_run_on():
    """The defaults that hold up beside other work (BENCHMARKS.md "Under load"): intra-op workers do not
    busy-wait, and the thread count follows the affinity mask (taskset / sched_setaffinity before the session)."""
    from lpn_edge.runtime.onnx_runner import cpu_session_options, physical_cores

    options = cpu_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == physical_cores()
    assert cpu_session_options(1, spinning=True).get_session_config_entry("session.intra_op.allow_spinning") == "1"
    if not hasattr(os, "sched_setaffinity"):
        return
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert physical_cores() == 1 and cpu_session_options().intra_op_num_threads == 1
    finally:
        os.sched_setaffinity(0, allowed)
