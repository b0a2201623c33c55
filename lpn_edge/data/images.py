"""Image files: robust decoding to RGB and scanning folders for images that can actually be read.

Decoding itself (`load_rgb`, `UnreadableImage`) is defined in `lpn_edge.runtime.preprocessing` and re-exported
here. Real datasets contain a few bad files (zero bytes, cut-off downloads, HTML error pages saved as ``.jpg``) and
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

from PIL import Image

from lpn_edge.errors import LpnEdgeError

# Decoding and the ImageNet constants are the runtime's (one definition, torch-free); re-exported here.
from lpn_edge.runtime.preprocessing import (  # noqa: F401
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    UnreadableImage,
    describe_failure,
    is_image_file,
    load_rgb,
    to_rgb,
)

# How many bad files a warning names before it only counts the rest.
_NAMED_IN_WARNING = 5


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
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise UnreadableImage(path, describe_failure(path, exc)) from None


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

