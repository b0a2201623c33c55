"""Numpy bilinear sampling (used by the polar transform and the synthetic cameras)."""

from __future__ import annotations

import numpy as np
import pytest

from lpn_edge.data.resample import bilinear_sample
from lpn_edge.errors import LpnEdgeError

IMAGE = np.arange(12, dtype=np.float32).reshape(3, 4, 1)  # value = 4 * row + column


def test_exact_at_pixel_centres_and_linear_between():
    x = np.array([0.0, 3.0, 1.5, 2.25])
    y = np.array([0.0, 2.0, 0.5, 1.0])
    assert bilinear_sample(IMAGE, x, y)[:, 0] == pytest.approx(4 * y + x)


def test_outside_modes():
    x, y = np.array([-3.0, 5.0, 1.0]), np.array([1.0, 1.0, -2.0])
    assert bilinear_sample(IMAGE, x, y, "fill", fill=-1.0)[:, 0].tolist() == [-1, -1, -1]
    assert bilinear_sample(IMAGE, x, y, "clamp")[:, 0].tolist() == [4, 7, 1]
    # mirrored about the border pixel centres: x=-3 -> 3, x=5 -> 1, y=-2 -> 2
    assert bilinear_sample(IMAGE, x, y, "reflect")[:, 0].tolist() == [7, 5, 9]
    with pytest.raises(LpnEdgeError, match="outside"):
        bilinear_sample(IMAGE, x, y, "wrap")


def test_uint8_colour_image_and_shapes():
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = (200, 100, 0)
    out = bilinear_sample(image, np.full((4, 5), 0.5), np.zeros((4, 5)))
    assert out.shape == (4, 5, 3) and out.dtype == np.float32
    assert out[0, 0].tolist() == [100, 50, 0]
    single = bilinear_sample(np.full((1, 1, 3), 9, np.uint8), np.array([0.3]), np.array([0.0]))
    assert single.tolist() == [[9, 9, 9]]
