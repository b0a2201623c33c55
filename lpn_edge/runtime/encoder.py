"""The encoder protocol shared by the runtime backends (ONNX Runtime, TensorRT, split graph, checkpoint) and their
users (the gallery index builder, `locate`): images in, unit-norm embeddings out, plus what produced them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.preprocessing import preprocess


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is: enough to refuse a gallery built by another model and to report what ran.

    backend      "onnxruntime", "tensorrt", "split", "pt2", "torch", ...
    provider     the execution provider / engine actually used, e.g. "CPUExecutionProvider"
    precision    "fp32", "fp16", "int8"
    input_size   (H, W) pixels the model takes
    view         "satellite", "drone" or "ground": the branch whose embedding is computed
    fingerprint  the source checkpoint's (or artifact's) fingerprint string, e.g. lpn_edge.fileio.file_fingerprint
    dim          embedding dimension D
    """

    backend: str
    provider: str
    precision: str
    input_size: tuple[int, int]
    view: str
    fingerprint: str
    dim: int


@runtime_checkable
class Encoder(Protocol):
    """`embed(images)`: (N, H, W, 3) uint8 RGB (any size: the encoder resizes and normalises) or preprocessed
    (N, 3, H, W) float32 (ImageNet-normalised, H, W = info.input_size) -> (N, D) float32 with unit-norm rows."""

    info: EncoderInfo

    def embed(self, images: np.ndarray) -> np.ndarray: ...


def model_input(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What `Encoder.embed` accepts -> the (N, 3, H, W) float32 ImageNet-normalised tensor the model takes.

    (N, h, w, 3) uint8 RGB frames of any size are resized and normalised (`preprocessing.preprocess`);
    (N, 3, H, W) float32 with (H, W) = `size` passes through unchanged. Anything else is one LpnEdgeError line.
    """
    height, width = (int(s) for s in size)
    if not isinstance(images, np.ndarray):
        raise LpnEdgeError(f"embed takes a numpy array, (N, H, W, 3) uint8 RGB or (N, 3, {height}, {width}) "
                           f"float32; got {type(images).__name__}")
    if images.dtype == np.uint8:
        if images.ndim == 4 and images.shape[3] == 3:
            return preprocess(images, (height, width))
        hint = " (one frame: pass frame[None])" if images.ndim == 3 and images.shape[2] == 3 else ""
        raise LpnEdgeError(f"uint8 images must be (N, H, W, 3) RGB; got shape {images.shape}{hint}")
    if images.dtype == np.float32:
        if images.ndim == 4 and images.shape[1:] == (3, height, width):
            return np.ascontiguousarray(images)
        raise LpnEdgeError(f"float32 images must be preprocessed (N, 3, {height}, {width}) (this model's input "
                           f"size); got shape {images.shape} (pass (N, H, W, 3) uint8 frames to have them resized)")
    raise LpnEdgeError(f"images must be uint8 (N, H, W, 3) RGB or preprocessed float32 (N, 3, {height}, {width}); "
                       f"got dtype {images.dtype}, shape {images.shape}")


class ArrayEncoder:
    """Base of the runtime's encoders: `embed` checks and preprocesses the input (`model_input`), hands the
    (N, 3, H, W) float32 tensor to the backend's `run` and checks that (N, D) float32 came back. `metadata`: the
    artifact's own description (`artifact.artifact_metadata`), empty for a checkpoint."""

    info: EncoderInfo
    metadata: dict

    def run(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32, N >= 1 -> (N, D) float32 unit-norm embeddings (the backend's work)."""
        raise NotImplementedError

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB or (N, 3, H, W) float32 preprocessed -> (N, D) float32, unit-norm rows."""
        batch = model_input(images, self.info.input_size)
        if len(batch) == 0:
            return np.zeros((0, self.info.dim), np.float32)
        out = np.asarray(self.run(batch), dtype=np.float32)
        if out.shape != (len(batch), self.info.dim):
            raise LpnEdgeError(f"{self.info.backend} returned shape {out.shape}, expected ({len(batch)}, "
                               f"{self.info.dim})")
        return out

    def close(self) -> None:
        """Release what the backend holds (device buffers, sessions); the encoder is unusable afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
