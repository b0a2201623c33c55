import math

import pytest
import torch
from conftest import randomise_batchnorm

from lpn_edge.config import ModelConfig
from lpn_edge.errors import LpnEdgeError
from lpn_edge.model import LPN, build_model


def tiny(**overrides):
    fields = dict(backbone="resnet18", num_classes=7, image_size=(64, 64), dropout=0.5)
    fields.update(overrides)
    torch.manual_seed(0)
    model = LPN(ModelConfig(**fields))
    randomise_batchnorm(model)
    return model.eval()


def test_training_mode_returns_part_logits_for_every_view():
    model = tiny().train()
    out = model({"satellite": torch.randn(2, 3, 64, 64), "drone": torch.randn(2, 3, 64, 64),
                 "ground": torch.randn(2, 3, 64, 64), "google": torch.randn(2, 3, 64, 64)})
    assert set(out) == {"satellite", "drone", "ground", "google"}
    assert all(len(logits) == 4 and logits[0].shape == (2, 7) for logits in out.values())


@pytest.mark.parametrize("views,share,expected", [
    (3, True, {"satellite", "ground"}), (3, False, {"satellite", "drone", "ground"}),
    (2, False, {"satellite", "ground"}), (2, True, {"satellite"}),
])
def test_weight_sharing_decides_the_trunks(views, share, expected):
    model = LPN(ModelConfig(backbone="resnet18", views=views, share_weights=share, num_classes=3))
    assert set(model.backbones) == expected


def test_two_view_model_refuses_drone_images():
    model = tiny(views=2, share_weights=False)
    with pytest.raises(LpnEdgeError, match="drone"):
        model.embed(torch.randn(1, 3, 64, 64), "drone")


def test_stride_one_halves_the_downsampling():
    x = torch.randn(1, 3, 64, 64)
    assert tiny(stride=1).feature_map(x, "drone").shape == (1, 512, 4, 4)
    assert tiny(stride=2).feature_map(x, "drone").shape == (1, 512, 2, 2)
    resnet50 = LPN(ModelConfig(backbone="resnet50", stride=1, num_classes=3)).eval()
    with torch.no_grad():
        assert resnet50.feature_map(x, "satellite").shape == (1, 2048, 4, 4)
    vgg = LPN(ModelConfig(backbone="vgg16", num_classes=3)).eval()
    with torch.no_grad():
        assert vgg.feature_map(x, "satellite").shape == (1, 512, 2, 2)


def test_embeddings_have_unit_norm_and_official_layout():
    model = tiny(parts=3)
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        embedding = model.embed(x, "drone", flip=False)
        bottlenecks = model.bottlenecks(x, "drone")  # (B, 512, n)
    assert embedding.shape == (5, 512 * 3)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(5), atol=1e-5)
    # index = channel * n + part, each part L2-normalised and divided by sqrt(n)
    for part in range(3):
        expected = bottlenecks[:, :, part] / bottlenecks[:, :, part].norm(dim=1, keepdim=True) / math.sqrt(3)
        assert torch.allclose(embedding[:, part::3], expected, atol=1e-6)


def test_flip_sums_bottlenecks_before_normalisation():
    model = tiny()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        summed = model.bottlenecks(x, "satellite") + model.bottlenecks(x.flip(3), "satellite")
        embedding = model.embed(x, "satellite", flip=True)
        unflipped = model.embed(x, "satellite", flip=False)
    parts = summed / summed.norm(dim=1, keepdim=True) / 2.0
    assert torch.allclose(embedding, parts.flatten(1), atol=1e-6)
    assert not torch.allclose(embedding, unflipped, atol=1e-3)


def ring_pool_by_slicing(feature_map, parts, pool):
    """LPN's square-ring pooling written out with slices (square map, side L >= 2n): ring i is the centred box of
    half-side (i + 1) * per minus the box of half-side i * per, per = L // (2n), the last ring reaching the border;
    avg divides the ring's sum by the outer box's area (the authors zero the inner box and average), max is the
    max over the ring's cells. avg+max concatenates the avg channels, then the max channels."""
    if pool == "avg+max":
        return torch.cat([ring_pool_by_slicing(feature_map, parts, "avg"),
                          ring_pool_by_slicing(feature_map, parts, "max")], dim=1)
    side = feature_map.shape[-1]
    centre, per = side // 2, side // (2 * parts)
    pooled = []
    for i in range(parts):
        lo, hi = (centre - (i + 1) * per, centre + (i + 1) * per) if i < parts - 1 else (0, side)
        ring = feature_map[:, :, lo:hi, lo:hi].clone()
        if i > 0:
            inner = slice(centre - i * per - lo, centre + i * per - lo)
            ring[:, :, inner, inner] = 0.0 if pool == "avg" else float("-inf")
        if pool == "avg":
            pooled.append(ring.sum(dim=(-2, -1)) / ((hi - lo) * (hi - lo)))
        else:
            pooled.append(ring.amax(dim=(-2, -1)))
    return torch.stack(pooled, dim=-1)


@pytest.mark.parametrize("pool", ["avg", "max", "avg+max"])
def test_model_pool_is_ring_pooling(pool):
    """model.pool on a real 8x8 feature map (128 px, stride 1) against the ring slicing written out above."""
    model = tiny(pool=pool, image_size=(128, 128))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feature_map = model.feature_map(x, "drone")
        assert feature_map.shape[-2:] == (8, 8)
        pooled = model.pool(feature_map, "drone")
        expected = ring_pool_by_slicing(feature_map, 4, pool)
        assert pooled.shape == expected.shape == (2, 1024 if pool == "avg+max" else 512, 4)
        assert torch.allclose(pooled, expected, rtol=1e-5, atol=1e-6)
        assert model.embed(x, "drone").shape == (2, 2048)
    assert model.classifiers[0].add_block[0].in_features == (1024 if pool == "avg+max" else 512)


def test_embed_refuses_training_mode():
    with pytest.raises(LpnEdgeError, match="eval"):
        tiny().train().embed(torch.randn(2, 3, 64, 64), "drone")


def test_head_initialisation_follows_the_authors():
    model = tiny(num_classes=50)
    head = model.classifiers[0]
    assert head.classifier[0].weight.std().item() == pytest.approx(0.001, rel=0.2)
    assert head.add_block[0].bias.abs().max().item() == 0.0
    assert head.add_block[1].weight.mean().item() == pytest.approx(1.0, abs=0.02)


def test_backbone_weights_from_a_file(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = build_model(ModelConfig(backbone="resnet18", num_classes=3), backbone_weights=str(tmp_path / "r18.pth"))
    assert torch.equal(model.backbones["satellite"].conv1.weight, net.conv1.weight)
    assert torch.equal(model.backbones["ground"].layer4[1].conv2.weight, net.layer4[1].conv2.weight)


def test_backbone_weights_of_the_wrong_architecture_are_refused(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(LpnEdgeError, match="do not fit resnet18"):
        build_model(ModelConfig(backbone="resnet18", num_classes=3), backbone_weights=str(tmp_path / "r34.pth"))
    with pytest.raises(LpnEdgeError, match="does not exist"):
        build_model(ModelConfig(backbone="resnet18", num_classes=3), backbone_weights=str(tmp_path / "nope.pth"))


def test_missing_imagenet_weights_name_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(LpnEdgeError, match=r"resnet18-f37072fd\.pth.*hub/checkpoints"):
        build_model(ModelConfig(backbone="resnet18", num_classes=3), backbone_weights="imagenet")


def _offline(*args, **kwargs):
    raise OSError("network is unreachable")


def test_pooling_matrix_is_a_non_persistent_buffer_that_moves_with_the_model():
    # Issue 8 item 13: the avg pooling matrix lives on the module (moved once by .to()), not copied every forward.
    from lpn_edge.model.partition import partition_matrix

    model = tiny(views=2, share_weights=False, satellite_partition="ring_outer_first", ground_partition="row")
    fresh_keys = set(tiny(views=2, share_weights=False).state_dict())
    buffers = dict(model.named_buffers())
    for view, kind in (("satellite", "ring_outer_first"), ("ground", "row")):
        weights = model.pooling_weights(view)
        assert any(buffer is weights for buffer in buffers.values())  # registered on the model itself
        assert torch.equal(weights, partition_matrix(kind, 4, 4, 4).float())  # 64 px, stride 1: a 4x4 map
        # the forward reads that very buffer: scaling it in place scales the pooled features
        feature_map = torch.rand(2, 512, 4, 4)
        before = model.pool(feature_map, view)
        with torch.no_grad():
            weights.mul_(2)
        assert torch.allclose(model.pool(feature_map, view), 2 * before)
        with torch.no_grad():
            weights.div_(2)
    # state_dict keys are unchanged: no pooling entry, the same keys as any model of this architecture
    assert set(model.state_dict()) == fresh_keys
    assert all(key.startswith(("backbones.", "classifiers.")) for key in fresh_keys)
    assert model.to(torch.float64).pooling_weights("ground").dtype == torch.float64
    model.to("meta")
    assert model.pooling_weights("satellite").device.type == "meta"
    assert model.pooling_weights("ground").device.type == "meta"
