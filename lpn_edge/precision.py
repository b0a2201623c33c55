"""Exact fp32 on CUDA: the numerics every PyTorch reference in lpn-edge runs under (evaluation, export parity).

PyTorch lets cuDNN convolutions use TF32 by default; a TF32 "fp32" reference would be off by ~1e-3 and could not
vouch for a cosine of 0.99999. torch is imported when the block is entered, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def tf32_flags(torch) -> dict[str, bool]:
    """Whether cuDNN convolutions and CUDA matmuls may use TF32 now: what an "fp32" figure on a GPU ran with."""
    return {"cudnn": bool(torch.backends.cudnn.allow_tf32), "matmul": bool(torch.backends.cuda.matmul.allow_tf32)}


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Disable TF32 in cuDNN convolutions and CUDA matmuls for the block (the caller's flags restored afterwards)."""
    import torch

    # The legacy flags, not the newer fp32_precision ones: Inductor reads the legacy flags, and PyTorch refuses a
    # mix of the two APIs.
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32, matmul.allow_tf32 = False, False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
