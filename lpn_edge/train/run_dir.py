"""A training run's directory: config.yaml, last.pt (resumable), model.pt (final), metrics.csv, tensorboard/."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write_text

LAST = "last.pt"
FINAL = "model.pt"
METRICS = "metrics.csv"
CONFIG = "config.yaml"
TENSORBOARD = "tensorboard"
LOCK = ".lock"  # held (flock) by the process training in the directory, so that a live run is never taken for a
# failed start


def _own_file(path: Path) -> bool:
    """A file or folder `train` writes before its first checkpoint: config.yaml, metrics.csv, tensorboard/ holding
    only event files, and the temporary file of an atomic write that was cut short."""
    name = path.name
    if path.is_dir() and not path.is_symlink():
        return name == TENSORBOARD and all(
            child.is_file() and child.name.startswith("events.out.tfevents.") for child in path.iterdir())
    if not path.is_file():
        return False
    return name in (CONFIG, METRICS, LOCK) or any(
        name.startswith(f".{own}.") and name.endswith(".tmp") for own in (CONFIG, METRICS, LAST, FINAL))


def failed_start(out_dir: Path) -> bool:
    """Whether `out_dir` holds only what a `train` that failed before its first checkpoint leaves (no last.pt, no
    model.pt, nothing but lpn-edge's own files): not a run, so the same command may start again in it."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or (out_dir / LAST).exists() or (out_dir / FINAL).exists() or in_use(out_dir):
        return False
    entries = list(out_dir.iterdir())
    return bool(entries) and all(_own_file(entry) for entry in entries)


def in_use(out_dir: Path) -> bool:
    """Whether a live process holds the run directory's lock (is training in it)."""
    path = Path(out_dir) / LOCK
    if fcntl is None or not path.is_file():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


class RunLock:
    """The run directory's lock, held until `release()`, which also removes the lock file (nothing is left in a
    finished run directory); a no-op lock where flock does not exist."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK
        self.handle = open(self.path, "a")  # noqa: SIM115 - held open for the whole run, closed by release()
        if fcntl is not None:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.handle.close()
                raise LpnEdgeError(f"run directory {out_dir} is in use by another `lpn-edge train`") from None

    def release(self) -> None:
        if not self.handle.closed:
            self.path.unlink(missing_ok=True)
            self.handle.close()


def hold_lock(out_dir: Path) -> RunLock:
    """Lock the run directory (see `RunLock`): a live run is then never taken for a failed start."""
    return RunLock(out_dir)


def check_new_run(out_dir: Path, force: bool) -> None:
    """Refuse a path that is a file, or a non-empty directory (another run's) unless `force`. A directory left by a
    start that failed before its first checkpoint (`failed_start`) is not a run and is reused. Writes nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LpnEdgeError(f"run directory {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force and not failed_start(out_dir):
        raise LpnEdgeError(f"run directory {out_dir} is not empty (another run?): use --resume {out_dir} to "
                           f"continue it, --force to replace it, or another --out")


def prepare_new_run(out_dir: Path, force: bool) -> Path:
    """Create `out_dir` (after `check_new_run`); with `force`, or after a failed start, an earlier run's files in it
    are removed (only lpn-edge's own: anything else stays)."""
    out_dir = Path(out_dir)
    check_new_run(out_dir, force)
    if out_dir.is_dir() and failed_start(out_dir):
        for entry in out_dir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    elif out_dir.is_dir() and force:
        for name in (LAST, FINAL, METRICS, CONFIG):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / TENSORBOARD, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def resumable_checkpoint(run_dir: Path) -> Path:
    path = Path(run_dir) / LAST
    if not path.is_file() and failed_start(Path(run_dir)):
        raise LpnEdgeError(f"cannot resume: {run_dir} was started but stopped before its first checkpoint; there is "
                           f"nothing to continue: run the same command again with --out {run_dir}")
    if not path.is_file():
        raise LpnEdgeError(f"cannot resume: {path} does not exist (was {run_dir} made by `lpn-edge train`?)")
    return path


class MetricsLog:
    """Per-epoch metrics as CSV (rewritten atomically each epoch) and TensorBoard scalars."""

    def __init__(self, run_dir: Path, completed_epochs: int) -> None:
        self.path = Path(run_dir) / METRICS
        self.rows: list[dict[str, str]] = []
        if completed_epochs and self.path.is_file():
            with open(self.path, newline="") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= completed_epochs]
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD), purge_step=completed_epochs + 1)

    def log(self, row: dict[str, float | int]) -> None:
        self.rows.append({k: str(v) for k, v in row.items()})
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, float(value), int(row["epoch"]))
        self.writer.flush()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows[-1]))
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())

    def close(self) -> None:
        self.writer.close()
