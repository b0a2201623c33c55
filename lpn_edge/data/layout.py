"""The dataset layouts this package reads, and how to tell them apart from the folder structure alone.

Folder layouts (every view is ``<split>/<view>/<id>/<images>``) are described by one table, `FOLDER_LAYOUTS`;
the raw CVUSA and CVACT downloads, which pair files through split lists, are read by `lpn_edge.data.cvusa` and
`lpn_edge.data.cvact`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpn_edge.errors import LpnEdgeError


@dataclass(frozen=True)
class Task:
    """A retrieval task: images of ``query`` are matched against ``gallery`` (both view folders of ``split``)."""

    split: str
    query: str
    gallery: str


@dataclass(frozen=True)
class FolderLayout:
    """A layout of class folders: which view folders each split may hold and what makes it usable.

    Usable means: every view of ``required`` exists in split ``train`` (what training needs) and at least one of
    ``tasks`` has both of its folders (what evaluation needs). ``train_split`` is None for evaluation-only layouts.
    """

    name: str
    splits: dict[str, tuple[str, ...]]
    train_split: str | None
    required: tuple[str, ...]
    tasks: tuple[Task, ...]


_U1652_TEST = ("query_drone", "gallery_satellite", "query_satellite", "gallery_drone", "query_street", "gallery_street")

FOLDER_LAYOUTS = {
    layout.name: layout
    for layout in (
        FolderLayout(
            name="university1652",
            splits={"train": ("satellite", "drone", "street", "google"), "test": _U1652_TEST},
            train_split="train",
            required=("satellite", "drone"),
            tasks=(
                Task("test", "query_drone", "gallery_satellite"),
                Task("test", "query_satellite", "gallery_drone"),
                Task("test", "query_street", "gallery_satellite"),
                Task("test", "query_satellite", "gallery_street"),
            ),
        ),
        # CVUSA as the LPN authors' prepare_cvusa.py leaves it.
        FolderLayout(
            name="cvusa",
            splits={"train": ("satellite", "street"), "val": ("satellite", "street")},
            train_split="train",
            required=("satellite", "street"),
            tasks=(Task("val", "street", "satellite"), Task("val", "satellite", "street")),
        ),
        # CVACT as the LPN authors' prepare_cvact.py leaves it.
        FolderLayout(
            name="cvact",
            splits={"train": ("satview_polish", "streetview"), "val": ("satview_polish", "streetview")},
            train_split="train",
            required=("satview_polish", "streetview"),
            tasks=(Task("val", "streetview", "satview_polish"), Task("val", "satview_polish", "streetview")),
        ),
        # View folders directly under the root, e.g. the 300 real pairs of u1652-mosaic: evaluation only.
        FolderLayout(
            name="view-folders",
            splits={".": ("satellite", "drone", "street")},
            train_split=None,
            required=(),
            tasks=(Task(".", "drone", "satellite"), Task(".", "satellite", "drone"), Task(".", "street", "satellite")),
        ),
    )
}
RAW_LAYOUTS = ("cvusa-raw", "cvact-raw")
LAYOUTS = (*FOLDER_LAYOUTS, *RAW_LAYOUTS)
UNKNOWN = "unknown"

# Paired view folder names of the two-view layouts: (satellite view, ground view).
PAIR_VIEWS = {"cvusa": ("satellite", "street"), "cvact": ("satview_polish", "streetview")}


def _dirs(root: Path, *names: str) -> bool:
    return any((root / name).is_dir() for name in names)


def detect_layout(root: str | Path) -> str:
    """Name the layout of the dataset at ``root``: one of `LAYOUTS`, or ``"unknown"``.

    Decided from folder and file names only (no image is opened), most specific marker first.
    """
    root = Path(root)
    if not root.is_dir():
        raise LpnEdgeError(f"dataset folder {root} does not exist or is not a folder")
    if _dirs(root, "train/drone", "train/google", *(f"test/{view}" for view in _U1652_TEST)):
        return "university1652"
    if _dirs(root, "train/satview_polish", "train/streetview", "val/satview_polish", "val/streetview"):
        return "cvact"
    if _dirs(root, "train/street", "val/satellite", "val/street"):
        return "cvusa"
    if _dirs(root, "train/satellite"):
        return "university1652"  # what remains is a University-1652 tree missing its other folders
    if (root / "splits" / "train-19zl.csv").is_file() or _dirs(root, "bingmap", "streetview/panos"):
        return "cvusa-raw"
    if (root / "ACT_data.mat").is_file() or _dirs(root, "ANU_data_small", "satview_polish"):
        return "cvact-raw"
    if (root / "satellite").is_dir() and _dirs(root, "drone", "street"):
        return "view-folders"
    return UNKNOWN
