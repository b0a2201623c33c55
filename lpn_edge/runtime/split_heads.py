"""The heads of a split export, in numpy only: feature map -> embedding, as a torch-free runtime computes it.

A split export is a backbone graph (images -> feature map) plus this file's `.npz`:
  ring_weights (h*w, n) float32   avg partition pooling: pooled = feature_map.reshape(N, C, h*w) @ ring_weights
  weight       (n, B, C) float32  per part, the bottleneck Linear with its BatchNorm folded in (B = 512)
  bias         (n, B)    float32  the folded bias
  bias_scale   ()        float32  2 when the graph outputs the sum of the maps of the image and its mirror
                                  (test-time flip, "flip_summed"), else 1: everything after the backbone is affine,
                                  so bottleneck(x) + bottleneck(mirror) = W pool(F(x) + F(mirror)) + 2 b
  metadata     ()        str      JSON, the same description the ONNX files carry
Embedding: per part L2-normalise, divide by sqrt(n), flatten the (B, n) block row-major (index = channel*n + part).
Saved without pickle (`save_split_heads`); `np.load(path)` reads it with the default allow_pickle=False. The arrays
are made on the build side (the export stage's `split.fold_heads`, BatchNorm folded in float64).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.ring_pool import embed_pooled

HEAD_KEYS = ("ring_weights", "weight", "bias", "bias_scale", "metadata")


def load_split_heads(path: str | Path) -> dict[str, np.ndarray]:
    """Read and check a split-heads `.npz`; returns its arrays (metadata as a JSON string in a 0-d array)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            heads = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise LpnEdgeError(f"cannot read split heads {path} ({exc})") from None
    missing = [k for k in HEAD_KEYS if k not in heads]
    if missing:
        raise LpnEdgeError(f"{path} is not an lpn-edge split-heads file: missing {', '.join(missing)}")
    _check_heads(heads, str(path))
    return heads


def save_split_heads(path: str | Path, heads: Mapping[str, np.ndarray], metadata: dict) -> None:
    """Write the heads and their metadata (JSON string) as an uncompressed, pickle-free `.npz` at `path`."""
    _check_heads(heads, str(path))
    with open(path, "wb") as handle:
        np.savez(handle, **heads, metadata=np.array(json.dumps(metadata, sort_keys=True)))


def split_heads_metadata(heads: Mapping[str, np.ndarray]) -> dict:
    """The metadata dict stored with the heads (the same description the ONNX files carry)."""
    return json.loads(str(heads["metadata"]))


def split_head_embedding(feature_map: np.ndarray, heads: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, C, h, w) float32 feature map (flip-summed when heads say so) -> (N, B * n) float32 unit-norm embedding:
    avg pooling as one product with the ring matrix, then the heads and normalisation of `ring_pool.embed_pooled`
    (the same code the CUDA kernel's numpy reference uses)."""
    _check_heads(heads, "split heads")
    feature_map = np.asarray(feature_map)
    ring, weight = heads["ring_weights"], heads["weight"]
    channels = weight.shape[2]
    if feature_map.ndim != 4 or feature_map.shape[1] != channels or \
            feature_map.shape[2] * feature_map.shape[3] != ring.shape[0]:
        raise LpnEdgeError(f"feature map of shape {feature_map.shape} does not fit these heads: expected "
                           f"(N, {channels}, h, w) with h*w = {ring.shape[0]}")
    pooled = feature_map.reshape(feature_map.shape[0], channels, -1).astype(np.float32) @ ring  # (N, C, n)
    return embed_pooled(pooled, weight, heads["bias"], float(heads["bias_scale"]))


def _check_heads(heads: Mapping[str, np.ndarray], where: str) -> None:
    ring, weight, bias = heads["ring_weights"], heads["weight"], heads["bias"]
    if weight.ndim != 3 or ring.ndim != 2 or ring.shape[1] != weight.shape[0] or bias.shape != weight.shape[:2]:
        raise LpnEdgeError(f"{where}: inconsistent shapes ring_weights {ring.shape}, weight {weight.shape}, "
                           f"bias {bias.shape}; expected (h*w, n), (n, B, C), (n, B)")
