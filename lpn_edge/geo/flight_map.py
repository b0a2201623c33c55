"""A map of one localised flight: where it failed, at a glance.

The orthophoto (downscaled so that its longer side is at most ``max_side`` pixels), the gallery tiles as faint
outlines, a legend in the upper-left corner (drawn under the data, so it never hides an estimate), the true path
as a blue line, every estimate as a dot coloured by its error (green below 25 m, yellow below 50 m, red beyond)
joined by a thin white line to the true position of its frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write
from lpn_edge.geo.georef import GeoRef, metres_per_degree, open_raster
from lpn_edge.geo.metrics import position_errors

GREEN, YELLOW, RED = (0, 200, 70), (255, 210, 0), (230, 30, 30)
PATH_COLOUR = (30, 120, 255)
LINK_COLOUR = (255, 255, 255)
TILE_COLOUR = (255, 255, 255, 70)  # faint
BANDS_M = (25.0, 50.0)


def error_colour(error_m: float) -> tuple[int, int, int]:
    """Green below 25 m, yellow below 50 m, red from 50 m on."""
    return GREEN if error_m < BANDS_M[0] else YELLOW if error_m < BANDS_M[1] else RED


def _base(orthophoto, georef: GeoRef | None, bounds, max_side: int) -> tuple[Image.Image, GeoRef]:
    if isinstance(orthophoto, (str, Path)):
        with open_raster(orthophoto, bounds) as raster:
            return Image.fromarray(raster.overview(max_side)), raster.georef
    if georef is None:
        raise LpnEdgeError("an orthophoto given as pixels needs its georef")
    image = orthophoto if isinstance(orthophoto, Image.Image) else Image.fromarray(np.asarray(orthophoto, np.uint8))
    image = image.convert("RGB")
    if (image.width, image.height) != (georef.width, georef.height):
        raise LpnEdgeError(f"the orthophoto is {image.width} x {image.height} px but its georef "
                           f"{georef.width} x {georef.height}")
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BOX)
    return image, georef


def draw_flight_map(
    orthophoto,
    out_png: str | Path,
    true_lat: Sequence[float],
    true_lon: Sequence[float],
    est_lat: Sequence[float] | None = None,
    est_lon: Sequence[float] | None = None,
    errors_m: Sequence[float] | None = None,
    tile_lat: Sequence[float] | None = None,
    tile_lon: Sequence[float] | None = None,
    tile_size_m: float | Sequence[float] | None = None,
    georef: GeoRef | None = None,
    bounds: str | None = None,
    max_side: int = 1600,
    note: str | None = None,
) -> Path:
    """Draw the map (see the module docstring) and write it to ``out_png``; returns the path.

    ``orthophoto``: a path (georeferenced as `open_raster` does, with ``bounds`` if given) or pixels (an
    (H, W, 3) array or a PIL image) with their ``georef``. The true path has one position per frame; estimates,
    if given, one per frame too (``errors_m`` defaults to their distance from the true positions). Tiles are
    squares of ``tile_size_m`` metres around their centres. ``note`` is one more line in the legend (e.g. the
    median error).
    """
    image, georef = _base(orthophoto, georef, bounds, max_side)
    sx, sy = image.width / georef.width, image.height / georef.height

    def to_px(lat, lon) -> np.ndarray:
        col, row = georef.latlon_to_pixel(np.asarray(lat, np.float64), np.asarray(lon, np.float64))
        return np.stack([np.atleast_1d(col) * sx, np.atleast_1d(row) * sy], axis=-1)

    side = max(image.size)
    width = max(2, round(side / 400))
    radius = max(3, round(side / 250))

    if tile_lat is not None and tile_lon is not None and tile_size_m is not None:
        tile_lat, tile_lon = np.asarray(tile_lat, np.float64), np.asarray(tile_lon, np.float64)
        half = np.broadcast_to(np.asarray(tile_size_m, np.float64), tile_lat.shape) / 2
        lat_m, lon_m = metres_per_degree(float(np.mean(tile_lat)))
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        corners = [to_px(tile_lat + dn * half / lat_m, tile_lon + de * half / lon_m)
                   for de, dn in [(-1, 1), (1, 1), (1, -1), (-1, -1)]]
        for k in range(len(tile_lat)):
            draw.polygon([tuple(c[k]) for c in corners], outline=TILE_COLOUR)
        image = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")

    _legend(image, radius, width, note, tiles=tile_lat is not None)  # under the data: it never hides an estimate
    draw = ImageDraw.Draw(image)
    true = to_px(true_lat, true_lon)
    if len(true) > 1:
        draw.line([tuple(p) for p in true], fill=PATH_COLOUR, width=width, joint="curve")
    if est_lat is not None and est_lon is not None:
        if len(est_lat) != len(true) or len(est_lon) != len(true):
            raise LpnEdgeError(f"{len(est_lat)} estimates for {len(true)} true positions: one of each per frame")
        errors = (position_errors(est_lat, est_lon, true_lat, true_lon) if errors_m is None
                  else np.asarray(errors_m, np.float64))
        estimates = to_px(est_lat, est_lon)
        for (x, y), (tx, ty) in zip(estimates, true):
            draw.line([(x, y), (tx, ty)], fill=LINK_COLOUR, width=1)
        for (x, y), error in zip(estimates, errors):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=error_colour(float(error)),
                         outline=(0, 0, 0))
    out_png = Path(out_png)
    atomic_write(out_png, lambda tmp: image.save(tmp, format="PNG"))
    return out_png


def _legend(image: Image.Image, radius: int, width: int, note: str | None, tiles: bool) -> None:
    font_size = max(11, round(max(image.size) / 70))
    font = ImageFont.load_default(size=font_size)
    rows: list[tuple[str, object]] = [("true path", "line"), ("error < 25 m", GREEN), ("error < 50 m", YELLOW),
                                      ("error >= 50 m", RED)]
    if tiles:
        rows.append(("gallery tile", "tile"))
    if note:
        rows.append((note, None))
    pad, line = font_size // 2, font_size + font_size // 2
    probe = ImageDraw.Draw(image)
    text_width = max(probe.textlength(text, font=font) for text, _ in rows)
    box = (pad, pad, pad + 3 * pad + 2 * radius + text_width + pad, pad + pad + line * len(rows))
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).rectangle(box, fill=(0, 0, 0, 150))
    image.paste(Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB"))
    draw = ImageDraw.Draw(image)
    x = box[0] + pad + radius
    for k, (text, key) in enumerate(rows):
        y = box[1] + pad + line * k + line // 2 - pad // 2
        if key == "line":
            draw.line([(x - radius - 2, y), (x + radius + 2, y)], fill=PATH_COLOUR, width=width)
        elif key == "tile":
            draw.rectangle([x - radius, y - radius, x + radius, y + radius], outline=(255, 255, 255))
        elif key is not None:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=key, outline=(0, 0, 0))
        draw.text((x + radius + pad, y), text, fill=(255, 255, 255), font=font, anchor="lm")
