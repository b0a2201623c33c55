"""Backbones: torchvision ResNets (with the paper's stride option) and VGG16-BN, cut before global pooling."""

from __future__ import annotations

import torch
from torch import nn

# Channels of the feature map each backbone hands to the partition pooling.
OUT_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "vgg16": 512}


class ResNetTrunk(nn.Module):
    """torchvision ResNet without avgpool/fc: (B, 3, H, W) -> (B, C, H/16 or H/32, W/16 or W/32).

    Parameter names equal torchvision's (conv1.*, layer4.*), so ImageNet and official weights load by name.
    """

    def __init__(self, name: str, stride: int) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if stride == 1:
            # wtyhub/LPN: layer4[0] keeps the resolution (conv2 for Bottleneck, conv1 for BasicBlock).
            block = net.layer4[0]
            strided = block.conv2 if name == "resnet50" else block.conv1
            strided.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class VGGTrunk(nn.Module):
    """torchvision VGG16-BN `features` (the authors' VGG backbone): (B, 3, H, W) -> (B, 512, H/32, W/32)."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.features = torchvision.models.vgg16_bn(weights=None).features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def build_backbone(name: str, stride: int = 1) -> nn.Module:
    """A randomly initialised backbone; see `lpn_edge.model.weights` for ImageNet initialisation."""
    if name == "vgg16":
        return VGGTrunk()
    if name in ("resnet18", "resnet34", "resnet50"):
        return ResNetTrunk(name, stride)
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(OUT_CHANNELS)}")


def feature_stride(name: str, stride: int) -> int:
    """How much the backbone shrinks the input: 16 for ResNets with stride 1, else 32."""
    return 16 if name != "vgg16" and stride == 1 else 32
