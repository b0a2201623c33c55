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


AUTO_ORDER = ("gpu", "faiss", "numpy")  # the first that opens
ONE_QUERY_OPTIONS = {"faiss": {"threads": 1}}  # a frame at a time (`Localizer`): FAISS with one OpenMP thread was
# faster than numpy at every gallery size measured (2-core AVX2 EPYC, 2026-12-02, 144 to 100k x 2048 fp16 rows: 0.46
# against 0.53 ms to 67 against 197 ms), also beside a competing process (0.32 ms at 144 rows), where its default
# thread per core waited for the busy core (8.0 ms)


def open_matcher(gallery: np.ndarray, engine: str = "auto", *, one_query: bool = False, **options):
    """A matcher over a (G, D) float16/float32 gallery (an array, np.memmap or GalleryIndex.embeddings) with
    `.search(queries (Q, D) float32, k) -> (indices (Q, k) int64, scores (Q, k) float32)` and `.engine`.

    engine: "numpy" (CPU, always there, reads the gallery where it lies, e.g. memory-mapped), "faiss" (the [faiss]
    extra; holds a copy of the gallery in memory), "gpu" (pycuda or cuda-python and a CUDA device; the gallery is
    held in fp16) or "auto": the first engine of `AUTO_ORDER` that opens.
    All engines return the same indices and scores: higher score first, equal scores by ascending gallery index
    (identical whenever the float32 scores are exact; otherwise engines can disagree only where two scores agree to
    the last float32 bits, since their summation orders differ). A requested engine that is missing is an error.
    `one_query`: the matcher will search one query at a time (the locate loop), so FAISS searches with one thread
    (`ONE_QUERY_OPTIONS`). `options` are the named engine's own keyword arguments, so "auto" takes none.
    """
    if engine not in ENGINES:
        raise LpnEdgeError(f"matching engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    defaults = ONE_QUERY_OPTIONS if one_query else {}

    def opened(name: str):
        return _open_engine(gallery, name, **{**defaults.get(name, {}), **options})

    if engine != "auto":
        return opened(engine)
    if options:
        raise LpnEdgeError(f"matching options ({', '.join(sorted(options))}) belong to one engine; name it "
                           f"(one of {', '.join(name for name in ENGINES if name != 'auto')}) instead of 'auto'")
    *fallible, last = AUTO_ORDER
    for candidate in fallible:
        try:
            return opened(candidate)
        except LpnEdgeError:
            pass
    return opened(last)


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
