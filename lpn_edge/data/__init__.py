"""Data stage: dataset readers (University-1652, CVUSA, CVACT), transforms, and the synthetic world generator.

Modules, one concern each:
    images          decode any image file to RGB; scan folders for unreadable files
    class_folders   one view stored as <folder>/<class id>/<images>
    university      University-1652 training set (multi-view) and retrieval folders
    pairs, cvusa, cvact, crossview   satellite / ground pairs (CVUSA, CVACT) and their dataset
    layout, check   which layout a folder has; `check_dataset` report
    transforms      training augmentation, evaluation preprocessing, robustness perturbations
    polar, resample polar transform of aerial images; numpy bilinear sampling
    sampling        reproducible per-item random choices; loading that survives a file going bad
    synth           procedural cross-view world written in the University-1652 layout

The names below are imported lazily, so ``import lpn_edge.data.synth`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UnreadableImage": "images",
    "load_rgb": "images",
    "scan_images": "images",
    "University1652Train": "university",
    "RetrievalFolder": "university",
    "CrossViewPairs": "crossview",
    "list_pairs": "crossview",
    "detect_layout": "layout",
    "check_dataset": "check",
    "DatasetReport": "check",
    "format_report": "check",
    "train_transforms": "transforms",
    "eval_transform": "transforms",
    "IMAGENET_MEAN": "images",
    "IMAGENET_STD": "images",
    "polar_transform": "polar",
    "synthesize": "synth",
    "SynthSummary": "synth",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lpn_edge.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lpn_edge.data.{_EXPORTS[name]}"), name)
