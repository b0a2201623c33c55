"""Tiny image files and dataset trees for the data tests (generated in tmp_path; nothing is shipped)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

BROKEN_KINDS = ("zero_bytes", "truncated_jpeg", "truncated_png", "text_as_jpeg")


def solid(color: Sequence[int], size: tuple[int, int] = (24, 24)) -> Image.Image:
    """An RGB image (width, height) = ``size`` of one colour."""
    return Image.new("RGB", size, tuple(color))


def noise_image(seed: int, size: tuple[int, int] = (24, 24)) -> Image.Image:
    """Random RGB noise: no two seeds give the same image, so loaders can be checked by content."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write_broken(path: Path, kind: str) -> Path:
    """Write a bad image file of one of `BROKEN_KINDS`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "truncated_jpeg":
        data = _encoded(noise_image(1, (64, 64)), "JPEG")
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_png":
        data = _encoded(noise_image(2, (64, 64)), "PNG")
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text_as_jpeg":
        path.write_text("<html><body>404 Not Found</body></html>\n")
    else:
        raise ValueError(kind)
    return path


def make_class_tree(
    folder: Path, classes: Iterable[str], per_class: int | dict[str, int], seed: int = 0, suffix: str = ".jpg"
) -> dict[str, list[Path]]:
    """``folder/<class>/<n>.jpg`` noise images; a class with 0 images gets an empty folder."""
    written: dict[str, list[Path]] = {}
    for c, name in enumerate(classes):
        count = per_class[name] if isinstance(per_class, dict) else per_class
        (folder / name).mkdir(parents=True, exist_ok=True)
        written[name] = [
            save(noise_image(seed * 100_000 + c * 100 + i), folder / name / f"{i:02d}{suffix}") for i in range(count)
        ]
    return written


def make_university_tree(root: Path, classes: Sequence[str] = ("0001", "0002", "0003"), drones: int = 3) -> Path:
    """A tiny University-1652 tree: every class has 1 satellite, ``drones`` drone and 1 street image; google is
    empty for the last class; test has query_drone / gallery_satellite / query_satellite / gallery_drone."""
    make_class_tree(root / "train" / "satellite", classes, 1, seed=1)
    make_class_tree(root / "train" / "drone", classes, drones, seed=2)
    make_class_tree(root / "train" / "street", classes, 1, seed=3)
    make_class_tree(root / "train" / "google", classes, {**{c: 2 for c in classes}, classes[-1]: 0}, seed=4)
    test_ids = ("0101", "0102")
    make_class_tree(root / "test" / "query_drone", test_ids, 2, seed=5)
    make_class_tree(root / "test" / "gallery_satellite", (*test_ids, "0900"), 1, seed=6)
    make_class_tree(root / "test" / "query_satellite", test_ids, 1, seed=7)
    make_class_tree(root / "test" / "gallery_drone", test_ids, 2, seed=8)
    return root


def mean_color(tensor_or_image) -> np.ndarray:
    """Mean RGB of a PIL image, or of a (3, H, W) tensor un-normalised back to 0..255."""
    if isinstance(tensor_or_image, Image.Image):
        return np.asarray(tensor_or_image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    from lpn_edge.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    array = tensor_or_image.numpy().reshape(3, -1).mean(axis=1)
    return (array * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255.0


def make_cvusa_raw(root: Path, keys_by_split: dict[str, Sequence[str]]) -> Path:
    """bingmap/19/<key>.jpg (solid colour coding the key), streetview/panos/<key>.jpg, splits/*-19zl.csv."""
    for split, keys in keys_by_split.items():
        rows = []
        for key in keys:
            value = int(key) * 20
            save(solid((value, 0, 0)), root / "bingmap" / "19" / f"{key}.jpg", quality=95)
            save(solid((0, value, 0), (48, 12)), root / "streetview" / "panos" / f"{key}.jpg", quality=95)
            rows.append(f"bingmap/19/{key}.jpg,streetview/panos/{key}.jpg,streetview/annotations/{key}.png\n")
        (root / "splits").mkdir(parents=True, exist_ok=True)
        (root / "splits" / f"{split}-19zl.csv").write_text("".join(rows))
    return root


def make_cvact_raw(root: Path, keys: Sequence[str]) -> Path:
    """ANU_data_small/satview_polish/<key>_satView_polish.jpg and streetview/<key>_grdView.jpg (noise images)."""
    images = root / "ANU_data_small"
    for i, key in enumerate(keys):
        save(noise_image(i), images / "satview_polish" / f"{key}_satView_polish.jpg")
        save(noise_image(100 + i, (48, 12)), images / "streetview" / f"{key}_grdView.jpg")
    return root
