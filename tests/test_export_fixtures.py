"""Checks of the shared export helpers (tests/export_helpers.py)."""

import numpy as np
import pytest
import torch
from export_helpers import REAL_DATA, make_checkpoint

from lpn_edge.runtime.preprocessing import find_images


def test_fixture_checkpoint_gives_clear_top1_matches(tmp_path):
    """Guards the premise of the top-1 checks: each query's noisy copy wins clearly, and BN is far from identity."""
    from lpn_edge.checkpoint import load_model
    from lpn_edge.export.parity import random_set, top1

    model = load_model(make_checkpoint(tmp_path / "m.pt"))
    images = random_set((64, 64), 8, 16)
    with torch.no_grad():
        emb = model.embed(torch.from_numpy(images.images), "drone").numpy()
    scores = np.sort(emb[:8] @ emb[8:].T, axis=1)
    assert (top1(emb, 8) == np.arange(8)).all()
    assert (scores[:, -1] - scores[:, -2]).min() > 0.02
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))


@pytest.mark.skipif(REAL_DATA is None, reason="shared University-1652 mosaic not present")
def test_fixture_finds_the_real_data():
    assert len(find_images(REAL_DATA / "drone")) >= 96
