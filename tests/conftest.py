"""Shared fixtures: tiny models and checkpoints, and the optional real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Real University-1652 pairs: $LPN_EDGE_MOSAIC, else ../shared/data/u1652-mosaic beside this checkout.
MOSAIC = Path(os.environ.get("LPN_EDGE_MOSAIC") or
              Path(__file__).resolve().parents[1].parent / "shared" / "data" / "u1652-mosaic")


def randomise_batchnorm(model, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics so that eval-mode parity tests mean something."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) * 0.5 + 0.75)


@pytest.fixture
def tiny_config():
    from lpn_edge.config import ModelConfig, RunConfig

    return RunConfig(model=ModelConfig(backbone="resnet18", num_classes=5, image_size=(64, 64), dropout=0.5))


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_config):
    import torch

    from lpn_edge.checkpoint import save_checkpoint
    from lpn_edge.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config.model)
    randomise_batchnorm(model)
    return save_checkpoint(tmp_path / "tiny.pt", model, tiny_config, epoch=3, metrics={"R@1": 0.5})


@pytest.fixture
def mosaic_dir():
    if not MOSAIC.is_dir():
        pytest.skip(f"real University-1652 pairs not present at {MOSAIC}")
    return MOSAIC
