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
    """The tasks to run: one by name, or "all" = every task whose folders exist and whose views the model has.

    Errors list only the tasks that this data set and this model can actually run.
    """
    available = layout_tasks(layout)
    folders = layout in FOLDER_LAYOUTS

    def missing_of(task: Task) -> str:
        """Why a task cannot run here ('' when it can)."""
        views = [v for v in (task.query_view, task.gallery_view) if v not in model_views]
        if views:
            return f"the model has no {' or '.join(views)} branch (its views: {', '.join(model_views)})"
        absent = [str(data_dir / f) for f in (task.query, task.gallery) if folders and not (data_dir / f).is_dir()]
        return f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} missing" if absent else ""

    runnable = [name for name, task in available.items() if not missing_of(task)]
    offer = f"this data set ({layout}) and model can run: {', '.join(runnable) or 'none'}"
    if requested == "all":
        if not runnable:
            reasons = "; ".join(f"{name}: {missing_of(task)}" for name, task in available.items())
            raise LpnEdgeError(f"no evaluation task can run on {data_dir} ({layout}): {reasons}")
        return [available[name] for name in runnable]
    if requested not in available:
        raise LpnEdgeError(f"--task {requested!r} is not a task of a {layout} data set; {offer}, or all")
    reason = missing_of(available[requested])
    if reason:
        raise LpnEdgeError(f"--task {requested} cannot run on {data_dir}: {reason}; {offer}")
    return [available[requested]]


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
