"""Images for parity checks and int8 calibration: a tiny PIL + numpy loader with the model's preprocessing.

Decoding is the data stage's `load_rgb` (any mode to RGB, EXIF orientation, one-line error for a bad file).
Preprocessing (the authors' test transform): RGB, resize to (H, W) with bicubic interpolation, scale to [0, 1],
subtract the ImageNet mean and divide by its std per channel; layout NCHW float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpn_edge.data.images import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, is_image_file, load_rgb
from lpn_edge.errors import LpnEdgeError
# Real University-1652 imagery shared beside the repository (see its README); used when present.
POSITIVE_NOISE = 0.1  # std of the noise that turns a query into its gallery match (normalised pixel units)
DEFAULT_PARITY_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "u1652-mosaic"


def preprocessing(size: tuple[int, int]) -> dict:
    """What a runtime must do to a photo before the exported model sees it (stored in the artifact metadata)."""
    return {"size": list(size), "resize": "bicubic", "channel_order": "RGB", "scale": "1/255",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "layout": "NCHW", "dtype": "float32"}


def load_images(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """Decode and preprocess images: (N, 3, H, W) float32, ImageNet-normalised."""
    from PIL import Image

    height, width = size
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    out = np.empty((len(paths), 3, height, width), np.float32)
    for i, path in enumerate(paths):
        rgb = load_rgb(path).resize((width, height), Image.Resampling.BICUBIC)
        out[i] = (np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
    return out


def list_images(folder: Path) -> list[Path]:
    """Every image file under `folder` (recursively), sorted, so runs are reproducible."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))


@dataclass(frozen=True)
class CalibrationImages:
    """The images of a calibration folder, decoded and preprocessed a batch at a time, never all at once (a folder
    of thousands of 256 px photos would otherwise take gigabytes: 0.8 MB each as float32)."""

    paths: tuple[Path, ...]
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        """(<= batch, 3, H, W) float32 arrays covering every image once, in sorted order."""
        for start in range(0, len(self.paths), batch):
            yield load_images(list(self.paths[start:start + batch]), self.size)

    def first(self, count: int) -> np.ndarray:
        """The first `count` images (all when fewer): (min(count, N), 3, H, W)."""
        return load_images(list(self.paths[:count]), self.size)


def calibration_images(folder: Path, size: tuple[int, int], minimum: int) -> CalibrationImages:
    """The calibration folder's images (loaded lazily, see `CalibrationImages`); refuses fewer than `minimum`."""
    paths = list_images(folder)
    if len(paths) < minimum:
        raise LpnEdgeError(f"--calib {folder} holds {len(paths)} images ({', '.join(IMAGE_EXTENSIONS)}); int8 "
                           f"calibration needs at least {minimum}")
    return CalibrationImages(tuple(paths), tuple(size))


@dataclass(frozen=True)
class ParitySet:
    """Images every backend embeds: rows [:queries] are queries, the rest the gallery searched for their top-1.

    The first `queries` gallery rows are noisy copies of the queries (+ N(0, 0.1^2)): every query has
    a clear match, as in a real search, so top-1 agreement tests ranking rather than the order of near-ties
    (unrelated images of an untrained model embed almost alike). The other gallery rows are distractors.
    """

    name: str  # "random" or the data set's name
    images: np.ndarray  # (queries + gallery, 3, H, W) float32
    queries: int


def random_set(size: tuple[int, int], queries: int, gallery: int, seed: int = 0) -> ParitySet:
    """Standard-normal images (the range of ImageNet-normalised pixels), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    queries_images = rng.standard_normal((queries, 3, *size), dtype=np.float32)
    distractors = rng.standard_normal((max(gallery - queries, 0), 3, *size), dtype=np.float32)
    return _with_positives("random", queries_images, distractors, gallery)


def real_set(data_dir: Path, size: tuple[int, int], queries: int, gallery: int) -> ParitySet | None:
    """Drone photos as queries, their noisy copies plus satellite photos as gallery; None if too few images.

    Layout: `drone/<id>/<id>.jpg` and `satellite/<id>/<id>.jpg`. All go through the exported view's model: the
    check is that every backend ranks the same, not that the views match.
    """
    drone, satellite = list_images(Path(data_dir) / "drone"), list_images(Path(data_dir) / "satellite")
    distractors = max(gallery - queries, 0)
    if len(drone) < queries or len(satellite) < distractors:
        return None
    return _with_positives(Path(data_dir).resolve().name, load_images(drone[:queries], size),
                           load_images(satellite[:distractors], size), gallery)


def calibration_set(calibration: np.ndarray, queries: int, gallery: int) -> ParitySet:
    """Parity images drawn from the calibration images (N >= 3 needed): a third as queries, the rest distractors."""
    queries = min(queries, len(calibration) // 3)
    distractors = calibration[queries:queries + max(gallery - queries, 0)]
    return _with_positives("calibration", calibration[:queries], distractors, queries + len(distractors))


def _with_positives(name: str, queries: np.ndarray, distractors: np.ndarray, gallery: int) -> ParitySet:
    noise = np.random.default_rng(1).standard_normal(queries.shape, dtype=np.float32)
    positives = queries + POSITIVE_NOISE * noise
    images = np.concatenate([queries, positives, distractors])[:len(queries) + gallery]
    return ParitySet(name, np.ascontiguousarray(images, np.float32), len(queries))


def parity_sets(size: tuple[int, int], queries: int, gallery: int, data_dir: Path | None) -> list[ParitySet]:
    """The random set, plus the real set when `data_dir` holds enough images."""
    sets = [random_set(size, queries, gallery)]
    if data_dir is not None:
        real = real_set(data_dir, size, queries, gallery)
        if real is not None:
            sets.append(real)
    return sets
