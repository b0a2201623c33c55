"""`train(config, data_dir, out_dir) -> TrainResult`: the training loop, checkpoints, resume and clean stops."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpn_edge.checkpoint import checkpoint_config, read_checkpoint, save_checkpoint
from lpn_edge.config import RunConfig, save_config
from lpn_edge.errors import LpnEdgeError
from lpn_edge.train import distributed, run_dir as runs
from lpn_edge.train.data import EpochBatches, build_train_dataset
from lpn_edge.train.interrupt import graceful_stop, signal_name
from lpn_edge.train.recipe import build_optimizer, build_scheduler, part_loss, part_predictions, warmup_factor


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path  # last.pt: resumable
    model: Path | None  # model.pt: the finished model (None when the run was stopped early)
    epochs_done: int
    stopped_by: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Precision:
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    scaler: torch.amp.GradScaler | None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def choose_precision(setting: str, device_type: str, capability: tuple[int, int] | None = None) -> str:
    """The precision a run trains in ("fp32", "bf16", or "fp16" with loss scaling), a function of the setting, the
    device type and the CUDA compute capability (major, minor).

    `auto`: fp32 off CUDA; bf16 where the GPU computes it natively (compute capability >= 8.0, Ampere and later),
    else fp16 with loss scaling. `torch.cuda.is_bf16_supported()` does not decide: it also counts the emulated bf16
    of older GPUs, which is slower than fp16. An explicit fp16/bf16 is kept on CUDA and refused elsewhere.
    """
    if setting not in ("auto", "fp32", "bf16", "fp16"):
        raise LpnEdgeError(f"train.precision must be one of auto, fp32, bf16, fp16; got {setting!r}")
    if device_type != "cuda":
        if setting in ("fp16", "bf16"):
            raise LpnEdgeError(f"train.precision {setting} needs a CUDA device; this run is on {device_type} "
                               f"(use fp32 or auto)")
        return "fp32"
    if setting == "auto":
        return "bf16" if capability is not None and tuple(capability) >= (8, 0) else "fp16"
    return setting


def _precision(setting: str, device: torch.device) -> _Precision:
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    name = choose_precision(setting, device.type, capability)
    if name == "fp16":
        return _Precision(torch.float16, torch.amp.GradScaler("cuda"))
    return _Precision(torch.bfloat16 if name == "bf16" else None, None)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Every random draw of an epoch (augmentation, dropout) follows from (seed, epoch, rank): resumable, repeatable,
    and different on each process (ranks drawing the same dropout masks and augmentations would waste the batch)."""
    value = seed * 1_000_003 + epoch
    torch.manual_seed(value + (rank << 48))
    random.seed(value + (rank << 48))
    np.random.seed(value % 2**32 if rank == 0 else [value % 2**32, rank])


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generator states (torch CPU, Python, NumPy, and its own CUDA device's), as checkpoint data."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(saved: dict[str, Any] | list[dict[str, Any]], rank: int, device: torch.device) -> None:
    """Restore rank `rank`'s generators from a checkpoint's `rng` (one state per rank; a single dict in older
    checkpoints, which were written by one process)."""
    states = [saved] if isinstance(saved, dict) else list(saved)
    state = states[rank]
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    if "numpy" in state:
        numpy_state = state["numpy"]
        np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                             numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    if "cuda" in state and device.type == "cuda":
        if isinstance(state["cuda"], (list, tuple)):  # older checkpoints: every visible device
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            torch.cuda.set_rng_state(state["cuda"], device)


def _check_resumable_world(state: dict[str, Any], world: int, path: Path) -> None:
    """A run stopped inside an epoch resumes exactly only with as many processes (their batches and RNG states)."""
    if not int(state.get("step", 0)):
        return  # at an epoch boundary everything restarts from (seed, epoch): any number of processes will do
    saved = state.get("rng")
    ranks = 1 if saved is None or isinstance(saved, dict) else len(saved)
    if ranks != world:
        raise LpnEdgeError(f"{path} was saved inside epoch {int(state['epoch']) + 1} by {ranks} process(es); resume "
                           f"it with {ranks} (torchrun --nproc_per_node {ranks}) to continue that epoch exactly")


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    moved = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if value.dim() == 4 and channels_last:
            value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


@dataclass(frozen=True)
class TrainProgress:
    """Where a run stands: handed to a `progress` callback after every optimiser step (rank 0 only)."""

    epoch: int  # 1-based
    epochs: int
    step: int  # optimiser steps done in this epoch, 1..steps (steps before a resume included)
    steps: int  # steps of this epoch
    images_per_s: float  # over all processes, since this call started the epoch
    eta_s: float  # estimated seconds left for the whole run (later epochs assumed as long as this one)
    loss: float  # the epoch's mean training loss so far
    accuracy: float  # the epoch's training accuracy so far (satellite and drone)

    @property
    def epoch_done(self) -> bool:
        return self.step >= self.steps


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressPrinter:
    """A `progress` callback that says one line at most every `interval` seconds, and one at the end of each epoch.

    `clock` (seconds, monotonic) is a parameter so that the rate limit can be tested without waiting.
    """

    def __init__(self, say: Callable[[str], None], interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, prefix: str = "") -> None:
        self.say, self.interval, self.clock, self.prefix = say, interval, clock, prefix
        self.last = clock()  # the first line comes `interval` after the printer was made, or at an epoch's end

    def __call__(self, progress: TrainProgress) -> None:
        now = self.clock()
        if not progress.epoch_done and now - self.last < self.interval:
            return
        self.last = now
        self.say(f"{self.prefix}epoch {progress.epoch}/{progress.epochs}, step {progress.step}/{progress.steps}: "
                 f"loss {progress.loss:.3f}, {progress.images_per_s:.1f} img/s, "
                 f"about {format_duration(progress.eta_s)} left")


ProgressOption = bool | Callable[[TrainProgress], None]


def train(config: RunConfig | None, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
          force: bool = False, device: str | None = None, progress: ProgressOption = True,
          max_steps: int | None = None, say: Callable[[str], None] | None = None) -> TrainResult:
    """Train an LPN; `resume=True` continues the run in `out_dir` exactly where its last checkpoint stopped (then
    `config` may be None, or only change train.epochs).

    `progress`: True for a progress bar per epoch (tqdm, on stderr), False for none, or a callable that receives a
    `TrainProgress` after every step (`ProgressPrinter(say)` makes it a line every 10 seconds). `say` receives the
    run's messages (what is trained where, a stop, settings taken from the data), one line each; None: silent.
    `max_steps` stops (and checkpoints) after that many optimiser steps in this call: for tests and smoke runs.
    """
    out_dir = Path(out_dir)
    say = say or (lambda line: None)
    dist = distributed.setup(device)
    # Signals are caught from here to the end, teardown included: with several processes a rank that gets one later
    # (torchrun stops the others when the first exits) still finishes cleanly.
    with graceful_stop(escalate=dist.world == 1) as stop:
        locks: list = []
        try:
            return _train(config, data_dir, out_dir, resume, force, progress, max_steps, dist, stop, say, locks)
        finally:
            for lock in locks:
                lock.release()
            distributed.teardown(dist)


def _train(config, data_dir, out_dir: Path, resume: bool, force: bool, progress: ProgressOption,
           max_steps: int | None, dist, stop, say: Callable[[str], None], locks: list) -> TrainResult:
    config, state, dataset = _prepare(config, data_dir, out_dir, resume, force, dist, say, locks)
    if state:
        _check_resumable_world(state, dist.world, out_dir / runs.LAST)
    setup = _Setup.build(config, state, dist, dataset)
    start_epoch, start_step = (int(state["epoch"]), int(state.get("step", 0))) if state else (0, 0)
    log = runs.MetricsLog(out_dir, start_epoch) if dist.is_main else None
    if dist.is_main:
        say(f"training {config.model.views}-view LPN ({config.model.backbone}, {config.model.parts} parts) on "
            f"{dist.device} x{dist.world}, {setup.precision.name}, {len(dataset)} items/epoch, epochs "
            f"{start_epoch + 1}..{config.train.epochs}" + (f" (resuming at step {start_step})" if start_step else ""))
    report = None
    if dist.is_main and callable(progress):
        report = _Reporter(progress, config.train.epochs, dist.world)

    def checkpoint(epoch: int, step: int, metrics: dict, partial: EpochTally | None = None) -> None:
        """Every rank calls this: rank 0 saves every rank's RNG state; nobody goes on before the file is written."""
        rng = distributed.gather_to_main(dist, rng_state(dist.device))
        if dist.is_main:
            extra = {"partial": asdict(partial)} if partial is not None else {}
            save_checkpoint(out_dir / runs.LAST, setup.module, config, epoch=epoch, metrics=metrics, step=step,
                            rng=rng, **extra, **setup.state_dicts())
        distributed.barrier(dist)

    steps_run, stopped_by, metrics, epoch = 0, None, {}, start_epoch
    history = [{k: float(v) for k, v in row.items()} for row in (log.rows if log else [])]
    try:
        for epoch in range(start_epoch, config.train.epochs):
            skip = start_step if epoch == start_epoch else 0
            carried = EpochTally()
            if skip and state and "rng" in state:
                restore_rng(state["rng"], dist.rank, dist.device)
                # the figures of the epoch's steps before the stop (summed over ranks: rank 0 carries them)
                if dist.is_main and state.get("partial"):
                    carried = EpochTally(**state["partial"])
            else:
                seed_epoch(config.train.seed, epoch, dist.rank)
            loader, total = _epoch_loader(dataset, config, dist, epoch, skip)
            outcome = _run_epoch(setup, loader, dist, stop, epoch, total, skip, progress is True and dist.is_main,
                                 None if max_steps is None else max_steps - steps_run, carried, report)
            steps_run += outcome.steps
            if outcome.stopped:
                stopped_by = outcome.stopped
                checkpoint(epoch, skip + outcome.steps, metrics, outcome.tally)
                break
            setup.scheduler.step()
            metrics = {**outcome.tally.figures(), "epoch": epoch + 1,
                       "lr_backbone": setup.optimizer.param_groups[0]["lr"],
                       "lr_heads": setup.optimizer.param_groups[1]["lr"]}
            out_of_steps = max_steps is not None and steps_run >= max_steps
            # One decision for all ranks, from the agreed value only: a signal landing after the all-reduce waits for
            # the next one, or ranks would part ways.
            agreed = distributed.max_over_ranks(dist, stop.signum)
            stop.agree(agreed)
            signalled = signal_name(agreed)
            if dist.is_main:
                log.log(metrics)
                history.append(metrics)
            if (epoch + 1) % config.train.checkpoint_every == 0 or epoch + 1 == config.train.epochs \
                    or signalled or out_of_steps:
                checkpoint(epoch + 1, 0, metrics)
            if (signalled or out_of_steps) and epoch + 1 < config.train.epochs:
                stopped_by, epoch = signalled or "max_steps", epoch + 1
                break
    finally:
        if log:
            log.close()
    final = None
    if stopped_by is None and dist.is_main:
        final = save_checkpoint(out_dir / runs.FINAL, setup.module, config, epoch=config.train.epochs, metrics=metrics)
    if stopped_by and dist.is_main:
        say(f"stopped by {stopped_by}: checkpoint saved to {out_dir / runs.LAST}; continue with "
            f"`lpn-edge train --resume {out_dir}`" + (f" (under torchrun, {dist.world} processes)"
                                                       if dist.world > 1 else ""))
    epochs_done = config.train.epochs if stopped_by is None else epoch  # epochs completed before the stop
    return TrainResult(out_dir, out_dir / runs.LAST, final, epochs_done, stopped_by, history)


def _prepare(config: RunConfig | None, data_dir, out_dir: Path, resume: bool, force: bool, dist,
             say: Callable[[str], None], locks: list):
    """The run's config (the checkpoint's when resuming), its saved state, and its dataset. Rank 0 appends the run
    directory's lock (an open file) to `locks`."""
    state = None
    if resume:
        ckpt_path = runs.resumable_checkpoint(out_dir)
        distributed.on_main(dist, lambda: locks.append(runs.hold_lock(out_dir)))
        state = read_checkpoint(ckpt_path)
        stored = checkpoint_config(state, ckpt_path)
        config = stored.replace(_train_overrides(config), "resume overrides") if config is not None else stored
    else:
        # before reading the data, which can take a while; rank 0 alone (ranks checking while rank 0 creates race)
        distributed.on_main(dist, lambda: runs.check_new_run(out_dir, force))
    dataset = build_train_dataset(config, data_dir)
    if dataset.num_classes != config.model.num_classes:
        if state is not None:
            raise LpnEdgeError(f"the data under {data_dir} has {dataset.num_classes} classes but the run being resumed "
                               f"was trained with {config.model.num_classes}")
        if dist.is_main:
            say(f"model.num_classes: {dataset.num_classes} (from the data; the config said "
                f"{config.model.num_classes})")
        config = config.replace({"model.num_classes": dataset.num_classes})
    if not resume:
        def create() -> None:
            runs.prepare_new_run(out_dir, force)  # only once the data is known to be usable
            locks.append(runs.hold_lock(out_dir))
            save_config(config, out_dir / runs.CONFIG)

        distributed.on_main(dist, create)  # the other ranks wait until the directory exists
    return config, state, dataset


@dataclass
class _Setup:
    """Everything that learns: the model (DDP-wrapped when distributed), optimiser, schedule, precision."""

    model: torch.nn.Module  # what the forward pass calls
    module: torch.nn.Module  # the plain LPN inside (what is saved)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: _Precision
    channels_last: bool
    warmup_epochs: int = 0

    @classmethod
    def build(cls, config: RunConfig, state: dict | None, dist, dataset) -> _Setup:
        from lpn_edge.model import build_model

        torch.manual_seed(config.train.seed)
        module = build_model(config.model, "none" if state else config.train.backbone_weights)
        if state:
            module.load_state_dict(state["state_dict"])
        precision = _precision(config.train.precision, dist.device)
        channels_last = config.train.channels_last and dist.device.type == "cuda"
        module = module.to(dist.device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        model = module
        if dist.world > 1:
            # University-1652 feeds the ground trunk only street/Google images, which a class may lack (or the data
            # has none): a step can leave that trunk without gradient, and DDP must be told. CVUSA/CVACT pairs (no
            # optional views) always feed it.
            optional_ground = getattr(dataset, "views", None) is not None
            model = torch.nn.parallel.DistributedDataParallel(
                module, find_unused_parameters=bool(module.views.count("ground") and optional_ground))
        optimizer = build_optimizer(module, config.train)
        scheduler = build_scheduler(optimizer, config.train)
        if state:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if precision.scaler is not None and state.get("scaler"):
                precision.scaler.load_state_dict(state["scaler"])
        return cls(model, module, optimizer, scheduler, precision, channels_last, config.train.warmup_epochs)

    def state_dicts(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.precision.scaler.state_dict() if self.precision.scaler else {}}


def _epoch_loader(dataset, config: RunConfig, dist, epoch: int, skip: int):
    """The DataLoader of one epoch (its batches fixed by seed and epoch) and the epoch's total batch count."""
    dataset.set_epoch(epoch)
    batches = EpochBatches(len(dataset), config.data.batch_size, config.train.seed, epoch, skip, dist.rank, dist.world)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.data.num_workers, pin_memory=dist.device.type == "cuda",
        generator=torch.Generator().manual_seed(config.train.seed * 7919 + epoch + (dist.rank << 48)))
    return loader, batches.total


@dataclass
class BatchForward:
    loss: torch.Tensor  # the summed part losses of every view (paper Eq. 6)
    logits: dict[str, list[torch.Tensor]]  # {view: n tensors (B_view, classes)}
    labels: dict[str, torch.Tensor]  # {view: (B_view,) class indices}
    items: int  # items (classes drawn) in the batch
    images: int  # images that went through a trunk


def present_views(batch: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{view: (images, labels)} of a collated batch, each view holding only the items whose image exists.

    Optional views (street, Google) mark missing images with `<view>_valid = False` and a placeholder tensor; the
    placeholders are dropped here so that they never reach a trunk (BatchNorm batch and running statistics), as the
    authors' loader never draws them. A view left with a single image is left out of the step (BatchNorm1d cannot
    train on one item).
    """
    labels, views = batch["label"], {}
    for view in ("satellite", "drone", "ground", "google"):
        if view not in batch:
            continue
        images, view_labels = batch[view], labels
        valid = batch.get(f"{view}_valid")
        if valid is not None:
            valid = valid.bool()
            if not bool(valid.all()):
                images, view_labels = images[valid], labels[valid]
            if len(view_labels) < 2:
                continue
        views[view] = (images, view_labels)
    return views


def forward_batch(model: torch.nn.Module, batch: dict[str, Any], device: torch.device,
                  precision: _Precision | None = None, channels_last: bool = False) -> BatchForward:
    """The training forward pass of one collated batch (present images only) and its loss (no backward)."""
    views = present_views(batch)  # on the CPU, before the transfer: no placeholder is copied to the device
    images = {view: x for view, (x, _) in views.items()}
    images = _to_device(images, device, channels_last)
    labels = {view: y.to(device, non_blocking=True) for view, (_, y) in views.items()}
    dtype = precision.dtype if precision is not None else None
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(images)
    loss = sum(part_loss(logits[view], labels[view]) for view in logits)
    return BatchForward(loss, logits, labels, len(batch["label"]), sum(len(y) for y in labels.values()))


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, precision: _Precision) -> None:
    """One update from `loss`: backward (through the fp16 gradient scaler when there is one) and the step."""
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is not None:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        loss.backward()
        optimizer.step()


def _train_overrides(config: RunConfig) -> dict[str, Any]:
    """On resume only the length of the run may change (to extend it)."""
    return {"train.epochs": config.train.epochs}


@dataclass
class EpochTally:
    """An epoch's running sums; a checkpoint inside an epoch keeps them (`partial`) so that the resumed epoch's row
    in metrics.csv covers the whole epoch."""

    loss_sum: float = 0.0  # sum over items of the batch loss
    items: int = 0
    correct: int = 0  # satellite and drone predictions that were right
    seen: int = 0  # satellite and drone predictions made
    images: int = 0  # images through a trunk
    seconds: float = 0.0  # training time of the epoch's earlier parts (before a stop)

    def figures(self) -> dict[str, float | int]:
        return {"loss": self.loss_sum / max(1, self.items), "accuracy": self.correct / max(1, self.seen),
                "images": int(self.images), "seconds": round(self.seconds, 3),
                "images_per_s": self.images / max(self.seconds, 1e-9)}


@dataclass
class _EpochOutcome:
    steps: int  # optimiser steps in this call
    stopped: str | None  # what stopped it inside the epoch: a signal name, "max_steps", or None
    tally: EpochTally  # the whole epoch's sums over every rank (earlier parts included)


class _Reporter:
    """Turns the loop's counters into `TrainProgress` for a callback; the ETA uses the pace of this call."""

    def __init__(self, callback: Callable[[TrainProgress], None], epochs: int, world: int) -> None:
        self.callback, self.epochs, self.world = callback, epochs, world

    def __call__(self, epoch: int, step: int, steps: int, steps_here: int, images_here: int, elapsed: float,
                 tally: EpochTally) -> None:
        per_step = elapsed / max(1, steps_here)
        left = (steps - step) + (self.epochs - epoch - 1) * steps
        self.callback(TrainProgress(
            epoch=epoch + 1, epochs=self.epochs, step=step, steps=steps,
            # batches are dealt evenly to the ranks: rank 0's pace times the number of processes
            images_per_s=images_here * self.world / max(elapsed, 1e-9), eta_s=left * per_step,
            loss=tally.loss_sum / max(1, tally.items), accuracy=tally.correct / max(1, tally.seen)))


def _run_epoch(setup: _Setup, loader, dist, stop, epoch: int, total_batches: int, skip: int, show_progress: bool,
               steps_left: int | None, carried: EpochTally | None = None,
               report: _Reporter | None = None) -> _EpochOutcome:
    """Train over the loader's batches, continuing the sums of the epoch's earlier part (`carried`); returns the
    steps taken, what stopped it inside the epoch, and the epoch's sums over all ranks."""
    from tqdm import tqdm

    model, optimizer, precision = setup.model, setup.optimizer, setup.precision
    model.train()
    tally = EpochTally(**asdict(carried)) if carried is not None else EpochTally()
    steps, images_here, stopped = 0, 0, None
    started = time.perf_counter()
    bar = tqdm(loader, total=total_batches, initial=skip, desc=f"epoch {epoch + 1}", disable=not show_progress,
               leave=False, dynamic_ncols=True)
    for batch in bar:
        step = forward_batch(model, batch, dist.device, precision, setup.channels_last)
        loss, logits = step.loss, step.logits
        factor = warmup_factor(epoch, skip + steps, total_batches, setup.warmup_epochs)
        weighted = loss * factor if factor != 1.0 else loss
        optimizer_step(optimizer, weighted, precision)
        finite = math.isfinite(loss.item())
        # One decision for all ranks after every step: a rank that stopped alone would leave the others waiting in
        # the next gradient all-reduce. The largest signal number wins; 256 flags a non-finite loss on some rank.
        verdict = distributed.max_over_ranks(dist, stop.signum | (0 if finite else 256))
        agreed = verdict & 255  # decide from this value only (a signal landing from here on waits for the next step)
        stop.agree(agreed)
        if verdict & 256:
            raise LpnEdgeError(f"training loss became {loss.item() if not finite else 'non-finite on another rank'} "
                               f"at epoch {epoch + 1}: lower the learning rate")
        steps += 1
        tally.loss_sum += loss.item() * step.items
        tally.items += step.items
        for view in ("satellite", "drone"):
            if view in logits:
                tally.correct += (part_predictions(logits[view]) == step.labels[view]).sum().item()
                tally.seen += len(step.labels[view])
        tally.images += step.images
        images_here += step.images
        elapsed = time.perf_counter() - started
        bar.set_postfix(loss=f"{tally.loss_sum / max(1, tally.items):.3f}",
                        acc=f"{tally.correct / max(1, tally.seen):.3f}",
                        img_s=f"{images_here / max(elapsed, 1e-9):.1f}")
        if report is not None:
            report(epoch, skip + steps, total_batches, steps, images_here, elapsed, tally)
        # Checked after the step, before the next batch is drawn: the saved RNG state then resumes exactly.
        out_of_steps = steps_left is not None and steps >= steps_left
        if (agreed or out_of_steps) and skip + steps < total_batches:
            stopped = signal_name(agreed) or "max_steps"
            break
    bar.close()
    # The epoch's figures over every rank's batches (each rank counted only its own share).
    summed = distributed.sum_over_ranks(dist, [tally.loss_sum, tally.items, tally.correct, tally.seen, tally.images])
    loss_sum, items, correct, seen, images = summed
    seconds = tally.seconds + time.perf_counter() - started
    return _EpochOutcome(steps, stopped, EpochTally(float(loss_sum), int(items), int(correct), int(seen), int(images),
                                                    seconds))
