"""Polar transform of an aerial image into a panorama-like strip (SAFA, Shi et al. NeurIPS 2019; used by LPN on
CVUSA / CVACT so that the satellite image lines up with the ground panorama)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lpn_edge.data.resample import bilinear_sample
from lpn_edge.errors import LpnEdgeError


def polar_grid(in_h: int, in_w: int, out_h: int, out_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel samples the aerial image: (x, y) arrays of shape (out_h, out_w), in array indices.

    For an S x S aerial image (continuous coordinates 0..S, centre S/2) output pixel (i, j) samples
        x = S/2 + (S/2) * (out_h - i)/out_h * sin(2 pi j / out_w)
        y = S/2 - (S/2) * (out_h - i)/out_h * cos(2 pi j / out_w)
    so row 0 is the outer circle (the horizon of a panorama) and the last row is near the centre (the ground at
    the camera's feet); column 0 looks north, column out_w/4 east, clockwise. A non-square image uses W/2 and H/2
    as the half-sizes along x and y (an ellipse). Pixel (r, c) covers [c, c+1) x [r, r+1), so the array index is
    the continuous coordinate minus 0.5.
    """
    i = np.arange(out_h, dtype=np.float64)[:, None]
    j = np.arange(out_w, dtype=np.float64)[None, :]
    radius = (out_h - i) / out_h
    angle = 2.0 * np.pi * j / out_w
    x = in_w / 2.0 + (in_w / 2.0) * radius * np.sin(angle)
    y = in_h / 2.0 - (in_h / 2.0) * radius * np.cos(angle)
    return (x - 0.5).astype(np.float32), (y - 0.5).astype(np.float32)


def polar_transform(image: Image.Image | np.ndarray, out_h: int, out_w: int) -> Image.Image | np.ndarray:
    """Polar-transform an aerial image (see `polar_grid`) with bilinear sampling.

    ``image``: a PIL image or an (H, W) / (H, W, C) numpy array; returns the same kind, (out_h, out_w[, C]),
    with the input's dtype (uint8 results are rounded).
    """
    if out_h < 1 or out_w < 1:
        raise LpnEdgeError(f"polar output size must be positive, got {out_h}x{out_w}")
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")  # palette indices or packed modes cannot be interpolated
        return Image.fromarray(polar_transform(np.asarray(image), out_h, out_w))
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise LpnEdgeError(f"polar_transform expects an (H, W) or (H, W, C) image, got shape {array.shape}")
    planar = array[..., None] if array.ndim == 2 else array
    x, y = polar_grid(planar.shape[0], planar.shape[1], out_h, out_w)
    out = bilinear_sample(planar, x, y, outside="clamp")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    out = out.astype(array.dtype)
    return out[..., 0] if array.ndim == 2 else out
