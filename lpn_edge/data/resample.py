"""Bilinear sampling of an image at arbitrary coordinates (numpy only: used by the polar transform and the
synthetic world's cameras, which must run without torch and without OpenCV)."""

from __future__ import annotations

import numpy as np

from lpn_edge.errors import LpnEdgeError

OUTSIDE = ("fill", "clamp", "reflect")


def bilinear_sample(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    outside: str = "fill",
    fill: float | tuple[float, ...] = 0.0,
) -> np.ndarray:
    """Sample ``image`` (H, W, C) at column ``x`` and row ``y`` (same-shape float arrays, pixel centres at integers).

    ``outside`` says what lies beyond the image: "fill" a constant (``fill``, a scalar or one value per channel),
    "clamp" the nearest border pixel, "reflect" the mirrored image (period 2(H-1) / 2(W-1)).
    Returns float32 of shape ``x.shape + (C,)``.
    """
    if image.ndim != 3:
        raise LpnEdgeError(f"bilinear_sample expects an (H, W, C) image, got shape {image.shape}")
    if outside not in OUTSIDE:
        raise LpnEdgeError(f"outside must be one of {', '.join(OUTSIDE)}, got {outside!r}")
    if image.shape[0] < 2 or image.shape[1] < 2:  # the 2x2 neighbourhood below needs two rows and columns
        image = np.pad(image, ((0, image.shape[0] < 2), (0, image.shape[1] < 2), (0, 0)), mode="edge")
    height, width, channels = image.shape
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if outside == "reflect":
        x, y = _reflect(x, width), _reflect(y, height)
    elif outside == "fill":
        outside_mask = (x <= -1) | (x >= width) | (y <= -1) | (y >= height)
    x = np.clip(x, 0, width - 1)
    y = np.clip(y, 0, height - 1)
    # truncation is floor for x, y >= 0; the top-left corner stays one pixel inside so its neighbours exist
    x0 = np.minimum(x.astype(np.int32), width - 2)
    y0 = np.minimum(y.astype(np.int32), height - 2)
    fx = (x - x0.astype(np.float32))[..., None]  # (float32 - int32 would promote to float64)
    fy = (y - y0.astype(np.float32))[..., None]
    flat = image.reshape(-1, channels)
    index = y0 * width + x0
    # np.take is several times faster than fancy indexing for gathering rows
    top_left, top_right = (np.take(flat, index + k, axis=0).astype(np.float32) for k in (0, 1))
    bottom_left, bottom_right = (np.take(flat, index + k, axis=0).astype(np.float32) for k in (width, width + 1))
    top = top_left + (top_right - top_left) * fx
    bottom = bottom_left + (bottom_right - bottom_left) * fx
    out = top + (bottom - top) * fy
    if outside == "fill":
        # a sample less than one pixel outside still blends with the border; beyond that it is the fill value
        out[outside_mask] = np.broadcast_to(np.asarray(fill, dtype=np.float32), (channels,))
    return out


def _reflect(coord: np.ndarray, size: int) -> np.ndarray:
    if coord.size == 0 or (coord.min() >= 0 and coord.max() <= size - 1):
        return coord  # nothing to mirror (the common case), skip the costly modulo
    period = 2.0 * (size - 1)
    coord = np.mod(coord, period)
    return np.where(coord > size - 1, period - coord, coord)
