"""The CUDA memory layer without a GPU: its bookkeeping (on tests/cuda_fakes.FakeMemory), and how the cuda-python
binding reports a driver it cannot start and a capture that failed. (On a GPU: tests/test_export_tensorrt.py.)"""

from __future__ import annotations

import enum
import types

import pytest
from cuda_fakes import FakeMemory

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.cuda_buffers import CudaMemory, CudaPythonMemory, cuda_memory


def test_close_releases_buffers_streams_and_graphs():
    memory = FakeMemory(1 << 16)
    with memory:
        memory.alloc(64)
        memory.alloc(128)
        freed = memory.alloc(32)
        memory.free(freed)
        stream = memory.stream()
        memory.stream()
        kept, released = memory.capture(stream, lambda: None), memory.capture(stream, lambda: None)
        memory.release(released)  # now, not at close
        assert memory.live == (2, 2) and released["destroyed"] and not kept["destroyed"]
        with pytest.raises(KeyError):
            memory.free(freed)  # freeing twice is an error, never a silent double free
    assert memory.live == (0, 0) and kept["destroyed"]
    memory.close()  # idempotent


def test_cuda_python_without_a_usable_driver_is_one_line_naming_it():
    runtime = pytest.importorskip("cuda.bindings.runtime")
    error, count = runtime.cudaGetDeviceCount()
    if error == runtime.cudaError_t.cudaSuccess and count:
        pytest.skip("a CUDA device answers here")
    with pytest.raises(LpnEdgeError, match=r"^no CUDA binding could start \(.*\): cuda-python: CUDA initialisation "
                                           r"failed: cudaError\w+ ") as failure:
        cuda_memory(prefer="cuda-python")  # without the probe it started, and failed at the first allocation
    assert "\n" not in str(failure.value)


class _Error(enum.Enum):
    cudaSuccess = 0
    cudaErrorStreamCaptureInvalidated = 901


def test_a_failed_capture_reports_what_failed_inside_it():
    """An error while recording invalidates the capture, so ending it fails too; the caller must see the first."""
    calls = []
    cudart = types.SimpleNamespace(
        cudaError_t=_Error,
        cudaStreamCaptureMode=types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1),
        cudaStreamBeginCapture=lambda stream, mode: calls.append("begin") or (_Error.cudaSuccess,),
        cudaStreamEndCapture=lambda stream: calls.append("end") or (_Error.cudaErrorStreamCaptureInvalidated, None),
        cudaGetErrorString=lambda error: (_Error.cudaSuccess, b"capture invalidated"),
    )
    memory = CudaPythonMemory.__new__(CudaPythonMemory)  # the class's own capture, on these stand-in calls
    CudaMemory.__init__(memory)
    memory.cudart, memory._streams[7] = cudart, "stream"

    def record():
        raise ValueError("the engine refused to be captured")

    with pytest.raises(ValueError, match="the engine refused"):
        memory.capture(7, record)
    assert calls == ["begin", "end"] and memory._graphs == []
