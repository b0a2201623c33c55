"""CUDA without a GPU: a `CudaMemory` on a numpy heap and a kernel backend that runs each launch with the numpy
reference of its kernel, so the runtime's GPU plumbing (buffers, streams, launch plans, graph capture) runs on any
machine. The numerics of the real kernels are tested on a GPU (tests/test_cuda_gpu.py)."""

from __future__ import annotations

import numpy as np

from lpn_edge.runtime import cuda_kernels as ck, matching, ring_pool
from lpn_edge.runtime.cuda_buffers import CudaMemory


class FakeMemory(CudaMemory):
    """A `CudaMemory` whose device is one numpy byte heap: the real tracking (alloc, free, close, graphs) on fake
    primitives. Work enqueued on a stream runs at once, except on a stream under capture: there it is recorded,
    and a replay runs the recorded operations again, reading host and device memory as they are then (as a CUDA
    graph's copies and launches do)."""

    name = "fake"

    def __init__(self, free: int) -> None:
        super().__init__()
        self.heap = np.zeros(free, np.uint8)
        self.top, self.free_total = 256, free
        self.sizes: dict[int, int] = {}  # allocation -> bytes asked for
        self.capturing: int | None = None  # the stream under capture
        self.recorded: list = []
        self.replays = 0

    def _alloc(self, nbytes):
        pointer = self.top
        self.top += -(-max(int(nbytes), 1) // 256) * 256
        assert self.top <= len(self.heap), "fake device out of memory"
        self.sizes[pointer] = max(int(nbytes), 1)
        return pointer

    def region(self, pointer: int, nbytes: int) -> np.ndarray:
        """The heap bytes [pointer, pointer + nbytes), which must lie inside one live allocation: on a GPU an
        access past a buffer's end corrupts memory or crashes, here it fails the test."""
        start = max((p for p in self._live if p <= pointer), default=None)
        assert start is not None and pointer + nbytes <= start + self.sizes[start], \
            f"device access [{pointer}, {pointer + nbytes}) outside every allocation"
        return self.heap[pointer : pointer + nbytes]

    def _free(self, pointer):
        pass

    def _create_stream(self):
        handle = 1 + len(self._streams)
        return handle, handle

    def _destroy_stream(self, stream):
        pass

    def to_device(self, pointer, array):
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        self.region(pointer, data.size)[:] = data

    def to_host(self, array, pointer):
        array.view(np.uint8).reshape(-1)[:] = self.region(pointer, array.nbytes)

    def submit(self, stream, operation) -> None:
        """Run `operation` now, or record it when `stream` is under capture."""
        if stream is not None and stream == self.capturing:
            self.recorded.append(operation)
        else:
            operation()

    def to_device_async(self, pointer, array, stream):
        self.submit(stream, lambda: self.to_device(pointer, array))

    def to_host_async(self, array, pointer, stream):
        self.submit(stream, lambda: self.to_host(array, pointer))

    def synchronize(self, stream):
        pass

    def synchronize_device(self):
        pass

    def free_bytes(self):
        return self.free_total

    def _alloc_pinned(self, nbytes):
        return np.zeros(max(nbytes, 1), np.uint8), object()

    def _free_pinned(self, handle):
        pass

    def _capture(self, stream, record):
        self.capturing, self.recorded = stream, []
        try:
            record()
        finally:
            self.capturing = None
        return {"operations": self.recorded, "destroyed": False}

    def _destroy_graph(self, graph):
        graph["destroyed"] = True

    def replay(self, graph, stream):
        assert not graph["destroyed"], "replay of a destroyed graph"
        self.replays += 1
        for operation in graph["operations"]:
            operation()


class FakeBackend(ck.Backend):
    """The kernels' backend over a FakeMemory; each launch is executed by the numpy reference of its kernel."""

    name, arch, compiler, cuda_version = "fake", "sm_87", "fake", "0"

    def __init__(self, free: int = 1 << 26, memory: FakeMemory | None = None) -> None:
        super().__init__(memory or FakeMemory(free))
        self.launches = []

    def module(self, name):
        return name

    def function(self, module, name):
        return name

    def view(self, pointer, dtype, shape):
        count = int(np.prod(shape))
        return self.memory.region(pointer, count * np.dtype(dtype).itemsize).view(dtype).reshape(shape)

    def stream(self, handle):
        return handle

    def launch(self, function, grid, block, args, stream=None):
        self.launches.append(function)
        self.memory.submit(stream, lambda: self.execute(function, grid, args))

    def execute(self, function, grid, args):
        a = [int(x) if isinstance(x, np.integer) else float(x) for x in args]
        if function.startswith("lpn_ring_pool_"):
            dtype = np.float16 if "_f16_" in function else np.float32
            layout = function.rsplit("_", 1)[1]
            batch, channels, height, width, kind, parts, pool = a[3:]
            shape = (batch, channels, height, width) if layout == "nchw" else (batch, height, width, channels)
            kind = {v: k for k, v in ring_pool.KIND_CODES.items()}[kind]
            pool = {v: k for k, v in ring_pool.POOL_CODES.items()}[pool]
            mirror = self.view(a[1], dtype, shape) if a[1] else None
            pooled = ring_pool.pool_parts(self.view(a[0], dtype, shape), parts, kind, pool, layout, mirror)
            self.view(a[2], np.float32, pooled.shape)[:] = pooled
        elif function == "lpn_heads_normalise":
            pooled_ptr, weight_ptr, bias_ptr, bias_scale, batch, in_channels, parts, bottleneck, out = a
            pooled = self.view(pooled_ptr, np.float32, (batch, in_channels, parts))
            weight = self.view(weight_ptr, np.float32, (parts, bottleneck, in_channels))
            bias = self.view(bias_ptr, np.float32, (parts, bottleneck))
            self.view(out, np.float32, (batch, bottleneck * parts))[:] = ring_pool.embed_pooled(pooled, weight, bias,
                                                                                               bias_scale)
        elif function == "lpn_topk_scores":
            queries, gallery, count, rows, dim, scores = a
            g = self.view(gallery, np.float16, (rows, dim)).astype(np.float32)
            self.view(scores, np.float32, (count, rows))[:] = self.view(queries, np.float32, (count, dim)) @ g.T
        elif function == "lpn_topk_segments":
            scores_ptr, count, rows, k, segment, offset, out_s, out_i = a
            scores = self.view(scores_ptr, np.float32, (count, rows))
            segments = grid[0]
            cand_s = self.view(out_s, np.float32, (count, segments, k))
            cand_i = self.view(out_i, np.int64, (count, segments, k))
            for s in range(segments):
                part = scores[:, s * segment : (s + 1) * segment]
                take = min(k, part.shape[1])
                columns = np.arange(s * segment, s * segment + part.shape[1]) + offset
                idx, val = matching.select_topk(part, np.broadcast_to(columns, part.shape), take)
                cand_s[:, s], cand_i[:, s] = 0.0, -1
                cand_s[:, s, :take], cand_i[:, s, :take] = val, idx
        elif function == "lpn_topk_merge":
            cs, ci, count, total, k, running, bs, bi = a
            scores = self.view(cs, np.float32, (count, total))
            indices = self.view(ci, np.int64, (count, total))
            best_s, best_i = self.view(bs, np.float32, (count, k)), self.view(bi, np.int64, (count, k))
            if running:
                scores, indices = np.concatenate([scores, best_s], 1), np.concatenate([indices, best_i], 1)
            rows = []
            for q in range(count):
                valid = indices[q] >= 0
                idx, val = matching.select_topk(scores[q][valid][None], indices[q][valid][None], k)
                rows.append((idx[0], val[0]))
            for q, (idx, val) in enumerate(rows):
                best_i[q], best_s[q] = idx, val
        else:
            raise AssertionError(function)
