"""Training / evaluation transforms and robustness perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_helpers import mean_color, noise_image, solid
from PIL import Image
from torchvision import transforms as T

from lpn_edge.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Rotate, Shift, eval_transform, train_transforms
from lpn_edge.errors import LpnEdgeError


def test_train_transforms_shapes_and_recipe():
    built = train_transforms((32, 48), pad=4, color_jitter=True, satellite_rotation=True)
    assert set(built) == {"satellite", "drone", "street", "google"}
    torch.manual_seed(0)
    for view, transform in built.items():
        out = transform(noise_image(0, (100, 70)))
        assert out.shape == (3, 32, 48) and out.dtype == torch.float32, view

    def kinds(t):
        return [type(step).__name__ for step in t.transforms]

    assert kinds(built["satellite"]) == ["ColorJitter", "Resize", "Pad", "RandomAffine", "RandomCrop",
                                         "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert "RandomAffine" not in kinds(built["drone"])
    resize = built["drone"].transforms[1]
    assert resize.interpolation == T.InterpolationMode.BICUBIC
    assert built["satellite"].transforms[3].degrees == [-90.0, 90.0]
    plain = train_transforms(32, color_jitter=False, satellite_rotation=False)
    assert kinds(plain["satellite"]) == kinds(plain["drone"]) == ["Resize", "Pad", "RandomCrop",
                                                                  "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert plain["satellite"].transforms[1].padding_mode == "edge" and plain["satellite"].transforms[1].padding == 10


def test_eval_transform_normalises_with_imagenet_statistics():
    out = eval_transform(8)(solid((124, 116, 104), (20, 20)))  # ~ the ImageNet mean colour
    assert out.shape == (3, 8, 8)
    assert out.abs().max() < 0.02
    white = eval_transform(8)(solid((255, 255, 255)))
    expected = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(white[:, 0, 0].numpy(), expected, atol=1e-5)
    assert mean_color(white) == pytest.approx([255, 255, 255], abs=1e-3)


def test_shift_moves_content_by_exact_pixels():
    image = noise_image(3, (20, 16))
    source = np.asarray(image)
    shifted = np.asarray(Shift(3, -2)(image))
    assert shifted.shape == source.shape
    # content at (x, y) moves to (x + 3, y - 2)
    assert np.array_equal(shifted[0:14, 3:20], source[2:16, 0:17])
    # the uncovered left columns are the reflection of the image, not black
    assert np.array_equal(shifted[0:14, 2], source[2:16, 1])
    black = np.asarray(Shift(3, 0, fill="constant")(image))
    assert (black[:, :3] == 0).all() and np.array_equal(black[:, 3:], source[:, :-3])


def test_shift_rejects_bad_arguments():
    with pytest.raises(LpnEdgeError, match="fill"):
        Shift(1, 0, fill="wrap")
    with pytest.raises(LpnEdgeError, match="larger than"):
        Shift(16, 0)(noise_image(0, (16, 16)))


def test_rotate_perturbation_rotates_counter_clockwise():
    image = solid((0, 0, 0), (21, 21))
    image.paste((255, 255, 255), (15, 9, 21, 12))  # a bar pointing east from the centre
    rotated = np.asarray(Rotate(90)(image))
    assert rotated[2, 10].tolist() == [255, 255, 255]  # now points north
    assert rotated[10, 18].tolist() == [0, 0, 0]


def test_eval_transform_with_perturbations():
    image = noise_image(4, (64, 64))
    plain, moved = eval_transform(32)(image), eval_transform(32, shift=(4, 0))(image)
    assert torch.allclose(moved[:, :, 4:], plain[:, :, :-4])
    turned = eval_transform(32, rotate_degrees=180)(image)
    flipped = eval_transform(32)(Image.fromarray(np.asarray(image)[::-1, ::-1].copy()))
    assert torch.allclose(turned, flipped, atol=1e-5)
    assert not torch.allclose(turned, plain)
