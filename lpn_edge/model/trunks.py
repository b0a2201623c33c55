"""Backbone trunks: torchvision networks cut before global pooling (built through `lpn_edge.model.backbones`)."""

from __future__ import annotations

import torch
from torch import nn


class ResNetTrunk(nn.Module):
    """torchvision ResNet without avgpool/fc: (B, 3, H, W) -> (B, C, H/32, W/32) (H/16 once the table's stride rule
    has set layer4's first block to stride 1).

    Parameter names equal torchvision's (conv1.*, layer4.*), so ImageNet and official weights load by name.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class VGGTrunk(nn.Module):
    """torchvision VGG16-BN `features` (the authors' VGG backbone): (B, 3, H, W) -> (B, 512, H/32, W/32)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = net.features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)
