"""The PyTorch reference every artifact is compared with: fp32 embeddings computed by the model itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

BATCH = 16  # images per forward pass when computing references (bounded memory for ResNet-50 at 256 px)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Disable TF32 in cuDNN convolutions and CUDA matmuls for the block (restored afterwards).

    PyTorch lets cuDNN convolutions use TF32 by default; a TF32 "fp32" reference would be off by ~1e-3 and could not
    vouch for a cosine of 0.99999.
    """
    # The legacy flags, not the newer fp32_precision ones: Inductor reads the legacy flags, and PyTorch refuses a
    # mix of the two APIs.
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32, matmul.allow_tf32 = False, False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def reference_device() -> torch.device:
    """CUDA when present (much faster on a Jetson), else CPU; either way in exact fp32 (see `exact_fp32`)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_module(module: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """Run `module` (eval mode, on `device`) over (N, 3, H, W) float32 images in batches; returns float32 numpy."""
    outputs = []
    # no_grad, not inference_mode: tensors the model caches on first use (ring weights) must stay traceable.
    with torch.no_grad(), exact_fp32():
        for start in range(0, len(images), BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + BATCH])).to(device)
            outputs.append(module(batch).float().cpu().numpy())
    return np.concatenate(outputs)
