"""Device buffers and streams for the TensorRT Python API: cuda-python (NVIDIA's bindings) or pycuda.

TensorRT takes raw device pointers and a stream handle; it allocates nothing for the caller. Whichever of the two
libraries is importable is used (cuda-python first); the choice is reported (`CudaMemory.name`) and recorded in
the engine's sidecar. Neither present is a one-line error.
"""

from __future__ import annotations

import numpy as np

from lpn_edge.errors import LpnEdgeError

INSTALL_HINT = "pip install cuda-python (or pycuda; on Jetson: the python3-pycuda package)"


class CudaMemory:
    """The operations TensorRT needs: alloc/free, blocking copies, one stream, device description."""

    name = "none"

    def alloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, pointer: int) -> None:
        raise NotImplementedError

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        raise NotImplementedError

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        raise NotImplementedError

    def stream(self) -> int:
        """A new stream's handle (int), valid for the life of this object."""
        raise NotImplementedError

    def synchronize(self, stream: int) -> None:
        raise NotImplementedError

    def device_info(self) -> dict:
        """{"gpu_name", "compute_capability" ("8.7"), "cuda_version" ("12.6", the CUDA runtime)} of device 0."""
        raise NotImplementedError


class CudaPythonMemory(CudaMemory):
    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.cudart = cudart
        self._streams: dict[int, object] = {}

    def _check(self, result: tuple, what: str):
        error, *values = result
        if error != self.cudart.cudaError_t.cudaSuccess:
            _, text = self.cudart.cudaGetErrorString(error)
            raise LpnEdgeError(f"CUDA {what} failed: {error.name} ({text.decode(errors='replace')})")
        return values[0] if len(values) == 1 else values

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

    def free(self, pointer: int) -> None:
        self._check(self.cudart.cudaFree(pointer), "cudaFree")

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, kind), "copy to device")

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        if not array.flags.c_contiguous:
            raise ValueError("to_host needs a C-contiguous destination array")
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpy(array.ctypes.data, pointer, array.nbytes, kind), "copy to host")

    def stream(self) -> int:
        stream = self._check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        handle = int(stream)
        self._streams[handle] = stream  # keep the object alive with its handle
        return handle

    def synchronize(self, stream: int) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self._streams[stream]), "cudaStreamSynchronize")

    def device_info(self) -> dict:
        props = self._check(self.cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        version = int(self._check(self.cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu_name": name, "compute_capability": f"{props.major}.{props.minor}",
                "cuda_version": f"{version // 1000}.{(version % 1000) // 10}"}


class PyCudaMemory(CudaMemory):
    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.autoprimaryctx  # noqa: F401 - the primary context, shared with PyTorch and TensorRT
        import pycuda.driver as driver

        self.driver = driver
        self._allocations: dict[int, object] = {}
        self._streams: dict[int, object] = {}

    def alloc(self, nbytes: int) -> int:
        allocation = self.driver.mem_alloc(nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, pointer: int) -> None:
        self._allocations.pop(pointer).free()

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        self.driver.memcpy_htod(pointer, np.ascontiguousarray(array))

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        self.driver.memcpy_dtoh(array, pointer)

    def stream(self) -> int:
        stream = self.driver.Stream()
        self._streams[stream.handle] = stream
        return stream.handle

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def device_info(self) -> dict:
        device = self.driver.Context.get_device()
        major, minor = device.compute_capability()
        version = self.driver.get_version()  # CUDA version pycuda was built for, e.g. (12, 6, 0)
        return {"gpu_name": device.name(), "compute_capability": f"{major}.{minor}",
                "cuda_version": f"{version[0]}.{version[1]}"}


def cuda_memory() -> CudaMemory:
    """cuda-python when importable, else pycuda; a one-line error when neither is."""
    import importlib.util

    if importlib.util.find_spec("cuda") is not None and (
            importlib.util.find_spec("cuda.bindings") is not None or importlib.util.find_spec("cuda.cudart")):
        return CudaPythonMemory()
    if importlib.util.find_spec("pycuda") is not None:
        return PyCudaMemory()
    raise LpnEdgeError(f"--trt needs cuda-python or pycuda for device buffers, and neither is installed: {INSTALL_HINT}")
