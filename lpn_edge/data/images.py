"""Image files: robust decoding to RGB and scanning folders for images that can actually be read.

Real datasets contain a few bad files (zero bytes, cut-off downloads, HTML error pages saved as ``.jpg``) and
images in every PIL mode. Everything here turns them into one of two outcomes: an RGB ``PIL.Image`` or an
`UnreadableImage` that names the file and says why.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lpn_edge.errors import LpnEdgeError


# Lower-case suffixes treated as images; everything else in a class folder is ignored (README, .DS_Store, ...).
# ImageNet normalisation of every model here (torchvision weights, the authors' transforms), in RGB order.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

# How many bad files a warning names before it only counts the rest.
_NAMED_IN_WARNING = 5


class UnreadableImage(LpnEdgeError):
    """An image file that cannot be decoded (empty, truncated, not an image, unsupported)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of `IMAGE_EXTENSIONS` (case-insensitive); the content is not looked at."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file into an 8-bit RGB ``PIL.Image`` with its EXIF orientation applied.

    Mode handling (why: the model only understands 8-bit RGB, and a silent wrong conversion is worse than none):
    - grayscale, palette, CMYK, YCbCr, ...: PIL's standard conversion;
    - anything with alpha (RGBA, LA, PA, palette with a transparent index): composited over black, because
      transparent pixels of map tiles are "no data" and their hidden colour is arbitrary;
    - 16/32-bit integer (``I;16*``, ``I``): read as 16-bit intensities (0..65535) and scaled to 0..255, where
      PIL's own conversion would clip everything above 255 to white.

    Raises `UnreadableImage` for a missing, empty, truncated or non-image file.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode now, inside the try: PIL is lazy and would fail later, far from the file name
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except UnreadableImage:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, struct.error, ...)
        raise UnreadableImage(path, _describe_failure(path, exc)) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any PIL mode to 8-bit RGB (see `load_rgb` for the rules)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):
        # Integer modes come from 16-bit PNG/TIFF; scale the 16-bit range, do not clip it.
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def check_image(path: str | Path) -> None:
    """Raise `UnreadableImage` unless the whole file decodes; cheaper than `load_rgb`.

    JPEGs are decoded at reduced scale (``draft``): the decoder still reads every byte of the compressed data, so
    a truncated file is still caught, at a fraction of the cost. Relies on PIL's default of refusing truncated
    files (``ImageFile.LOAD_TRUNCATED_IMAGES = False``).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as exc:
        raise UnreadableImage(path, _describe_failure(path, exc)) from None


def _describe_failure(path: Path, exc: Exception) -> str:
    try:
        size = path.stat().st_size
    except OSError as stat_error:
        return f"file cannot be opened ({stat_error.strerror or stat_error})"
    if size == 0:
        return "the file is empty (0 bytes)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file (unknown format)"
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower():
        return f"the file is truncated ({text})"
    return text


@dataclass
class ImageScan:
    """Result of scanning files: the readable ones (in the order given) and the unreadable ones with reasons."""

    readable: list[Path] = field(default_factory=list)
    unreadable: list[UnreadableImage] = field(default_factory=list)

    @property
    def unreadable_paths(self) -> list[Path]:
        return [bad.path for bad in self.unreadable]

    def warn(self, where: str) -> None:
        """Emit ONE warning that counts the unreadable files and names the first few (nothing if there are none)."""
        if not self.unreadable:
            return
        named = "; ".join(str(bad) for bad in self.unreadable[:_NAMED_IN_WARNING])
        more = len(self.unreadable) - _NAMED_IN_WARNING
        tail = f"; and {more} more" if more > 0 else ""
        warnings.warn(
            f"skipped {len(self.unreadable)} unreadable image file(s) in {where}: {named}{tail}",
            UserWarning,
            stacklevel=3,
        )


def scan_files(paths: Sequence[Path], verify: bool = True, workers: int | None = None) -> ImageScan:
    """Split ``paths`` into readable and unreadable images, keeping the given order.

    verify=True decodes every file (`check_image`, in threads: PIL releases the GIL while decoding);
    verify=False only rejects empty files, and bad content is then caught when the file is loaded.
    """
    if verify:
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = list(pool.map(_error_of, paths))
    else:
        errors = [_empty_file_error(path) for path in paths]
    scan = ImageScan()
    for path, error in zip(paths, errors):
        if error is None:
            scan.readable.append(path)
        else:
            scan.unreadable.append(error)
    return scan


def _error_of(path: Path) -> UnreadableImage | None:
    try:
        check_image(path)
    except UnreadableImage as error:
        return error
    return None


def _empty_file_error(path: Path) -> UnreadableImage | None:
    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        return UnreadableImage(path, f"file cannot be opened ({exc.strerror or exc})")
    return UnreadableImage(path, "the file is empty (0 bytes)") if empty else None


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, hidden files excluded), sorted by name."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise LpnEdgeError(f"cannot list image folder {folder}: {exc.strerror or exc}") from None
    return sorted(
        folder / entry.name
        for entry in entries
        if entry.is_file() and not entry.name.startswith(".") and is_image_file(entry.name)
    )


def scan_images(folder: str | Path, verify: bool = True, warn: bool = True) -> ImageScan:
    """The images of one folder (not recursive), split into readable and unreadable; one warning for the bad ones."""
    folder = Path(folder)
    scan = scan_files(list_image_files(folder), verify=verify)
    if warn:
        scan.warn(str(folder))
    return scan

