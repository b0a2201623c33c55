"""The split TensorRT encoder's plumbing without a GPU or TensorRT: engine, ring-pool kernel and copies on one
stream, captured as a CUDA graph and replayed, through the fake CUDA of tests/cuda_fakes.py.

The stand-in engine does what a TensorRT execution context does with dynamic shapes: it computes as many rows as
the context's input shape says *when it executes*, so a graph replayed after the shape changed computes the wrong
number of rows. TensorRT ties a captured graph to the input shape it was captured with; these tests hold the
encoder to that. (On a GPU with TensorRT: tests/test_runtime_encoders_gpu.py.)"""

from __future__ import annotations

import types

import numpy as np
import pytest
from cuda_fakes import FakeBackend, FakeMemory

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime import cuda_kernels as ck, ring_pool
from lpn_edge.runtime.gpu_encoders import TrtSplitGpuEncoder

SIZE, CHANNELS, CELL, PARTS, BOTTLENECK = 16, 4, 4, 2, 3


class ContextRunner:
    """A stand-in for `trt_engine.EngineRunner` over a dynamic-batch backbone: images (N, 3, 16, 16) -> feature
    map (N, 4, 4, 4), a fixed channel mix of 4x4 cell means, ReLU."""

    trt = types.SimpleNamespace(__version__="fake")

    def __init__(self, memory: FakeMemory, smallest: int, largest: int) -> None:
        self.memory, self.batch_range = memory, (smallest, largest)
        self.stream = memory.stream()
        self.input_dtype = self.output_dtype = np.dtype(np.float32)
        self.output_tail, self.output_layout = (CHANNELS, SIZE // CELL, SIZE // CELL), "nchw"
        self.host_input = memory.pinned((largest, 3, SIZE, SIZE), np.float32)
        self.device_input = memory.alloc(self.host_input.nbytes)
        self.device_output = memory.alloc(largest * CHANNELS * (SIZE // CELL) ** 2 * 4)
        self.mix = np.random.default_rng(3).standard_normal((CHANNELS, 3)).astype(np.float32)
        self._rows: int | None = None

    @property
    def rows(self) -> int | None:
        return self._rows

    def set_rows(self, rows: int) -> None:
        self._rows = rows

    def feature_map(self, images: np.ndarray) -> np.ndarray:
        cells = images.reshape(len(images), 3, SIZE // CELL, CELL, SIZE // CELL, CELL).mean(axis=(3, 5))
        return np.maximum(np.einsum("oc,nchw->nohw", self.mix, cells), 0).astype(np.float32)

    def _execute(self) -> None:
        rows = self._rows  # read at execution time, as the context's shape is
        images = self.memory.region(self.device_input, rows * 3 * SIZE * SIZE * 4).view(np.float32)
        output = self.feature_map(images.reshape(rows, 3, SIZE, SIZE))
        self.memory.to_device(self.device_output, output)

    def enqueue(self, rows: int, copy_out: bool = True) -> None:
        assert not copy_out
        self.set_rows(rows)
        self.memory.to_device_async(self.device_input, self.host_input[:rows], self.stream)
        self.memory.submit(self.stream, self._execute)


def open_split(monkeypatch, *, smallest: int = 1, largest: int = 8, batch: int | None = None,
               head_channels: int = CHANNELS, captures: bool = True) -> TrtSplitGpuEncoder:
    memory = FakeMemory(1 << 24)
    memory.captures_graphs = captures
    monkeypatch.setitem(ck.BACKENDS, "fake", lambda shared: FakeBackend(memory=shared))
    generator = np.random.default_rng(0)
    heads = {"weight": generator.standard_normal((PARTS, BOTTLENECK, head_channels)).astype(np.float32),
             "bias": generator.standard_normal((PARTS, BOTTLENECK)).astype(np.float32),
             "bias_scale": np.float32(1.0)}
    meta = {"partition": "ring", "pool": "avg", "embedding_dim": BOTTLENECK * PARTS, "view": "drone",
            "preprocessing": {"size": [SIZE, SIZE]}, "source_fingerprint": "fake", "precision": "fp32"}
    encoder = TrtSplitGpuEncoder(ContextRunner(memory, smallest, largest), heads, meta, batch)
    encoder.heads = heads
    return encoder


@pytest.fixture
def encoder(monkeypatch):
    encoder = open_split(monkeypatch)
    yield encoder
    encoder.close()
    assert encoder.runner.memory.live == (0, 0)


def check(encoder, images: np.ndarray) -> None:
    """The encoder's embeddings of `images` against the stand-in engine's feature map pooled in numpy."""
    pooled = ring_pool.pool_parts(encoder.runner.feature_map(images), PARTS, "ring", "avg")
    expected = ring_pool.embed_pooled(pooled, encoder.heads["weight"], encoder.heads["bias"], 1.0)
    np.testing.assert_allclose(encoder.embed(images), expected, rtol=1e-5, atol=1e-6)


def frames(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, SIZE, SIZE)).astype(np.float32)


def test_replays_only_at_the_shape_it_was_captured_at(encoder):
    memory = encoder.runner.memory
    for seed, count in enumerate([8, 3, 8, 3]):  # every call changes the context's input shape
        check(encoder, frames(count, seed))
    assert memory.replays == 0 and encoder.graphs == {8: True, 3: True} and encoder.graph[0] == 3
    for seed in range(4, 7):  # one batch size: replayed
        check(encoder, frames(3, seed))
    assert memory.replays == 3
    assert len(memory._graphs) == 1  # a replaced graph is released at once, not kept until close


def test_a_long_call_pads_its_last_chunk_to_keep_one_graph(encoder):
    for seed in range(3):
        check(encoder, frames(11, seed))  # chunks of 8 and 3, the 3 padded to 8
    assert encoder.graphs == {8: True} and encoder.runner.memory.replays == 5


def test_a_shape_set_by_another_caller_is_not_replayed_over(encoder):
    """The GPU benchmark runs the engine's context directly between the encoder's calls."""
    check(encoder, frames(3, 0))
    encoder.runner.set_rows(8)
    check(encoder, frames(3, 1))
    assert encoder.runner.memory.replays == 0


def test_a_failed_capture_runs_that_batch_size_uncaptured(encoder, monkeypatch):
    def refuse(stream, record):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(encoder.runner.memory, "_capture", refuse)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed for a batch of 2"):
        check(encoder, frames(2, 0))
    check(encoder, frames(2, 1))  # no second warning: the batch size is known to run uncaptured
    assert encoder.graphs == {2: False} and encoder.graph is None


def test_a_binding_without_capture_runs_uncaptured_without_warnings(monkeypatch):
    encoder = open_split(monkeypatch, captures=False)
    for seed, count in enumerate([11, 3, 3]):
        check(encoder, frames(count, seed))  # 11: chunks 8 and 3, no padding needed without graphs
    assert encoder.graphs == {} and encoder.runner.memory.replays == 0
    encoder.close()


def test_buffers_hold_the_engines_smallest_batch(monkeypatch):
    """A profile of 4 to 8 images and an encoder asked for batches of 2: every chunk is padded to 4 rows, so the
    device buffers must hold 4 (the fake memory fails any access past a buffer's end)."""
    encoder = open_split(monkeypatch, smallest=4, batch=2)
    for seed, count in enumerate([1, 3, 5]):
        check(encoder, frames(count, seed))
    assert encoder.high == 4
    encoder.close()


def test_heads_that_do_not_fit_the_feature_map_are_refused(monkeypatch):
    with pytest.raises(LpnEdgeError, match="feature map has 4 channels .* the heads take 6 channels"):
        open_split(monkeypatch, head_channels=6)
