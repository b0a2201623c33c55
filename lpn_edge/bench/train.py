"""Training step throughput on the GPU (images per second): the project's step (`train.loop.forward_batch` with the
precision `auto` picks, channels_last, SGD from `train.recipe`) against the reference loop (the authors' train.py:
eager fp32, NCHW, three views, per-part cross-entropy summed, SGD with Nesterov momentum), same model, same
synthetic batch already on the device, at the authors' batch of 8, at each --batch, and at the largest batch at
which one step of both loops fits in GPU memory (the largest listed, doubled until a step runs out of memory;
`largest_batch`). The data pipeline is measured separately (benchmarks/bench_train_pipeline.py).

On a CPU this part is skipped: a ResNet-50 step there takes seconds per image, and the CPU demo recipe's figures
(data pipeline vs model step) come from benchmarks/bench_train_pipeline.py.
"""

from __future__ import annotations

from collections.abc import Callable

from lpn_edge.bench.options import BenchOptions, Results, cuda_or_reason
from lpn_edge.bench.stats import measure, summarise

REFERENCE = "reference loop (eager fp32)"


def steps(torch, config, images, labels, device, precision):
    """(reference step, lpn-edge step): each builds its own model and optimiser of `config`."""
    from lpn_edge.model import build_model
    from lpn_edge.train.loop import forward_batch, optimizer_step
    from lpn_edge.train.recipe import build_optimizer, part_loss

    reference_model = build_model(config.model).to(device).train()
    ours = build_model(config.model).to(device).train().to(memory_format=torch.channels_last)
    reference_optimizer = build_optimizer(reference_model, config.train)
    our_optimizer = build_optimizer(ours, config.train)
    our_batch = {**images, "label": labels}

    def reference_step():
        logits = reference_model(images)
        loss = sum(part_loss(logits[view], labels) for view in logits)
        reference_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        reference_optimizer.step()

    def our_step():
        optimizer_step(our_optimizer, forward_batch(ours, our_batch, device, precision, channels_last=True).loss,
                       precision)

    return reference_step, our_step


def run(options: BenchOptions, results: Results, progress: Callable[[str], None]) -> None:
    torch, no_gpu = cuda_or_reason(options.device)
    if torch is None:
        results.skip("train", "all", f"{no_gpu}; CPU training: benchmarks/bench_train_pipeline.py")
        return
    from lpn_edge.bench.artifacts import find_reference
    from lpn_edge.checkpoint import checkpoint_config, read_checkpoint
    from lpn_edge.model.lpn import view_branches
    from lpn_edge.precision import tf32_flags
    from lpn_edge.train.loop import _precision

    reference_path = find_reference(options)
    if reference_path is None:
        results.skip("train", "all", "no checkpoint to take the model's config from")
        return
    config = checkpoint_config(read_checkpoint(reference_path), reference_path)
    device = torch.device("cuda")
    precision = _precision(config.train.precision, device)
    views = tuple(view_branches(config.model))  # the model's own views: a two-view model has no drone
    tf32 = tf32_flags(torch)
    name = f"lpn-edge step ({precision.name}, channels_last)"

    def build(batch: int):
        images = {view: torch.randn(batch, 3, *config.model.image_size, device=device) for view in views}
        labels = torch.randint(0, config.model.num_classes, (batch,), device=device)
        return steps(torch, config, images, labels, device, precision)

    def fits(batch: int) -> bool:
        """Whether one step of each loop runs at `batch` (what it built is freed either way)."""
        built = None
        try:
            built = build(batch)
            for step in built:
                step()
            torch.cuda.synchronize()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            built = step = None  # the models go before the cache is emptied
            torch.cuda.empty_cache()

    listed = sorted(b for b in {8, *options.batch} if b >= 2)  # BatchNorm1d cannot train on one item
    largest = largest_batch(fits, listed[-1]) if fits(listed[-1]) else None
    for batch in sorted({*listed, *([largest] if largest else [])}):
        label = " (the largest that fits, powers of two)" if batch == largest else ""
        progress(f"train: batch {batch}{label} x {len(views)} views: {REFERENCE}, {name}")
        try:
            reference_step, our_step = build(batch)
            times = measure({REFERENCE: reference_step, name: our_step}, options.iters, options.warmup,
                            sync=torch.cuda.synchronize)
        except torch.cuda.OutOfMemoryError:
            results.skip("train", f"batch {batch} and larger", "out of GPU memory")
            break
        finally:
            reference_step = our_step = None  # this batch size's models go before the next one is built
            torch.cuda.empty_cache()
        images_per_step = batch * len(views)
        details = {"device": "cuda", "batch": batch, "views": len(views), "largest_that_fits": batch == largest}
        reference = results.add("train", REFERENCE, summarise(times[REFERENCE], images_per_step), tf32=tf32,
                                reference_row=True, **details)
        results.add("train", name, summarise(times[name], images_per_step), reference=reference, **details)


def largest_batch(fits: Callable[[int], bool], start: int, limit: int = 4096) -> int:
    """The largest power-of-two multiple of `start` (up to `limit`) at which `fits` holds, given that it holds at
    `start`: doubling until it fails (the memory a step needs grows with the batch)."""
    batch = start
    while batch * 2 <= limit and fits(batch * 2):
        batch *= 2
    return batch
