"""Official-checkpoint import: key mapping, settings, refusal messages and numerical parity."""

import pytest
import torch
import torchvision
import yaml
from conftest import randomise_batchnorm
from reference_lpn import official_embedding, official_two_view_embedding
from typer.testing import CliRunner

import lpn_edge
from lpn_edge.cli import app
from lpn_edge.errors import LpnEdgeError
from lpn_edge.model.official import convert_official


def official_resnet(arch: str, stride: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    if stride == 1:
        block = net.layer4[0]
        (block.conv2 if arch == "resnet50" else block.conv1).stride = (1, 1)
        block.downsample[0].stride = (1, 1)
    randomise_batchnorm(net, seed)
    return net.eval()


def official_state_dict(arch="resnet50", block=4, classes=11, views=3, duplicate_model_3=True, stride=1,
                        share_two_view=False):
    """A state_dict in the authors' key layout with random weights and random BatchNorm statistics.

    With `share_two_view` the model_2 keys hold model_1's tensors, as a two_view_net(share_weight=True) saves them
    (model_2 is the same module)."""
    satellite, ground = official_resnet(arch, stride, 1), official_resnet(arch, stride, 2)
    if share_two_view:
        ground = satellite
    state = {f"model_1.model.{k}": v for k, v in satellite.state_dict().items()}
    state.update({f"model_2.model.{k}": v for k, v in ground.state_dict().items()})
    if views == 3 and duplicate_model_3:
        state.update({f"model_3.model.{k}": v for k, v in satellite.state_dict().items()})
    channels = 2048 if arch == "resnet50" else 512
    generator = torch.Generator().manual_seed(3)
    for i in range(block):
        p = f"classifier{i}."
        state[p + "add_block.0.weight"] = torch.randn(512, channels, generator=generator) * 0.02
        state[p + "add_block.0.bias"] = torch.randn(512, generator=generator) * 0.1
        state[p + "add_block.1.weight"] = 1 + 0.1 * torch.randn(512, generator=generator)
        state[p + "add_block.1.bias"] = 0.1 * torch.randn(512, generator=generator)
        state[p + "add_block.1.running_mean"] = 0.1 * torch.randn(512, generator=generator)
        state[p + "add_block.1.running_var"] = 0.5 + torch.rand(512, generator=generator)
        state[p + "add_block.1.num_batches_tracked"] = torch.tensor(100)
        state[p + "classifier.0.weight"] = 0.001 * torch.randn(classes, 512, generator=generator)
        state[p + "classifier.0.bias"] = torch.zeros(classes)
    return state, satellite, ground


def trunk_of(net):
    def forward(x):
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return forward


@pytest.mark.parametrize("duplicate", [True, False])
def test_resnet50_parity_with_independent_computation(tmp_path, duplicate):
    state, satellite, _ = official_state_dict(duplicate_model_3=duplicate)
    torch.save(state, tmp_path / "net_119.pth")
    model, report = convert_official(tmp_path / "net_119.pth", views=None if duplicate else 3, stride=1)
    cfg = model.config
    assert (cfg.backbone, cfg.parts, cfg.views, cfg.share_weights, cfg.num_classes) == ("resnet50", 4, 3, True, 11)
    assert len(report.ignored_keys) == (6 if duplicate else 4)  # fc.weight / fc.bias of each stored trunk
    images = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        ours = model.embed(images, "drone")
        reference = official_embedding(trunk_of(satellite), state, images, 4)
    cosine = torch.nn.functional.cosine_similarity(ours, reference, dim=1)
    assert ours.shape == (2, 2048)
    assert cosine.min().item() >= 0.99999


def test_cli_conversion_with_opts_yaml(tmp_path):
    state, satellite, _ = official_state_dict(arch="resnet18", block=2, classes=5)
    torch.save(state, tmp_path / "net.pth")
    (tmp_path / "opts.yaml").write_text(yaml.safe_dump(
        {"block": 2, "stride": 1, "views": 3, "share": True, "pool": "avg", "droprate": 0.75, "h": 128, "w": 128,
         "nclasses": 5, "LPN": True, "lr": 0.001}))
    result = CliRunner().invoke(app, ["convert-official", str(tmp_path / "net.pth"), "--opts",
                                      str(tmp_path / "opts.yaml"), "--out", str(tmp_path / "ours.pt")])
    assert result.exit_code == 0, result.output
    assert "stride=opts.yaml" in result.output and "dropped model_3" in result.output
    model = lpn_edge.load_model(tmp_path / "ours.pt")
    assert model.config.image_size == (128, 128) and model.config.dropout == 0.75
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(
            model.embed(images, "satellite"), official_embedding(trunk_of(satellite), state, images, 2), dim=1)
    assert cosine.min().item() >= 0.99999


def test_mismatches_are_listed(tmp_path):
    state, _, _ = official_state_dict(arch="resnet18", block=2, classes=5)
    del state["classifier1.add_block.1.running_var"]
    state["classifier0.add_block.0.bias"] = torch.zeros(256)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "net.pth")
    with pytest.raises(LpnEdgeError) as info:
        convert_official(tmp_path / "net.pth", stride=1)
    message = str(info.value)
    assert "1 missing (classifiers.1.add_block.1.running_var)" in message
    assert "1 unexpected (extra.weight)" in message
    assert "1 mis-shaped (classifiers.0.add_block.0.bias (256,) vs (512,))" in message


def test_ambiguous_view_count_asks_for_views(tmp_path):
    state, _, _ = official_state_dict(arch="resnet18", block=2, duplicate_model_3=False)
    torch.save(state, tmp_path / "net.pth")
    with pytest.raises(LpnEdgeError, match="--views"):
        convert_official(tmp_path / "net.pth")


@pytest.mark.parametrize("share", [False, True])
def test_two_view_partitions_follow_the_authors_branches(tmp_path, share):
    # two_view_net: model_1 pools with border-first rings, model_2 with rows; with share_weight model_2 *is* model_1,
    # so street images go through the rings too.
    state, _, _ = official_state_dict(arch="resnet18", block=3, views=2, share_two_view=share)
    torch.save(state, tmp_path / "net.pth")
    model, report = convert_official(tmp_path / "net.pth", views=2, stride=2)
    assert model.config.share_weights is share
    assert model.config.satellite_partition == "ring_outer_first"
    assert model.config.ground_partition == ("ring_outer_first" if share else "row")
    assert report.dropped_duplicate == ("model_2" if share else None)


@pytest.mark.parametrize("share,stride", [(False, 1), (True, 2)])
def test_two_view_resnet50_parity_with_independent_port(tmp_path, share, stride):
    """Numerical parity of both views with tests/reference_lpn.py's port of the authors' two_view_net (LPN)."""
    state, satellite, ground = official_state_dict(views=2, stride=stride, share_two_view=share, block=4)
    torch.save(state, tmp_path / "net.pth")
    model, _ = convert_official(tmp_path / "net.pth", views=2, stride=stride)
    assert (model.config.views, model.config.share_weights, model.config.stride) == (2, share, stride)
    # 128 px: an 8x8 map (stride 1) or a 4x4 one (stride 2) that the rings first resize to 8x8
    images = torch.randn(2, 3, 128, 128)
    trunks = {"satellite": trunk_of(satellite), "ground": trunk_of(ground)}
    for view in ("satellite", "ground"):
        with torch.no_grad():
            ours = model.embed(images, view)
            reference = official_two_view_embedding(trunks, state, images, 4, view, share)
        assert ours.shape == (2, 512 * 4)
        cosine = torch.nn.functional.cosine_similarity(ours, reference, dim=1)
        assert cosine.min().item() >= 0.99999, view
        assert (ours - reference).abs().max().item() < 1e-4, view


def test_stride_is_required_without_opts_yaml(tmp_path):
    # The stride of layer4 leaves no trace in the weight shapes, and the authors' scripts default to 2: no guessing.
    state, _, _ = official_state_dict(arch="resnet18", block=2, classes=5)
    torch.save(state, tmp_path / "net_059.pth")
    with pytest.raises(LpnEdgeError, match=r"net_059\.pth.*--stride 1\|2.*--opts"):
        convert_official(tmp_path / "net_059.pth")
    (tmp_path / "opts.yaml").write_text(yaml.safe_dump({"block": 2, "views": 3, "share": True}))  # no stride key
    with pytest.raises(LpnEdgeError, match="--stride"):
        convert_official(tmp_path / "net_059.pth", tmp_path / "opts.yaml")
    command = ["convert-official", str(tmp_path / "net_059.pth"), "--out", str(tmp_path / "o.pt")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and "net_059.pth" in result.output and "--stride" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o.pt").exists()
    model, report = convert_official(tmp_path / "net_059.pth", stride=2)
    assert model.config.stride == 2 and report.settings_source["stride"] == "option"
    with torch.no_grad():
        assert model.feature_map(torch.zeros(1, 3, 64, 64), "satellite").shape[-2:] == (2, 2)


def test_cli_refuses_garbage_with_one_line(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(app, ["convert-official", str(tmp_path / "junk.pth"), "--out", str(tmp_path / "o.pt")])
    assert result.exit_code == 2
    assert "junk.pth is not a readable PyTorch state_dict" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.pt").exists()


def test_two_view_vgg16_conversion(tmp_path):
    torch.manual_seed(0)
    satellite, ground = torchvision.models.vgg16_bn().features, torchvision.models.vgg16_bn().features
    state = {f"model_1.model.features.{k}": v for k, v in satellite.state_dict().items()}
    state.update({f"model_2.model.features.{k}": v for k, v in ground.state_dict().items()})
    # the authors' trunks keep VGG's ImageNet classifier, unused by LPN (tiny stand-ins keep the test light)
    state.update({"model_1.model.classifier.0.weight": torch.zeros(2, 2),
                  "model_2.model.classifier.0.bias": torch.zeros(2)})
    for i in range(8):
        state[f"classifier{i}.add_block.0.weight"] = torch.randn(512, 512) * 0.02
        state[f"classifier{i}.add_block.0.bias"] = torch.zeros(512)
        state[f"classifier{i}.add_block.1.weight"] = torch.ones(512)
        state[f"classifier{i}.add_block.1.bias"] = torch.zeros(512)
        state[f"classifier{i}.add_block.1.running_mean"] = torch.zeros(512)
        state[f"classifier{i}.add_block.1.running_var"] = torch.ones(512)
        state[f"classifier{i}.add_block.1.num_batches_tracked"] = torch.tensor(0)
        state[f"classifier{i}.classifier.0.weight"] = torch.randn(9, 512) * 0.001
        state[f"classifier{i}.classifier.0.bias"] = torch.zeros(9)
    torch.save(state, tmp_path / "net.pth")
    model, report = convert_official(tmp_path / "net.pth", views=2)
    cfg = model.config
    assert (cfg.backbone, cfg.parts, cfg.num_classes, cfg.share_weights) == ("vgg16", 8, 9, False)
    assert sorted(report.ignored_keys) == ["model_1.model.classifier.0.weight", "model_2.model.classifier.0.bias"]
    assert torch.equal(model.backbones["satellite"].features[0].weight, satellite[0].weight)
    assert torch.equal(model.backbones["ground"].features[41].running_var, ground[41].running_var)
    with torch.no_grad():
        assert model.embed(torch.randn(2, 3, 64, 64), "ground").shape == (2, 512 * 8)


def test_global_pooling_baseline_converts_to_one_part(tmp_path):
    state, satellite, _ = official_state_dict(arch="resnet18", block=1, classes=5)
    state = {k.replace("classifier0.", "classifier."): v for k, v in state.items()}  # the authors' ft_net head
    torch.save(state, tmp_path / "baseline.pth")
    model, _ = convert_official(tmp_path / "baseline.pth", stride=1)
    assert model.config.parts == 1
    images = torch.randn(2, 3, 64, 64)
    renamed = {k.replace("classifier.", "classifier0."): v for k, v in state.items()}
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(
            model.embed(images, "drone"), official_embedding(trunk_of(satellite), renamed, images, 1), dim=1)
    assert cosine.min().item() >= 0.99999
