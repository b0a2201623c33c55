"""Batched feature extraction: images -> retrieval embeddings (numpy), on the GPU when present."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpn_edge.precision import exact_fp32


class ImagePaths:
    """A dataset over explicit image paths with labels: (transform(image), label); for CVUSA/CVACT splits."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform: Callable[[Any], Any]) -> None:
        self.paths, self.labels, self.transform = list(paths), np.asarray(labels, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from lpn_edge.data.images import load_rgb

        return self.transform(load_rgb(self.paths[index])), int(self.labels[index])


def extract_features(model, dataset, view: str, flip: bool = True, batch_size: int = 64, device=None,
                     num_workers: int = 0, progress: bool = True, desc: str = "") -> np.ndarray:
    """Embed every image of `dataset` ((image, label) items) with `model.embed(..., view, flip)`.

    Returns (N, D) float32 embeddings in dataset order. Runs in exact fp32, the precision of the benchmark
    numbers: TF32 is turned off in cuDNN convolutions and CUDA matmuls for the extraction (`exact_fp32`; PyTorch
    lets cuDNN use TF32 by default) and the caller's settings are restored afterwards.
    """
    import torch
    from tqdm import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")
    chunks = []
    with torch.no_grad(), exact_fp32():
        for images, _ in tqdm(loader, desc=desc or f"{view} features", disable=not progress, leave=False,
                              dynamic_ncols=True):
            chunks.append(model.embed(images.to(device, non_blocking=True), view, flip=flip).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, model.config.embedding_dim), dtype=np.float32)
    return np.concatenate(chunks)


def check_parts(parts: int, keep: Sequence[int]) -> None:
    """Refuse a part subset that a model of ``parts`` parts does not have."""
    bad = [p for p in keep if not 0 <= p < parts]
    if bad or not keep or len(set(keep)) != len(keep):
        from lpn_edge.errors import LpnEdgeError

        raise LpnEdgeError(f"--parts {','.join(map(str, keep))}: this model has {parts} parts; expected distinct "
                           f"indices from 0 to {parts - 1}")


def select_parts(features: np.ndarray, parts: int, keep: Sequence[int]) -> np.ndarray:
    """Keep the embedding columns of some parts only (paper Table VI). Layout index = channel * n + part."""
    check_parts(parts, keep)
    columns = np.arange(features.shape[1]).reshape(-1, parts)[:, sorted(keep)].ravel()
    return features[:, columns]
