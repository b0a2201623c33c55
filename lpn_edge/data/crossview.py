"""Two-view (satellite / ground panorama) datasets: CVUSA and CVACT, prepared or raw."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from lpn_edge.data.cvact import cvact_raw_pairs
from lpn_edge.data.cvusa import cvusa_raw_pairs
from lpn_edge.data.images import ImageScan, scan_files
from lpn_edge.data.layout import PAIR_VIEWS, detect_layout
from lpn_edge.data.pairs import Pair, check_split, folder_pairs
from lpn_edge.data.polar import polar_transform
from lpn_edge.data.sampling import FallbackLoader
from lpn_edge.errors import LpnEdgeError

PAIR_LAYOUTS = ("cvusa", "cvact", "cvusa-raw", "cvact-raw")
_MAX_ITEM_FALLBACKS = 100

Transform = Callable[[Image.Image], Any]


def list_pairs(root: str | Path, split: str, layout: str | None = None) -> list[Pair]:
    """All pairs the dataset lists for ``split`` ("train" or "val"), whether or not their files are readable."""
    check_split(split)
    root = Path(root)
    layout = layout or detect_layout(root)
    if layout in PAIR_VIEWS:
        return folder_pairs(root / split, *PAIR_VIEWS[layout])
    if layout == "cvusa-raw":
        return cvusa_raw_pairs(root, split)
    if layout == "cvact-raw":
        return cvact_raw_pairs(root, split)
    raise LpnEdgeError(
        f"{root} has layout {layout!r}; satellite/ground pairs need one of {', '.join(PAIR_LAYOUTS)}"
    )


def readable_pairs(pairs: list[Pair], verify: bool = True) -> tuple[list[Pair], ImageScan]:
    """The pairs whose two files are both readable, and the scan that says which files are not (and why)."""
    files = [path for pair in pairs for path in (pair.satellite, pair.ground)]
    scan = scan_files(files, verify=verify)
    bad = set(scan.unreadable_paths)
    return [pair for pair in pairs if pair.satellite not in bad and pair.ground not in bad], scan


class CrossViewPairs(Dataset):
    """Satellite / ground pairs of CVUSA or CVACT as items ``{"label", "satellite", "ground"}``.

    ``label`` is the pair's index among the readable pairs of the split (each location is its own class, as in
    the authors' two-view training). ``polar_size=(H, W)`` polar-transforms the satellite image to H x W (see
    `lpn_edge.data.polar`) before ``satellite_transform``. Pairs with a missing or unreadable file are left out
    with one warning; a pair that goes bad during a run is replaced by the next one (logged, counted in
    ``loader.failures``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        satellite_transform: Transform | None = None,
        ground_transform: Transform | None = None,
        *,
        polar_size: tuple[int, int] | None = None,
        verify: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.layout = detect_layout(self.root)
        self.pairs, scan = readable_pairs(list_pairs(self.root, split, self.layout), verify=verify)
        scan.warn(f"{self.root} ({split})")
        if not self.pairs:
            raise LpnEdgeError(f"no readable satellite/ground pair in the {split} split of {self.root}")
        self.satellite_transform = satellite_transform
        self.ground_transform = ground_transform
        self.polar_size = polar_size
        self.loader = FallbackLoader()

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_classes(self) -> int:
        """Each location is its own class."""
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Part of the training-dataset protocol; a pair has no random choice to make (augmentation is the
        transforms')."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} pairs")
        for step in range(min(len(self), _MAX_ITEM_FALLBACKS)):
            label = (index + step) % len(self)
            pair = self.pairs[label]
            satellite = self.loader.first_readable([pair.satellite], f"pair {pair.key}")
            ground = self.loader.first_readable([pair.ground], f"pair {pair.key}") if satellite else None
            if satellite is not None and ground is not None:
                return {"label": label, "satellite": self._satellite(satellite), "ground": self._ground(ground)}
        raise LpnEdgeError(
            f"{_MAX_ITEM_FALLBACKS} pairs in a row starting at {index} were unreadable in {self.root}; see the log"
        )

    def _satellite(self, image: Image.Image) -> Any:
        if self.polar_size is not None:
            image = polar_transform(image, *self.polar_size)
        return self.satellite_transform(image) if self.satellite_transform else image

    def _ground(self, image: Image.Image) -> Any:
        return self.ground_transform(image) if self.ground_transform else image
