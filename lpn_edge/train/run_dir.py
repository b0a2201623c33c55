"""A training run's directory: config.yaml, last.pt (resumable), model.pt (final), metrics.csv, tensorboard/."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import atomic_write_text

LAST = "last.pt"
FINAL = "model.pt"
METRICS = "metrics.csv"
CONFIG = "config.yaml"
TENSORBOARD = "tensorboard"


def check_new_run(out_dir: Path, force: bool) -> None:
    """Refuse a path that is a file, or a non-empty directory (another run's) unless `force`. Writes nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LpnEdgeError(f"run directory {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise LpnEdgeError(f"run directory {out_dir} is not empty (another run?): use --resume {out_dir} to "
                           f"continue it, --force to replace it, or another --out")


def prepare_new_run(out_dir: Path, force: bool) -> Path:
    """Create `out_dir` (after `check_new_run`); with `force` an earlier run's files in it are removed."""
    out_dir = Path(out_dir)
    check_new_run(out_dir, force)
    if out_dir.is_dir() and force:
        for name in (LAST, FINAL, METRICS, CONFIG):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / TENSORBOARD, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def resumable_checkpoint(run_dir: Path) -> Path:
    path = Path(run_dir) / LAST
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
