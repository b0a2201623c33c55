"""Partition pooling, heads and normalisation in numpy: the CPU path and the reference of the CUDA kernel.

Computes exactly what `kernels/ring_pool.cu` computes (same geometry, same resize arithmetic in float32), with
numpy only, so a drone without PyTorch can run it and the kernel's tests have a torch-free reference:

  feature map   (N, C, H, W) "nchw" or (N, H, W, C) "nhwc", float16 or float32 (any float dtype is upcast to
                float32); post-ReLU backbone features, unitless
  mirror        optional, same shape: the map of the horizontally mirrored image (test-time flip); each map is
                pooled on its own and the pooled values are summed
  pooled        (N, C_out, n) float32, C_out = C for "avg" / "max", 2C for "avg+max" (avg channels first)
  heads         weight (n, B, C_out) float32 (BatchNorm folded into the bottleneck Linear), bias (n, B) float32,
                bias_scale: 2.0 when the two flip views are summed before the heads, else 1.0
  embedding     (N, B * n) float32, index = b * n + p, each part L2-normalised then divided by sqrt(n)
                (unit norm overall)

Geometry (DESIGN.md section 3, identical to `lpn_edge.model.partition`): per axis of length L with n parts, rings
resize the map bilinearly to L' = L + 2 * (n - floor(L / 2)) when L < 2n (align_corners=True for "ring", False for
"ring_outer_first"); c = floor(L' / 2), per = floor(L' / (2n)); box j < n-1 = [c - (j+1)*per, c + (j+1)*per), box
n-1 = the whole grid; ring j = box j minus box j-1. Rows / columns: strip p = [floor(p*L/n), ceil((p+1)*L/n)).
avg divides a part's sum by the area of its outer box; max is over the part's own cells.

The integer codes (KIND_CODES, POOL_CODES, LAYOUT_CODES) are the ones the kernel takes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from lpn_edge.errors import LpnEdgeError

KIND_CODES = {"ring": 0, "ring_outer_first": 1, "row": 2, "column": 3}
POOL_CODES = {"avg": 0, "max": 1, "avg+max": 2}
LAYOUT_CODES = {"nchw": 0, "nhwc": 1}


def check_options(kind: str, pool: str, layout: str, parts: int) -> None:
    """An LpnEdgeError naming the bad value when a partition option is not one the kernel supports."""
    for name, value, choices in (("partition kind", kind, KIND_CODES), ("pool", pool, POOL_CODES),
                                 ("layout", layout, LAYOUT_CODES)):
        if value not in choices:
            raise LpnEdgeError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    if int(parts) != parts or parts < 1:
        raise LpnEdgeError(f"parts must be an integer >= 1; got {parts!r}")


def ring_resized_size(length: int, parts: int) -> int:
    """Axis length after the authors' resize rule (unchanged when L / (2n) >= 1)."""
    return length + 2 * (parts - length // 2) if length < 2 * parts else length


def grid_size(kind: str, height: int, width: int, parts: int) -> tuple[int, int]:
    """(H', W') of the pooled grid: resized for ring kinds, the map's own size for strips."""
    if kind in ("row", "column"):
        return height, width
    return ring_resized_size(height, parts), ring_resized_size(width, parts)


def _axis_box(length: int, ring: int, parts: int) -> tuple[int, int]:
    if ring >= parts - 1:
        return 0, length
    centre, per = length // 2, length // (2 * parts)
    return centre - (ring + 1) * per, centre + (ring + 1) * per


def _strip(length: int, part: int, parts: int) -> tuple[int, int]:
    return (part * length) // parts, ((part + 1) * length + parts - 1) // parts


def part_boxes(
    kind: str, height: int, width: int, parts: int
) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """Per part, ((y0, y1, x0, x1) outer box, (y0, y1, x0, x1) inner box) on the pooled grid; the part is the outer
    box minus the inner one (inner empty, y0 == y1, for the centre ring and strips). Same as `lpn_part_boxes`."""
    h2, w2 = grid_size(kind, height, width, parts)
    boxes = []
    for part in range(parts):
        inner = (0, 0, 0, 0)
        if kind == "row":
            outer = (*_strip(h2, part, parts), 0, w2)
        elif kind == "column":
            outer = (0, h2, *_strip(w2, part, parts))
        else:
            ring = parts - 1 - part if kind == "ring_outer_first" else part
            outer = (*_axis_box(h2, ring, parts), *_axis_box(w2, ring, parts))
            if ring > 0:
                inner = (*_axis_box(h2, ring - 1, parts), *_axis_box(w2, ring - 1, parts))
        boxes.append((outer, inner))
    return boxes


@lru_cache(maxsize=64)
def part_masks(kind: str, height: int, width: int, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, H', W') bool masks of the parts on the pooled grid and the (n,) float64 avg divisors (outer box areas)."""
    check_options(kind, "avg", "nchw", parts)
    h2, w2 = grid_size(kind, height, width, parts)
    masks = np.zeros((parts, h2, w2), dtype=bool)
    areas = np.zeros(parts, dtype=np.float64)
    for part, ((oy0, oy1, ox0, ox1), (iy0, iy1, ix0, ix1)) in enumerate(part_boxes(kind, height, width, parts)):
        masks[part, oy0:oy1, ox0:ox1] = True
        masks[part, iy0:iy1, ix0:ix1] = False
        areas[part] = (oy1 - oy0) * (ox1 - ox0)
    masks.setflags(write=False)
    areas.setflags(write=False)
    return masks, areas


def resize_taps(
    in_len: int, out_len: int, align_corners: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source taps of a bilinear resize along one axis, float32 arithmetic as torch's CPU upsample_bilinear2d.

    Returns (i0, i1) int64 and (w0, w1) float32 arrays of length out_len: out[j] = w0[j] * in[i0[j]] + w1[j] *
    in[i1[j]]. Same as `lpn_resize_source`; the identity when in_len == out_len.
    """
    dst = np.arange(out_len)
    if in_len == out_len:
        return dst, dst.copy(), np.ones(out_len, np.float32), np.zeros(out_len, np.float32)
    if align_corners:
        scale = np.float32(in_len - 1) / np.float32(out_len - 1) if out_len > 1 else np.float32(0)
        src = scale * dst.astype(np.float32)
    else:
        scale = np.float32(in_len) / np.float32(out_len)
        src = np.maximum(scale * (dst.astype(np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    src = src.astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_len - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    i1 = i0 + (i0 < in_len - 1)
    return i0, i1, (np.float32(1) - w1).astype(np.float32), w1


def _to_nchw_f32(feature_map: np.ndarray, layout: str) -> np.ndarray:
    array = np.asarray(feature_map)
    if array.ndim != 4 or not np.issubdtype(array.dtype, np.floating):
        raise LpnEdgeError(f"feature map must be a 4-d float array ({layout.upper()}); got shape {array.shape}, "
                           f"dtype {array.dtype}")
    if layout == "nhwc":
        array = array.transpose(0, 3, 1, 2)
    return array.astype(np.float32, copy=False)


def pooled_grid(feature_map: np.ndarray, kind: str, parts: int) -> np.ndarray:
    """(N, C, H, W) float32 -> (N, C, H', W') float32: the map the parts are cut from (resized for small rings).

    h0 * (w0 * v00 + w1 * v01) + h1 * (w0 * v10 + w1 * v11), as `lpn_sample`.
    """
    height, width = feature_map.shape[-2:]
    h2, w2 = grid_size(kind, height, width, parts)
    if (h2, w2) == (height, width):
        return feature_map
    align = kind == "ring"
    y0, y1, h0, h1 = resize_taps(height, h2, align)
    x0, x1, w0, w1 = resize_taps(width, w2, align)
    rows0, rows1 = feature_map[:, :, y0, :], feature_map[:, :, y1, :]
    top = w0 * rows0[..., x0] + w1 * rows0[..., x1]
    bottom = w0 * rows1[..., x0] + w1 * rows1[..., x1]
    return (h0[:, None] * top + h1[:, None] * bottom).astype(np.float32)


def _pool_one(grid: np.ndarray, kind: str, parts: int, pool: str, size: tuple[int, int]) -> np.ndarray:
    masks, areas = part_masks(kind, size[0], size[1], parts)
    batch, channels = grid.shape[:2]
    flat = grid.reshape(batch, channels, -1)
    outputs = []
    if pool in ("avg", "avg+max"):
        # fp32 sum over each part's cells (float64 accumulation, rounded once), then / outer-box area
        weights = masks.reshape(parts, -1).T.astype(np.float64)
        sums = flat.astype(np.float64) @ weights
        outputs.append((sums.astype(np.float32) / areas.astype(np.float32)).astype(np.float32))
    if pool in ("max", "avg+max"):
        maxima = np.stack([flat[:, :, masks[p].reshape(-1)].max(axis=-1) for p in range(parts)], axis=-1)
        outputs.append(maxima.astype(np.float32))
    return np.concatenate(outputs, axis=1)


def pool_parts(feature_map: np.ndarray, parts: int, kind: str = "ring", pool: str = "avg", layout: str = "nchw",
               mirror: np.ndarray | None = None) -> np.ndarray:
    """Partition pooling: feature map (see module docstring) -> (N, C_out, n) float32 pooled part vectors.

    With `mirror`, returns pool(feature_map) + pool(mirror), what the kernel computes for test-time flip.
    """
    check_options(kind, pool, layout, parts)
    array = _to_nchw_f32(feature_map, layout)
    size = array.shape[-2:]
    pooled = _pool_one(pooled_grid(array, kind, parts), kind, parts, pool, size)
    if mirror is not None:
        other = _to_nchw_f32(mirror, layout)
        if other.shape != array.shape:
            raise LpnEdgeError(f"mirror map of shape {np.shape(mirror)} differs from the map's {np.shape(feature_map)}")
        pooled = (pooled + _pool_one(pooled_grid(other, kind, parts), kind, parts, pool, size)).astype(np.float32)
    return pooled


def check_heads(weight: np.ndarray, bias: np.ndarray, in_channels: int | None = None) -> tuple[int, int, int]:
    """(n, B, C_out) of valid folded heads; an LpnEdgeError naming the shapes otherwise."""
    weight, bias = np.asarray(weight), np.asarray(bias)
    if (
        weight.ndim != 3
        or bias.shape != weight.shape[:2]
        or (in_channels is not None and weight.shape[2] != in_channels)
    ):
        expected = f"(n, B, {in_channels})" if in_channels is not None else "(n, B, C)"
        raise LpnEdgeError(f"heads of shapes weight {weight.shape}, bias {bias.shape} do not fit; expected weight "
                           f"{expected} and bias (n, B)")
    return weight.shape


def embed_pooled(pooled: np.ndarray, weight: np.ndarray, bias: np.ndarray, bias_scale: float = 1.0) -> np.ndarray:
    """(N, C_out, n) pooled -> (N, B * n) float32 embedding (heads, per-part L2 / sqrt(n), official layout)."""
    pooled = np.asarray(pooled, dtype=np.float32)
    parts, bottleneck, _ = check_heads(weight, bias, pooled.shape[1])
    if pooled.ndim != 3 or pooled.shape[2] != parts:
        raise LpnEdgeError(f"pooled parts of shape {pooled.shape} do not fit heads of {parts} parts")
    weight = np.asarray(weight, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    # (N, B, n): part p is weight[p] @ pooled[:, :, p] + bias_scale * bias[p]
    values = np.stack([pooled[:, :, p] @ weight[p].T for p in range(parts)], axis=2)
    values = values + np.float32(bias_scale) * bias.T[None]
    norms = np.maximum(np.linalg.norm(values, axis=1, keepdims=True), np.float32(1e-12)) * np.float32(math.sqrt(parts))
    return np.ascontiguousarray((values / norms).reshape(len(pooled), bottleneck * parts), dtype=np.float32)


def pool_and_embed(feature_map: np.ndarray, weight: np.ndarray, bias: np.ndarray, bias_scale: float = 1.0, *,
                   kind: str = "ring", pool: str = "avg", layout: str = "nchw",
                   mirror: np.ndarray | None = None) -> np.ndarray:
    """Feature map(s) -> (N, B * n) float32 embedding: `pool_parts` then `embed_pooled` (parts = weight.shape[0])."""
    parts = check_heads(weight, bias)[0]
    return embed_pooled(pool_parts(feature_map, parts, kind, pool, layout, mirror), weight, bias, bias_scale)
