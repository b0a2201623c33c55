"""Geo-referencing: where each pixel of an image lies on the earth, and distances in metres.

A `GeoRef` is an affine map from continuous pixel coordinates (col, row) -- (0, 0) is the upper-left CORNER of the
upper-left pixel, the centre of pixel index (i, j) is (i + 0.5, j + 0.5), as in GDAL and rasterio -- to map
coordinates (x, y)::

    x = a * col + b * row + c
    y = d * col + e * row + f

in WGS84 degrees (x = longitude, y = latitude) when ``crs`` is None, else in the given CRS (a GeoTIFF's), which is
reprojected to WGS84 with rasterio.

Three sources:

* an ESRI world file beside the image (``.pgw`` for PNG, ``.jgw`` for JPEG, ``.tfw`` for TIFF, or ``.wld``): six
  lines A, D, B, E, C, F with ``x = A * i + B * j + C`` and ``y = D * i + E * j + F`` for pixel INDICES (i, j), so
  (C, F) is the CENTRE of the upper-left pixel -- half a pixel inside the image's corner. Here the coordinates must
  be WGS84 degrees (a world file does not say its CRS; use a GeoTIFF for projected imagery);
* explicit bounds ``north,west,south,east``: the outer EDGES of the image in WGS84 degrees;
* a GeoTIFF in any CRS, read through rasterio (``pip install "lpn-edge[geo]"``).

Distances are on a sphere of the WGS84 mean radius (haversine); `metres_per_degree` is the same sphere's local
scale, so a small offset converted with it and measured back with `haversine_m` agrees to well under 0.1 %. (The
sphere differs from the WGS84 ellipsoid by up to a few tenths of a percent in local scale: a "100 m" tile of a
UTM image is about 99.7 to 100.3 grid metres. Errors are measured on the same sphere, so they are consistent.)
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError

EARTH_RADIUS_M = 6_371_008.8  # WGS84 mean radius (IUGG R1)
GEO_EXTRA = 'pip install "lpn-edge[geo]"'

# world-file suffixes by image suffix: the 3-letter ESRI form first, then the "add a w" form; .wld fits any image
WORLD_FILE_SUFFIXES = {
    ".png": (".pgw", ".pngw"),
    ".jpg": (".jgw", ".jpgw"),
    ".jpeg": (".jgw", ".jpegw"),
    ".tif": (".tfw", ".tifw"),
    ".tiff": (".tfw", ".tiffw"),
    ".gif": (".gfw", ".gifw"),
    ".bmp": (".bpw", ".bmpw"),
}
_KNOWN_WORLD = {s for pair in WORLD_FILE_SUFFIXES.values() for s in pair} | {".wld"}
GEOTIFF_SUFFIXES = (".tif", ".tiff")
# PNG/JPEG above this many pixels are read window by window through rasterio (GDAL) when it is installed; Pillow
# can only decode them whole
LARGE_IMAGE_PIXELS = 100_000_000


# --- distances --------------------------------------------------------------------------------------------------

def haversine_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in metres between points in degrees (arrays broadcast)."""
    p1, p2 = np.radians(np.asarray(lat1, np.float64)), np.radians(np.asarray(lat2, np.float64))
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, np.float64) - np.asarray(lon1, np.float64))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def metres_per_degree(latitude: float) -> tuple[float, float]:
    """(metres per degree of latitude, metres per degree of longitude) at ``latitude`` on the same sphere."""
    along_meridian = math.pi / 180 * EARTH_RADIUS_M
    return along_meridian, along_meridian * math.cos(math.radians(latitude))


def offset_latlon(latitude, longitude, east_m, north_m) -> tuple[np.ndarray, np.ndarray]:
    """The point ``east_m`` / ``north_m`` metres from (latitude, longitude): local flat-earth approximation around
    the first point (exact enough within a few kilometres)."""
    lat_m, lon_m = metres_per_degree(float(np.mean(latitude)))
    return (np.asarray(latitude, np.float64) + np.asarray(north_m, np.float64) / lat_m,
            np.asarray(longitude, np.float64) + np.asarray(east_m, np.float64) / lon_m)


# --- the transform ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeoRef:
    """Pixel <-> map coordinates of one image (see the module docstring for the conventions)."""

    width: int
    height: int
    transform: tuple[float, float, float, float, float, float]  # (a, b, c, d, e, f), pixel corner convention
    crs: str | None = None  # None: WGS84 longitude/latitude degrees; else a CRS (WKT) that rasterio understands
    source: str = ""  # what it was read from, for messages

    @property
    def north_up(self) -> bool:
        a, b, _, d, e, _ = self.transform
        return b == 0 and d == 0 and a > 0 and e < 0

    def pixel_to_xy(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        a, b, c, d, e, f = self.transform
        col, row = np.asarray(col, np.float64), np.asarray(row, np.float64)
        return a * col + b * row + c, d * col + e * row + f

    def xy_to_pixel(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        a, b, c, d, e, f = self.transform
        det = a * e - b * d
        x, y = np.asarray(x, np.float64) - c, np.asarray(y, np.float64) - f
        return (e * x - b * y) / det, (a * y - d * x) / det

    def pixel_to_latlon(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        """(latitude, longitude) degrees of continuous pixel coordinates."""
        x, y = self.pixel_to_xy(col, row)
        if self.crs is None:
            return y, x
        lon, lat = _reproject(self.crs, "EPSG:4326", x, y)
        return lat, lon

    def latlon_to_pixel(self, latitude, longitude) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (col, row) of WGS84 points."""
        if self.crs is None:
            return self.xy_to_pixel(longitude, latitude)
        x, y = _reproject("EPSG:4326", self.crs, longitude, latitude)
        return self.xy_to_pixel(x, y)

    def pixel_size_m(self) -> tuple[float, float]:
        """Ground size (metres) of one pixel across (east) and down (south), measured at the image centre."""
        col, row = self.width / 2, self.height / 2
        lat, lon = self.pixel_to_latlon([col, col + 1, col], [row, row, row + 1])
        return (float(haversine_m(lat[0], lon[0], lat[1], lon[1])), float(haversine_m(lat[0], lon[0], lat[2], lon[2])))

    def describe(self) -> str:
        return self.source or "georeference"


def _check_wgs84(georef: GeoRef) -> GeoRef:
    """Refuse coordinates that cannot be WGS84 degrees (a world file in metres, a typo in --bounds)."""
    cols, rows = [0, georef.width, 0, georef.width], [0, 0, georef.height, georef.height]
    x, y = georef.pixel_to_xy(cols, rows)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.abs(x).max() > 180 or np.abs(y).max() > 90:
        raise LpnEdgeError(
            f"{georef.describe()}: the image would span longitude {x.min():.6g}..{x.max():.6g}, latitude "
            f"{y.min():.6g}..{y.max():.6g}, which are not WGS84 degrees (projected coordinates? give a GeoTIFF "
            f"or --bounds north,west,south,east instead)")
    if georef.transform[0] * georef.transform[4] - georef.transform[1] * georef.transform[3] == 0:
        raise LpnEdgeError(f"{georef.describe()}: the transform is degenerate (zero pixel size)")
    return georef


# --- ESRI world files -------------------------------------------------------------------------------------------

def world_file_candidates(image: str | Path) -> list[Path]:
    """Where a world file of ``image`` may be, in the order they are tried (both letter cases)."""
    image = Path(image)
    suffixes = [*WORLD_FILE_SUFFIXES.get(image.suffix.lower(), ()), ".wld"]
    candidates = []
    for suffix in suffixes:
        candidates += [image.with_suffix(suffix), image.with_suffix(suffix.upper())]
    return candidates


def find_world_file(image: str | Path) -> Path | None:
    return next((path for path in world_file_candidates(image) if path.is_file()), None)


def read_world_file(path: str | Path, width: int, height: int) -> GeoRef:
    """The GeoRef of a ``width`` x ``height`` image from its ESRI world file (WGS84 degrees).

    The file's (C, F) is the centre of the upper-left pixel; the transform returned is corner-based, so
    c = C - A/2 - B/2 and f = F - D/2 - E/2.
    """
    path = Path(path)
    if path.suffix.lower() not in _KNOWN_WORLD:
        raise LpnEdgeError(f"{path}: unknown world file type {path.suffix!r} (expected one of "
                           f"{', '.join(sorted(_KNOWN_WORLD))})")
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise LpnEdgeError(f"cannot read the world file {path}: {exc}") from None
    try:
        values = [float(line) for line in lines]
    except ValueError:
        values = []
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise LpnEdgeError(f"{path} is not a world file: expected 6 numbers, one per line (A, D, B, E, C, F), "
                           f"found {len(lines)} lines")
    a, d, b, e, c, f = values
    transform = (a, b, c - a / 2 - b / 2, d, e, f - d / 2 - e / 2)
    return _check_wgs84(GeoRef(int(width), int(height), transform, None, f"world file {path}"))


def world_file_text(georef: GeoRef) -> str:
    """The six lines of the world file of a WGS84 GeoRef (inverse of `read_world_file`; shortest exact floats)."""
    if georef.crs is not None:
        raise LpnEdgeError("a world file holds WGS84 degrees here; this image has a projected CRS")
    a, b, c, d, e, f = georef.transform
    return "\n".join(repr(float(v)) for v in (a, d, b, e, c + a / 2 + b / 2, f + d / 2 + e / 2)) + "\n"


# --- explicit bounds --------------------------------------------------------------------------------------------

def parse_bounds(text: str) -> tuple[float, float, float, float]:
    """'north,west,south,east' (WGS84 degrees) -> floats, checked."""
    try:
        north, west, south, east = (float(part) for part in text.split(","))
    except ValueError:
        raise LpnEdgeError(f"--bounds must be north,west,south,east in degrees, e.g. 47.01,7.99,47.0,8.01; "
                           f"got {text!r}") from None
    if not (-90 <= south < north <= 90 and -180 <= west < east <= 180):
        raise LpnEdgeError(f"--bounds {text}: need -90 <= south < north <= 90 and -180 <= west < east <= 180 "
                           f"(north,west,south,east)")
    return north, west, south, east


def georef_from_bounds(bounds: str | tuple[float, float, float, float], width: int, height: int) -> GeoRef:
    """A north-up WGS84 GeoRef whose image EDGES are the given bounds (north, west, south, east)."""
    north, west, south, east = parse_bounds(bounds) if isinstance(bounds, str) else bounds
    transform = ((east - west) / width, 0.0, west, 0.0, -(north - south) / height, north)
    return _check_wgs84(GeoRef(int(width), int(height), transform, None,
                               f"--bounds {north},{west},{south},{east}"))


# --- rasterio (optional) ----------------------------------------------------------------------------------------

def require_rasterio():
    """Import rasterio or say, in one line, which extra brings it."""
    try:
        import rasterio
    except ImportError:
        raise LpnEdgeError(f"reading GeoTIFFs needs the Python package 'rasterio', which is not installed: "
                           f"{GEO_EXTRA}") from None
    return rasterio


def _reproject(src: str, dst: str, xs, ys) -> tuple[np.ndarray, np.ndarray]:
    require_rasterio()
    from rasterio.warp import transform

    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    out_x, out_y = transform(src, dst, xs.ravel().tolist(), ys.ravel().tolist())
    return np.asarray(out_x).reshape(xs.shape), np.asarray(out_y).reshape(ys.shape)


# --- pixels -----------------------------------------------------------------------------------------------------

class Raster:
    """A geo-referenced RGB image read window by window."""

    path: Path
    georef: GeoRef

    def read(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Pixels of the integer box (x0, y0, x1, y1) inside the image: (y1 - y0, x1 - x0, 3) uint8 RGB."""
        raise NotImplementedError

    def overview(self, max_side: int) -> np.ndarray:
        """The whole image, downscaled so that its longer side is at most ``max_side`` pixels."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def _no_pixel_limit():
    """Pillow refuses images over ~179 Mpixel as decompression bombs; an orthophoto is the user's own file."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


class PillowRaster(Raster):
    """PNG / JPEG / plain TIFF through Pillow. Opening reads only the header; the first `read` decodes the image
    once (Pillow cannot decode a window of a PNG or JPEG), later reads crop from it. Larger images: see
    `LARGE_IMAGE_PIXELS` and `RasterioRaster`."""

    def __init__(self, path: Path, georef_of_size) -> None:
        from PIL import Image, UnidentifiedImageError

        self.path = Path(path)
        try:
            with _no_pixel_limit():
                self._image = Image.open(self.path)
        except (UnidentifiedImageError, OSError) as exc:
            raise LpnEdgeError(f"cannot read the image {self.path}: {exc}") from None
        self.georef = georef_of_size(*self._image.size)
        self._decoded = None

    def _pixels(self):
        if self._decoded is None:
            try:
                with _no_pixel_limit():
                    self._decoded = self._image.convert("RGB")
            except OSError as exc:
                raise LpnEdgeError(f"cannot decode the image {self.path}: {exc}") from None
        return self._decoded

    def read(self, box: tuple[int, int, int, int]) -> np.ndarray:
        return np.asarray(self._pixels().crop(tuple(int(v) for v in box)))

    def overview(self, max_side: int) -> np.ndarray:
        from PIL import Image

        image = self._pixels()
        scale = min(1.0, max_side / max(image.size))
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return np.asarray(image if scale == 1.0 else image.resize(size, Image.Resampling.BOX))

    def close(self) -> None:
        self._image.close()
        self._decoded = None


class RasterioRaster(Raster):
    """Any format GDAL reads (GeoTIFF above all), window by window, 8-bit RGB or grey bands."""

    def __init__(self, path: Path, georef_of_size=None) -> None:
        rasterio = require_rasterio()
        self.path = Path(path)
        try:
            with warnings.catch_warnings():  # a missing georeference is our own one-line error below
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise LpnEdgeError(f"cannot read the image {self.path}: {exc}") from None
        ds = self._dataset
        if ds.dtypes[0] != "uint8":
            self.close()
            raise LpnEdgeError(f"{self.path}: pixels are {ds.dtypes[0]}; only 8-bit imagery is supported "
                               f"(convert it first, e.g. gdal_translate -ot Byte -scale)")
        self._bands = [1, 2, 3] if ds.count >= 3 else [1]
        if georef_of_size is not None:
            self.georef = georef_of_size(ds.width, ds.height)
        else:
            if ds.crs is None or ds.transform.is_identity:
                self.close()
                raise LpnEdgeError(f"{self.path} has no georeference (no CRS or transform in the GeoTIFF); put a "
                                   f"world file beside it or pass --bounds north,west,south,east")
            t = ds.transform
            self.georef = GeoRef(ds.width, ds.height, (t.a, t.b, t.c, t.d, t.e, t.f), ds.crs.to_wkt(),
                                 f"GeoTIFF {self.path}")

    def _rgb(self, data: np.ndarray) -> np.ndarray:
        data = np.moveaxis(data, 0, -1)
        return np.ascontiguousarray(np.repeat(data, 3, axis=2) if data.shape[2] == 1 else data)

    def read(self, box: tuple[int, int, int, int]) -> np.ndarray:
        from rasterio.windows import Window

        x0, y0, x1, y1 = (int(v) for v in box)
        return self._rgb(self._dataset.read(self._bands, window=Window(x0, y0, x1 - x0, y1 - y0)))

    def overview(self, max_side: int) -> np.ndarray:
        from rasterio.enums import Resampling

        ds = self._dataset
        scale = min(1.0, max_side / max(ds.width, ds.height))
        shape = (len(self._bands), max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
        return self._rgb(ds.read(self._bands, out_shape=shape, resampling=Resampling.average))

    def close(self) -> None:
        self._dataset.close()


def open_raster(path: str | Path, bounds: str | tuple[float, float, float, float] | None = None) -> Raster:
    """Open a geo-referenced image: ``bounds`` if given, else a world file beside it, else (``.tif``) the
    GeoTIFF's own georeference through rasterio. A missing georeference is a one-line LpnEdgeError."""
    path = Path(path)
    if not path.is_file():
        raise LpnEdgeError(f"orthophoto {path} does not exist" if not path.exists() else f"{path} is not a file")
    if bounds is not None:
        parsed = parse_bounds(bounds) if isinstance(bounds, str) else bounds
        georef_of_size = lambda w, h: georef_from_bounds(parsed, w, h)  # noqa: E731
    else:
        world = find_world_file(path)
        georef_of_size = (lambda w, h: read_world_file(world, w, h)) if world is not None else None  # noqa: E731
    if path.suffix.lower() in GEOTIFF_SUFFIXES:
        if georef_of_size is None:
            return RasterioRaster(path)  # needs rasterio: the georeference is inside the file
        try:
            require_rasterio()
        except LpnEdgeError:
            return PillowRaster(path, georef_of_size)
        return RasterioRaster(path, georef_of_size)
    if georef_of_size is None:
        names = ", ".join(p.name for p in world_file_candidates(path)[::2])
        raise LpnEdgeError(f"{path} has no georeference: put a world file beside it ({names}; WGS84 degrees) or "
                           f"pass --bounds north,west,south,east")
    raster = PillowRaster(path, georef_of_size)
    if raster.georef.width * raster.georef.height > LARGE_IMAGE_PIXELS:
        try:
            require_rasterio()
        except LpnEdgeError:
            return raster  # decoded whole when first read
        raster.close()
        return RasterioRaster(path, georef_of_size)
    return raster
