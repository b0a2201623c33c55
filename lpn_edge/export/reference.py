"""The PyTorch reference every artifact is compared with: fp32 embeddings computed by the model itself (no TF32,
`lpn_edge.precision.exact_fp32`)."""

from __future__ import annotations

import numpy as np
import torch

from lpn_edge.precision import exact_fp32

BATCH = 16  # images per forward pass when computing references (bounded memory for ResNet-50 at 256 px)


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
