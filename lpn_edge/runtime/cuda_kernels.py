"""The CUDA kernels of the runtime: compiled on the target at first use, cached on disk, launched via pycuda or
cuda-python (NVRTC + driver API) behind one small interface (`Backend`), with device memory from the runtime's one
memory layer (`cuda_buffers.CudaMemory`). numpy only at import; the CUDA packages are imported lazily by
`open_backend`.

Compilation. `kernels/<name>.cu` with its local `#include "*.cuh"` inlined (`kernel_source`) is compiled for the
GPU's own architecture (sm_XY from the device's compute capability): by nvcc through `pycuda.compiler.compile`, or
by NVRTC from cuda-python when pycuda is missing. The cubin is cached at
`$XDG_CACHE_HOME/lpn-edge/kernels/<name>-<arch>-<key>.cubin` (default `~/.cache/lpn-edge/...`), key = sha256 of the
inlined source, the architecture, the compiler and its CUDA version, and the options. A compile error becomes one
LpnEdgeError with the compiler's first error line; an unwritable cache only costs a recompile next time.

Kernels (shapes in each .cu file's header comment):
  RingPoolKernel  feature map(s) on the GPU, fp16 or fp32, NCHW or NHWC -> (N, B * n) float32 embedding on the
                  GPU: two launches (pool, heads + normalise), no host round trip; the folded heads (weight
                  (n, B, C_out), bias (n, B)) are uploaded once.
  GpuMatcher      fp16 gallery resident on the GPU (or streamed from the host in chunks when larger than the
                  device budget) -> exact top-k (indices int64, scores float32), ties by ascending index, as
                  `matching.exact_topk`.
The launch plans (`RingPoolKernel.plan`, `GpuMatcher.plan`) are pure functions of shapes and pointers, so their
grids and argument types are checked on machines without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.matching import check_gallery
from lpn_edge.runtime.ring_pool import (
    KIND_CODES,
    LAYOUT_CODES,
    POOL_CODES,
    check_heads,
    check_options,
)

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
BLOCK = 256  # threads per block of every kernel (LPN_BLOCK, LPN_TK_BLOCK)
WARP = 32
TOPK_MAX = 64  # LPN_TOPK_MAX
TOPK_SEGMENT = 8192  # gallery rows per block of lpn_topk_segments
STD_OPTION = "c++14"
DTYPES = {"f32": np.float32, "f16": np.float16}
DTYPE_CODES = {np.dtype(numpy_type): code for code, numpy_type in DTYPES.items()}  # numpy dtype -> kernel suffix

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)


# ---------------------------------------------------------------------------------------------------------------
# Source, cache, errors (pure, tested without a GPU)

def kernel_source(name: str) -> str:
    """The text of kernels/<name>.cu with each local `#include "x.cuh"` inlined once (with #line markers), so
    the compiler needs no include path and the cache key covers every line that is compiled."""
    path = KERNEL_DIR / f"{name}.cu"
    if not path.is_file():
        raise LpnEdgeError(f"no CUDA kernel source {path}; expected one of "
                           f"{', '.join(sorted(p.stem for p in KERNEL_DIR.glob('*.cu')))}")
    seen: set[str] = set()

    def inlined(file: Path) -> str:
        text = file.read_text()

        def inline(match: re.Match) -> str:
            header = match.group(1)
            if header in seen:
                return ""
            seen.add(header)
            header_path = KERNEL_DIR / header
            if not header_path.is_file():
                raise LpnEdgeError(f"{file.name} includes {header}, which is not in {KERNEL_DIR}")
            line = text.count("\n", 0, match.start()) + 2
            return f'#line 1 "{header}"\n{inlined(header_path)}\n#line {line} "{file.name}"'

        return _INCLUDE.sub(inline, text)

    return inlined(path)


def cache_key(source: str, arch: str, compiler: str, cuda_version: str, options: tuple[str, ...] = ()) -> str:
    """sha256 (hex) of everything that determines the compiled binary."""
    payload = json.dumps({"source": source, "arch": arch, "compiler": compiler, "cuda": cuda_version,
                          "options": list(options)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/lpn-edge/kernels, or ~/.cache/lpn-edge/kernels."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lpn-edge" / "kernels"


def cache_path(name: str, arch: str, key: str) -> Path:
    return cache_dir() / f"{name}-{arch}-{key[:32]}.cubin"


_ERROR_LINE = re.compile(r"(\berror\b|\bfatal\b|catastrophic error)", re.IGNORECASE)


def first_error_line(log: str) -> str:
    """The first line of a compiler log that reports an error (nvcc, NVRTC and ptxas formats), stripped; else the
    first non-empty line; else "no compiler output"."""
    lines = [line.strip() for line in log.replace("\r", "").split("\n") if line.strip()]
    for line in lines:
        if _ERROR_LINE.search(line) and not re.search(r"\b0 errors?\b", line):
            return line
    return lines[0] if lines else "no compiler output"


class CompileFailed(Exception):
    """Raised by a backend's compile function with the compiler's full log."""

    def __init__(self, log: str) -> None:
        super().__init__(log)
        self.log = log


def compile_cached(name: str, arch: str, compiler: str, cuda_version: str, options: tuple[str, ...],
                   compile_fn: Callable[[str, str], bytes]) -> bytes:
    """The cubin of kernels/<name>.cu for `arch`: from the disk cache, else `compile_fn(source, arch)` (then cached).

    compile_fn raises CompileFailed(log) on a compile error; that becomes one LpnEdgeError with the first error line.
    """
    source = kernel_source(name)
    path = cache_path(name, arch, cache_key(source, arch, compiler, cuda_version, options))
    try:
        return path.read_bytes()
    except OSError:
        pass
    try:
        image = compile_fn(source, arch)
    except CompileFailed as failure:
        raise LpnEdgeError(f"cannot compile {name}.cu for {arch} with {compiler} (CUDA {cuda_version}): "
                           f"{first_error_line(failure.log)}") from None
    try:  # atomic: a concurrent process reads either nothing or the whole file
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as handle:
            handle.write(image)
        os.replace(handle.name, path)
    except OSError:
        pass  # read-only or full cache: still usable, recompiled next time
    return image


# ---------------------------------------------------------------------------------------------------------------
# Backends: the few driver calls the kernels need

class Backend:
    """Compiles, loads and launches the kernels through one CUDA binding. Device memory comes from `memory`, a
    `cuda_buffers.CudaMemory` of the same binding (shared with TensorRT in a split encoder), so every buffer a
    kernel allocates is tracked there. Pointers are plain ints; kernel arguments are numpy scalars (np.uint64
    pointer, np.int64, np.int32, np.float32)."""

    name = "none"
    arch = "sm_00"
    compiler = "none"
    cuda_version = "0"
    options: tuple[str, ...] = ()

    def __init__(self, memory) -> None:
        self.memory = memory

    def compile(self, source: str, arch: str) -> bytes: raise NotImplementedError
    def load(self, image: bytes) -> Any: raise NotImplementedError
    def function(self, module: Any, name: str) -> Any: raise NotImplementedError
    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int], args: list,
               stream: Any = None) -> None: raise NotImplementedError
    def stream(self, handle: int) -> Any:
        """The stream object `launch` takes for a stream made by `memory.stream()`."""
        raise NotImplementedError

    def alloc(self, nbytes: int) -> int:
        return self.memory.alloc(nbytes)

    def free(self, pointer: int) -> None:
        self.memory.free(int(pointer))

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        self.memory.to_device(int(pointer), array)

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        self.memory.to_host(array, int(pointer))

    def synchronize(self) -> None:
        self.memory.synchronize_device()

    def free_memory(self) -> int:
        return self.memory.free_bytes()

    def module(self, name: str) -> Any:
        """kernels/<name>.cu compiled (or read from the cache) for this device and loaded."""
        image = compile_cached(name, self.arch, self.compiler, self.cuda_version, self.options, self.compile)
        return self.load(image)


class PycudaBackend(Backend):
    """pycuda: nvcc compiles (pycuda.compiler.compile) for the device of the memory's primary context."""

    name = "pycuda"

    def __init__(self, memory) -> None:
        super().__init__(memory)
        self.drv = memory.driver
        major, minor = self.drv.Context.get_device().compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.compiler = "nvcc"
        self.cuda_version = _nvcc_version()
        self.options = (f"-std={STD_OPTION}",)

    def compile(self, source: str, arch: str) -> bytes:
        from pycuda.compiler import compile as nvcc_compile

        try:
            return nvcc_compile(source, options=list(self.options), no_extern_c=True, arch=arch, cache_dir=False)
        except self.drv.CompileError as error:
            raise CompileFailed(f"{getattr(error, 'stderr', '') or ''}\n{error}") from None

    def load(self, image: bytes) -> Any:
        return self.drv.module_from_buffer(image)

    def function(self, module: Any, name: str) -> Any:
        return module.get_function(name)

    def launch(self, function, grid, block, args, stream=None) -> None:
        function(*args, block=tuple(block), grid=tuple(grid), stream=stream)

    def stream(self, handle: int) -> Any:
        return self.memory.stream_object(handle)


class CudaPythonBackend(Backend):
    """cuda-python: NVRTC compiles to a cubin, the driver API loads and launches in device 0's primary context,
    the one the memory's runtime API calls use."""

    name = "cuda-python"

    def __init__(self, memory) -> None:
        super().__init__(memory)
        driver, nvrtc = import_cuda_python()
        self.driver, self.nvrtc = driver, nvrtc
        self._check(driver.cuInit(0))
        self.device = self._check(driver.cuDeviceGet(0))
        self.context = self._check(driver.cuDevicePrimaryCtxRetain(self.device))
        self._check(driver.cuCtxSetCurrent(self.context))
        attribute = driver.CUdevice_attribute
        major = self._check(driver.cuDeviceGetAttribute(attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                                         self.device))
        minor = self._check(driver.cuDeviceGetAttribute(attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                                         self.device))
        self.arch = f"sm_{major}{minor}"
        self.compiler = "nvrtc"
        try:
            self.cuda_version = nvrtc_version()
        except LpnEdgeError:
            raise
        except Exception as error:  # noqa: BLE001 - cuda-python reports a missing libnvrtc in its own types
            raise LpnEdgeError(f"cuda-python cannot load NVRTC, which compiles the ring-pool kernel "
                               f"({type(error).__name__}: {str(error)[:200]}); pip install \"cuda-python[all]\" or "
                               "install the CUDA toolkit") from None
        self.options = (f"--std={STD_OPTION}",)
        self._keep: list = []  # module images must outlive cuModuleLoadData

    def _check(self, result):
        """cuda-python returns (status, *values): raise on a failed status, return the value(s)."""
        status, *values = result if isinstance(result, tuple) else (result,)
        if int(status) != 0:
            message = self.driver.cuGetErrorString(status)[1] if hasattr(self, "driver") else b""
            raise LpnEdgeError(f"CUDA driver call failed: {status!r} {message!r}")
        return values[0] if len(values) == 1 else (tuple(values) or None)

    def compile(self, source: str, arch: str) -> bytes:
        return nvrtc_compile(source, arch, self.options)

    def load(self, image: bytes) -> Any:
        buffer = np.frombuffer(image, dtype=np.uint8).copy()
        self._keep.append(buffer)
        return self._check(self.driver.cuModuleLoadData(buffer.ctypes.data))

    def function(self, module: Any, name: str) -> Any:
        return self._check(self.driver.cuModuleGetFunction(module, name.encode()))

    def launch(self, function, grid, block, args, stream=None) -> None:
        values = [np.array([arg], dtype=arg.dtype) for arg in args]  # each argument in its own host buffer
        pointers = np.array([value.ctypes.data for value in values], dtype=np.uint64)
        stream = stream if stream is not None else self.driver.CUstream(0)
        self._check(self.driver.cuLaunchKernel(function, *grid, *block, 0, stream, pointers.ctypes.data, 0))

    def stream(self, handle: int) -> Any:
        return self.driver.CUstream(int(handle))


BACKENDS = {"cuda-python": CudaPythonBackend, "pycuda": PycudaBackend}


def import_cuda_python() -> tuple[Any, Any]:
    """(driver, nvrtc) modules of cuda-python: cuda.bindings (>= 12.6) or the older cuda.cuda / cuda.nvrtc."""
    try:
        from cuda.bindings import driver, nvrtc
    except ImportError:
        from cuda import cuda as driver, nvrtc
    return driver, nvrtc


def nvrtc_version() -> str:
    """"major.minor" of the NVRTC that cuda-python loads (no GPU needed)."""
    _, nvrtc = import_cuda_python()
    status, major, minor = nvrtc.nvrtcVersion()
    if int(status) != 0:
        raise LpnEdgeError(f"NVRTC is not usable: {status!r}")
    return f"{major}.{minor}"


def nvrtc_compile(source: str, arch: str, options: tuple[str, ...] = (f"--std={STD_OPTION}",)) -> bytes:
    """Compile CUDA C++ source to a cubin for `arch` (e.g. "sm_87") with NVRTC (cuda-python; no GPU needed).
    Raises CompileFailed with NVRTC's log on a compile error."""
    _, nvrtc = import_cuda_python()
    status, program = nvrtc.nvrtcCreateProgram(source.encode(), b"kernel.cu", 0, [], [])
    if int(status) != 0:
        raise CompileFailed(f"error: nvrtcCreateProgram failed: {status!r}")
    try:
        arguments = [f"--gpu-architecture={arch}".encode(), *(option.encode() for option in options)]
        (status,) = nvrtc.nvrtcCompileProgram(program, len(arguments), arguments)
        if int(status) != 0:
            _, size = nvrtc.nvrtcGetProgramLogSize(program)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(program, log)
            raise CompileFailed(log.decode(errors="replace").rstrip("\x00 ") or f"error: {status!r}")
        status, size = nvrtc.nvrtcGetCUBINSize(program)
        if int(status) != 0:
            raise CompileFailed(f"error: nvrtcGetCUBINSize failed: {status!r}")
        image = b" " * size
        (status,) = nvrtc.nvrtcGetCUBIN(program, image)
        if int(status) != 0:
            raise CompileFailed(f"error: nvrtcGetCUBIN failed: {status!r}")
        return image
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def _nvcc_version() -> str:
    try:
        output = subprocess.run(["nvcc", "--version"], check=False, capture_output=True, text=True,
                                timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        raise LpnEdgeError("pycuda compiles with nvcc, which is not on PATH; install the CUDA toolkit "
                           "(JetPack) or cuda-python (NVRTC)") from None
    match = re.search(r"release ([0-9.]+), V([0-9.]+)", output)
    return match.group(2) if match else output.strip().splitlines()[-1] if output.strip() else "unknown"


def open_backend(prefer: str | None = None, memory=None) -> Backend:
    """The kernels' backend over `memory` (a `cuda_buffers.CudaMemory`: its binding, shared), or over a memory of
    its own: the first binding that starts (cuda-python, then pycuda; `prefer` names one). An LpnEdgeError naming
    each binding's problem when none can be imported or no CUDA device answers. The GPU is device 0 of the process
    (choose it with CUDA_VISIBLE_DEVICES)."""
    from lpn_edge.runtime.cuda_buffers import BINDINGS, first_binding

    if memory is not None:
        return BACKENDS[memory.name](memory)

    def start(name: str) -> Backend:
        own = BINDINGS[name]()
        try:
            return BACKENDS[name](own)
        except BaseException:
            own.close()
            raise

    return first_binding(prefer, start, "no CUDA backend")


# ---------------------------------------------------------------------------------------------------------------
# Launch plans and the two kernels

@dataclass(frozen=True)
class Launch:
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _ptr(value: int) -> np.uint64:
    return np.uint64(int(value))


class ScratchBuffers:
    """Named device buffers, grown on demand and reused across calls (nothing is allocated per frame)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, nbytes)

    def get(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self.backend.free(pointer)
            pointer = self.backend.alloc(nbytes)
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def pointer(self, name: str) -> int:
        return self._buffers[name][0]

    def free_all(self) -> None:
        for pointer, _ in self._buffers.values():
            self.backend.free(pointer)
        self._buffers.clear()


class RingPoolKernel:
    """Partition pooling + heads + normalisation of feature maps already on the GPU (see module docstring).

    weight (n, B, C_out) and bias (n, B) float32: the folded heads (BatchNorm inside); bias_scale 2.0 when the map
    passed is the sum of the maps of the image and its mirror, or when a mirror map is passed, else 1.0.
    C_out = C for avg / max, 2C for avg+max.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, bias_scale: float = 1.0, *, kind: str = "ring",
                 pool: str = "avg", backend: Backend | None = None) -> None:
        check_options(kind, pool, "nchw", 1)
        self.parts, self.bottleneck, self.in_channels = check_heads(weight, bias)
        if pool == "avg+max" and self.in_channels % 2:
            raise LpnEdgeError(f"avg+max heads need an even input width (2C); got {self.in_channels}")
        self.channels = self.in_channels // 2 if pool == "avg+max" else self.in_channels
        self.kind, self.pool, self.bias_scale = kind, pool, float(bias_scale)
        self.backend = backend or open_backend()
        module = self.backend.module("ring_pool")
        names = [f"lpn_ring_pool_{d}_{layout}" for d in DTYPES for layout in LAYOUT_CODES] + ["lpn_heads_normalise"]
        self._functions = {name: self.backend.function(module, name) for name in names}
        weight = np.ascontiguousarray(weight, dtype=np.float32)
        bias = np.ascontiguousarray(bias, dtype=np.float32)
        self._weight, self._bias = self.backend.alloc(weight.nbytes), self.backend.alloc(bias.nbytes)
        self.backend.to_device(self._weight, weight)
        self.backend.to_device(self._bias, bias)
        self._scratch = ScratchBuffers(self.backend)

    def _buffer(self, name: str, nbytes: int) -> int:
        return self._scratch.get(name, nbytes)

    def plan(self, feature_map: int, batch: int, height: int, width: int, *, dtype: str, layout: str,
             pooled: int, embedding: int, mirror: int = 0) -> list[Launch]:
        """The two launches for a (batch, C, height, width) map at device address `feature_map` (pure)."""
        return ring_pool_plan(feature_map, mirror, pooled, self._weight, self._bias, embedding, batch=batch,
                              channels=self.channels, height=height, width=width, parts=self.parts,
                              bottleneck=self.bottleneck, kind=self.kind, pool=self.pool, dtype=dtype, layout=layout,
                              bias_scale=self.bias_scale)

    def pooled_nbytes(self, batch: int) -> int:
        return batch * self.in_channels * self.parts * 4

    def reserve(self, batch: int) -> None:
        """Allocate the pooled scratch buffer for `batch` maps now: a CUDA graph captured later must find every
        buffer in place (an allocation inside a capture is illegal, and a regrown buffer would move)."""
        self._buffer("pooled", self.pooled_nbytes(batch))

    def pool_and_embed_device(self, feature_map: int, batch: int, height: int, width: int, embedding: int, *,
                              dtype: str = "f16", layout: str = "nchw", mirror: int = 0, stream: Any = None) -> None:
        """Device pointers in, embedding (batch, B * n) float32 written at device address `embedding`; asynchronous
        on `stream`. The pooled scratch buffer is allocated once per largest batch and reused."""
        pooled = self._buffer("pooled", self.pooled_nbytes(batch))
        for launch in self.plan(feature_map, batch, height, width, dtype=dtype, layout=layout, pooled=pooled,
                                embedding=embedding, mirror=mirror):
            self.backend.launch(self._functions[launch.kernel], launch.grid, launch.block, list(launch.args), stream)

    def pool_and_embed(self, feature_map: np.ndarray, mirror: np.ndarray | None = None, *, layout: str = "nchw",
                       return_pooled: bool = False):
        """Host arrays in (copied to the GPU), (N, B * n) float32 embedding out; for tests and host-side maps.
        With return_pooled, also the (N, C_out, n) pooled parts."""
        feature_map = np.ascontiguousarray(feature_map)
        dtype = DTYPE_CODES.get(feature_map.dtype)
        if dtype is None or feature_map.ndim != 4:
            raise LpnEdgeError(f"feature map must be a 4-d float16 or float32 array; got {feature_map.dtype} "
                               f"{feature_map.shape}")
        check_options(self.kind, self.pool, layout, self.parts)
        batch, height, width = (feature_map.shape[0], *feature_map.shape[1:3]) if layout == "nhwc" else \
            (feature_map.shape[0], *feature_map.shape[2:4])
        channels = feature_map.shape[3] if layout == "nhwc" else feature_map.shape[1]
        if channels != self.channels:
            raise LpnEdgeError(f"feature map has {channels} channels; these heads expect {self.channels}")
        source = self._buffer("map", feature_map.nbytes)
        self.backend.to_device(source, feature_map)
        mirror_pointer = 0
        if mirror is not None:
            mirror = np.ascontiguousarray(mirror, dtype=feature_map.dtype)
            if mirror.shape != feature_map.shape:
                raise LpnEdgeError(f"mirror map of shape {mirror.shape} differs from the map's {feature_map.shape}")
            mirror_pointer = self._buffer("mirror", mirror.nbytes)
            self.backend.to_device(mirror_pointer, mirror)
        embedding = self._buffer("embedding", batch * self.bottleneck * self.parts * 4)
        self.pool_and_embed_device(source, batch, height, width, embedding, dtype=dtype, layout=layout,
                                   mirror=mirror_pointer)
        self.backend.synchronize()
        out = np.empty((batch, self.bottleneck * self.parts), np.float32)
        self.backend.to_host(out, embedding)
        if not return_pooled:
            return out
        pooled = np.empty((batch, self.in_channels, self.parts), np.float32)
        self.backend.to_host(pooled, self._scratch.pointer("pooled"))
        return out, pooled

    def close(self) -> None:
        self._scratch.free_all()
        for pointer in (self._weight, self._bias):
            if pointer:
                self.backend.free(pointer)
        self._weight = self._bias = 0


def ring_pool_plan(feature_map: int, mirror: int, pooled: int, weight: int, bias: int, embedding: int, *, batch: int,
                   channels: int, height: int, width: int, parts: int, bottleneck: int, kind: str, pool: str,
                   dtype: str, layout: str, bias_scale: float) -> list[Launch]:
    """Grids and arguments of lpn_ring_pool_<dtype>_<layout> and lpn_heads_normalise (pure; see ring_pool.cu)."""
    check_options(kind, pool, layout, parts)
    if dtype not in DTYPES:
        raise LpnEdgeError(f"feature map dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if min(batch, channels, height, width, bottleneck) < 1:
        raise LpnEdgeError(f"batch, channels, height, width and bottleneck must be >= 1; got {batch}, {channels}, "
                           f"{height}, {width}, {bottleneck}")
    if batch > 65535:
        raise LpnEdgeError(f"batch must be at most 65535 (grid.y of lpn_heads_normalise); got {batch}")
    items = batch * channels
    blocks = _ceil_div(items * WARP, BLOCK) if layout == "nchw" else _ceil_div(items, BLOCK)
    in_channels = 2 * channels if pool == "avg+max" else channels
    i32 = np.int32
    return [
        Launch(f"lpn_ring_pool_{dtype}_{layout}", (blocks, 1, 1), (BLOCK, 1, 1),
               (_ptr(feature_map), _ptr(mirror), _ptr(pooled), i32(batch), i32(channels), i32(height), i32(width),
                i32(KIND_CODES[kind]), i32(parts), i32(POOL_CODES[pool]))),
        Launch("lpn_heads_normalise", (parts, batch, 1), (BLOCK, 1, 1),
               (_ptr(pooled), _ptr(weight), _ptr(bias), np.float32(bias_scale), i32(batch), i32(in_channels),
                i32(parts), i32(bottleneck), _ptr(embedding))),
    ]


def topk_plan(queries: int, gallery: int, scores: int, candidate_scores: int, candidate_indices: int,
              best_scores: int, best_indices: int, *, num_queries: int, rows: int, dim: int, k: int,
              index_offset: int, has_running: bool, segment: int | None = None) -> list[Launch]:
    """The three launches that fold `rows` gallery rows (at device address `gallery`, fp16) into the running top-k
    (pure; see topk.cu). Scratch sizes: scores num_queries * rows float32, candidates num_queries * S * k."""
    if not 1 <= k <= TOPK_MAX:
        raise LpnEdgeError(f"GPU top-k supports 1 <= k <= {TOPK_MAX}; got {k} (use matching.exact_topk on the CPU)")
    if not 1 <= num_queries <= 65535:
        raise LpnEdgeError(f"GPU top-k takes 1 to 65535 queries per search; got {num_queries}")
    segment = segment or TOPK_SEGMENT
    segments = _ceil_div(rows, segment)
    i32 = np.int32
    return [
        Launch("lpn_topk_scores", (_ceil_div(rows * WARP, BLOCK), 1, 1), (BLOCK, 1, 1),
               (_ptr(queries), _ptr(gallery), i32(num_queries), i32(rows), i32(dim), _ptr(scores))),
        Launch("lpn_topk_segments", (segments, num_queries, 1), (BLOCK, 1, 1),
               (_ptr(scores), i32(num_queries), i32(rows), i32(k), i32(segment), np.int64(index_offset),
                _ptr(candidate_scores), _ptr(candidate_indices))),
        Launch("lpn_topk_merge", (num_queries, 1, 1), (BLOCK, 1, 1),
               (_ptr(candidate_scores), _ptr(candidate_indices), i32(num_queries), i32(segments * k), i32(k),
                i32(1 if has_running else 0), _ptr(best_scores), _ptr(best_indices))),
    ]


class GpuMatcher:
    """Exact top-k by inner product against a gallery held on the GPU in fp16 (see matching.exact_topk).

    gallery (G, D) float16 / float32 (converted to fp16 once). When it takes more than `max_device_bytes` (default:
    half the free device memory), it stays on the host and each search streams it through a device buffer of
    `stream_rows` rows with a running top-k. `score_rows` bounds the (Q, rows) score scratch per pass.
    """

    engine = "gpu"

    def __init__(self, gallery: np.ndarray, *, max_device_bytes: int | None = None, stream_rows: int = 1 << 18,
                 score_rows: int = 1 << 20, backend: Backend | None = None) -> None:
        gallery = gallery if hasattr(gallery, "dtype") else np.asarray(gallery)
        check_gallery(gallery)
        self.size, self.dim = gallery.shape
        if self.size >= 2**31 or self.dim >= 2**31:
            raise LpnEdgeError(f"gallery of shape {gallery.shape} is too large; expected fewer than 2**31 rows")
        self.backend = backend or open_backend()
        module = self.backend.module("topk")
        self._functions = {name: self.backend.function(module, name)
                           for name in ("lpn_topk_scores", "lpn_topk_segments", "lpn_topk_merge")}
        budget = max_device_bytes if max_device_bytes is not None else self.backend.free_memory() // 2
        nbytes = self.size * self.dim * 2
        self.resident = nbytes <= budget
        self.score_rows = max(1, int(score_rows))
        self._host = gallery
        if self.resident:
            self.stream_rows = self.size
            self._gallery = self.backend.alloc(nbytes)
            for start in range(0, self.size, stream_rows):  # convert to fp16 chunk by chunk: bounded host memory
                rows = np.ascontiguousarray(gallery[start : start + stream_rows], dtype=np.float16)
                self.backend.to_device(self._gallery + start * self.dim * 2, rows)
        else:
            self.stream_rows = max(1, min(int(stream_rows), budget // (self.dim * 2)))
            self._gallery = self.backend.alloc(self.stream_rows * self.dim * 2)
        self._scratch = ScratchBuffers(self.backend)

    def _buffer(self, name: str, nbytes: int) -> int:
        return self._scratch.get(name, nbytes)

    def passes(self, num_queries: int) -> list[tuple[int, int]]:
        """(start, rows) of each scoring pass over the gallery, in order (pure)."""
        per_pass = max(1, min(self.stream_rows, self.score_rows // max(1, num_queries) or 1))
        return [(start, min(per_pass, self.size - start)) for start in range(0, self.size, per_pass)]

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) or (D,) float32 queries -> indices (Q, k) int64, scores (Q, k) float32, as exact_topk."""
        queries = np.asarray(query, dtype=np.float32)
        queries = np.ascontiguousarray(queries[None] if queries.ndim == 1 else queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise LpnEdgeError(f"query of shape {np.shape(query)} does not fit a gallery of dimension {self.dim}")
        if not 1 <= k <= min(self.size, TOPK_MAX):
            raise LpnEdgeError(f"GPU top-k supports 1 <= k <= min(gallery size, {TOPK_MAX}); got {k}")
        count = len(queries)
        passes = self.passes(count)
        largest = max(rows for _, rows in passes)
        query_pointer = self._buffer("queries", queries.nbytes)
        self.backend.to_device(query_pointer, queries)
        scores = self._buffer("scores", count * largest * 4)
        candidates = count * _ceil_div(largest, TOPK_SEGMENT) * k
        candidate_scores = self._buffer("candidate_scores", candidates * 4)
        candidate_indices = self._buffer("candidate_indices", candidates * 8)
        best_scores = self._buffer("best_scores", count * k * 4)
        best_indices = self._buffer("best_indices", count * k * 8)
        for number, (start, rows) in enumerate(passes):
            if self.resident:
                rows_pointer = self._gallery + start * self.dim * 2
            else:
                self.backend.synchronize()  # the previous pass has finished reading the staging buffer
                self.backend.to_device(self._gallery,
                                       np.ascontiguousarray(self._host[start : start + rows], dtype=np.float16))
                rows_pointer = self._gallery
            for launch in topk_plan(query_pointer, rows_pointer, scores, candidate_scores, candidate_indices,
                                    best_scores, best_indices, num_queries=count, rows=rows, dim=self.dim, k=k,
                                    index_offset=start, has_running=number > 0):
                self.backend.launch(self._functions[launch.kernel], launch.grid, launch.block, list(launch.args))
        self.backend.synchronize()
        indices = np.empty((count, k), np.int64)
        values = np.empty((count, k), np.float32)
        self.backend.to_host(indices, best_indices)
        self.backend.to_host(values, best_scores)
        return indices, values

    def close(self) -> None:
        self._scratch.free_all()
        if self._gallery:
            self.backend.free(self._gallery)
            self._gallery = 0
