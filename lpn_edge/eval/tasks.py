"""Retrieval tasks: which images are the queries, which the gallery, and which branch encodes each.

Folder layouts (University-1652, CVUSA/CVACT as the authors prepare them, bare view folders) take their
query/gallery folder pairs from the data stage's one table, `lpn_edge.data.layout.FOLDER_LAYOUTS`; the raw CVUSA
and CVACT downloads pair a split's satellite and ground images through their split lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lpn_edge.data.layout import FOLDER_LAYOUTS
from lpn_edge.errors import LpnEdgeError


@dataclass(frozen=True)
class Task:
    name: str
    query: str  # folder relative to the data root ("test/query_drone"), or "ground"/"satellite" of a raw val split
    query_view: str
    gallery: str
    gallery_view: str


# Folder name -> the model branch that encodes it (the paper calls street images "ground").
_FOLDER_VIEW = {"street": "ground", "streetview": "ground", "satview_polish": "satellite"}
_SHORT = {"drone": "drone", "satellite": "sat", "ground": "ground"}
TASK_NAMES = ("drone2sat", "sat2drone", "ground2sat", "sat2ground")
RAW_PAIR_TASKS = {
    "ground2sat": Task("ground2sat", "ground", "ground", "satellite", "satellite"),
    "sat2ground": Task("sat2ground", "satellite", "satellite", "ground", "ground"),
}


def _folder_view(folder: str) -> str:
    view = folder.removeprefix("query_").removeprefix("gallery_")
    return _FOLDER_VIEW.get(view, view)


def layout_tasks(layout: str) -> dict[str, Task]:
    """The tasks of a layout by name ("drone2sat", ...)."""
    if layout not in FOLDER_LAYOUTS:
        return RAW_PAIR_TASKS
    tasks = {}
    for pair in FOLDER_LAYOUTS[layout].tasks:
        query_view, gallery_view = _folder_view(pair.query), _folder_view(pair.gallery)
        name = f"{_SHORT[query_view]}2{_SHORT[gallery_view]}"
        tasks[name] = Task(name, f"{pair.split}/{pair.query}", query_view, f"{pair.split}/{pair.gallery}", gallery_view)
    return tasks


def select_tasks(requested: str, layout: str, data_dir: Path, model_views: tuple[str, ...]) -> list[Task]:
    """The tasks to run: one by name, or "all" = every task whose folders exist and whose views the model has."""
    available = layout_tasks(layout)
    if requested != "all":
        if requested not in available:
            raise LpnEdgeError(f"task {requested!r} does not exist for a {layout} data set; expected one of "
                               f"{', '.join(available)} or all")
        chosen = [available[requested]]
    else:
        chosen = list(available.values())
    folders = layout in FOLDER_LAYOUTS
    usable = [t for t in chosen if t.query_view in model_views and t.gallery_view in model_views
              and (not folders or ((data_dir / t.query).is_dir() and (data_dir / t.gallery).is_dir()))]
    if not usable:
        raise LpnEdgeError(f"no evaluation task can run on {data_dir}: task {requested}, model views "
                           f"{', '.join(model_views)}; University-1652 needs test/query_drone and "
                           f"test/gallery_satellite (or the other query/gallery pairs)")
    return usable


# University-1652 drone images are named image-01 ... image-54 along a descending spiral (01 = farthest); the
# synthetic world names them short-NN / middle-NN / long-NN.
_DISTANCE_PREFIX = re.compile(r"^(short|middle|long)\b")
_FLIGHT_INDEX = re.compile(r"image-(\d+)")


def distance_group(path: Path, views_per_flight: int = 54) -> str | None:
    """The distance group of a drone image (paper Table IX), from its file name; None when unknown."""
    stem = Path(path).stem
    match = _DISTANCE_PREFIX.match(stem)
    if match:
        return match.group(1)
    match = _FLIGHT_INDEX.search(stem)
    if match:
        third = (int(match.group(1)) - 1) * 3 // views_per_flight
        return ("long", "middle", "short")[min(max(third, 0), 2)]
    return None
