"""The per-part head of LPN (the authors' ClassBlock): Linear -> BatchNorm1d -> Dropout -> Linear."""

from __future__ import annotations

import torch
from torch import nn


class ClassBlock(nn.Module):
    """(B, C) part feature -> (B, classes) logits in training, (B, bottleneck) BatchNorm output via `bottleneck`.

    Submodule names (`add_block.0` Linear, `add_block.1` BatchNorm1d, `classifier.0` Linear) equal the authors',
    so official state_dicts map onto it by name.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float, bottleneck: int = 512) -> None:
        super().__init__()
        self.add_block = nn.Sequential(
            nn.Linear(in_features, bottleneck), nn.BatchNorm1d(bottleneck), nn.Dropout(dropout)
        )
        self.classifier = nn.Sequential(nn.Linear(bottleneck, num_classes))
        # The authors' initialisation: Kaiming (fan_out) for the bottleneck, N(1, 0.02) BN scale, N(0, 0.001) logits.
        nn.init.kaiming_normal_(self.add_block[0].weight, a=0, mode="fan_out")
        nn.init.zeros_(self.add_block[0].bias)
        nn.init.normal_(self.add_block[1].weight, 1.0, 0.02)
        nn.init.zeros_(self.add_block[1].bias)
        nn.init.normal_(self.classifier[0].weight, std=0.001)
        nn.init.zeros_(self.classifier[0].bias)

    def bottleneck(self, part: torch.Tensor) -> torch.Tensor:
        return self.add_block(part)

    def forward(self, part: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.add_block(part))
