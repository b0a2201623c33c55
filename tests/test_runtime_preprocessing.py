"""The runtime's numpy preprocessing equals the training side's evaluation transform, on files and camera frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lpn_edge.data.images import load_rgb
from lpn_edge.data.transforms import eval_transform
from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.preprocessing import IMAGENET_MEAN, find_images, normalise, preprocess, preprocessing_spec

SIZES = [(64, 64), (256, 256), (96, 64)]


def _eval_side(path, size) -> np.ndarray:
    return eval_transform(size)(load_rgb(path)).numpy()


@pytest.mark.parametrize("size", SIZES)
def test_equals_eval_transform_on_real_images(mosaic_dir, size):
    paths = find_images(mosaic_dir / "drone")[:3] + find_images(mosaic_dir / "satellite")[:3]
    assert len(paths) == 6
    got = preprocess(paths, size)
    assert got.shape == (6, 3, *size) and got.dtype == np.float32
    for row, path in zip(got, paths):
        np.testing.assert_allclose(row, _eval_side(path, size), rtol=0, atol=1e-6)


def test_frame_equals_file(tmp_path):
    """A decoded (H, W, 3) uint8 frame gives what its file gives; batches (N, H, W, 3) and mixed lists too."""
    rng = np.random.default_rng(0)
    frame = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((120, 90)))
    Image.fromarray(frame).save(tmp_path / "frame.png")
    from_file = preprocess(tmp_path / "frame.png", (64, 64))
    np.testing.assert_array_equal(preprocess(frame, (64, 64)), from_file)
    np.testing.assert_array_equal(preprocess(np.stack([frame, frame]), (64, 64)), np.concatenate([from_file] * 2))
    np.testing.assert_array_equal(preprocess([frame, tmp_path / "frame.png"], (64, 64))[1], from_file[0])
    np.testing.assert_allclose(from_file[0], _eval_side(tmp_path / "frame.png", (64, 64)), rtol=0, atol=1e-6)


def test_normalise_in_place_gives_the_same_numbers():
    rgb = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = np.full((3, 24, 32), np.nan, np.float32)
    assert normalise(rgb, out=out) is out
    np.testing.assert_array_equal(out, normalise(rgb))


def test_modes_are_decoded_as_the_data_stage_does(tmp_path):
    """CMYK and 16-bit files go through the one decoder: black stays black, 16-bit white stays white."""
    Image.new("CMYK", (40, 30), (0, 0, 0, 255)).save(tmp_path / "black.jpg")
    Image.fromarray(np.full((30, 40), 65535, np.uint16)).save(tmp_path / "white16.png")
    black, white = preprocess([tmp_path / "black.jpg", tmp_path / "white16.png"], (32, 32))
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    assert np.abs(black - (0 - mean) / np.asarray([0.229, 0.224, 0.225], np.float32)[:, None, None]).max() < 0.05
    assert (white > 2.0).all()  # (1 - mean) / std > 2 for every channel


@pytest.mark.parametrize("frame, message", [
    (np.zeros((8, 8, 3), np.float32), "dtype float32"),
    (np.zeros((8, 8), np.uint8), r"shape \(8, 8\)"),
    (np.zeros((8, 8, 4), np.uint8), r"shape \(8, 8, 4\)"),
])
def test_bad_frames_are_refused(frame, message):
    with pytest.raises(LpnEdgeError, match=rf"a frame must be an \(H, W, 3\) uint8 RGB array; got .*{message}"):
        preprocess(frame, (32, 32))


def test_spec_names_the_steps():
    assert preprocessing_spec((96, 64)) == {"size": [96, 64], "resize": "bicubic", "channel_order": "RGB",
                                            "scale": "1/255", "mean": [0.485, 0.456, 0.406],
                                            "std": [0.229, 0.224, 0.225], "layout": "NCHW", "dtype": "float32"}
