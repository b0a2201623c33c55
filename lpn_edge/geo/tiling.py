"""Cut a geo-referenced orthophoto into square gallery tiles (``lpn-edge index tile``).

A tile is a square of ``tile_size_m`` metres on the ground; tiles start at the image's upper-left corner and
follow every ``stride_m`` metres east and south (row-major ids: row 0 is the northernmost). The ground size of a
pixel is measured at the image centre (`GeoRef.pixel_size_m`), so a tile is ``tile_size_m / pixel_size`` pixels
wide and high -- a fractional window, resampled straight to ``size`` x ``size`` pixels (Pillow, bilinear with
antialiasing when shrinking). Strips on the east and south edges narrower than a tile are not covered; how wide
they are is reported (`TilePlan.uncovered_east_m` / `uncovered_south_m`), never silently dropped.

Output folder::

    tiles/<id>.png   the tiles, ids zero-padded, row-major
    geo.csv          id,latitude,longitude,row,col,tile_size_m   (the WGS84 centre of every tile)
    tiling.json      how the tiles were cut (source, georeference, sizes, grid, uncovered edges)

Memory: the image is read in full-width strips, top to bottom, about one row of tiles at a time (`RowStrip`):
GeoTIFFs and, when rasterio is installed, PNG/JPEG images larger than `georef.LARGE_IMAGE_PIXELS` are read
window by window through GDAL; smaller PNG/JPEG images are decoded whole by Pillow.

Resumable: every tile is written atomically (temporary file + rename), so a tile file that exists is complete and
is skipped when the same command runs again; tiling.json is written first and refuses a second run with other
parameters; geo.csv is written last.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import TEMPORARY_GLOB, atomic_write, atomic_write_text
from lpn_edge.geo.georef import GeoRef, Raster, open_raster

MARKER = "tiling.json"
PNG_COMPRESSION = 1  # fixed: the same input gives byte-identical tiles
_EPS = 1e-9


@dataclass(frozen=True)
class TilePlan:
    """The grid of tiles over one image; boxes are continuous pixel coordinates (x0, y0, x1, y1)."""

    georef: GeoRef
    tile_size_m: float
    stride_m: float
    pixel_size_m: tuple[float, float]  # ground metres per pixel (east, south) at the image centre
    rows: int
    cols: int

    @property
    def tile_px(self) -> tuple[float, float]:
        return self.tile_size_m / self.pixel_size_m[0], self.tile_size_m / self.pixel_size_m[1]

    @property
    def stride_px(self) -> tuple[float, float]:
        return self.stride_m / self.pixel_size_m[0], self.stride_m / self.pixel_size_m[1]

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def uncovered_east_px(self) -> float:
        return max(0.0, self.georef.width - ((self.cols - 1) * self.stride_px[0] + self.tile_px[0]))

    @property
    def uncovered_south_px(self) -> float:
        return max(0.0, self.georef.height - ((self.rows - 1) * self.stride_px[1] + self.tile_px[1]))

    @property
    def uncovered_east_m(self) -> float:
        return self.uncovered_east_px * self.pixel_size_m[0]

    @property
    def uncovered_south_m(self) -> float:
        return self.uncovered_south_px * self.pixel_size_m[1]

    def ids(self) -> list[str]:
        width = max(4, len(str(self.count - 1)))
        return [f"{index:0{width}d}" for index in range(self.count)]

    def box(self, row: int, col: int) -> tuple[float, float, float, float]:
        x0, y0 = col * self.stride_px[0], row * self.stride_px[1]
        return x0, y0, x0 + self.tile_px[0], y0 + self.tile_px[1]

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(latitude, longitude) of every tile centre, row-major (the order of `ids`)."""
        rows, cols = np.divmod(np.arange(self.count), self.cols)
        return self.georef.pixel_to_latlon(cols * self.stride_px[0] + self.tile_px[0] / 2,
                                           rows * self.stride_px[1] + self.tile_px[1] / 2)

    def uncovered_text(self) -> str:
        parts = [f"{side} edge: {metres:.1f} m ({pixels:.1f} px) not covered"
                 for side, metres, pixels in [("east", self.uncovered_east_m, self.uncovered_east_px),
                                              ("south", self.uncovered_south_m, self.uncovered_south_px)]
                 if pixels > 1e-6]
        return "; ".join(parts) if parts else "the tiles cover the whole image"


def plan_tiles(georef: GeoRef, tile_size_m: float, stride_m: float | None = None) -> TilePlan:
    """The tile grid of ``tile_size_m`` metre squares every ``stride_m`` metres (default: the tile size)."""
    stride_m = tile_size_m if stride_m is None else stride_m
    if not (tile_size_m > 0 and math.isfinite(tile_size_m)):
        raise LpnEdgeError(f"--tile-size must be a positive number of metres, got {tile_size_m}")
    if not (stride_m > 0 and math.isfinite(stride_m)):
        raise LpnEdgeError(f"--stride must be a positive number of metres, got {stride_m}")
    if not georef.north_up:
        raise LpnEdgeError(f"{georef.describe()}: the image is rotated or flipped (transform {georef.transform}); "
                           f"only north-up images can be tiled")
    px, py = georef.pixel_size_m()
    tile_w, tile_h = tile_size_m / px, tile_size_m / py
    width_m, height_m = georef.width * px, georef.height * py
    if tile_w > georef.width * (1 + _EPS) or tile_h > georef.height * (1 + _EPS):
        raise LpnEdgeError(f"--tile-size {tile_size_m:g} m is larger than the image ({georef.width} x "
                           f"{georef.height} px = {width_m:.1f} x {height_m:.1f} m)")
    cols = int(math.floor((georef.width - tile_w) / (stride_m / px) + 1e-6)) + 1
    rows = int(math.floor((georef.height - tile_h) / (stride_m / py) + 1e-6)) + 1
    return TilePlan(georef, float(tile_size_m), float(stride_m), (px, py), rows, cols)


class RowStrip:
    """Full-width strips of rows read strictly top to bottom: each read starts where the previous one ended (rows
    still needed are kept), so a PNG or JPEG read through GDAL is decoded once, sequentially, and memory holds
    about one band of tiles."""

    def __init__(self, raster: Raster) -> None:
        self.raster = raster
        self.top = 0
        self.rows = np.empty((0, raster.georef.width, 3), np.uint8)

    def get(self, top: int, bottom: int) -> np.ndarray:
        """Rows [top, bottom) (top never smaller than at the previous call)."""
        if top < self.top:
            raise ValueError("RowStrip reads top to bottom only")
        end = self.top + len(self.rows)
        if top >= end:  # nothing to keep
            self.rows, self.top = np.empty((0, self.rows.shape[1], 3), np.uint8), top
            end = top
        kept = self.rows[top - self.top :]
        if bottom > end:
            fresh = self.raster.read((0, end, self.raster.georef.width, bottom))
            kept = np.concatenate([kept, fresh]) if len(kept) else fresh
        self.rows, self.top = kept, top
        return self.rows[: bottom - top]


def _support(plan: TilePlan, size: int) -> int:
    """Pixels beyond a tile's box that the resampling filter reads when shrinking it to ``size``."""
    return int(math.ceil(max(plan.tile_px[0] / size, plan.tile_px[1] / size, 1.0))) + 1


def cut_row(strip: RowStrip, plan: TilePlan, row: int, cols: list[int], size: int) -> list[np.ndarray]:
    """The tiles ``cols`` of tile row ``row``, each its fractional pixel box resampled to size x size."""
    from PIL import Image

    margin = _support(plan, size)
    _, y0, _, y1 = plan.box(row, 0)
    top = max(0, int(math.floor(y0)) - margin)
    band = Image.fromarray(strip.get(top, min(plan.georef.height, int(math.ceil(y1)) + margin)))
    tiles = []
    for col in cols:
        x0, _, x1, _ = plan.box(row, col)
        tiles.append(np.asarray(band.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0 - top, x1, y1 - top))))
    return tiles


@dataclass(frozen=True)
class TilingSummary:
    out: Path
    plan: TilePlan
    size: int
    written: int
    skipped: int

    @property
    def geo_csv(self) -> Path:
        return self.out / "geo.csv"

    def __str__(self) -> str:
        plan = self.plan
        return "\n".join([
            f"source        {plan.georef.describe()}",
            f"pixel         {plan.pixel_size_m[0]:.3f} x {plan.pixel_size_m[1]:.3f} m",
            f"tile          {plan.tile_size_m:g} m = {plan.tile_px[0]:.1f} x {plan.tile_px[1]:.1f} px -> "
            f"{self.size} x {self.size} px, every {plan.stride_m:g} m",
            f"grid          {plan.rows} rows x {plan.cols} columns = {plan.count} tiles "
            f"({self.written} written, {self.skipped} already there)",
            f"edges         {plan.uncovered_text()}",
            f"tiles         {self.out / 'tiles'}",
            f"geo-tags      {self.geo_csv}",
        ])


def _describe(plan: TilePlan, source: Path, size: int) -> dict:
    g = plan.georef
    return {"generator": "lpn-edge index tile", "format": 1, "source": str(source), "georeference": g.describe(),
            "image_size": [g.width, g.height], "transform": list(g.transform), "crs": g.crs,
            "tile_size_m": plan.tile_size_m, "stride_m": plan.stride_m, "size": size, "rows": plan.rows,
            "cols": plan.cols, "pixel_size_m": list(plan.pixel_size_m),
            "uncovered_east_m": plan.uncovered_east_m, "uncovered_south_m": plan.uncovered_south_m}


_SAME_TILING = ("image_size", "transform", "crs", "tile_size_m", "stride_m", "size", "rows", "cols")


def _prepare(out: Path, description: dict) -> None:
    """Refuse a folder that holds something else, or tiles cut another way; write tiling.json."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise LpnEdgeError(f"--out {out} exists and is not a folder")
    if marker.is_file():
        try:
            earlier = json.loads(marker.read_text())
        except (OSError, ValueError):
            earlier = {}
        changed = [key for key in _SAME_TILING if earlier.get(key) != description[key]]
        if changed:
            raise LpnEdgeError(f"--out {out} holds tiles cut another way ({', '.join(changed)} differ); choose "
                               f"another folder or delete it")
    elif out.exists() and any(out.iterdir()):
        raise LpnEdgeError(f"--out {out} is not empty and holds no {MARKER}; choose a new folder")
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    for leftover in (out / "tiles").glob(TEMPORARY_GLOB):  # from an interrupted run: never a complete tile
        leftover.unlink()
    atomic_write_text(marker, json.dumps(description, indent=2) + "\n")


def tile_orthophoto(
    orthophoto: str | Path,
    out: str | Path,
    tile_size_m: float,
    stride_m: float | None = None,
    size: int = 256,
    bounds: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TilingSummary:
    """Cut ``orthophoto`` into tiles under ``out`` (see the module docstring); returns what was done."""
    from PIL import Image

    if not 8 <= size <= 4096:
        raise LpnEdgeError(f"--size must be between 8 and 4096 pixels, got {size}")
    orthophoto, out = Path(orthophoto), Path(out)
    with open_raster(orthophoto, bounds) as raster:
        plan = plan_tiles(raster.georef, tile_size_m, stride_m)
        _prepare(out, _describe(plan, orthophoto, size))
        written = skipped = 0
        ids = plan.ids()
        strip = RowStrip(raster)
        for row in range(plan.rows):
            paths = [out / "tiles" / f"{ids[row * plan.cols + col]}.png" for col in range(plan.cols)]
            missing = [col for col, path in enumerate(paths) if not path.is_file()]
            skipped += plan.cols - len(missing)
            if missing:
                for col, pixels in zip(missing, cut_row(strip, plan, row, missing, size)):
                    atomic_write(paths[col], lambda tmp, pixels=pixels: Image.fromarray(pixels).save(
                        tmp, format="PNG", compress_level=PNG_COMPRESSION))
                    written += 1
            if progress is not None:
                progress((row + 1) * plan.cols, plan.count)
        latitude, longitude = plan.centres()
    rows = ["id,latitude,longitude,row,col,tile_size_m"]
    for index, (tile_id, lat, lon) in enumerate(zip(ids, latitude, longitude)):
        row, col = divmod(index, plan.cols)
        rows.append(f"{tile_id},{lat:.8f},{lon:.8f},{row},{col},{plan.tile_size_m:g}")
    atomic_write_text(out / "geo.csv", "\n".join(rows) + "\n")
    return TilingSummary(out, plan, size, written, skipped)


def read_geo_csv(path: str | Path) -> dict[str, np.ndarray]:
    """A tiling's geo.csv as columns: 'id' (str array), 'latitude', 'longitude', 'tile_size_m' (float), and
    'row', 'col' (int) when present."""
    from lpn_edge.runtime.tables import read_csv_table

    table = read_csv_table(path, "tiling")
    table.require(("id", "latitude", "longitude"), "a CSV with columns id,latitude,longitude (and row,col,tile_size_m)")
    if not table.rows:
        raise LpnEdgeError(f"tiling {table.path} has no rows")
    columns: dict[str, np.ndarray] = {"id": np.array([table.cell(row, "id") for _line, row in table.rows])}
    for name, kind in [("latitude", float), ("longitude", float), ("tile_size_m", float), ("row", int), ("col", int)]:
        if table.has(name):
            columns[name] = np.array([table.number(line, row, name, kind) for line, row in table.rows])
    return columns
