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


AUTO_ORDER = ("gpu", "faiss", "numpy")  # many queries at once: FAISS's threads pay off
ONE_QUERY_ORDER = ("gpu", "numpy")  # a frame at a time (`Localizer`): numpy reads the gallery at memory speed, and
# FAISS's thread start-up costs more than it saves (its OpenMP threads also slow the encoder down): measured on 2
# cores, 144 tiles, 12 ms a search against 0.2 ms


def open_matcher(gallery: np.ndarray, engine: str = "auto", auto_order: tuple[str, ...] = AUTO_ORDER, **options):
    """A matcher over a (G, D) float16/float32 gallery (an array, np.memmap or GalleryIndex.embeddings) with
    `.search(queries (Q, D) float32, k) -> (indices (Q, k) int64, scores (Q, k) float32)` and `.engine`.

    engine: "numpy" (CPU, always there), "faiss" (the [faiss] extra), "gpu" (pycuda or cuda-python and a CUDA
    device; the gallery is held in fp16) or "auto": the first engine of `auto_order` that opens.
    All engines return the same indices and scores: higher score first, equal scores by ascending gallery index
    (identical whenever the float32 scores are exact; otherwise engines can disagree only where two scores agree to
    the last float32 bits, since their summation orders differ). A requested engine that is missing is an error.
    `options` are the named engine's own keyword arguments, so "auto" takes none.
    """
    if engine not in ENGINES:
        raise LpnEdgeError(f"matching engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine != "auto":
        return _open_engine(gallery, engine, **options)
    if options:
        raise LpnEdgeError(f"matching options ({', '.join(sorted(options))}) belong to one engine; name it "
                           f"(one of {', '.join(name for name in ENGINES if name != 'auto')}) instead of 'auto'")
    *fallible, last = auto_order
    for candidate in fallible:
        try:
            return _open_engine(gallery, candidate)
        except LpnEdgeError:
            pass
    return _open_engine(gallery, last)


def _open_engine(gallery: np.ndarray, engine: str, **options):
    if engine == "numpy":
        return NumpyMatcher(gallery, **options)
    if engine == "faiss":
        try:
            return FaissMatcher(gallery, **options)
        except ImportError:
            raise LpnEdgeError("matching engine 'faiss' needs the faiss package: pip install \"lpn-edge[faiss]\" "
                               "(faiss-cpu)") from None
    try:
        return _gpu_matcher(gallery, **options)
    except ImportError as exc:
        raise LpnEdgeError(f"matching engine 'gpu' needs pycuda or cuda-python: {exc}") from None
