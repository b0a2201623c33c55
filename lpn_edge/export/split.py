"""The split export's torch side: the backbone-only module that is exported, and the folded heads it needs.

Only valid for avg pooling: then pooling, the bottleneck Linear and the eval-mode BatchNorm are one affine map per
part, which (a) folds into one Linear per part and (b) lets the graph sum the feature maps of an image and its
mirror before pooling (test-time flip at the cost of one pooling instead of two). See `lpn_edge.runtime.split_heads`
for the maths; the runtime writes and reads the `.npz` (`save_split_heads`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.pooling import ring_weights
from lpn_edge.model import LPN


class SplitBackbone(nn.Module):
    """images (N, 3, H, W) -> feature_map (N, C, h, w); with `flip`, F(images) + F(mirrored images)."""

    def __init__(self, model: LPN, view: str, flip: bool) -> None:
        super().__init__()
        if model.config.pool != "avg":
            raise LpnEdgeError(f"--split needs avg pooling; this model uses pool {model.config.pool!r}")
        model.check_view(view)
        self.model, self.view, self.flip = model, view, flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feature_map = self.model.feature_map(images, self.view)
        if self.flip:
            # Not mirrored back: each map is pooled with the same matrix, and pooling is linear, so the sum of the
            # pooled maps equals the pooling of the summed maps.
            feature_map = feature_map + self.model.feature_map(torch.flip(images, dims=[3]), self.view)
        return feature_map


def fold_heads(model: LPN, view: str, size: tuple[int, int], flip_summed: bool) -> dict[str, np.ndarray]:
    """The split heads for input size (H, W) pixels as arrays (see `lpn_edge.runtime.split_heads` for keys and
    shapes), BatchNorm folded into the Linear, the ring matrix from the model's geometry (`pooling.ring_weights`).

    bottleneck = BN(W x + b) = s * (W x + b - mean) + beta with s = gamma / sqrt(var + eps)
               = (s[:, None] * W) x + (s * (b - mean) + beta).
    Folded in float64, stored as float32.
    """
    weights, biases = [], []
    for head in model.classifiers:
        linear, norm = head.add_block[0], head.add_block[1]
        scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
        weights.append(scale[:, None] * linear.weight.double())
        biases.append(scale * (linear.bias.double() - norm.running_mean.double()) + norm.bias.double())
    return {
        "ring_weights": ring_weights(model, view, size),
        "weight": torch.stack(weights).float().detach().numpy(),
        "bias": torch.stack(biases).float().detach().numpy(),
        "bias_scale": np.float32(2.0 if flip_summed else 1.0),
    }

