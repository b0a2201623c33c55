"""The raw CVACT download (Liu & Li, CVPR 2019): images named by panorama key, splits in ``ACT_data.mat``.

Layout (``root`` holds ``ANU_data_small/``; ``root`` may also be ``ANU_data_small`` itself)::

    ANU_data_small/satview_polish/<key>_satView_polish.jpg
    ANU_data_small/streetview/<key>_grdView.jpg
    ACT_data.mat        panoIds (all keys), trainSet.trainInd and valSet.valInd (1-based indices into panoIds)

Reading the .mat file needs scipy. Without it, plain split lists work too: ``splits/train.txt`` and
``splits/val.txt`` with one key per line (they take precedence over the .mat file when present).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpn_edge.data.pairs import Pair, check_split
from lpn_edge.errors import LpnEdgeError

MAT_FILE = "ACT_data.mat"
# (struct, field) holding each split's 1-based indices into panoIds, as the authors' prepare_cvact.py reads them.
MAT_SPLITS = {"train": ("trainSet", "trainInd"), "val": ("valSet", "valInd")}


def image_dir(root: Path) -> Path:
    return root / "ANU_data_small" if (root / "ANU_data_small").is_dir() else root


def split_list_file(root: Path, split: str) -> Path:
    return root / "splits" / f"{split}.txt"


def mat_file(root: Path) -> Path | None:
    for candidate in (root / MAT_FILE, image_dir(root) / MAT_FILE):
        if candidate.is_file():
            return candidate
    return None


def cvact_raw_pairs(root: str | Path, split: str) -> list[Pair]:
    """The pairs of a split, in split-list order; files are not checked here (they may be missing)."""
    check_split(split)
    root = Path(root)
    images = image_dir(root)
    return [
        Pair(key, images / "satview_polish" / f"{key}_satView_polish.jpg", images / "streetview" / f"{key}_grdView.jpg")
        for key in split_keys(root, split)
    ]


def split_keys(root: Path, split: str) -> list[str]:
    """Keys of a split from ``splits/<split>.txt``, else from ``ACT_data.mat``."""
    listed = split_list_file(root, split)
    if listed.is_file():
        try:
            lines = listed.read_text().splitlines()
        except OSError as exc:
            raise LpnEdgeError(f"cannot read the CVACT split list {listed}: {exc.strerror or exc}") from None
        return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    mat = mat_file(root)
    if mat is None:
        raise LpnEdgeError(
            f"no CVACT split for {split!r} under {root}: expected {listed} (one key per line) or {root / MAT_FILE}"
        )
    return _mat_split_keys(mat, split)


def _mat_split_keys(mat: Path, split: str) -> list[str]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise LpnEdgeError(
            f"reading the CVACT split file {mat} needs scipy: pip install scipy "
            f"(or write {mat.parent / 'splits' / (split + '.txt')} with one key per line)"
        ) from None
    try:
        data = loadmat(str(mat))
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError, MatReadError, OSError, ... for a bad file
        raise LpnEdgeError(f"cannot read {mat} as a MATLAB file: {exc}") from None
    struct, field = MAT_SPLITS[split]
    try:
        # panoIds is a char matrix or a cell array: either way each entry squeezes to one string
        keys = [str(np.asarray(entry).squeeze()).strip() for entry in data["panoIds"]]
        indices = np.asarray(data[struct][field][0][0]).astype(np.int64).ravel() - 1
    except (KeyError, IndexError, ValueError) as exc:
        raise LpnEdgeError(
            f"{mat} does not have the CVACT structure (panoIds, {struct}.{field}): missing {exc}"
        ) from None
    bad = indices[(indices < 0) | (indices >= len(keys))]
    if bad.size:
        raise LpnEdgeError(f"{mat}: {struct}.{field} has indices outside 1..{len(keys)}, e.g. {int(bad[0]) + 1}")
    return [keys[i] for i in indices]
