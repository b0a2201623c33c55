"""The GPU encoders behind `encoders.open_encoder`: TensorRT engines, and split backbones whose feature map is pooled
by the CUDA ring-pool kernel on the device.

  EngineEncoder         a full engine (images -> embedding) through `trt_engine.EngineRunner`: pinned host and
                        device buffers made once for the profile's largest batch, one stream, `execute_async_v3`;
                        any N in chunks within the profile.
  TrtSplitGpuEncoder    a split backbone engine -> feature map in a device buffer -> `RingPoolKernel` on the same
                        stream -> (N, D) embeddings copied into a pinned array. Only the frames go in and the
                        embeddings come out: the feature map never leaves the GPU, and nothing is allocated per
                        frame. The whole path (copy in, engine, the kernel's two launches, copy out) is captured
                        as a CUDA graph (`CudaMemory.capture`) and replayed while the batch size stays the same.
                        A graph holds the execution context at the input shape it was captured with, so there is one
                        graph at a time: a call with another batch size runs eagerly (which sets the new shape) and
                        is captured anew, as Torch-TensorRT re-records on a shape change. If capture fails (an engine
                        TensorRT cannot capture), the encoder says so once per batch size (a RuntimeWarning naming
                        the reason) and runs that size uncaptured; `graphs` tells per batch size which way it runs.
                        With pycuda, which has no stream capture, everything runs uncaptured, without a warning.
  OnnxSplitGpuEncoder   a split backbone graph on ONNX Runtime's CUDA (or TensorRT) provider with IO binding: the
                        feature map stays in the OrtValue bound on the device, the kernel reads it there by address.
                        No CUDA graph here: ONNX Runtime runs the graph on its own stream and synchronises at the end
                        of each run (its `enable_cuda_graph` captures only its own work), so the kernel is launched
                        after the run returns; the embeddings come back through a plain host copy.
The kernel and the engine share one `CudaMemory` (`open_backend(memory=...)`): one binding (pycuda or cuda-python),
the primary context, and one list of allocations, so device pointers pass from one to the other as plain ints and
`close()` frees them all.

Not run in this project's CI (no GPU there): tests marked `gpu` / `trt` in tests/test_runtime_encoders_gpu.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.cuda_kernels import DTYPE_CODES
from lpn_edge.runtime.encoder import ArrayEncoder, EncoderInfo


def require_tensorrt():
    """The `tensorrt` module; a one-line error when it is not installed."""
    try:
        import tensorrt
    except ImportError:
        raise LpnEdgeError('a .engine file needs TensorRT: pip install "lpn-edge[trt]" (x86-64), or the TensorRT '
                           "that JetPack ships on Jetson") from None
    return tensorrt


def open_engine(path: Path, *, precision: str | None = None, batch: int | None = None) -> ArrayEncoder:
    """A TensorRT engine (full or split backbone) as an encoder; its sidecar is checked before TensorRT loads it."""
    from lpn_edge.runtime.artifact import check_engine_sidecar
    from lpn_edge.runtime.cuda_buffers import cuda_memory
    from lpn_edge.runtime.trt_engine import EngineRunner, runtime_info

    trt = require_tensorrt()
    memory = cuda_memory()
    try:
        meta = check_engine_sidecar(path, runtime_info(trt, memory), precision)
        runner = EngineRunner(trt, memory, path)
        if meta.get("output") == "feature_map":
            from lpn_edge.runtime.split_heads import heads_beside

            return TrtSplitGpuEncoder(runner, heads_beside(path, meta), meta, batch)
        return EngineEncoder(runner, meta, batch)
    except BaseException:
        memory.close()
        raise


class EngineEncoder(ArrayEncoder):
    """A full TensorRT engine (images -> embedding)."""

    def __init__(self, runner, meta: dict, batch: int | None = None) -> None:
        self.runner, self.metadata, self.largest = runner, meta, batch
        self.info = EncoderInfo.from_metadata(meta, backend="tensorrt", provider=f"tensorrt-{runner.trt.__version__}")

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.runner.run_all(images, self.largest)

    def close(self) -> None:
        self.runner.memory.close()


def _check_heads_fit(kernel, channels: int, dim: int) -> None:
    """The kernel reads `channels` maps and writes `dim` floats per image: a mismatch would run past a device
    buffer, so it is an error before anything runs."""
    if channels != kernel.channels or dim != kernel.bottleneck * kernel.parts:
        raise LpnEdgeError(f"the split heads do not fit the backbone: its feature map has {channels} channels and the "
                           f"embedding {dim} values; the heads take {kernel.channels} channels and give "
                           f"{kernel.bottleneck} x {kernel.parts} parts")


def _kernel(heads: dict[str, np.ndarray], meta: dict, memory=None):
    """The ring-pool kernel with the split heads, on `memory` (a `CudaMemory`, shared with the engine), or on a
    memory of its own (None: whichever binding starts)."""
    from lpn_edge.runtime.cuda_kernels import RingPoolKernel, open_backend

    return RingPoolKernel(heads["weight"], heads["bias"], float(heads["bias_scale"]), kind=str(meta["partition"]),
                          pool=str(meta["pool"]), backend=open_backend(memory=memory))


class TrtSplitGpuEncoder(ArrayEncoder):
    """Split backbone engine + ring-pool kernel on one stream, replayed as one CUDA graph while the batch size holds."""

    def __init__(self, runner, heads: dict[str, np.ndarray], meta: dict, batch: int | None = None) -> None:
        self.runner, self.metadata = runner, meta
        memory = runner.memory
        self.low, high = runner.batch_range
        # Every chunk has at least `low` rows (a short one is padded), so the buffers hold at least that many.
        self.high = max(self.low, min(high, batch)) if batch else high
        self.kernel = _kernel(heads, meta, memory)
        if runner.output_dtype not in DTYPE_CODES:
            raise LpnEdgeError(f"the backbone engine outputs {runner.output_dtype}; the ring-pool kernel takes float16 "
                               "or float32 feature maps")
        self.map_dtype = DTYPE_CODES[runner.output_dtype]
        # TensorRT reports the logical (C, h, w) shape whatever the memory layout (LINEAR or HWC).
        channels, *self.map_hw = runner.output_tail
        self.dim = int(meta["embedding_dim"])
        _check_heads_fit(self.kernel, channels, self.dim)
        self.kernel.reserve(self.high)
        self.device_embedding = memory.alloc(self.high * self.dim * 4)
        self.host_embedding = memory.pinned((self.high, self.dim), np.float32)
        self.kernel_stream = self.kernel.backend.stream(runner.stream)
        self.graphs: dict[int, bool] = {}  # rows -> whether that batch size could be captured
        self.graph: tuple[int, Any] | None = None  # (rows, graph): the one live graph, captured at that input shape
        self.info = EncoderInfo.from_metadata(meta, backend="split",
                                              provider=f"tensorrt-{runner.trt.__version__}+ring-pool-kernel")

    def _record(self, rows: int) -> None:
        """Enqueue (not run) copy in -> engine -> kernel -> copy out for `rows` frames on the runner's stream."""
        runner = self.runner
        runner.enqueue(rows, copy_out=False)
        self.kernel.pool_and_embed_device(runner.device_output, rows, *self.map_hw, self.device_embedding,
                                          dtype=self.map_dtype, layout=runner.output_layout, stream=self.kernel_stream)
        runner.memory.to_host_async(self.host_embedding[:rows], self.device_embedding, runner.stream)

    def _chunk(self, chunk: np.ndarray) -> np.ndarray:
        runner, memory, rows = self.runner, self.runner.memory, len(chunk)
        runner.host_input[:rows] = chunk
        replay = self.graph is not None and self.graph[0] == rows and runner.rows == rows
        if replay:
            memory.replay(self.graph[1], runner.stream)
        else:
            # A new batch size (or a context whose shape another caller changed) runs eagerly first: that sets the
            # input shape, and TensorRT's deferred set-up for it happens outside the capture that follows.
            self._record(rows)
        memory.synchronize(runner.stream)
        if not replay and memory.captures_graphs and self.graphs.get(rows, True):
            self._capture(rows)  # records the path for the next calls; runs nothing, the output stays
        return self.host_embedding[:rows].copy()

    def _capture(self, rows: int) -> None:
        """Replace the live graph by one of the path for `rows` frames (captured, not run)."""
        memory = self.runner.memory
        if self.graph is not None:
            memory.release(self.graph[1])
            self.graph = None
        try:
            self.graph = (rows, memory.capture(self.runner.stream, lambda: self._record(rows)))
            self.graphs[rows] = True
        except Exception as error:  # noqa: BLE001 - each binding and TensorRT fail in their own types
            self.graphs[rows] = False
            warnings.warn(f"CUDA graph capture failed for a batch of {rows} ({type(error).__name__}: "
                          f"{str(error)[:200]}); this batch size runs uncaptured", RuntimeWarning, stacklevel=4)

    def run(self, images: np.ndarray) -> np.ndarray:
        from lpn_edge.runtime.batching import run_in_batches

        # Over several chunks the short last one is padded to the full size: one batch size, one graph, instead
        # of a new capture for the remainder and another for the next call's first chunk.
        smallest = self.high if len(images) > self.high and self.runner.memory.captures_graphs else self.low
        return run_in_batches(self._chunk, images.astype(self.runner.input_dtype, copy=False), smallest, self.high)

    def close(self) -> None:
        self.kernel.close()
        self.runner.memory.close()


class OnnxSplitGpuEncoder(ArrayEncoder):
    """Split backbone graph on ONNX Runtime's CUDA / TensorRT provider (IO binding) + ring-pool kernel."""

    def __init__(self, runner, heads: dict[str, np.ndarray], meta: dict) -> None:
        self.runner, self.metadata = runner, meta
        self.kernel = _kernel(heads, meta)
        self.kernel.reserve(runner.batch)
        self.dim = int(meta["embedding_dim"])
        self.device_embedding = self.kernel.backend.alloc(runner.batch * self.dim * 4)
        self.host_embedding = np.empty((runner.batch, self.dim), np.float32)
        self.info = EncoderInfo.from_metadata(meta, backend="split",
                                              provider="+".join(runner.providers) + "+ring-pool-kernel")

    def _chunk(self, chunk: np.ndarray) -> np.ndarray:
        rows = len(chunk)
        feature_map = self.runner.run_bound(chunk)  # ORT synchronises its stream at the end of the run
        dtype = {"tensor(float)": "f32", "tensor(float16)": "f16"}.get(feature_map.data_type())
        if dtype is None:
            raise LpnEdgeError(f"the backbone graph outputs {feature_map.data_type()}; the ring-pool kernel takes "
                               "float16 or float32 feature maps")
        _check_heads_fit(self.kernel, feature_map.shape()[1], self.dim)
        height, width = feature_map.shape()[2:4]
        self.kernel.pool_and_embed_device(feature_map.data_ptr(), rows, height, width, self.device_embedding,
                                          dtype=dtype, layout="nchw")
        self.kernel.backend.synchronize()
        self.kernel.backend.to_host(self.host_embedding[:rows], self.device_embedding)
        return self.host_embedding[:rows].copy()

    def run(self, images: np.ndarray) -> np.ndarray:
        from lpn_edge.runtime.batching import run_in_batches

        return run_in_batches(self._chunk, images, 1, self.runner.batch)

    def close(self) -> None:
        self.kernel.close()
        self.kernel.backend.memory.close()  # the kernel's own memory: the embedding buffer too
