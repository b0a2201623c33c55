"""The CPU demo recipe's training: is the data pipeline or the model step the bottleneck? Measured separately.

    python benchmarks/bench_train_pipeline.py [--config configs/cpu-small.yaml] [--world DIR] [--steps 5]

* data pipeline: the training dataset of the recipe (`train.data.build_train_dataset`: JPEG decode + the training
  augmentation of every view of an item) iterated through the recipe's DataLoader (its batch size and
  num_workers), in images per second;
* model step: forward + loss + backward + SGD step of the recipe's model (`train.loop.forward_batch`,
  `train.recipe`) on a batch already decoded, in images per second, with torch's threads as training uses them.
The faster of the two is said. A small synthetic world is made first when --world is not given (the demo's own
generator, about a minute). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from lpn_edge.bench.machine import describe
from lpn_edge.bench.stats import summarise
from lpn_edge.config import load_config
from lpn_edge.model import build_model
from lpn_edge.train.data import EpochBatches, build_train_dataset
from lpn_edge.train.loop import _precision, forward_batch
from lpn_edge.train.recipe import build_optimizer

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cpu-small.yaml"


def images_in(batch: dict) -> int:
    return sum(len(value) for key, value in batch.items() if key in ("satellite", "drone", "ground", "google"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--world", type=Path, help="a University-1652-layout world (default: synthesise one)")
    parser.add_argument("--batches", type=int, default=6, help="DataLoader batches timed")
    parser.add_argument("--steps", type=int, default=5, help="model steps timed (after one warm-up step)")
    args = parser.parse_args()
    config = load_config(args.config)
    machine = describe()
    world = args.world
    if world is None:
        from lpn_edge.data.synth import synthesize

        world = Path(tempfile.mkdtemp(prefix="lpn-bench-world-")) / "world"
        print(f"synthesising a world in {world}", file=sys.stderr)
        synthesize(world, locations=24, drone_per_location=8, size=config.model.image_size[0])
    dataset = build_train_dataset(config, world)
    dataset.set_epoch(0)
    sampler = EpochBatches(len(dataset), config.data.batch_size, config.train.seed, 0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=config.data.num_workers)

    # data pipeline alone: decode + augmentation + collation
    batches, data_times, data_images = [], [], 0
    iterator = iter(loader)
    for _ in range(args.batches):
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        data_times.append(time.perf_counter() - start)
        data_images += images_in(batch)
        batches.append(batch)
    data_rate = data_images / sum(data_times)

    # model step alone, on the first decoded batch (no decoding inside the timing)
    torch.manual_seed(0)
    model = build_model(config.model).train()
    optimizer = build_optimizer(model, config.train)
    precision = _precision("fp32", torch.device("cpu"))
    batch = batches[0]
    step_times = []
    for number in range(args.steps + 1):
        start = time.perf_counter()
        step = forward_batch(model, batch, torch.device("cpu"), precision)
        optimizer.zero_grad(set_to_none=True)
        step.loss.backward()
        optimizer.step()
        if number:  # the first step is a warm-up (allocations, oneDNN primitive creation)
            step_times.append(time.perf_counter() - start)
    step_images = images_in(batch)
    step_rate = step_images / (sum(step_times) / len(step_times))
    faster = "data pipeline" if data_rate > step_rate else "model step"
    document = {
        "config": str(args.config), "world": str(world), "torch_threads": torch.get_num_threads(),
        "num_workers": config.data.num_workers, "batch_size": config.data.batch_size,
        "data_pipeline": {"images_per_s": data_rate, "batches": len(data_times),
                          "per_batch": summarise(data_times, data_images // max(1, len(data_times)))},
        "model_step": {"images_per_s": step_rate, "images_per_step": step_images,
                       "per_step": summarise(step_times, step_images)},
        "faster": faster, "data_to_step_ratio": data_rate / step_rate,
        "bottleneck": "model step" if faster == "data pipeline" else "data pipeline",
        "machine": {**machine, "load_average_end": round(os.getloadavg()[0], 2)},
    }
    print(f"data pipeline {data_rate:.1f} img/s, model step {step_rate:.1f} img/s: the {faster} is "
          f"{max(data_rate, step_rate) / min(data_rate, step_rate):.1f}x faster (load average "
          f"{machine['load_average_start']})", file=sys.stderr)
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
