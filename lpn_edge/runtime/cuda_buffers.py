"""The one CUDA memory layer of the runtime: device buffers, copies, streams, pinned host arrays and CUDA graphs,
through cuda-python (NVIDIA's bindings) or pycuda.

TensorRT takes raw device pointers and a stream handle; it allocates nothing for the caller. The CUDA kernels
(`cuda_kernels.Backend`) take their buffers from a `CudaMemory` too, so the engine and the kernel of a split
encoder share one instance: one binding, one primary context, one list of allocations freed by `close()`.
Whichever of the two libraries works is used (cuda-python first, `cuda_memory(prefer=...)` picks); the choice is
reported (`CudaMemory.name`) and recorded in the engine's sidecar. None working is a one-line error.

For the runtime encoders (`gpu_encoders`) an instance also gives pinned (page-locked) host arrays, asynchronous
copies on a stream, and with cuda-python CUDA graphs by stream capture (`capture` -> a replayable graph): a frame's
copy in, the engine, the ring-pool kernel and the copy out are recorded once and replayed. pycuda has no
stream-capture API (up to 2026.1), so `captures_graphs` is False there and the encoders run the same work
uncaptured. Asynchronous copies from or to pageable memory are not capturable, which is why the encoders copy
through pinned arrays only.
"""

from __future__ import annotations

import ctypes
import importlib.util

import numpy as np

from lpn_edge.errors import LpnEdgeError

INSTALL_HINT = ('pip install cuda-python (with a CUDA 12 driver: "cuda-python<13"), or pycuda (on Jetson: the '
                "python3-pycuda package)")
NEITHER = f"TensorRT needs cuda-python or pycuda for device buffers, and neither is installed: {INSTALL_HINT}"


def cuda_version_text(version: int) -> str:
    """CUDA's integer version (1000 * major + 10 * minor, e.g. 12060) -> "12.6"."""
    version = int(version)
    return f"{version // 1000}.{(version % 1000) // 10}"


class CudaMemory:
    """The operations TensorRT needs: alloc/free, blocking copies, streams, device description.

    Every allocation and stream made through an instance is tracked and released by `close()` (or by leaving the
    `with` block): a builder or runner that raises half-way leaks nothing. Subclasses implement the underscored
    primitives.
    """

    name = "none"
    captures_graphs = True  # `capture` works (False: the binding has no stream capture)

    def __init__(self) -> None:
        self._live: set[int] = set()
        self._streams: dict[int, object] = {}  # handle -> the library's stream object (kept alive until closed)
        self._pinned: list[object] = []  # page-locked host allocations, released by close()
        self._graphs: list[object] = []  # instantiated CUDA graphs, released by close()

    # -- tracked operations ------------------------------------------------------------------------------------

    def alloc(self, nbytes: int) -> int:
        pointer = self._alloc(nbytes)
        self._live.add(pointer)
        return pointer

    def free(self, pointer: int) -> None:
        self._live.remove(pointer)
        self._free(pointer)

    def stream(self) -> int:
        """A new stream's handle (int), valid until `close()`."""
        handle, stream = self._create_stream()
        self._streams[handle] = stream
        return handle

    def pinned(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A page-locked host array (released by `close()`): asynchronous copies and graph capture need one."""
        array, handle = self._alloc_pinned(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self._pinned.append(handle)
        return array.view(dtype)[: int(np.prod(shape))].reshape(shape)

    def stream_object(self, stream: int) -> object:
        """The binding's own object of a stream made by `stream()` (pycuda's Stream, cuda-python's cudaStream_t)."""
        return self._streams[stream]

    def capture(self, stream: int, record) -> object:
        """Run `record()` (work enqueued on `stream`, nothing executed) under stream capture and return the
        instantiated graph, replayed by `replay(graph, stream)`; released by `close()`."""
        graph = self._capture(stream, record)
        self._graphs.append(graph)
        return graph

    def release(self, graph: object) -> None:
        """Destroy a graph made by `capture` now rather than at `close()`."""
        index = next(i for i, held in enumerate(self._graphs) if held is graph)  # identity: handles may be equal
        self._destroy_graph(self._graphs.pop(index))

    def close(self) -> None:
        """Free every allocation still live and destroy every stream this instance created (idempotent)."""
        while self._graphs:
            self._destroy_graph(self._graphs.pop())
        while self._pinned:
            self._free_pinned(self._pinned.pop())
        for pointer in sorted(self._live):
            self.free(pointer)
        while self._streams:
            handle, stream = self._streams.popitem()
            self._destroy_stream(stream)

    @property
    def live(self) -> tuple[int, int]:
        """(allocations, streams) not yet released."""
        return len(self._live), len(self._streams)

    def __enter__(self) -> CudaMemory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- primitives --------------------------------------------------------------------------------------------

    def _alloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def _free(self, pointer: int) -> None:
        raise NotImplementedError

    def _create_stream(self) -> tuple[int, object]:
        raise NotImplementedError

    def _destroy_stream(self, stream: object) -> None:
        raise NotImplementedError

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        raise NotImplementedError

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        raise NotImplementedError

    def synchronize(self, stream: int) -> None:
        raise NotImplementedError

    def synchronize_device(self) -> None:
        """Wait for all work on the device, every stream (the kernels' default-stream launches included)."""
        raise NotImplementedError

    def free_bytes(self) -> int:
        """Free device memory, bytes."""
        raise NotImplementedError

    def to_device_async(self, pointer: int, array: np.ndarray, stream: int) -> None:
        """Enqueue a copy of the (pinned, contiguous) host `array` to `pointer` on `stream`."""
        raise NotImplementedError

    def to_host_async(self, array: np.ndarray, pointer: int, stream: int) -> None:
        """Enqueue a copy from `pointer` into the (pinned, contiguous) host `array` on `stream`."""
        raise NotImplementedError

    def _alloc_pinned(self, nbytes: int) -> tuple[np.ndarray, object]:
        """(uint8 array of nbytes on page-locked memory, handle for _free_pinned)."""
        raise NotImplementedError

    def _free_pinned(self, handle: object) -> None:
        raise NotImplementedError

    def _capture(self, stream: int, record) -> object:
        raise LpnEdgeError(f"{self.name} has no CUDA graph capture")

    def _destroy_graph(self, graph: object) -> None:
        raise NotImplementedError

    def replay(self, graph: object, stream: int) -> None:
        """Launch a graph made by `capture` on `stream` (asynchronous)."""
        raise NotImplementedError

    def device_info(self) -> dict:
        """{"gpu_name", "compute_capability" ("8.7"), "cuda_version"} of device 0; cuda_version is the CUDA
        version of the driver ("12.6", `cuda_version_text`), which both libraries report alike."""
        raise NotImplementedError


class CudaPythonMemory(CudaMemory):
    name = "cuda-python"

    def __init__(self) -> None:
        super().__init__()
        self.cudart = _cudart()
        # Start the runtime now: a driver too old for these bindings (cuda-python 13 needs a CUDA 13 driver) or no
        # device fails here, where `first_binding` can still fall back to pycuda, not at the first allocation.
        self._check(self.cudart.cudaFree(0), "initialisation")

    def _check(self, result: tuple, what: str):
        error, *values = result
        if error != self.cudart.cudaError_t.cudaSuccess:
            _, text = self.cudart.cudaGetErrorString(error)
            raise LpnEdgeError(f"CUDA {what} failed: {error.name} ({text.decode(errors='replace')})")
        return values[0] if len(values) == 1 else values

    def _alloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))

    def _free(self, pointer: int) -> None:
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

    def _create_stream(self) -> tuple[int, object]:
        stream = self._check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        return int(stream), stream

    def _destroy_stream(self, stream: object) -> None:
        self._check(self.cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def synchronize(self, stream: int) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self._streams[stream]), "cudaStreamSynchronize")

    def synchronize_device(self) -> None:
        self._check(self.cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize")

    def free_bytes(self) -> int:
        free, _total = self._check(self.cudart.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(free)

    def to_device_async(self, pointer: int, array: np.ndarray, stream: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind,
                                                self._streams[stream]), "async copy to device")

    def to_host_async(self, array: np.ndarray, pointer: int, stream: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind,
                                                self._streams[stream]), "async copy to host")

    def _alloc_pinned(self, nbytes: int) -> tuple[np.ndarray, object]:
        pointer = int(self._check(self.cudart.cudaMallocHost(max(nbytes, 1)), f"cudaMallocHost({nbytes})"))
        array = np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(pointer))
        return array, pointer

    def _free_pinned(self, handle: object) -> None:
        self._check(self.cudart.cudaFreeHost(handle), "cudaFreeHost")

    def _capture(self, stream: int, record) -> object:
        handle = self._streams[stream]
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(self.cudart.cudaStreamBeginCapture(handle, mode), "cudaStreamBeginCapture")
        try:
            record()
        except BaseException:
            # End the (now invalidated) capture and drop what it made; the caller sees record's own error.
            error, graph = self.cudart.cudaStreamEndCapture(handle)
            if error == self.cudart.cudaError_t.cudaSuccess and graph is not None:
                self.cudart.cudaGraphDestroy(graph)
            raise
        graph = self._check(self.cudart.cudaStreamEndCapture(handle), "cudaStreamEndCapture")
        try:
            return self._check(self.cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            self._check(self.cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def _destroy_graph(self, graph: object) -> None:
        self._check(self.cudart.cudaGraphExecDestroy(graph), "cudaGraphExecDestroy")

    def replay(self, graph: object, stream: int) -> None:
        self._check(self.cudart.cudaGraphLaunch(graph, self._streams[stream]), "cudaGraphLaunch")

    def device_info(self) -> dict:
        props = self._check(self.cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        driver = int(self._check(self.cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu_name": name, "compute_capability": f"{props.major}.{props.minor}",
                "cuda_version": cuda_version_text(driver)}


class PyCudaMemory(CudaMemory):
    name = "pycuda"
    captures_graphs = False  # no Stream.begin_capture / Graph in pycuda's driver wrapper (checked up to 2026.1)

    def __init__(self) -> None:
        super().__init__()
        import pycuda.autoprimaryctx  # noqa: F401 - the primary context, shared with PyTorch and TensorRT
        import pycuda.driver as driver

        self.driver = driver
        self._allocations: dict[int, object] = {}

    def _alloc(self, nbytes: int) -> int:
        allocation = self.driver.mem_alloc(max(int(nbytes), 1))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def _free(self, pointer: int) -> None:
        self._allocations.pop(pointer).free()

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        self.driver.memcpy_htod(pointer, np.ascontiguousarray(array))

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        self.driver.memcpy_dtoh(array, pointer)

    def _create_stream(self) -> tuple[int, object]:
        stream = self.driver.Stream()
        return stream.handle, stream

    def _destroy_stream(self, stream: object) -> None:
        del stream  # pycuda destroys a stream with its last reference (popped from _streams by close)

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def synchronize_device(self) -> None:
        self.driver.Context.synchronize()

    def free_bytes(self) -> int:
        return int(self.driver.mem_get_info()[0])

    def to_device_async(self, pointer: int, array: np.ndarray, stream: int) -> None:
        self.driver.memcpy_htod_async(pointer, array, self._streams[stream])

    def to_host_async(self, array: np.ndarray, pointer: int, stream: int) -> None:
        self.driver.memcpy_dtoh_async(array, pointer, self._streams[stream])

    def _alloc_pinned(self, nbytes: int) -> tuple[np.ndarray, object]:
        array = self.driver.pagelocked_empty(max(nbytes, 1), np.uint8)
        return array, array

    def _free_pinned(self, handle: object) -> None:
        handle.base.free()  # the HostAllocation behind the array; freed now, not when the array is collected

    def device_info(self) -> dict:
        device = self.driver.Context.get_device()
        major, minor = device.compute_capability()
        # The driver's CUDA version, as cuda-python reports it (get_version() would be the CUDA pycuda was built
        # against, a different figure).
        return {"gpu_name": device.name(), "compute_capability": f"{major}.{minor}",
                "cuda_version": cuda_version_text(self.driver.get_driver_version())}


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def cuda_library() -> str:
    """"cuda-python" when NVIDIA's bindings are importable, else "pycuda"; a one-line error when neither is."""
    find = importlib.util.find_spec
    if find("cuda") is not None and (find("cuda.bindings") is not None or find("cuda.cudart") is not None):
        return "cuda-python"
    if importlib.util.find_spec("pycuda") is not None:
        return "pycuda"
    raise LpnEdgeError(NEITHER)


def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 when none, or no driver), asked through cuda-python or pycuda, not torch (a
    CPU-only torch build sees no GPU on a GPU machine). One-line error when neither library is installed."""
    if cuda_library() == "cuda-python":
        error, count = _cudart().cudaGetDeviceCount()
        if error == _cudart().cudaError_t.cudaSuccess:
            return int(count)
        if importlib.util.find_spec("pycuda") is None:
            return 0  # no driver, or one too old for these bindings: pycuda may still start, so ask it
    import pycuda.driver as driver

    try:
        driver.init()
        return int(driver.Device.count())
    except driver.Error:
        return 0


BINDINGS = {"cuda-python": CudaPythonMemory, "pycuda": PyCudaMemory}  # in order of preference


def cuda_memory(prefer: str | None = None) -> CudaMemory:
    """A `CudaMemory` of the first binding that starts (cuda-python, then pycuda; `prefer` names one). A one-line
    error naming each binding's problem (not installed, no device, no driver) when none does. Use as a context
    manager."""
    return first_binding(prefer, lambda name: BINDINGS[name](), f"no CUDA binding could start ({INSTALL_HINT})")


def first_binding(prefer: str | None, start, failure: str):
    """`start(name)` for each binding name in order of preference (only `prefer` when given) until one returns;
    an LpnEdgeError `failure: ` + each binding's problem when none does."""
    if prefer is not None and prefer not in BINDINGS:
        raise LpnEdgeError(f"CUDA binding must be one of {', '.join(BINDINGS)}; got {prefer!r}")
    problems = []
    for name in [prefer] if prefer else list(BINDINGS):
        try:
            return start(name)
        except ImportError as error:
            problems.append(f"{name}: not installed ({error})")
        except LpnEdgeError as error:
            problems.append(f"{name}: {error}")
        except Exception as error:  # noqa: BLE001 - driver errors come in each binding's own types
            problems.append(f"{name}: {type(error).__name__}: {error}")
    raise LpnEdgeError(f"{failure}: {'; '.join(problems)}")
