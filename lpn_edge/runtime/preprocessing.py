"""Preprocessing: image file or camera frame -> the (N, 3, H, W) float32 tensor every exported model takes.

The one definition of the model's input, shared by training-side evaluation (`lpn_edge.data`), export (parity and
calibration images) and the runtime on the drone. numpy and Pillow only.

Steps (the authors' test transform, and `lpn_edge.data.transforms.eval_transform`, which equals it to 1e-6):
  1. decode (files only): any PIL mode -> 8-bit RGB, EXIF orientation applied (`load_rgb`);
  2. resize to (H, W) pixels with PIL's bicubic filter on the uint8 image (what torchvision's Resize does to a
     PIL image);
  3. scale to [0, 1] (divide by 255), subtract the ImageNet mean and divide by its std per RGB channel;
  4. layout NCHW, float32.
A decoded frame is an (H, W, 3) uint8 RGB array (convert BGR camera frames first).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lpn_edge.errors import LpnEdgeError

# ImageNet normalisation of every model here (torchvision weights, the authors' transforms), in RGB order.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Lower-case suffixes treated as images; everything else in a folder is ignored (README, .DS_Store, ...).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

ImageInput = str | os.PathLike | np.ndarray  # a file, or an (H, W, 3) uint8 RGB frame


class UnreadableImage(LpnEdgeError):
    """An image file that cannot be decoded (empty, truncated, not an image, unsupported)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def preprocessing_spec(size: tuple[int, int]) -> dict:
    """What a runtime must do to a photo before the exported model sees it (stored in the artifact metadata)."""
    return {"size": list(size), "resize": "bicubic", "channel_order": "RGB", "scale": "1/255",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "layout": "NCHW", "dtype": "float32"}


def preprocess(images: ImageInput | Sequence[ImageInput], size: tuple[int, int]) -> np.ndarray:
    """Files and/or (H, W, 3) uint8 RGB frames -> (N, 3, size[0], size[1]) float32, ImageNet-normalised.

    `images`: one file path, one frame, an (N, H, W, 3) uint8 array, or a sequence of paths and frames.
    Raises `UnreadableImage` for a bad file and LpnEdgeError for a frame of the wrong shape or dtype.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        items: Sequence[ImageInput] = list(images)
    elif isinstance(images, (str, os.PathLike, np.ndarray)):
        items = [images]
    else:
        items = list(images)
    height, width = (int(s) for s in size)
    out = np.empty((len(items), 3, height, width), np.float32)
    for i, item in enumerate(items):
        out[i] = normalise(resize(_rgb_image(item), (height, width)))
    return out


def resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """RGB PIL image -> (H, W, 3) uint8 array of `size` (H, W), PIL bicubic."""
    height, width = size
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC), np.uint8)


_MEAN = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
_STD = np.asarray(IMAGENET_STD, np.float32)[:, None, None]


def normalise(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32: /255, minus the ImageNet mean, divided by its std (all float32).

    `out`: a (3, H, W) float32 array to fill in place (a camera loop allocates nothing); the same numbers."""
    if out is None:
        return (np.asarray(rgb, np.float32).transpose(2, 0, 1) / np.float32(255.0) - _MEAN) / _STD
    np.copyto(out, np.asarray(rgb).transpose(2, 0, 1), casting="unsafe")
    np.divide(out, np.float32(255.0), out=out)
    np.subtract(out, _MEAN, out=out)
    np.divide(out, _STD, out=out)
    return out


def _rgb_image(item: ImageInput) -> Image.Image:
    if not isinstance(item, np.ndarray):
        return load_rgb(item)
    if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
        raise LpnEdgeError(f"a frame must be an (H, W, 3) uint8 RGB array; got shape {item.shape}, dtype {item.dtype}")
    return Image.fromarray(np.ascontiguousarray(item), "RGB")


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of `IMAGE_EXTENSIONS` (case-insensitive); the content is not looked at."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder` (recursively, by extension), sorted, so runs are reproducible."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))


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
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError, struct.error, ...)
        raise UnreadableImage(path, describe_failure(path, exc)) from None


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


def describe_failure(path: Path, exc: Exception) -> str:
    """Why `path` could not be decoded, in a few words (empty, not an image, truncated, PIL's reason)."""
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
