"""Feeding a fixed-range batch dimension (a TensorRT profile, a pt2 batch range): chunks of at most `largest` rows,
short chunks padded with zeros to `smallest`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def run_in_batches(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, smallest: int,
                   largest: int) -> np.ndarray:
    """`run` over (N, ...) `images` in chunks whose size lies in [smallest, largest] (a TensorRT profile, a pt2
    batch range); a last chunk below `smallest` is padded with zeros and the padding's outputs dropped."""
    outputs = []
    for start in range(0, len(images), largest):
        chunk = images[start:start + largest]
        rows = len(chunk)
        if rows < smallest:
            chunk = np.concatenate([chunk, np.zeros((smallest - rows, *chunk.shape[1:]), chunk.dtype)])
        outputs.append(run(np.ascontiguousarray(chunk))[:rows])
    return np.concatenate(outputs)
