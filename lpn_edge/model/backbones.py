"""Backbones in one table: one `BackboneSpec` row per name holds everything the rest of the package knows about a
backbone. Config validation (`model.backbone`), the model (trunk, channels, feature-map size), ImageNet weight
loading (`lpn_edge.model.weights`) and `convert-official` (`lpn_edge.model.official`) all read it; none keeps a list
of its own. An unknown name is one `LpnEdgeError` that lists the registered names.

Row fields:
  name                 the `model.backbone` value
  out_channels         C of the (B, C, h, w) feature map the trunk hands to partition pooling
  builder              `builder(spec) -> nn.Module`: a randomly initialised trunk (torchvision parameter names, the
                       network's own strides); it imports torch itself, so this module stays importable without torch
  stride_convs         the submodules whose stride `model.stride: 1` sets to 1 (wtyhub/LPN: layer4's first block,
                       conv2 + downsample[0] in a Bottleneck, conv1 + downsample[0] in a BasicBlock); empty when the
                       backbone ignores the option (the authors' VGG16: their layer4 code is commented out)
  reduction            input side / feature-map side with the builder's strides (`model.stride: 2`); stride 1 halves
                       it when `stride_convs` is not empty
  imagenet_url         torchvision's IMAGENET1K_V1 file, cached as <torch hub dir>/checkpoints/<its basename>;
                       None when there are none (then `--backbone-weights PATH|none`)
  classifier_prefixes  keys of the ImageNet classifier the trunk leaves out (ResNet `fc.`, VGG `classifier.`): found
                       in ImageNet files and in the authors' trunks, ignored when loading either
  official_prefix      an official (wtyhub/LPN) checkpoint stores the trunk as `model_<i>.<official_prefix><key>`
                       (their ft_net* wrappers hold the torchvision network as `.model`); `convert-official`
                       recognises the backbone as the row whose trunk has exactly those key names and shapes

Adding a backbone is one row plus its builder: `register_backbone(BackboneSpec(...))`, or a line in `_BUILT_IN`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lpn_edge.errors import LpnEdgeError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    out_channels: int
    builder: Callable[[BackboneSpec], nn.Module]
    stride_convs: tuple[str, ...] = ()
    reduction: int = 32
    imagenet_url: str | None = None
    classifier_prefixes: tuple[str, ...] = ()
    official_prefix: str = "model."

    def feature_stride(self, stride: int) -> int:
        """How much the trunk shrinks the input with `model.stride` = `stride` (ResNets: 16 with 1, 32 with 2)."""
        return self.reduction // 2 if stride == 1 and self.stride_convs else self.reduction


def _torchvision_resnet(spec: BackboneSpec) -> nn.Module:
    import torchvision

    from lpn_edge.model.trunks import ResNetTrunk

    return ResNetTrunk(getattr(torchvision.models, spec.name)(weights=None))


def _torchvision_vgg16_bn(spec: BackboneSpec) -> nn.Module:
    import torchvision

    from lpn_edge.model.trunks import VGGTrunk

    return VGGTrunk(torchvision.models.vgg16_bn(weights=None))


_TORCHVISION = "https://download.pytorch.org/models/"
_BASIC_BLOCK_STRIDE = ("layer4.0.conv1", "layer4.0.downsample.0")
_BOTTLENECK_STRIDE = ("layer4.0.conv2", "layer4.0.downsample.0")
_BUILT_IN = (
    # small ResNets for CPU demos and tests
    BackboneSpec("resnet18", 512, _torchvision_resnet, _BASIC_BLOCK_STRIDE, 32,
                 _TORCHVISION + "resnet18-f37072fd.pth", ("fc.",)),
    BackboneSpec("resnet34", 512, _torchvision_resnet, _BASIC_BLOCK_STRIDE, 32,
                 _TORCHVISION + "resnet34-b627a593.pth", ("fc.",)),
    # the paper's backbone
    BackboneSpec("resnet50", 2048, _torchvision_resnet, _BOTTLENECK_STRIDE, 32,
                 _TORCHVISION + "resnet50-0676ba61.pth", ("fc.",)),
    # the paper's other backbone: the batch-norm VGG16 the authors use (vgg16_bn)
    BackboneSpec("vgg16", 512, _torchvision_vgg16_bn, (), 32,
                 _TORCHVISION + "vgg16_bn-6c64b313.pth", ("classifier.",)),
)
BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _BUILT_IN}


def register_backbone(spec: BackboneSpec, replace: bool = False) -> BackboneSpec:
    """Add a row to the table (config validation, the model, weights and `convert-official` then accept it)."""
    if spec.name in BACKBONES and not replace:
        raise LpnEdgeError(f"backbone {spec.name!r} is already registered; pass replace=True to redefine it")
    if spec.out_channels < 1 or spec.reduction < 1:
        raise LpnEdgeError(f"backbone {spec.name!r}: out_channels and reduction must be >= 1")
    BACKBONES[spec.name] = spec
    return spec


def backbone_names() -> tuple[str, ...]:
    return tuple(BACKBONES)


def backbone_specs() -> tuple[BackboneSpec, ...]:
    """Every row, in registration order (read the table through this, not a copy of it taken at import)."""
    return tuple(BACKBONES.values())


def backbone_spec(name: str, what: str = "backbone") -> BackboneSpec:
    """The row of `name`; otherwise an LpnEdgeError "<what> must be one of <names>; got <name>"."""
    spec = BACKBONES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise LpnEdgeError(f"{what} must be one of {', '.join(BACKBONES)}; got {name!r}")
    return spec


def build_backbone(name: str, stride: int = 1) -> nn.Module:
    """A randomly initialised trunk with the row's stride rule applied; see `lpn_edge.model.weights` for ImageNet
    initialisation. (B, 3, H, W) -> (B, out_channels, ceil(H / s), ceil(W / s)), s = `feature_stride(name, stride)`."""
    spec = backbone_spec(name)
    trunk = spec.builder(spec)
    if stride == 1:
        for path in spec.stride_convs:
            trunk.get_submodule(path).stride = (1, 1)
    return trunk


def feature_stride(name: str, stride: int) -> int:
    """How much the backbone shrinks the input: 16 for ResNets with stride 1, else 32."""
    return backbone_spec(name).feature_stride(stride)
