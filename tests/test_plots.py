"""Tests of lpn_edge.eval.plots: sizes and pixels derived by hand from the documented layout and colormap."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lpn_edge.errors import LpnEdgeError
from lpn_edge.eval.plots import (
    MATCH_COLOUR,
    MISS_COLOUR,
    QUERY_COLOUR,
    StripRow,
    activation_map,
    heatmap_overlay,
    heatmap_panel,
    jet_colours,
    retrieval_grid,
    retrieval_strip,
)

BLUE, YELLOW = (0, 0, 255), (255, 255, 0)


def solid(colour, size=(40, 30)):
    return Image.new("RGB", size, colour)


def pixel(path, x, y):
    with Image.open(path) as image:
        return image.convert("RGB").getpixel((x, y))


def test_strip_size_borders_and_thumbnails(tmp_path):
    # thumb 32, BORDER 4 -> cell 40. MARGIN 8, QUERY_GAP 24, LABEL_HEIGHT 16, TITLE_HEIGHT 20.
    # Query cell x = 8; gallery cell j x = 8 + 40 + 24 + 48 j = 72, 120, 168; cells start at y = 8 + 20 = 28.
    # Width = 168 + 40 + 8 = 216; height = 28 + 40 + 16 + 8 = 92.
    gallery_file = tmp_path / "gallery.png"
    solid(YELLOW).save(gallery_file)
    out = retrieval_strip(
        solid(BLUE),
        [gallery_file, solid(YELLOW), np.full((30, 30, 3), 255, np.uint8)],
        [True, False, True],
        tmp_path / "figs" / "strip.png",
        scores=[0.9, 0.8, 0.7],
        title="drone -> satellite",
        thumb=32,
    )
    assert out == tmp_path / "figs" / "strip.png"
    with Image.open(out) as image:
        assert (image.format, image.size) == ("PNG", (216, 92))
    for left, colour in [(8, QUERY_COLOUR), (72, MATCH_COLOUR), (120, MISS_COLOUR), (168, MATCH_COLOUR)]:
        assert pixel(out, left + 1, 28 + 1) == colour  # frame, top-left
        assert pixel(out, left + 38, 28 + 38) == colour  # frame, bottom-right
    assert pixel(out, 8 + 20, 28 + 20) == BLUE  # query thumbnail centre
    assert pixel(out, 72 + 20, 28 + 20) == YELLOW  # thumbnail read from a file


def test_strip_without_title_starts_at_margin(tmp_path):
    out = retrieval_strip(solid(BLUE), [solid(YELLOW)], [False], tmp_path / "s.png", thumb=16)
    # cell 24; gallery x = 8 + 24 + 24 = 56; width 56 + 24 + 8 = 88; height 8 + 24 + 16 + 8 = 56.
    assert Image.open(out).size == (88, 56)
    assert pixel(out, 57, 9) == MISS_COLOUR


def test_grid_stacks_strips_and_pads_narrow_rows(tmp_path):
    rows = [
        StripRow(solid(BLUE), [solid(YELLOW)] * 3, [True, False, False]),
        {"query_image": solid(BLUE), "gallery_images": [solid(YELLOW)], "is_match": [True]},
    ]
    out = retrieval_grid(rows, tmp_path / "grid.png", thumb=16)
    # Row widths: 3 gallery cells -> 8 + 24 + 24 + 2*32 + 24 + 8 = 152; one cell -> 88. Heights 56 each.
    assert Image.open(out).size == (152, 112)
    assert pixel(out, 57, 56 + 9) == MATCH_COLOUR  # second row's first gallery frame
    assert pixel(out, 150, 56 + 20) == (255, 255, 255)  # padding right of the narrower row


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"is_match": [True]}, "is_match has 1 entries; expected 2"),
        ({"scores": [0.1, 0.2, 0.3]}, "scores has 3 entries; expected 2"),
        ({"thumb": 0}, "thumb=0"),
        ({"gallery_images": ["/no/such/file.png", solid(BLUE)]}, "/no/such/file.png does not exist"),
        ({"gallery_images": [np.zeros((4, 4), np.float32), solid(BLUE)]}, "dtype float32"),
    ],
)
def test_strip_validation(tmp_path, kwargs, message):
    arguments = {"gallery_images": [solid(BLUE), solid(BLUE)], "is_match": [True, False], **kwargs}
    with pytest.raises(LpnEdgeError, match=message):
        retrieval_strip(solid(BLUE), out_path=tmp_path / "x.png", **arguments)
    assert not (tmp_path / "x.png").exists()


def test_jet_colours_hand_values():
    # Channel tents 1.5 - |4(v - c)| clipped to [0, 1], c = 3/4, 1/2, 1/4 for red, green, blue.
    expected = [[0, 0, 127.5], [127.5, 255, 127.5], [127.5, 0, 0]]
    np.testing.assert_allclose(jet_colours(np.array([0.0, 0.5, 1.0])), expected)


def test_activation_map_normalises_and_interpolates_at_pixel_centres():
    # [2, 4] -> [0, 1]; width 4: sources (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clipped to [0, 1].
    np.testing.assert_allclose(activation_map(np.array([[2.0, 4.0]]), (3, 4)), [[0, 0.25, 0.75, 1.0]] * 3)
    np.testing.assert_array_equal(activation_map(np.full((2, 2), 7.0), (4, 4)), np.zeros((4, 4)))


def test_heatmap_peak_lands_on_activation_peak(tmp_path):
    activation = np.zeros((8, 8))
    activation[2, 5] = 3.0  # covers rows 16..23, columns 40..47 of a 64x64 image
    upsampled = activation_map(activation, (64, 64))
    peak_row, peak_col = np.unravel_index(np.argmax(upsampled), upsampled.shape)
    assert 16 <= peak_row <= 23 and 40 <= peak_col <= 47
    # Nearest source positions to cell (2, 5) are 1/16 away, at pixels 19/20 and 43/44: (15/16)^2.
    assert upsampled.max() == pytest.approx((15 / 16) ** 2)

    out = heatmap_overlay(solid((100, 100, 100), (64, 64)), activation, tmp_path / "heat.png", alpha=0.25)
    with Image.open(out) as image:
        assert image.size == (64, 64)
    # v = 225/256: red 1.5 - (4v - 3) = 0.984375 -> 251.02, green and blue 0; 0.75 grey 100 + 0.25 heat.
    assert pixel(out, 43, 19) == pytest.approx((137.75, 75, 75), abs=1)
    # v = 0 far away: jet dark blue (0, 0, 127.5) -> (75, 75, 106.875).
    assert pixel(out, 0, 63) == pytest.approx((75, 75, 106.875), abs=1)


def test_heatmap_panel_size_and_validation(tmp_path):
    images = [solid(BLUE, (64, 64)), solid(BLUE, (60, 30))]
    out = heatmap_panel(images, [np.eye(4), np.eye(3)], tmp_path / "panel.png", height=32)
    # Tiles 32x32 and 64x32 (aspect 2:1 kept), MARGIN 8 around and between: width 8+32+8+64+8, height 8+32+8.
    assert Image.open(out).size == (120, 48)
    with pytest.raises(LpnEdgeError, match="2 images and 1 activations"):
        heatmap_panel(images, [np.eye(4)], tmp_path / "bad.png")
    with pytest.raises(LpnEdgeError, match="alpha=1.5"):
        heatmap_overlay(images[0], np.eye(4), tmp_path / "bad.png", alpha=1.5)
    with pytest.raises(LpnEdgeError, match=r"activation has shape \(4,\)"):
        heatmap_overlay(images[0], np.ones(4), tmp_path / "bad.png")
    with pytest.raises(LpnEdgeError, match="NaN or inf"):
        heatmap_overlay(images[0], np.array([[np.nan, 1.0]]), tmp_path / "bad.png")


def test_heatmap_panel_title_labels_and_colour_bar(tmp_path):
    from lpn_edge.eval.plots import COLOUR_BAR_WIDTH, MARGIN, TITLE_HEIGHT, jet_colours

    images = [np.zeros((32, 32, 3), np.uint8)] * 2
    out = heatmap_panel(images, [np.eye(4), np.eye(4)], tmp_path / "panel.png", height=32,
                        title="drone2sat: channel mean", labels=["q 0001", "q 0002"])
    panel = np.asarray(Image.open(out).convert("RGB")).astype(int)
    top, bar_left = MARGIN + TITLE_HEIGHT, MARGIN + 2 * (32 + MARGIN)
    # the colour bar: jet's top colour (1.0, dark red) at the top, its bottom colour (0.0, dark blue) at the bottom
    assert np.abs(panel[top, bar_left + COLOUR_BAR_WIDTH // 2] - jet_colours(np.array(1.0))).max() <= 1
    assert np.abs(panel[top + 31, bar_left + COLOUR_BAR_WIDTH // 2] - jet_colours(np.array(0.0))).max() <= 1
    # the title and the labels put dark text on the white bands above and below the overlays
    assert (panel[:top - 2, : bar_left] < 100).any() and (panel[top + 32 + 2:, : bar_left] < 100).any()
    with pytest.raises(LpnEdgeError, match="labels"):
        heatmap_panel(images, [np.eye(4)] * 2, tmp_path / "bad.png", labels=["only one"])


def test_retrieval_grid_legend_band(tmp_path):
    from lpn_edge.eval.plots import STRIP_LEGEND, TITLE_HEIGHT

    rows = [StripRow(np.zeros((8, 8, 3), np.uint8), [np.zeros((8, 8, 3), np.uint8)], [True], [0.5])]
    plain = Image.open(retrieval_grid(rows, tmp_path / "plain.png", thumb=16))
    legend = Image.open(retrieval_grid(rows, tmp_path / "legend.png", thumb=16, legend=STRIP_LEGEND))
    assert legend.height == plain.height + TITLE_HEIGHT and legend.width > plain.width
    band = np.asarray(legend.convert("L"))[:TITLE_HEIGHT]
    assert (band < 100).any()  # the legend's text is drawn in the band
