"""The backbone table: every row fits its trunk, and one new row is all a new backbone needs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from lpn_edge.config import ModelConfig
from lpn_edge.errors import LpnEdgeError
from lpn_edge.model import backbones, build_model
from lpn_edge.model.backbones import BackboneSpec, backbone_spec, build_backbone, feature_stride, register_backbone

BUILT_IN = ("resnet18", "resnet34", "resnet50", "vgg16")


def tiny_trunk(spec: BackboneSpec) -> nn.Module:
    """Two 3x3 convolutions of stride 2: (B, 3, H, W) -> (B, 16, H/4, W/4); its stride rule makes the second one 1."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, spec.out_channels, 3, stride=2, padding=1), nn.ReLU())


TINY = BackboneSpec("tiny2conv", out_channels=16, builder=tiny_trunk, stride_convs=("3",), reduction=4,
                    classifier_prefixes=("head.",))


@pytest.fixture
def tiny_row():
    """The table with one more row, for this test only."""
    yield register_backbone(TINY)
    del backbones.BACKBONES[TINY.name]


def test_built_in_rows():
    assert backbones.backbone_names() == BUILT_IN
    assert [backbone_spec(name).out_channels for name in BUILT_IN] == [512, 512, 2048, 512]
    assert [feature_stride(name, 1) for name in BUILT_IN] == [16, 16, 16, 32]  # VGG16 ignores the stride option
    assert [feature_stride(name, 2) for name in BUILT_IN] == [32, 32, 32, 32]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", BUILT_IN)
def test_every_row_describes_its_trunk(name, stride):
    """Channels and map size as the row says (shapes only: the meta device allocates nothing)."""
    spec = backbone_spec(name)
    with torch.device("meta"):
        trunk = build_backbone(name, stride)
        out = trunk(torch.empty(1, 3, 256, 224))
    size = feature_stride(name, stride)
    assert tuple(out.shape) == (1, spec.out_channels, 256 // size, 224 // size)
    for path in spec.stride_convs:  # wtyhub/LPN: layer4[0] conv2 (Bottleneck) or conv1 (BasicBlock), downsample[0]
        assert trunk.get_submodule(path).stride == ((1, 1) if stride == 1 else (2, 2))


@pytest.mark.parametrize("name", BUILT_IN)
def test_imagenet_files_are_torchvisions(name):
    import torchvision

    torchvision_name = {"vgg16": "vgg16_bn"}.get(name, name)  # the authors' VGG16 is the batch-norm one
    weights = torchvision.models.get_model_weights(torchvision_name).IMAGENET1K_V1
    assert backbone_spec(name).imagenet_url == weights.url


def test_unknown_backbone_is_one_error_listing_the_names():
    with pytest.raises(LpnEdgeError, match=r"^model.backbone must be one of resnet18, resnet34, resnet50, vgg16; "
                                           r"got 'resnet101'$"):
        ModelConfig(backbone="resnet101")
    with pytest.raises(LpnEdgeError, match=r"backbone must be one of resnet18, .*vgg16; got 'vgg19'"):
        build_backbone("vgg19")
    with pytest.raises(LpnEdgeError, match="already registered"):
        register_backbone(backbone_spec("resnet18"))


def test_a_new_row_builds_an_lpn_that_embeds(tiny_row):
    assert "tiny2conv" in backbones.backbone_names()
    with pytest.raises(LpnEdgeError, match=r"one of resnet18, resnet34, resnet50, vgg16, tiny2conv; got 'tiny'"):
        ModelConfig(backbone="tiny")
    torch.manual_seed(0)
    for stride, map_side in ((1, 16), (2, 8)):
        config = ModelConfig(backbone="tiny2conv", stride=stride, parts=2, num_classes=3, image_size=(32, 32))
        model = build_model(config).eval()
        images = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert model.feature_map(images, "drone").shape == (2, 16, map_side, map_side)
            assert model.pooling_map_size == (map_side, map_side)
            embedding = model.embed(images, "drone")
        assert embedding.shape == (2, 512 * 2)
        torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
        assert model.classifiers[0].add_block[0].in_features == 16


def test_a_new_row_without_imagenet_weights_says_what_to_pass(tiny_row):
    config = ModelConfig(backbone="tiny2conv", parts=2, num_classes=3, image_size=(32, 32))
    with pytest.raises(LpnEdgeError, match="no ImageNet weights are known for backbone tiny2conv.*--backbone-weights"):
        build_model(config, backbone_weights="imagenet")


def test_a_new_row_loads_its_weights_and_converts_from_an_official_checkpoint(tiny_row, tmp_path):
    from lpn_edge.model.official import convert_official

    torch.manual_seed(1)
    satellite, ground = tiny_trunk(TINY), tiny_trunk(TINY)
    # weights from a file: the row's classifier keys are ignored
    torch.save({**satellite.state_dict(), "head.weight": torch.zeros(2)}, tmp_path / "tiny.pth")
    config = ModelConfig(backbone="tiny2conv", parts=2, num_classes=3, image_size=(32, 32))
    model = build_model(config, backbone_weights=str(tmp_path / "tiny.pth"))
    assert torch.equal(model.backbones["ground"][3].weight, satellite[3].weight)
    # an official-layout checkpoint (model_<i>.model.<trunk key>) is recognised by its tensor names and shapes
    state = official_state(satellite, ground)
    state["model_1.model.head.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "net.pth")
    with pytest.raises(LpnEdgeError, match=r"tiny2conv stride \(3\) is not in the weights.*--stride 1\|2"):
        convert_official(tmp_path / "net.pth", views=2)
    converted, report = convert_official(tmp_path / "net.pth", views=2, stride=1)
    assert (converted.config.backbone, converted.config.num_classes, converted.config.parts) == ("tiny2conv", 5, 2)
    assert report.ignored_keys == ["model_1.model.head.weight"]
    assert torch.equal(converted.backbones["ground"][0].weight, ground[0].weight)
    with torch.no_grad():
        assert converted.embed(torch.randn(2, 3, 32, 32), "satellite").shape == (2, 1024)


def test_an_official_trunk_that_fits_no_row_exactly(tiny_row, tmp_path):
    from lpn_edge.model.official import convert_official

    state = official_state(tiny_trunk(TINY), tiny_trunk(TINY))
    del state["model_1.model.1.running_var"]
    torch.save(state, tmp_path / "net.pth")
    # the nearest row is tried, and loading lists what differs
    with pytest.raises(LpnEdgeError, match=r"2-view tiny2conv LPN.*1 missing \(backbones.satellite.1.running_var\)"):
        convert_official(tmp_path / "net.pth", views=2, stride=1)
    state = {k.replace(".model.", ".model.x"): v for k, v in state.items()}
    torch.save(state, tmp_path / "net.pth")
    with pytest.raises(LpnEdgeError, match=r"net.pth: the model_1 trunk .* is none of the known backbones "
                                           r"\(resnet18, resnet34, resnet50, vgg16, tiny2conv\)"):
        convert_official(tmp_path / "net.pth", views=2, stride=1)


def official_state(satellite: nn.Module, ground: nn.Module, parts: int = 2, classes: int = 5) -> dict:
    """A two-view state_dict in the authors' key layout (no shared weights) around two tiny trunks."""
    state = {f"model_1.model.{k}": v for k, v in satellite.state_dict().items()}
    state.update({f"model_2.model.{k}": v for k, v in ground.state_dict().items()})
    for i in range(parts):
        state[f"classifier{i}.add_block.0.weight"] = torch.randn(512, TINY.out_channels) * 0.02
        state[f"classifier{i}.add_block.0.bias"] = torch.zeros(512)
        for name, value in (("weight", torch.ones(512)), ("bias", torch.zeros(512)),
                            ("running_mean", torch.zeros(512)), ("running_var", torch.ones(512)),
                            ("num_batches_tracked", torch.tensor(0))):
            state[f"classifier{i}.add_block.1.{name}"] = value
        state[f"classifier{i}.classifier.0.weight"] = torch.randn(classes, 512) * 0.001
        state[f"classifier{i}.classifier.0.bias"] = torch.zeros(classes)
    return state


def test_the_table_and_config_validation_need_no_torch():
    code = ("import sys; sys.modules.update(torch=None, torchvision=None)\n"
            "from lpn_edge.config import ModelConfig\n"
            "from lpn_edge.model.backbones import backbone_names, feature_stride\n"
            "ModelConfig(backbone='vgg16')\n"
            "print(backbone_names(), feature_stride('resnet50', 1))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('resnet18', 'resnet34', 'resnet50', 'vgg16') 16"
