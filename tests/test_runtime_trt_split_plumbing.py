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

from lpn_edge.runtime import cuda_kernels as ck, ring_pool
from lpn_edge.runtime.gpu_encoders import TrtSplitGpuEncoder

SIZE, CHANNELS, CELL, PARTS, BOTTLENECK = 16, 4, 4, 2, 3


class ContextRunner:
    """A stand-in for `trt_engine.EngineRunner` over a dynamic-batch backbone: images (N, 3, 16, 16) -> feature
    map (N, 4, 4, 4), a fixed channel mix of 4x4 cell means, ReLU."""

    trt = types.SimpleNamespace(__version__="fake")

    def __init__(self, memory: FakeMemory, largest: int) -> None:
        self.memory, self.batch_range = memory, (1, largest)
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
        images = self.memory.heap[self.device_input:].view(np.float32)[: rows * 3 * SIZE * SIZE]
        output = self.feature_map(images.reshape(rows, 3, SIZE, SIZE))
        self.memory.to_device(self.device_output, output)

    def enqueue(self, rows: int, copy_out: bool = True) -> None:
        assert not copy_out
        self.set_rows(rows)
        self.memory.to_device_async(self.device_input, self.host_input[:rows], self.stream)
        self.memory.submit(self.stream, self._execute)


@pytest.fixture
def encoder(monkeypatch):
    memory = FakeMemory(1 << 24)
    monkeypatch.setitem(ck.BACKENDS, "fake", lambda shared: FakeBackend(memory=shared))
    generator = np.random.default_rng(0)
    heads = {"weight": generator.standard_normal((PARTS, BOTTLENECK, CHANNELS)).astype(np.float32),
             "bias": generator.standard_normal((PARTS, BOTTLENECK)).astype(np.float32),
             "bias_scale": np.float32(1.0)}
    meta = {"partition": "ring", "pool": "avg", "embedding_dim": BOTTLENECK * PARTS, "view": "drone",
            "preprocessing": {"size": [SIZE, SIZE]}, "source_fingerprint": "fake", "precision": "fp32"}
    encoder = TrtSplitGpuEncoder(ContextRunner(memory, largest=8), heads, meta)
    encoder.heads = heads
    yield encoder
    encoder.close()
    assert memory.live == (0, 0)


def expected(encoder, images: np.ndarray) -> np.ndarray:
    pooled = ring_pool.pool_parts(encoder.runner.feature_map(images), PARTS, "ring", "avg")
    return ring_pool.embed_pooled(pooled, encoder.heads["weight"], encoder.heads["bias"], 1.0)


def frames(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, SIZE, SIZE)).astype(np.float32)


def test_replays_only_at_the_shape_it_was_captured_at(encoder):
    memory = encoder.runner.memory
    for seed in range(3):  # 11 frames: chunks of 8 and 3, each a change of the context's input shape
        batch = frames(11, seed)
        np.testing.assert_allclose(encoder.embed(batch), expected(encoder, batch), rtol=1e-5, atol=1e-6)
    assert memory.replays == 0 and encoder.graphs == {8: True, 3: True} and encoder.graph[0] == 3
    for seed in range(3, 6):  # one batch size: captured once, then replayed
        batch = frames(3, seed)
        np.testing.assert_allclose(encoder.embed(batch), expected(encoder, batch), rtol=1e-5, atol=1e-6)
    assert memory.replays == 3
    assert len(memory._graphs) == 1  # a replaced graph is released at once, not kept until close


def test_a_shape_set_by_another_caller_is_not_replayed_over(encoder):
    """The GPU benchmark runs the engine's context directly between the encoder's calls."""
    batch = frames(3, 0)
    encoder.embed(batch)
    encoder.runner.set_rows(8)
    again = frames(3, 1)
    np.testing.assert_allclose(encoder.embed(again), expected(encoder, again), rtol=1e-5, atol=1e-6)
    assert encoder.runner.memory.replays == 0


def test_a_failed_capture_runs_that_batch_size_uncaptured(encoder, monkeypatch):
    def refuse(stream, record):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(encoder.runner.memory, "_capture", refuse)
    batch = frames(2, 0)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed for a batch of 2"):
        first = encoder.embed(batch)
    second = encoder.embed(frames(2, 1))  # no second warning: the batch size is known to run uncaptured
    np.testing.assert_allclose(first, expected(encoder, batch), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second, expected(encoder, frames(2, 1)), rtol=1e-5, atol=1e-6)
    assert encoder.graphs == {2: False} and encoder.graph is None
