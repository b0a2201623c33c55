"""Reproducible random choices and loading that survives files going bad during a run.

Datasets draw their random choices (which drone image goes with a satellite image, ...) from a generator seeded
with ``(seed, epoch, index, stream)`` instead of a global RNG: the same item of the same epoch is the same in every
run, in every DataLoader worker and after resuming from a checkpoint, whatever order the items are requested in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lpn_edge.data.images import UnreadableImage, load_rgb
from lpn_edge.errors import LpnEdgeError

log = logging.getLogger(__name__)

# Fixed stream numbers, one per kind of choice: adding a view must not change the choices made for the others.
STREAMS = {"satellite": 1, "drone": 2, "street": 3, "google": 4}


def item_rng(seed: int, epoch: int, index: int, stream: str) -> np.random.Generator:
    """A generator determined by ``(seed, epoch, index, stream)`` only (numpy's SeedSequence mixes them)."""
    if min(seed, epoch, index) < 0:
        raise LpnEdgeError(f"seed, epoch and index must be >= 0, got seed={seed}, epoch={epoch}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index, STREAMS[stream]]))


def candidate_order(count: int, first: int) -> list[int]:
    """``first`` then the other indices of ``range(count)`` in a rotating order: the fallbacks when one fails."""
    return [(first + step) % count for step in range(count)]


class FallbackLoader:
    """Loads the first readable image of a list of candidates and counts the files that failed.

    The files were checked when the dataset was built; one that fails now went bad during the run (network disk,
    concurrent writer). It is logged and skipped so that a long training run does not die on it. ``failures``
    counts per process: with DataLoader workers each worker logs its own.
    """

    def __init__(self, load: Callable[[Path], Image.Image] = load_rgb) -> None:
        self.load = load
        self.failures: list[Path] = []

    def first_readable(self, candidates: Sequence[Path], what: str) -> Image.Image | None:
        """Load ``candidates[0]``, else the next readable one; None when all fail. ``what`` names them in the log."""
        for path in candidates:
            try:
                return self.load(path)
            except UnreadableImage as error:
                self.failures.append(Path(path))
                log.warning(
                    "%s; skipped it (%s), %d unreadable file(s) so far in this process",
                    error,
                    what,
                    len(self.failures),
                )
        return None
