"""The accuracy beside each encoding figure: the accuracy images (real photos with --data, else random ones) and
how close a path's embeddings of them are to PyTorch eager fp32 on the CPU (cosine, top-1 agreement)."""

from __future__ import annotations

import numpy as np

from lpn_edge.bench.options import BenchOptions
from lpn_edge.errors import LpnEdgeError

ACCURACY_QUERIES, ACCURACY_GALLERY = 16, 48
REFERENCE = "pytorch eager fp32"


def accuracy_images(options: BenchOptions, size: tuple[int, int]):
    from lpn_edge.export.parity import random_set, real_set

    if options.data is not None:
        found = real_set(options.data, size, ACCURACY_QUERIES, ACCURACY_GALLERY)
        if found is None:
            raise LpnEdgeError(f"--data {options.data}: needs drone/ and satellite/ with at least "
                               f"{ACCURACY_QUERIES} and {ACCURACY_GALLERY - ACCURACY_QUERIES} images")
        return found
    return random_set(size, ACCURACY_QUERIES, ACCURACY_GALLERY)


def accuracy_of(run, name: str, precision: str, accuracy, reference_accuracy) -> dict | None:
    """Cosine and top-1 agreement of `run` ((N, 3, H, W) float32 -> (N, D) embeddings) against the CPU eager fp32
    embeddings of the accuracy images; None without them."""
    if accuracy is None:
        return None
    from lpn_edge.export.parity import compare

    candidate = np.concatenate([run(accuracy.images[i:i + 8]) for i in range(0, len(accuracy.images), 8)])
    figures = compare(reference_accuracy, candidate, accuracy.queries, artifact=name, backend="bench",
                      precision=precision, image_set=accuracy.name, reference_name=REFERENCE)
    return {"image_set": figures.image_set, "images": figures.images, "min_cosine": figures.min_cosine,
            "mean_cosine": figures.mean_cosine, "top1_agreement": figures.top1_agreement}
