"""`check_dataset`: what a dataset folder holds, what is broken, and whether training / evaluation can use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from lpn_edge.data.class_folders import read_class_folder
from lpn_edge.data.crossview import list_pairs, readable_pairs
from lpn_edge.data.layout import FOLDER_LAYOUTS, LAYOUTS, UNKNOWN, FolderLayout, detect_layout
from lpn_edge.data.pairs import SPLITS
from lpn_edge.errors import LpnEdgeError


class UnreadableFile(NamedTuple):
    path: Path
    reason: str


@dataclass
class DatasetReport:
    """What `check_dataset` found.

    ``counts[split][view][class id]`` is the number of readable images (raw CVUSA/CVACT: one class per pair key,
    0 when its file is missing or unreadable). ``problems`` are structural and make the dataset unusable;
    ``notes`` are things worth knowing that do not (empty classes, missing optional views, skipped files).
    """

    root: Path
    layout: str
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    unreadable: list[UnreadableFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    usable: bool = False


def check_dataset(root: str | Path, verify: bool = True) -> DatasetReport:
    """Inspect the dataset at ``root`` (see `DatasetReport`); ``verify`` decodes every image to find bad files.

    Raises LpnEdgeError only when ``root`` is not a folder; everything else is reported.
    """
    root = Path(root)
    report = DatasetReport(root=root, layout=detect_layout(root))
    if report.layout in FOLDER_LAYOUTS:
        _check_folders(report, FOLDER_LAYOUTS[report.layout], verify)
    elif report.layout == UNKNOWN:
        found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        report.problems.append(
            f"layout not recognised: expected one of {', '.join(LAYOUTS)} (e.g. train/satellite/<id>/ and "
            f"test/query_drone/<id>/ for University-1652); {root} holds: {', '.join(found[:10]) or 'nothing'}"
        )
    else:
        _check_raw_pairs(report, verify)
    report.usable = not report.problems
    return report


def _check_folders(report: DatasetReport, layout: FolderLayout, verify: bool) -> None:
    present: set[tuple[str, str]] = set()
    for split, views in layout.splits.items():
        for view in views:
            folder = report.root / split / view
            if not folder.is_dir():
                continue
            scanned = read_class_folder(folder, verify=verify, warn=False)
            report.counts.setdefault(split, {})[view] = {name: scanned.count(name) for name in scanned.classes}
            report.unreadable.extend(UnreadableFile(bad.path, bad.reason) for bad in scanned.unreadable)
            if scanned.num_images:
                present.add((split, view))
            empty = [name for name in scanned.classes if not scanned.count(name)]
            if empty:
                report.notes.append(f"{split}/{view}: {len(empty)} of {len(scanned.classes)} class folders hold no "
                                    f"readable image (they keep their class index)")
    if layout.train_split is not None:
        for view in layout.required:
            if (layout.train_split, view) not in present:
                report.problems.append(
                    f"no {layout.train_split}/{view} images: expected {report.root / layout.train_split / view}"
                    f"/<id>/<images>, which training needs"
                )
        optional = [v for v in layout.splits[layout.train_split] if v not in layout.required]
        for view in optional:
            if (layout.train_split, view) not in present:
                report.notes.append(f"{layout.train_split}/{view} is missing or empty (optional view)")
        _note_foreign_classes(report, layout)
    complete = [task for task in layout.tasks if {(task.split, task.query), (task.split, task.gallery)} <= present]
    if not complete:
        wanted = "; ".join(f"{t.split}/{t.query} + {t.split}/{t.gallery}" for t in layout.tasks)
        report.problems.append(f"no complete evaluation task: expected a query and a gallery folder, one of: {wanted}")


def _note_foreign_classes(report: DatasetReport, layout: FolderLayout) -> None:
    train = report.counts.get(layout.train_split or "", {})
    anchor = train.get(layout.required[0]) if layout.required else None
    if anchor is None:
        return
    for view, classes in train.items():
        foreign = [name for name in classes if name not in anchor]
        if foreign:
            report.notes.append(
                f"{layout.train_split}/{view}: {len(foreign)} class folder(s) not in "
                f"{layout.train_split}/{layout.required[0]} are ignored by training, e.g. {foreign[0]}"
            )


def _check_raw_pairs(report: DatasetReport, verify: bool) -> None:
    for split in SPLITS:
        try:
            pairs = list_pairs(report.root, split, report.layout)
        except LpnEdgeError as error:
            report.problems.append(f"{split} split: {error}")
            continue
        good, scan = readable_pairs(pairs, verify=verify)
        report.unreadable.extend(UnreadableFile(bad.path, bad.reason) for bad in scan.unreadable)
        bad = set(scan.unreadable_paths)
        report.counts[split] = {
            "satellite": {pair.key: int(pair.satellite not in bad) for pair in pairs},
            "street": {pair.key: int(pair.ground not in bad) for pair in pairs},
        }
        if not good:
            report.problems.append(f"{split} split: none of its {len(pairs)} listed pairs has two readable files")
        elif len(good) < len(pairs):
            report.notes.append(f"{split} split: {len(pairs) - len(good)} of {len(pairs)} pairs are left out "
                                f"(a file is missing or unreadable)")


# How many unreadable files the text report lists before it only counts the rest.
_LISTED_UNREADABLE = 20


def format_report(report: DatasetReport) -> str:
    """A readable summary: a table of counts per split and view, then unreadable files, notes and problems."""
    lines = [f"dataset {report.root}", f"layout  {report.layout}", f"usable  {'yes' if report.usable else 'NO'}", ""]
    header = ("split", "view", "classes", "images", "min/class", "max/class", "empty")
    rows = [header]
    for split, views in report.counts.items():
        for view, classes in views.items():
            sizes = list(classes.values())
            rows.append((
                split, view, str(len(sizes)), str(sum(sizes)),
                str(min(sizes, default=0)), str(max(sizes, default=0)), str(sizes.count(0)),
            ))
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
        lines.append("")
    if report.unreadable:
        lines.append(f"unreadable files ({len(report.unreadable)}):")
        lines += [f"  {bad.path}: {bad.reason}" for bad in report.unreadable[:_LISTED_UNREADABLE]]
        if len(report.unreadable) > _LISTED_UNREADABLE:
            lines.append(f"  ... and {len(report.unreadable) - _LISTED_UNREADABLE} more")
        lines.append("")
    for title, items in (("notes", report.notes), ("problems", report.problems)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  - {item}" for item in items]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def format_class_table(report: DatasetReport) -> str:
    """Images per class: one block per split, one row per class id, one column per view (for `--per-class`)."""
    blocks = []
    for split, views in report.counts.items():
        names = list(views)
        ids = sorted({class_id for classes in views.values() for class_id in classes})
        width = max([len("class")] + [len(i) for i in ids])
        lines = [f"split {split}", "class".ljust(width) + "".join(f"  {name:>{len(name)}}" for name in names)]
        for class_id in ids:
            lines.append(class_id.ljust(width) + "".join(
                f"  {views[name].get(class_id, 0):>{len(name)}}" for name in names))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
