"""Shared helpers of the export, runtime and bench tests: small LPN checkpoints, tiny ONNX exports, calibration
folders and the shared real photos (their own checks are in test_export_fixtures.py).

Random weights alone make a poor parity subject: the BatchNorm running statistics would be the identity (so a
wrong BN export could pass), and every image would get nearly the same embedding (so top-1 agreement would be
decided by ties). `make_checkpoint` therefore gives every BatchNorm a random scale and shift and running
statistics measured on sample images (as training would): the features then stay image-specific through the
depth of the network, activations have realistic ranges (which int8 calibration needs), and the statistics are far
from the identity.
"""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import MOSAIC

from lpn_edge.bench import subject as bench_subject
from lpn_edge.bench.subject import measure_batchnorm
from lpn_edge.checkpoint import save_checkpoint
from lpn_edge.config import ModelConfig, RunConfig
from lpn_edge.model import build_model
from lpn_edge.runtime.preprocessing import find_images, preprocess

REAL_DATA = MOSAIC if (MOSAIC / "drone").is_dir() else None  # passed explicitly: the library has no default
SMALL_PARITY = dict(parity_queries=8, parity_gallery=16, parity_data=REAL_DATA)


def make_checkpoint(path: Path, backbone: str = "resnet18", size: tuple[int, int] = (64, 64), pool: str = "avg",
                    parts: int = 4, seed: int = 0, samples: int = 32) -> Path:
    """Write an lpn-edge checkpoint whose BatchNorm statistics are measured on `samples` sample images."""
    torch.manual_seed(seed)
    config = RunConfig(model=ModelConfig(backbone=backbone, num_classes=5, image_size=size, pool=pool, parts=parts))
    model = build_model(config.model)
    generator = torch.Generator().manual_seed(seed)
    measure_batchnorm(model, lambda: _sample_images(size, generator, samples).split(32), generator)
    with torch.no_grad():
        # A shared component, as trained embeddings have (pairwise cosines ~0.3 rather than ~0).
        for head in model.classifiers:
            norm = head.add_block[1]
            norm.bias.copy_(torch.rand(norm.num_features, generator=generator) * 2 - 1)
    return save_checkpoint(path, model.eval(), config)


def _sample_images(size: tuple[int, int], generator: torch.Generator, count: int) -> torch.Tensor:
    if REAL_DATA is not None:  # the last ids: the parity checks use the first ones
        half = count // 2
        paths = find_images(REAL_DATA / "drone")[-half:] + find_images(REAL_DATA / "satellite")[-(count - half):]
        return torch.from_numpy(preprocess(paths, size))
    return torch.randn(count, 3, *size, generator=generator)


def export_tiny_onnx(root: Path, **checkpoint_args) -> tuple[Path, Path]:
    """A tiny checkpoint under `root` and its full ONNX export (fp32, random parity images only):
    (checkpoint, `<root>/out/<stem>-drone.onnx`)."""
    from lpn_edge.export import ExportOptions, export_model

    ckpt = make_checkpoint(root / "tiny.pt", **checkpoint_args)
    export_model(ckpt, root / "out", ExportOptions(formats={"onnx"}, parity_queries=2, parity_gallery=4))
    return ckpt, root / "out" / f"{ckpt.stem}-drone.onnx"


def write_calibration_folder(folder: Path, count: int, size: tuple[int, int] = (64, 64)) -> Path:
    """`count` calibration JPEGs: the shared real photos when present, else smooth random colour fields."""
    return bench_subject.write_calibration_folder(folder, count, size, REAL_DATA)
