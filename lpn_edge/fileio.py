"""Atomic writes: a file is either the old version or the complete new one, never half of either.

One mechanism for the whole package: `Staging` hands out temporary paths beside the final ones
(`.tmp-<8 hex>-<final name>`, so the suffix is kept: AOTInductor insists on ".pt2") and, on a clean exit of its
`with` block, flushes each to disk and renames it over its final name; on an error (or Ctrl-C) it deletes them, so
a failed step never leaves a file that looks valid nor replaces a good one from an earlier run. `atomic_write` is
the one-file case. Standard library only (the torch-free runtime uses it too).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from lpn_edge.errors import LpnEdgeError

TEMPORARY_GLOB = ".tmp-*"  # matches every temporary name `Staging` hands out (leftovers of an interrupted run)


class Staging:
    """Context manager: `tmp = stage.path(final)`; on a clean exit every tmp is renamed to its final name.

    All or nothing as far as the file system allows: every staged file must exist before any is renamed. A renamed
    file has the mode of the file it replaces, or what the umask gives a new file.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: str | Path) -> Path:
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{final.name}")
        self._pending.append((tmp, final))
        return tmp

    def commit(self) -> list[Path]:
        for tmp, final in self._pending:
            if not tmp.exists():
                raise FileNotFoundError(f"staged file {tmp} was never written (meant for {final})")
        finals = []
        for tmp, final in self._pending:
            if tmp.is_file():  # a directory (some packagers write one) is renamed as it is
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.chmod(tmp, _mode_for(final))
            os.replace(tmp, final)
            finals.append(final)
        self._pending.clear()
        return finals

    def discard(self) -> None:
        for tmp, _final in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        # asked before the discard frees the space again: writers report a full disk in their own words
        # (torch.save: "unexpected pos ..."), so the free space is the one reliable witness
        full = next((tmp for tmp, _ in self._pending if _out_of_space(tmp, exc)), None)
        finals = ", ".join(str(final) for _, final in self._pending)
        self.discard()
        if full is not None:
            raise DiskFull(f"could not write {finals}: the disk holding {full.parent} is full "
                           f"({_free_bytes(full.parent) / 2**20:.0f} MiB free now that the partial file is "
                           "deleted); free some space and run again, nothing earlier was replaced") from exc


class DiskFull(LpnEdgeError, OSError):
    """A staged write ran out of disk space (the partial files are gone, the earlier files untouched)."""


FULL_DISK_BYTES = 16 * 2**20  # less than this left when a write failed: the disk ran full


def _out_of_space(tmp: Path, exc: BaseException | None) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if not isinstance(exc, Exception) or not tmp.exists():  # Ctrl-C, or the writer never began
        return False
    return _free_bytes(tmp.parent) < FULL_DISK_BYTES


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    with Staging() as stage:
        write(stage.path(path))
    return path


def _mode_for(path: Path) -> int:
    """The mode of the file being replaced, or what the process umask gives a new file (temporary files may be
    created 0600 by their writer and a rename keeps that mode)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def file_fingerprint(path: str | Path) -> str:
    """sha256 of the file's bytes (hex, first 16 digits): names the exact checkpoint an artifact came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
