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
    height, width, channels = image.shape
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if outside == "reflect":
        x, y = _reflect(x, width), _reflect(y, height)
    inside = (x > -1) & (x < width) & (y > -1) & (y < height)
    x = np.clip(x, 0, width - 1)
    y = np.clip(y, 0, height - 1)
    x0 = np.minimum(np.floor(x).astype(np.intp), width - 2) if width > 1 else np.zeros(x.shape, np.intp)
    y0 = np.minimum(np.floor(y).astype(np.intp), height - 2) if height > 1 else np.zeros(y.shape, np.intp)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    flat = image.reshape(-1, channels)
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    top = flat[y0 * width + x0] * (1 - fx) + flat[y0 * width + x1] * fx
    bottom = flat[y1 * width + x0] * (1 - fx) + flat[y1 * width + x1] * fx
    out = (top * (1 - fy) + bottom * fy).astype(np.float32)
    if outside == "fill":
        # A sample less than one pixel outside still blends with the border; beyond that it is the fill value.
        out[~inside] = np.broadcast_to(np.asarray(fill, dtype=np.float32), (channels,))
    return out


def _reflect(coord: np.ndarray, size: int) -> np.ndarray:
    if size == 1:
        return np.zeros_like(coord)
    period = 2.0 * (size - 1)
    coord = np.mod(coord, period)
    return np.where(coord > size - 1, period - coord, coord)
