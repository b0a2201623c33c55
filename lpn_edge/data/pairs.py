"""Satellite / ground pairs, the unit of the two-view datasets (CVUSA, CVACT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpn_edge.data.class_folders import list_class_dirs
from lpn_edge.data.images import list_image_files
from lpn_edge.errors import LpnEdgeError

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Pair:
    """One location: its key (file or folder id), satellite image and ground (street panorama) image."""

    key: str
    satellite: Path
    ground: Path


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise LpnEdgeError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def folder_pairs(split_dir: Path, satellite_view: str, ground_view: str) -> list[Pair]:
    """Pairs of a prepared split ``<split_dir>/{satellite_view,ground_view}/<id>/<image>``, sorted by id.

    An id is paired when both view folders hold it; the first image (by name) of each folder is used, as the
    authors' preparation scripts put exactly one there. Ids present in only one view are left out.
    """
    satellite_dir, ground_dir = split_dir / satellite_view, split_dir / ground_view
    for folder in (satellite_dir, ground_dir):
        if not folder.is_dir():
            raise LpnEdgeError(f"missing view folder {folder}")
    ground_ids = set(list_class_dirs(ground_dir))
    pairs = []
    for key in list_class_dirs(satellite_dir):
        if key not in ground_ids:
            continue
        satellite_files, ground_files = list_image_files(satellite_dir / key), list_image_files(ground_dir / key)
        if satellite_files and ground_files:
            pairs.append(Pair(key, satellite_files[0], ground_files[0]))
    return pairs
