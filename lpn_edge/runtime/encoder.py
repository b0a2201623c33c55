"""The encoder protocol shared by the runtime backends (ONNX Runtime, TensorRT, split graph, checkpoint) and their
users (the gallery index builder, `locate`): images in, unit-norm embeddings out, plus what produced them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


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
