"""Training: the paper's recipe, checkpoints every N epochs, exact resume, clean stops, DDP with torchrun."""

from lpn_edge.train.loop import ProgressPrinter, TrainProgress, TrainResult, train

__all__ = ["ProgressPrinter", "TrainProgress", "TrainResult", "train"]
