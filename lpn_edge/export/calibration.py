"""int8 calibration images: a folder of photos like the ones the model will see, decoded a batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.preprocessing import IMAGE_EXTENSIONS, find_images, preprocess


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
            yield preprocess(list(self.paths[start:start + batch]), self.size)

    def first(self, count: int) -> np.ndarray:
        """The first `count` images (all when fewer): (min(count, N), 3, H, W)."""
        return preprocess(list(self.paths[:count]), self.size)


def calibration_paths(folder: Path, minimum: int) -> list[Path]:
    """The calibration folder's image files, sorted; refuses fewer than `minimum`."""
    paths = find_images(folder)
    if len(paths) < minimum:
        raise LpnEdgeError(f"--calib {folder} holds {len(paths)} images ({', '.join(IMAGE_EXTENSIONS)}); int8 "
                           f"calibration needs at least {minimum}")
    return paths


def calibration_images(folder: Path, size: tuple[int, int], minimum: int) -> CalibrationImages:
    """The calibration folder's images (loaded lazily, see `CalibrationImages`); refuses fewer than `minimum`."""
    return CalibrationImages(tuple(calibration_paths(folder, minimum)), tuple(size))
