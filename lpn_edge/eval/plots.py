"""Figures of the LPN paper, drawn with numpy and Pillow only: retrieval strips (Fig. 9) and heatmaps (Fig. 8).

Every function writes one PNG atomically and returns its path. Images are file paths, PIL images or uint8
numpy arrays (H, W) / (H, W, 3).

Strip layout (pixels, ``thumb`` = thumbnail side): white background; a title band of ``TITLE_HEIGHT`` on top when
a title is given; then cells of side ``thumb + 2 * BORDER`` starting ``MARGIN`` below that band. The query cell
starts at x = MARGIN; gallery cell j (0-based, rank j + 1) starts at
``x = MARGIN + cell + QUERY_GAP + j * (cell + MARGIN)``. Each cell is a ``BORDER``-wide frame (grey for the
query, green for a true match, red otherwise) around the thumbnail, with a ``LABEL_HEIGHT`` text band under it
("query", or "#rank" and the score when given). A grid may carry a legend band of ``TITLE_HEIGHT`` above its
first strip.

Heatmap panel layout: an optional title band (``TITLE_HEIGHT``), then the overlays ``MARGIN`` apart, each with an
optional label band (``LABEL_HEIGHT``) under it, and, when a title is given, a jet colour bar of ``COLOUR_BAR_WIDTH``
on the right whose ends are labelled "high" (top) and "low" (bottom).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write

ImageLike = str | os.PathLike | Image.Image | np.ndarray

MARGIN = 8
BORDER = 4
QUERY_GAP = 24  # wider gap after the query, so it reads apart from the ranked gallery as in the paper's figure
LABEL_HEIGHT = 16
TITLE_HEIGHT = 20
FONT_SIZE = 12  # Pillow's default bitmap size (10) renders spaces too narrow to read ("drone2satquery0")
COLOUR_BAR_WIDTH = 14
STRIP_LEGEND = ("frame: grey = query, green = true match, red = other; "
                "under each tile: rank and cosine similarity to the query")
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
QUERY_COLOUR = (110, 110, 110)
MATCH_COLOUR = (0, 170, 0)
MISS_COLOUR = (220, 30, 30)


@dataclass(frozen=True)
class StripRow:
    """One retrieval strip: a query and its top-k gallery images, best first.

    Attributes:
        query_image: the query.
        gallery_images: k images, rank 1 first.
        is_match: k booleans, True where the gallery image is a true match of the query.
        scores: k similarity scores printed under the thumbnails, or None.
        title: a line of text above the strip, or None.
    """

    query_image: ImageLike
    gallery_images: Sequence[ImageLike]
    is_match: Sequence[bool]
    scores: Sequence[float] | None = None
    title: str | None = None


def retrieval_strip(
    query_image: ImageLike,
    gallery_images: Sequence[ImageLike],
    is_match: Sequence[bool],
    out_path: str | os.PathLike,
    scores: Sequence[float] | None = None,
    title: str | None = None,
    thumb: int = 128,
) -> Path:
    """Draw the query and its top-k gallery thumbnails in one row (layout in the module docstring); save a PNG.

    Returns:
        The PNG's path.
    """
    strip = _render_strip(StripRow(query_image, gallery_images, is_match, scores, title), thumb)
    return _save_png(strip, out_path)


def retrieval_grid(
    rows: Sequence[StripRow | Mapping], out_path: str | os.PathLike, thumb: int = 128, legend: str | None = None
) -> Path:
    """Stack several retrieval strips vertically (narrower ones padded white on the right); save a PNG.

    Args:
        rows: StripRow objects, or mappings with the same keys (query_image, gallery_images, is_match, and
            optionally scores and title).
        legend: a line above the strips saying what colours and numbers mean (e.g. STRIP_LEGEND), or None.
    """
    if len(rows) == 0:
        raise LpnEdgeError("retrieval_grid got no rows; expected at least one StripRow")
    strips = [_render_strip(_as_strip_row(row, index), thumb) for index, row in enumerate(rows)]
    band = TITLE_HEIGHT if legend else 0
    width = max(max(s.width for s in strips), _text_width(legend) + 2 * MARGIN if legend else 0)
    grid = Image.new("RGB", (width, band + sum(s.height for s in strips)), BACKGROUND)
    if legend:
        ImageDraw.Draw(grid).text((MARGIN, MARGIN // 2), legend, fill=TEXT_COLOUR, font=_font())
    top = band
    for strip in strips:
        grid.paste(strip, (0, top))
        top += strip.height
    return _save_png(grid, out_path)


def heatmap_overlay(
    image: ImageLike, activation: np.ndarray, out_path: str | os.PathLike, alpha: float = 0.5
) -> Path:
    """Blend a jet-coloured activation map over an image, like the paper's Fig. 8; save a PNG of the image's size.

    Args:
        image: the input image (H, W).
        activation: (h, w) float, e.g. the channel mean of a backbone feature map; min-max normalised to [0, 1]
            and upsampled bilinearly to (H, W).
        alpha: weight of the heatmap, 0 (image only) to 1 (heatmap only).
    """
    return _save_png(_overlay(image, activation, alpha), out_path)


def heatmap_panel(
    images: Sequence[ImageLike],
    activations: Sequence[np.ndarray],
    out_path: str | os.PathLike,
    alpha: float = 0.5,
    height: int = 256,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Several heatmap overlays side by side, each scaled to ``height`` pixels (aspect kept), MARGIN apart.

    ``title`` (what the colour shows) adds a title band and a colour bar; ``labels`` (one per image, e.g. the
    query id) are written under the overlays. Layout in the module docstring.
    """
    if len(images) == 0 or len(images) != len(activations):
        raise LpnEdgeError(
            f"heatmap_panel got {len(images)} images and {len(activations)} activations; "
            "expected the same number, at least one"
        )
    if labels is not None and len(labels) != len(images):
        raise LpnEdgeError(f"heatmap_panel got {len(labels)} labels for {len(images)} images; expected one each")
    _check_positive("height", height)
    tiles = [_scaled_to_height(_overlay(i, a, alpha), height) for i, a in zip(images, activations)]
    top = MARGIN + (TITLE_HEIGHT if title else 0)
    label_band = LABEL_HEIGHT if labels is not None else 0
    bar = COLOUR_BAR_WIDTH + MARGIN + _text_width("high") if title else 0
    width = max(sum(t.width for t in tiles) + MARGIN * (len(tiles) + 1) + bar,
                _text_width(title) + 2 * MARGIN if title else 0)
    panel = Image.new("RGB", (width, top + height + label_band + MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    if title:
        draw.text((MARGIN, MARGIN // 2), title, fill=TEXT_COLOUR, font=_font())
    left = MARGIN
    for index, tile in enumerate(tiles):
        panel.paste(tile, (left, top))
        if labels is not None:
            draw.text((left, top + height + 2), str(labels[index]), fill=TEXT_COLOUR, font=_font())
        left += tile.width + MARGIN
    if title:
        _draw_colour_bar(panel, left, top, height)
    return _save_png(panel, out_path)


def _draw_colour_bar(panel: Image.Image, left: int, top: int, height: int) -> None:
    """A vertical jet bar (1 at the top, 0 at the bottom) with its ends labelled, at (left, top)."""
    values = np.linspace(1.0, 0.0, height)[:, None].repeat(COLOUR_BAR_WIDTH, axis=1)
    panel.paste(Image.fromarray(np.rint(jet_colours(values)).astype(np.uint8)), (left, top))
    draw = ImageDraw.Draw(panel)
    draw.text((left + COLOUR_BAR_WIDTH + 2, top), "high", fill=TEXT_COLOUR, font=_font())
    draw.text((left + COLOUR_BAR_WIDTH + 2, top + height - FONT_SIZE - 2), "low", fill=TEXT_COLOUR, font=_font())


def activation_map(activation: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) activation -> (H, W) float64 in [0, 1]: min-max normalised, then bilinearly upsampled.

    A constant activation has no structure to show and becomes all zeros. Sampling uses pixel centres
    (align_corners=False, as cv2.resize and PIL do).
    """
    activation = np.asarray(activation, dtype=np.float64)
    if activation.ndim != 2 or activation.size == 0:
        raise LpnEdgeError(f"activation has shape {activation.shape}; expected a non-empty 2-D array (h, w)")
    if not np.isfinite(activation).all():
        raise LpnEdgeError("activation holds NaN or inf; expected finite values")
    low, span = activation.min(), np.ptp(activation)
    normalised = (activation - low) / span if span > 0 else np.zeros_like(activation)
    return _resize_bilinear(normalised, *size)


def jet_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape S) -> (*S, 3) float64 RGB in [0, 255] on the classic jet colormap.

    Piecewise-linear jet: dark blue (0) -> blue -> cyan -> yellow -> red -> dark red (1).
    """
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)[..., None]
    # Each channel is a tent of height 1.5 clipped to [0, 1], centred at 3/4 (red), 1/2 (green), 1/4 (blue).
    centres = np.array([0.75, 0.5, 0.25])
    return 255.0 * np.clip(1.5 - np.abs(4.0 * (values - centres)), 0.0, 1.0)


def _render_strip(row: StripRow, thumb: int) -> Image.Image:
    """Draw one StripRow as an RGB image (layout in the module docstring)."""
    _check_positive("thumb", thumb)
    count = len(row.gallery_images)
    if count == 0:
        raise LpnEdgeError("a retrieval strip got no gallery images; expected at least one")
    for name, values in (("is_match", row.is_match), ("scores", row.scores)):
        if values is not None and len(values) != count:
            raise LpnEdgeError(f"{name} has {len(values)} entries; expected {count}, one per gallery image")

    cell = thumb + 2 * BORDER
    top = MARGIN + (TITLE_HEIGHT if row.title else 0)
    lefts = [MARGIN] + [MARGIN + cell + QUERY_GAP + j * (cell + MARGIN) for j in range(count)]
    strip = Image.new("RGB", (lefts[-1] + cell + MARGIN, top + cell + LABEL_HEIGHT + MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    font = _font()
    if row.title:
        draw.text((MARGIN, MARGIN // 2), row.title, fill=TEXT_COLOUR, font=font)

    colours = [QUERY_COLOUR] + [MATCH_COLOUR if match else MISS_COLOUR for match in row.is_match]
    labels = ["query"] + [_rank_label(j, row.scores) for j in range(count)]
    for left, image, colour, label in zip(lefts, [row.query_image, *row.gallery_images], colours, labels):
        draw.rectangle((left, top, left + cell - 1, top + cell - 1), fill=colour)
        strip.paste(ImageOps.pad(_open_rgb(image), (thumb, thumb), color=BACKGROUND), (left + BORDER, top + BORDER))
        text_width = draw.textlength(label, font=font)
        draw.text((left + (cell - text_width) / 2, top + cell + 2), label, fill=TEXT_COLOUR, font=font)
    return strip


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _text_width(text: str) -> int:
    return int(np.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=_font())))


def _rank_label(index: int, scores: Sequence[float] | None) -> str:
    """'#rank' (1-based), with the score to 3 decimals when scores are given."""
    return f"#{index + 1}" if scores is None else f"#{index + 1}  {float(scores[index]):.3f}"


def _as_strip_row(row: StripRow | Mapping, index: int) -> StripRow:
    if isinstance(row, StripRow):
        return row
    if isinstance(row, Mapping):
        try:
            return StripRow(**row)
        except TypeError as error:
            raise LpnEdgeError(f"grid row {index} has keys {sorted(row)}; expected the fields of StripRow") from error
    raise LpnEdgeError(f"grid row {index} is a {type(row).__name__}; expected a StripRow or a mapping")


def _overlay(image: ImageLike, activation: np.ndarray, alpha: float) -> Image.Image:
    """The image with its jet-coloured activation blended on top, same size as the image."""
    if not 0.0 <= alpha <= 1.0:
        raise LpnEdgeError(f"alpha={alpha} is out of range; expected 0 <= alpha <= 1")
    base = _open_rgb(image)
    heat = jet_colours(activation_map(activation, (base.height, base.width)))  # (H, W, 3)
    blended = (1.0 - alpha) * np.asarray(base, dtype=np.float64) + alpha * heat
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def _resize_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) -> (height, width) bilinear interpolation at pixel centres, separable (rows, then columns)."""
    row_low, row_high, row_weight = _interpolation_axis(height, values.shape[0])
    col_low, col_high, col_weight = _interpolation_axis(width, values.shape[1])
    rows = values[row_low] * (1 - row_weight)[:, None] + values[row_high] * row_weight[:, None]  # (height, w)
    return rows[:, col_low] * (1 - col_weight) + rows[:, col_high] * col_weight


def _interpolation_axis(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source neighbours (low, high) and the weight of ``high`` for each of ``out_size`` output positions."""
    source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    source = np.clip(source, 0.0, in_size - 1)  # edge pixels repeat the border value
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, source - low


def _scaled_to_height(image: Image.Image, height: int) -> Image.Image:
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def _open_rgb(image: ImageLike) -> Image.Image:
    """An RGB PIL copy of a path, PIL image or uint8 array (H, W) / (H, W, 3)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise LpnEdgeError(
                f"image array has shape {image.shape} and dtype {image.dtype}; expected uint8 (H, W) or (H, W, 3)"
            )
        return Image.fromarray(image).convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise LpnEdgeError(f"image file {path} does not exist; expected a readable image file")
        try:
            with Image.open(path) as opened:
                return opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise LpnEdgeError(f"image file {path} could not be read ({error}); expected an image file") from error
    raise LpnEdgeError(f"image is a {type(image).__name__}; expected a file path, a PIL image or a uint8 array")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise LpnEdgeError(f"{name}={value!r} is invalid; expected a positive integer")


def _save_png(image: Image.Image, out_path: str | os.PathLike) -> Path:
    return atomic_write(out_path, lambda tmp: image.save(tmp, format="PNG"))
