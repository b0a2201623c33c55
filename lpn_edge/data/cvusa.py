"""The raw CVUSA download (Zhai et al. 2017, the subset of Workman et al.): pairs listed by split CSV files.

Layout::

    bingmap/19/<key>.jpg            satellite (aerial) images
    streetview/panos/<key>.jpg      ground panoramas
    splits/train-19zl.csv           rows "bingmap/19/<key>.jpg,streetview/panos/<key>.jpg,<annotation path>"
    splits/val-19zl.csv
"""

from __future__ import annotations

import csv
from pathlib import Path

from lpn_edge.data.pairs import Pair, check_split
from lpn_edge.errors import LpnEdgeError

SPLIT_FILES = {"train": "splits/train-19zl.csv", "val": "splits/val-19zl.csv"}


def cvusa_raw_pairs(root: str | Path, split: str) -> list[Pair]:
    """The pairs a split CSV lists, in file order; files are not checked here (they may be missing)."""
    check_split(split)
    root = Path(root)
    split_file = root / SPLIT_FILES[split]
    try:
        text = split_file.read_text()
    except OSError as exc:
        raise LpnEdgeError(f"cannot read the CVUSA {split} split {split_file}: {exc.strerror or exc}") from None
    pairs = []
    for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise LpnEdgeError(
                f"{split_file} line {line_number}: expected 'satellite path,ground path[,annotation]', got {row!r}"
            )
        satellite, ground = row[0].strip(), row[1].strip()
        pairs.append(Pair(Path(satellite).stem, root / satellite, root / ground))
    return pairs
