"""Choosing a matching engine: `open_matcher(gallery, engine)` over the numpy and FAISS engines of `matching` and
the GPU top-k of `cuda_kernels`, all with `.search(queries, k)` and one tie rule (see `matching`).

Apart from `matching` so that the CPU engines stay a leaf module the GPU code can import.
"""

from __future__ import annotations

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.matching import ENGINES, FaissMatcher, NumpyMatcher


def _gpu_matcher(gallery: np.ndarray, **options):
    """The GPU top-k (cuda_kernels.GpuMatcher: fp16 gallery on the device, k <= 64)."""
    from lpn_edge.runtime.cuda_kernels import GpuMatcher

    return GpuMatcher(gallery, **options)


def open_matcher(gallery: np.ndarray, engine: str = "auto", **options):
    """A matcher over a (G, D) float16/float32 gallery (an array, np.memmap or GalleryIndex.embeddings) with
    `.search(queries (Q, D) float32, k) -> (indices (Q, k) int64, scores (Q, k) float32)` and `.engine`.

    engine: "numpy" (CPU, always there), "faiss" (the [faiss] extra), "gpu" (pycuda or cuda-python and a CUDA
    device; the gallery is held in fp16) or "auto": the GPU when one answers, else FAISS when installed, else numpy.
    All engines return the same indices and scores: higher score first, equal scores by ascending gallery index
    (identical whenever the float32 scores are exact; otherwise engines can disagree only where two scores agree to
    the last float32 bits, since their summation orders differ). A requested engine that is missing is an error.
    """
    if engine not in ENGINES:
        raise LpnEdgeError(f"matching engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "numpy":
        return NumpyMatcher(gallery, **options)
    if engine == "faiss":
        try:
            return FaissMatcher(gallery, **options)
        except ImportError:
            raise LpnEdgeError("matching engine 'faiss' needs the faiss package: pip install \"lpn-edge[faiss]\" "
                               "(faiss-cpu)") from None
    if engine == "gpu":
        return _gpu_matcher(gallery, **options)
    try:
        return _gpu_matcher(gallery)
    except (LpnEdgeError, ImportError):
        pass
    try:
        return FaissMatcher(gallery)
    except ImportError:
        return NumpyMatcher(gallery)
