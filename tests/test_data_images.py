"""Image decoding: every PIL mode becomes RGB, EXIF orientation is applied, bad files raise UnreadableImage."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from data_helpers import BROKEN_KINDS, noise_image, save, solid, write_broken
from PIL import Image

from lpn_edge.data.images import UnreadableImage, check_image, load_rgb, scan_images
from lpn_edge.errors import LpnEdgeError


def test_rgb_png_round_trips_exactly(tmp_path):
    original = noise_image(0)
    loaded = load_rgb(save(original, tmp_path / "a.png"))
    assert loaded.mode == "RGB"
    assert np.array_equal(np.asarray(loaded), np.asarray(original))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, mode="L")
    loaded = np.asarray(load_rgb(save(gray, tmp_path / "g.png")))
    assert loaded.shape == (8, 8, 3)
    assert np.array_equal(loaded[..., 0], np.asarray(gray))
    assert np.array_equal(loaded[..., 0], loaded[..., 2])


def test_palette_image_keeps_its_colours(tmp_path):
    palette = solid((200, 30, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert palette.mode == "P"
    loaded = load_rgb(save(palette, tmp_path / "p.png"))
    assert loaded.getpixel((3, 3)) == (200, 30, 40)


def test_rgba_is_composited_over_black(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (200, 100, 50, 255))
    rgba.paste((255, 255, 255, 0), (0, 0, 5, 10))  # left half: white but fully transparent
    loaded = load_rgb(save(rgba, tmp_path / "a.png"))
    assert loaded.getpixel((1, 1)) == (0, 0, 0)
    assert loaded.getpixel((8, 1)) == (200, 100, 50)


def test_16_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    loaded = np.asarray(load_rgb(save(image, tmp_path / "deep.png")))
    assert loaded[0, :, 0].tolist() == [0, 128, 255, 4]  # PIL's own convert would give [0, 255, 255, 255]


def test_32_bit_integer_mode_is_read_as_16_bit(tmp_path):
    image = Image.new("I", (2, 1))
    image.putpixel((1, 0), 65535)
    loaded = np.asarray(load_rgb(save(image, tmp_path / "i.tif")))
    assert loaded[0, :, 1].tolist() == [0, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_rgb(save(cmyk, tmp_path / "c.jpg", quality=95))
    red, green, blue = loaded.getpixel((8, 8))
    assert loaded.mode == "RGB"
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied(tmp_path):
    # Stored 30 wide x 20 high with a red top-left corner; orientation 6 means "rotate 90 degrees clockwise to
    # display", so the displayed image is 20 wide x 30 high with the red corner at the top right.
    stored = solid((0, 0, 255), (30, 20))
    stored.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(stored, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    loaded = load_rgb(path)
    assert loaded.size == (20, 30)
    top_right, top_left = loaded.getpixel((17, 2)), loaded.getpixel((2, 2))
    assert top_right[0] > 200 and top_right[2] < 60
    assert top_left[2] > 200 and top_left[0] < 60


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_files_raise_unreadable_image_naming_the_file(tmp_path, kind):
    path = write_broken(tmp_path / f"{kind}.jpg", kind)
    for reader in (load_rgb, check_image):
        with pytest.raises(UnreadableImage) as caught:
            reader(path)
        assert str(path) in str(caught.value)
        assert isinstance(caught.value, LpnEdgeError)
    expected = {"zero_bytes": "empty", "truncated_jpeg": "truncated", "truncated_png": "truncated",
                "text_as_jpeg": "not an image"}[kind]
    assert expected in caught.value.reason


def test_missing_file_raises_unreadable_image(tmp_path):
    with pytest.raises(UnreadableImage, match="cannot be opened"):
        load_rgb(tmp_path / "nope.png")


def test_scan_skips_bad_files_with_one_warning(tmp_path):
    good = [save(noise_image(i), tmp_path / f"good{i}.jpg") for i in range(3)]
    bad = [write_broken(tmp_path / f"bad_{kind}.jpg", kind) for kind in BROKEN_KINDS]
    (tmp_path / "notes.txt").write_text("not an image and not named like one")
    (tmp_path / "sub").mkdir()
    with pytest.warns(UserWarning) as caught:
        scan = scan_images(tmp_path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"skipped {len(bad)} unreadable" in message
    assert bad[0].name in message
    assert scan.readable == good
    assert sorted(scan.unreadable_paths) == sorted(bad)


def test_scan_without_bad_files_is_silent(tmp_path):
    save(noise_image(0), tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(scan_images(tmp_path).readable) == 1


def test_scan_without_verify_still_rejects_empty_files(tmp_path):
    save(noise_image(0), tmp_path / "a.png")
    write_broken(tmp_path / "b.jpg", "zero_bytes")
    write_broken(tmp_path / "c.jpg", "truncated_jpeg")
    scan = scan_images(tmp_path, verify=False, warn=False)
    assert [p.name for p in scan.readable] == ["a.png", "c.jpg"]  # content is only checked when loaded
