"""One view of a dataset stored as ``<folder>/<class id>/<images>`` (University-1652, prepared CVUSA / CVACT)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lpn_edge.data.images import ImageScan, UnreadableImage, list_image_files, scan_files
from lpn_edge.errors import LpnEdgeError


@dataclass
class ClassFolder:
    """The readable images of one view, grouped by class folder.

    ``classes`` is sorted by name and includes empty class folders; ``images[c]`` lists the readable files of
    class ``c`` sorted by name; ``unreadable`` the files that failed to decode.
    """

    folder: Path
    classes: list[str]
    images: dict[str, list[Path]]
    unreadable: list[UnreadableImage]

    def count(self, name: str) -> int:
        return len(self.images.get(name, ()))

    @property
    def num_images(self) -> int:
        return sum(len(files) for files in self.images.values())

    def warn_unreadable(self) -> None:
        """One warning for all unreadable files of this view (nothing if there are none)."""
        ImageScan(unreadable=self.unreadable).warn(str(self.folder))


def list_class_dirs(folder: str | Path) -> list[str]:
    """Names of the sub-folders of ``folder`` (hidden ones excluded), sorted; LpnEdgeError if it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LpnEdgeError(f"expected a folder of class sub-folders at {folder}, but it does not exist")
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise LpnEdgeError(f"cannot list {folder}: {exc.strerror or exc}") from None
    return sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))


def shared_id_table(folders: Iterable[str | Path]) -> dict[str, int]:
    """One label per class id across several view folders: the sorted union of their class folder names, numbered.

    Query and gallery folders of a retrieval task must take their labels from one such table, so that an id means
    the same location on both sides (a folder-local index would pair the i-th query id with the i-th gallery id
    whenever the two folders hold different ids). An id present in only one folder still gets its own label, so
    it matches nothing on the other side.
    """
    names = set()
    for folder in folders:
        names.update(list_class_dirs(folder))
    return {name: index for index, name in enumerate(sorted(names))}


def read_class_folder(folder: str | Path, verify: bool = True, warn: bool = True) -> ClassFolder:
    """Scan ``<folder>/<class>/*`` for images; ``verify`` decodes each file (see `scan_files`).

    With ``warn`` one warning counts and names the unreadable files of the whole view.
    """
    folder = Path(folder)
    classes = list_class_dirs(folder)
    files = {name: list_image_files(folder / name) for name in classes}
    flat = [path for name in classes for path in files[name]]
    scan = scan_files(flat, verify=verify)
    readable = set(scan.readable)
    result = ClassFolder(
        folder=folder,
        classes=classes,
        images={name: [path for path in files[name] if path in readable] for name in classes},
        unreadable=scan.unreadable,
    )
    if warn:
        result.warn_unreadable()
    return result
