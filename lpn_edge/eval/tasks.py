"""Retrieval tasks: which folder is the query, which the gallery, and which branch encodes each."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lpn_edge.errors import LpnEdgeError


@dataclass(frozen=True)
class Task:
    name: str
    query: str  # University-1652 test folder, or "ground"/"satellite" for the CVUSA/CVACT val split
    query_view: str
    gallery: str
    gallery_view: str


UNIVERSITY_TASKS = {
    "drone2sat": Task("drone2sat", "query_drone", "drone", "gallery_satellite", "satellite"),
    "sat2drone": Task("sat2drone", "query_satellite", "satellite", "gallery_drone", "drone"),
    "ground2sat": Task("ground2sat", "query_street", "ground", "gallery_satellite", "satellite"),
    "sat2ground": Task("sat2ground", "query_satellite", "satellite", "gallery_street", "ground"),
}
# View folders straight under the root (e.g. ../shared/data/u1652-mosaic: drone/<id>/*, satellite/<id>/*).
VIEW_FOLDER_TASKS = {
    "drone2sat": Task("drone2sat", "drone", "drone", "satellite", "satellite"),
    "sat2drone": Task("sat2drone", "satellite", "satellite", "drone", "drone"),
    "ground2sat": Task("ground2sat", "street", "ground", "satellite", "satellite"),
    "sat2ground": Task("sat2ground", "satellite", "satellite", "street", "ground"),
}
PAIR_TASKS = {
    "ground2sat": Task("ground2sat", "ground", "ground", "satellite", "satellite"),
    "sat2ground": Task("sat2ground", "satellite", "satellite", "ground", "ground"),
}
TASK_NAMES = ("drone2sat", "sat2drone", "ground2sat", "sat2ground")


def select_tasks(requested: str, layout: str, data_dir: Path, model_views: tuple[str, ...]) -> list[Task]:
    """The tasks to run: one by name, or "all" = every task whose folders exist and whose views the model has."""
    available = {"university1652": UNIVERSITY_TASKS, "view-folders": VIEW_FOLDER_TASKS}.get(layout, PAIR_TASKS)
    folders = {"university1652": data_dir / "test", "view-folders": data_dir}.get(layout)
    if requested != "all":
        if requested not in available:
            raise LpnEdgeError(f"task {requested!r} does not exist for a {layout} data set; expected one of "
                               f"{', '.join(available)} or all")
        chosen = [available[requested]]
    else:
        chosen = list(available.values())
    usable = [t for t in chosen if t.query_view in model_views and t.gallery_view in model_views
              and (folders is None or ((folders / t.query).is_dir() and (folders / t.gallery).is_dir()))]
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
