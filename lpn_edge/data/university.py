"""University-1652 readers: the multi-view training set and the retrieval (query / gallery) folders.

Layout (Zheng et al., ACM MM 2020)::

    train/{satellite,drone,street,google}/<id>/*
    test/{query_drone,gallery_satellite,query_satellite,gallery_drone,query_street,gallery_street}/<id>/*

Training class indices are the sorted folder names of ``train/satellite`` and are shared by every view; a class
folder that is empty in some view (Google has many) keeps its index, so the views stay aligned.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lpn_edge.data.class_folders import ClassFolder, read_class_folder
from lpn_edge.data.sampling import FallbackLoader, candidate_order, item_rng
from lpn_edge.errors import LpnEdgeError

TRAIN_VIEWS = ("satellite", "drone", "street", "google")
# The key each view's tensor has in a training item (the paper calls street images "ground").
ITEM_KEYS = {"satellite": "satellite", "drone": "drone", "street": "ground", "google": "google"}
# Views that many classes lack (University-1652 has no Google image for some buildings): a missing image gives a
# zero tensor and ``<key>_valid = False`` instead of dropping the class.
OPTIONAL_VIEWS = ("street", "google")
EPOCHS = ("satellite", "drone")
# Give up on an item after this many classes in a row turned out to have no readable image.
_MAX_ITEM_FALLBACKS = 100

Transform = Callable[[Image.Image], Any]


def blank_output(transform: Transform) -> torch.Tensor:
    """A zero tensor shaped like ``transform``'s output, for an image that does not exist.

    The transforms of this package resize to a fixed size, so a dummy input gives the right shape. The dummy call
    runs on a forked RNG: it must not shift the random augmentation of the items that follow (exact resume).
    """
    with torch.random.fork_rng(devices=[]):
        sample = transform(Image.new("RGB", (64, 64)))
    if not isinstance(sample, torch.Tensor):
        raise LpnEdgeError(f"the transform must return a tensor (got {type(sample).__name__}): {transform}")
    return torch.zeros_like(sample)


def train_folder(root: str | Path) -> Path:
    """The folder holding the view folders: ``root/train``, or ``root`` itself when it holds ``satellite/``."""
    root = Path(root)
    if (root / "train" / "satellite").is_dir():
        return root / "train"
    if (root / "satellite").is_dir():
        return root
    raise LpnEdgeError(
        f"no University-1652 training data under {root}: expected {root / 'train' / 'satellite'} "
        f"(or {root / 'satellite'} when the train folder itself is given)"
    )


class University1652Train(Dataset):
    """Multi-view training items: a satellite image plus random images of the same class from the other views.

    Args:
        root: dataset root (holding ``train/``) or the train folder itself.
        transforms: one transform per view folder name (``satellite``, ``drone``, ``street``, ``google``) mapping
            an RGB ``PIL.Image`` to a tensor of a fixed shape, e.g. (3, H, W).
        views: which views an item holds; must include ``satellite``.
        epoch: ``"satellite"``: one item per class (the authors' loop: every satellite image once per epoch);
            ``"drone"``: one item per drone image, with a random satellite image of its class.
        seed: with `set_epoch`, determines every random choice (see `lpn_edge.data.sampling`).
        verify: decode every file while building the index (unreadable ones are skipped with one warning).

    An item is a dict: ``label`` (int class index), then per view its tensor under ``satellite``, ``drone``,
    ``ground`` (street) and ``google``; optional views also carry ``ground_valid`` / ``google_valid`` (bool), with a
    zero tensor when the class has no readable image of that view. Classes without a readable satellite (or, when
    drone is a view, drone) image are left out of the epoch but keep their index.
    """

    def __init__(
        self,
        root: str | Path,
        transforms: Mapping[str, Transform],
        views: Sequence[str] = TRAIN_VIEWS,
        epoch: str = "satellite",
        seed: int = 0,
        verify: bool = True,
    ) -> None:
        views = tuple(views)
        _check_views(views, epoch)
        missing = [view for view in views if view not in transforms]
        if missing:
            raise LpnEdgeError(
                f"no transform given for view(s) {', '.join(missing)}; transforms has {list(transforms)}"
            )
        self.root = train_folder(root)
        self.views = views
        self.transforms = {view: transforms[view] for view in views}
        self.epoch_mode = epoch
        self.seed = int(seed)
        self.epoch = 0
        self.loader = FallbackLoader()
        self._blank: dict[str, torch.Tensor] = {}

        folders = {view: self._read_view(view, verify) for view in views}
        self.classes: list[str] = folders["satellite"].classes
        self.class_to_index = {name: index for index, name in enumerate(self.classes)}
        _warn_foreign_classes(folders, self.class_to_index)
        # images[view][class index] -> readable files of that class (empty list when none)
        self.images = {
            view: [folders[view].images.get(name, []) for name in self.classes] for view in views
        }
        required = [view for view in views if view not in OPTIONAL_VIEWS]
        self.trainable_classes = [
            index for index in range(len(self.classes)) if all(self.images[view][index] for view in required)
        ]
        _warn_left_out(self.classes, self.trainable_classes, required, self.root)
        if not self.trainable_classes:
            raise LpnEdgeError(
                f"no class under {self.root} has a readable image in every required view ({', '.join(required)})"
            )
        # epoch="drone": one item per (class index, drone file)
        self.drone_items = [
            (index, path) for index in self.trainable_classes for path in self.images["drone"][index]
        ] if epoch == "drone" else []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random choices `__getitem__` makes (call before each epoch, also on resume)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.drone_items) if self.epoch_mode == "drone" else len(self.trainable_classes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        # A required image that cannot be read makes the whole item unusable: take the next item instead, so a
        # file that went bad mid-run costs one sample, not the run.
        for step in range(min(len(self), _MAX_ITEM_FALLBACKS)):
            item = self._build_item((index + step) % len(self))
            if item is not None:
                return item
        raise LpnEdgeError(
            f"{_MAX_ITEM_FALLBACKS} items in a row starting at {index} had unreadable images under {self.root}; "
            f"see the log for the files"
        )

    def _build_item(self, index: int) -> dict[str, Any] | None:
        if self.epoch_mode == "drone":
            label, drone_path = self.drone_items[index]
        else:
            label, drone_path = self.trainable_classes[index], None
        item: dict[str, Any] = {"label": label}
        for view in self.views:
            files = self.images[view][label]
            if view == "drone" and drone_path is not None:
                first = files.index(drone_path)
            else:
                first = int(item_rng(self.seed, self.epoch, index, view).integers(len(files))) if files else 0
            image = self.loader.first_readable(
                [files[i] for i in candidate_order(len(files), first)], f"class {self.classes[label]} ({view})"
            )
            key = ITEM_KEYS[view]
            if view in OPTIONAL_VIEWS:
                item[f"{key}_valid"] = image is not None
                item[key] = self.transforms[view](image) if image is not None else self._blank_for(view)
            elif image is None:
                return None
            else:
                item[key] = self.transforms[view](image)
        return item

    def _blank_for(self, view: str) -> torch.Tensor:
        if view not in self._blank:
            self._blank[view] = blank_output(self.transforms[view])
        return self._blank[view]

    def _read_view(self, view: str, verify: bool) -> ClassFolder:
        folder = self.root / view
        if not folder.is_dir():
            raise LpnEdgeError(
                f"view {view!r} was asked for but {folder} does not exist; leave {view!r} out of views"
            )
        return read_class_folder(folder, verify=verify)


def _check_views(views: tuple[str, ...], epoch: str) -> None:
    unknown = [view for view in views if view not in TRAIN_VIEWS]
    if unknown:
        raise LpnEdgeError(f"unknown view(s) {', '.join(unknown)}; expected some of {', '.join(TRAIN_VIEWS)}")
    if "satellite" not in views:
        raise LpnEdgeError(f"views must include 'satellite' (it defines the classes), got {list(views)}")
    if len(set(views)) != len(views):
        raise LpnEdgeError(f"views must not repeat a view, got {list(views)}")
    if epoch not in EPOCHS:
        raise LpnEdgeError(f"epoch must be one of {', '.join(EPOCHS)}, got {epoch!r}")
    if epoch == "drone" and "drone" not in views:
        raise LpnEdgeError("epoch='drone' iterates over drone images, so views must include 'drone'")


def _warn_foreign_classes(folders: Mapping[str, ClassFolder], class_to_index: Mapping[str, int]) -> None:
    for folder in folders.values():
        foreign = [name for name in folder.classes if name not in class_to_index]
        if foreign:
            warnings.warn(
                f"{len(foreign)} class folder(s) of {folder.folder} have no satellite folder and are ignored: "
                f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}",
                UserWarning,
                stacklevel=4,
            )


def _warn_left_out(classes: list[str], kept: list[int], required: list[str], root: Path) -> None:
    left_out = sorted(set(range(len(classes))) - set(kept))
    if left_out:
        names = ", ".join(classes[i] for i in left_out[:5])
        warnings.warn(
            f"{len(left_out)} class(es) under {root} lack a readable image in a required view "
            f"({', '.join(required)}) and are left out of training (they keep their index): {names}"
            f"{' ...' if len(left_out) > 5 else ''}",
            UserWarning,
            stacklevel=4,
        )


class RetrievalFolder(Dataset):
    """A query or gallery folder ``<folder>/<id>/*`` as ``(image, label)`` items, for evaluation.

    Labels: when every id is a number (University-1652: ``0001`` ...) the label is ``int(id)``, so query and
    gallery folders agree; otherwise the label is the id's index in sorted order *within this folder*, which only
    matches across folders that hold the same ids. To compare folders, pass ``id_to_label`` built over all of them
    (`lpn_edge.data.class_folders.shared_id_table`), as evaluation does.

    Attributes: ``paths`` (list of Path, sorted by id then file name), ``labels`` (numpy int64, one per path),
    ``ids`` (the id of each path). Unreadable files are skipped with one warning. A file that goes bad later is
    replaced by another image of its id, or by a zero tensor when it has none (logged, counted in
    ``loader.failures``), so a long evaluation finishes.
    """

    def __init__(
        self,
        folder: str | Path,
        transform: Transform | None = None,
        *,
        id_to_label: Mapping[str, int] | None = None,
        verify: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.transform = transform
        self.loader = FallbackLoader()
        view = read_class_folder(self.folder, verify=verify)
        mapping = dict(id_to_label) if id_to_label is not None else _default_labels(view.classes)
        unmapped = [name for name in view.classes if name not in mapping]
        if unmapped:
            raise LpnEdgeError(f"id_to_label has no label for id(s) {', '.join(unmapped[:5])} of {self.folder}")
        self.ids = [name for name in view.classes for _ in view.images[name]]
        self.paths = [path for name in view.classes for path in view.images[name]]
        self.labels = np.array([mapping[name] for name in self.ids], dtype=np.int64)
        self._same_id = {name: view.images[name] for name in view.classes}
        self._blank: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, name = self.paths[index], self.ids[index]
        siblings = self._same_id[name]
        order = [siblings[i] for i in candidate_order(len(siblings), siblings.index(path))]
        image = self.loader.first_readable(order, f"id {name} of {self.folder}")
        label = int(self.labels[index])
        if image is None:
            if self.transform is None:
                raise LpnEdgeError(f"no readable image left for id {name} in {self.folder} (see the log)")
            if self._blank is None:
                self._blank = blank_output(self.transform)
            return self._blank, label
        return (self.transform(image) if self.transform is not None else image), label


def _default_labels(ids: Sequence[str]) -> dict[str, int]:
    if all(name.isdigit() for name in ids):
        return {name: int(name) for name in ids}
    return {name: index for index, name in enumerate(sorted(ids))}
