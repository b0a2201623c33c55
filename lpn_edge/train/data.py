"""Training data for a run: the dataset of the config, and a batch order that is a function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from lpn_edge.config import RunConfig
from lpn_edge.errors import LpnEdgeError


def build_train_dataset(config: RunConfig, data_dir: str | Path) -> Dataset:
    """The training dataset of the config's data set; items are dicts {label, <view>: (3, H, W), <view>_valid}."""
    from lpn_edge.data.transforms import train_transforms

    data, model = config.data, config.model
    transforms = train_transforms(model.image_size, data.pad, data.color_jitter, data.satellite_rotation)
    if data.dataset == "university1652":
        from lpn_edge.data.university import University1652Train, train_folder

        if model.views != 3:
            raise LpnEdgeError("University-1652 trains a three-view model: set model.views: 3")
        views = ["satellite", "drone"]
        train_root = train_folder(data_dir)
        if (train_root / "street").is_dir():
            views.append("street")
        if data.use_google and (train_root / "google").is_dir():
            views.append("google")
        return University1652Train(data_dir, transforms, views=tuple(views), epoch=data.epoch, seed=config.train.seed)
    from lpn_edge.data.crossview import CrossViewPairs

    if model.views != 2:
        raise LpnEdgeError(f"{data.dataset} trains a two-view model: set model.views: 2")
    polar = model.image_size if data.polar else None
    return CrossViewPairs(data_dir, "train", transforms["satellite"], transforms["street"], polar_size=polar)


class EpochBatches(Sampler[list[int]]):
    """Batches of one epoch in an order fixed by (seed, epoch), optionally starting after `skip` batches.

    With several processes each takes every `world`-th batch. A final batch of one item is dropped: BatchNorm1d
    cannot train on a single sample.
    """

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, skip: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        batches = [order[i:i + batch_size] for i in range(0, size, batch_size)]
        if batches and len(batches[-1]) == 1:
            batches.pop()
        usable = len(batches) - len(batches) % world if world > 1 else len(batches)
        self.batches = batches[:usable][rank::world][skip:]
        self.total = len(batches[:usable][rank::world])

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
