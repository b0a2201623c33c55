"""Smooth random fields for procedural textures (value noise: random grids upsampled bicubically by Pillow)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def fractal_noise(
    rng: np.random.Generator, height: int, width: int, cells: float, octaves: int = 3, persistence: float = 0.5
) -> np.ndarray:
    """A (height, width) float32 field with zero mean and unit standard deviation.

    ``cells`` is the number of random values across the longer side in the coarsest octave (the feature size is
    about ``max(height, width) / cells`` pixels); each further octave doubles it and scales the amplitude by
    ``persistence``.
    """
    total = np.zeros((height, width), np.float32)
    amplitude = 1.0
    side = max(height, width)
    for octave in range(octaves):
        count = max(2, int(round(cells * 2**octave)))
        grid = rng.standard_normal((count * height // side + 2, count * width // side + 2)).astype(np.float32)
        # Pillow's bicubic resize of a float image is fast C code; the field is smooth between grid values.
        total += amplitude * np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
        amplitude *= persistence
    total -= total.mean()
    return total / max(float(total.std()), 1e-6)
