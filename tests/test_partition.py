import pytest
import torch
import torch.nn.functional as F
from reference_lpn import official_square_ring_avg

from lpn_edge.model.partition import partition_masks, partition_matrix, pool_parts, pool_parts_matmul, ring_resized_size


def test_ring_weights_16x16_four_parts():
    weights = partition_matrix("ring", 16, 16, 4).reshape(16, 16, 4)
    for part, expected in enumerate([1 / 16, 1 / 64, 1 / 144, 1 / 256]):
        values = weights[..., part][weights[..., part] != 0].unique()
        assert values.tolist() == pytest.approx([expected])
    # ring cell counts: 4x4 centre, then 8x8-4x4, 12x12-8x8, 16x16-12x12
    assert (weights != 0).sum(dim=(0, 1)).tolist() == [16, 48, 80, 112]


@pytest.mark.parametrize("kind", ["ring", "ring_outer_first"])
@pytest.mark.parametrize("size", [(8, 8), (15, 15), (16, 16), (17, 17), (12, 20)])
@pytest.mark.parametrize("parts", [1, 2, 4, 6, 8])
def test_rings_tile_the_map_exactly_once(kind, size, parts):
    masks, _ = partition_masks(kind, *size, parts)
    assert masks.sum(0).eq(1).all()


@pytest.mark.parametrize("kind", ["row", "column"])
@pytest.mark.parametrize("size", [(8, 8), (15, 15), (16, 16), (12, 20)])
@pytest.mark.parametrize("parts", [1, 2, 4, 8])
def test_strips_cover_the_map(kind, size, parts):
    # Adaptive-pooling strips overlap by one cell where the length is not a multiple of n (as in the reference).
    masks, _ = partition_masks(kind, *size, parts)
    counts = masks.sum(0)
    assert counts.ge(1).all()
    if (size[0] if kind == "row" else size[1]) % parts == 0:
        assert counts.eq(1).all()


@pytest.mark.parametrize("size", [(8, 8), (15, 15), (16, 16), (17, 17), (12, 20)])
@pytest.mark.parametrize("parts", [1, 2, 4, 6, 8])
@pytest.mark.parametrize("kind", ["ring", "row", "column"])
def test_matrix_form_equals_reference(size, parts, kind):
    feature_map = torch.rand(3, 5, *size, dtype=torch.float64)
    reference = pool_parts(feature_map, parts, kind, "avg")
    assert torch.allclose(pool_parts_matmul(feature_map, parts, kind), reference, atol=1e-12)


@pytest.mark.parametrize("size", [2, 4, 8, 12, 16, 32])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 6])
def test_square_even_maps_match_the_official_slicing(size, parts):
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    assert torch.allclose(pool_parts(x, parts, "ring", "avg"), official_square_ring_avg(x, parts), atol=1e-12)


def test_max_pooling_is_max_over_each_ring():
    x = torch.rand(2, 4, 16, 16)
    pooled = pool_parts(x, 4, "ring", "max")
    masks, _ = partition_masks("ring", 16, 16, 4)
    for part in range(4):
        expected = x[:, :, masks[part]].amax(-1)
        assert torch.equal(pooled[..., part], expected)
    assert torch.equal(pooled[..., 0], x[:, :, 6:10, 6:10].amax((-2, -1)))


def test_avg_plus_max_concatenates_channels():
    x = torch.rand(2, 3, 12, 12)
    both = pool_parts(x, 3, "ring", "avg+max")
    assert both.shape == (2, 6, 3)
    assert torch.equal(both[:, :3], pool_parts(x, 3, "ring", "avg"))
    assert torch.equal(both[:, 3:], pool_parts(x, 3, "ring", "max"))


def test_resize_rule_when_rings_would_be_empty():
    # 4x4 map, 4 parts: 4 / 8 < 1, so the map is resized to 4 + 2 * (4 - 2) = 8 first.
    assert ring_resized_size(4, 4) == 8 and ring_resized_size(8, 4) == 8 and ring_resized_size(7, 4) == 9
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    resized = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=True)
    assert torch.allclose(pool_parts(x, 4, "ring", "avg"), pool_parts(resized, 4, "ring", "avg"))
    assert torch.allclose(pool_parts_matmul(x, 4), pool_parts(resized, 4, "ring", "avg"))
    assert torch.allclose(pool_parts(x, 4), official_square_ring_avg(x, 4))


def test_non_square_maps_use_per_axis_geometry():
    weights = partition_matrix("ring", 12, 20, 2).reshape(12, 20, 2)
    # rows: c=6, per=3 -> inner box rows [3, 9); columns: c=10, per=5 -> [5, 15); divisor 6 * 10
    inner = torch.zeros(12, 20, dtype=torch.bool)
    inner[3:9, 5:15] = True
    assert torch.allclose(weights[..., 0][inner], torch.full((60,), 1 / 60, dtype=torch.float64))
    assert (weights[..., 0][~inner] == 0).all()
    assert torch.allclose(weights[..., 1][~inner], torch.full((180,), 1 / 240, dtype=torch.float64))


def test_row_and_column_strips_equal_adaptive_pooling():
    x = torch.rand(2, 3, 10, 14)
    assert torch.allclose(pool_parts(x, 4, "row", "avg"), F.adaptive_avg_pool2d(x, (4, 1))[..., 0])
    assert torch.allclose(pool_parts(x, 4, "column", "avg"), F.adaptive_avg_pool2d(x, (1, 4))[:, :, 0])
    assert torch.equal(pool_parts(x, 3, "column", "max"), F.adaptive_max_pool2d(x, (1, 3))[:, :, 0])


def test_outer_first_reverses_the_ring_order():
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(pool_parts(x, 4, "ring_outer_first"), pool_parts(x, 4, "ring").flip(-1))


def test_outer_first_resizes_like_the_authors_two_view_branches():
    # VGG16 at 256 px gives 8x8 maps; with 8 parts the authors' *_LPN_R classes resize without align_corners.
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    resized = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    expected = official_square_ring_avg(resized, 8).flip(-1)
    assert torch.allclose(pool_parts(x, 8, "ring_outer_first"), expected)
    assert torch.allclose(pool_parts_matmul(x, 8, "ring_outer_first"), expected)
    assert not torch.allclose(pool_parts(x, 8, "ring").flip(-1), expected)


def test_one_part_is_global_pooling():
    x = torch.rand(2, 3, 15, 11)
    assert torch.allclose(pool_parts(x, 1, "ring", "avg")[..., 0], x.mean((-2, -1)))
    assert torch.equal(pool_parts(x, 1, "ring", "max")[..., 0], x.amax((-2, -1)))
