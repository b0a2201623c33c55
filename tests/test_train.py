"""Training: the loop runs, resumes exactly (between and inside epochs), stops cleanly on signals."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import make_university_tree

from lpn_edge.checkpoint import read_checkpoint
from lpn_edge.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lpn_edge.errors import LpnEdgeError
from lpn_edge.train import train
from lpn_edge.train.data import EpochBatches
from lpn_edge.train.recipe import build_optimizer, part_loss


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_university_tree(tmp_path_factory.mktemp("world"), classes=[f"{i:04d}" for i in range(5)], drones=3)


def tiny_run(epochs=2, **train_fields):
    train_fields = {"lr_backbone": 0.001, "lr_head": 0.01, "checkpoint_every": 1, "backbone_weights": "none",
                    **train_fields}
    return RunConfig(
        model=ModelConfig(backbone="resnet18", num_classes=5, image_size=(64, 64), dropout=0.5),
        data=DataConfig(batch_size=4, num_workers=0, epoch="drone", pad=4, use_google=True),
        train=TrainConfig(epochs=epochs, lr_steps=(1,), **train_fields),
    )


def weights(path):
    return read_checkpoint(path)["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_between_epochs_equals_a_straight_run(world, tmp_path):
    straight = train(tiny_run(2), world, tmp_path / "straight", progress=False)
    first = train(tiny_run(1), world, tmp_path / "split", progress=False)
    assert first.epochs_done == 1 and read_checkpoint(first.checkpoint)["epoch"] == 1
    resumed = train(tiny_run(2), world, tmp_path / "split", resume=True, progress=False)
    assert_same_weights(weights(straight.model), weights(resumed.model))
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert (tmp_path / "split" / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
    # ... and a run with another seed really differs, so the comparison above can fail
    other = train(tiny_run(2, seed=1), world, tmp_path / "other", progress=False)
    assert any(not torch.equal(weights(other.model)[k], weights(straight.model)[k]) for k in weights(other.model))


def test_resume_inside_an_epoch_equals_a_straight_run(world, tmp_path):
    straight = train(tiny_run(2), world, tmp_path / "straight", progress=False)
    stopped = train(tiny_run(2), world, tmp_path / "stopped", progress=False, max_steps=2)
    assert stopped.stopped_by == "max_steps" and stopped.model is None
    state = read_checkpoint(stopped.checkpoint)
    assert (state["epoch"], state["step"]) == (0, 2)
    resumed = train(None, world, tmp_path / "stopped", resume=True, progress=False)
    assert_same_weights(weights(straight.model), weights(resumed.model))


def test_refuses_to_overwrite_another_run(world, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("precious")
    with pytest.raises(LpnEdgeError, match="not empty"):
        train(tiny_run(1), world, tmp_path / "run", progress=False)
    train(tiny_run(1), world, tmp_path / "run", force=True, progress=False, max_steps=1)
    assert (tmp_path / "run" / "last.pt").is_file()
    with pytest.raises(LpnEdgeError, match="cannot resume"):
        train(None, world, tmp_path / "nothing-here", resume=True)


def test_sigint_saves_a_loadable_checkpoint_and_exits_cleanly(world, tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    from lpn_edge.config import save_config

    save_config(tiny_run(200), config)
    process = subprocess.Popen(
        [sys.executable, "-m", "lpn_edge.cli", "train",
         "--config", str(config), "--data", str(world), "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # wait for the first finished epoch
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "stopped by SIGINT" in out
    state = read_checkpoint(run / "last.pt")
    assert state["epoch"] >= 1 and not (run / "model.pt").exists()


def test_epoch_batches_are_fixed_by_seed_and_epoch():
    a = list(EpochBatches(10, 3, seed=0, epoch=4))
    assert a == list(EpochBatches(10, 3, seed=0, epoch=4))
    assert a != list(EpochBatches(10, 3, seed=0, epoch=5))
    assert [len(b) for b in a] == [3, 3, 3]  # the lone last item is dropped (BatchNorm needs 2)
    assert list(EpochBatches(10, 3, seed=0, epoch=4, skip=1)) == a[1:]
    ranks = [list(EpochBatches(10, 3, seed=0, epoch=4, rank=r, world=2)) for r in (0, 1)]
    assert ranks[0] == a[0:2:2] and ranks[1] == a[1:2:2]


def test_optimizer_groups_follow_the_recipe():
    from lpn_edge.model import LPN

    model = LPN(ModelConfig(backbone="resnet18", num_classes=3))
    optimizer = build_optimizer(model, TrainConfig(lr_backbone=0.001, lr_head=0.01))
    backbone, heads = optimizer.param_groups
    assert (backbone["lr"], heads["lr"]) == (0.001, 0.01)
    assert backbone["nesterov"] and backbone["momentum"] == 0.9 and backbone["weight_decay"] == 5e-4
    assert sum(p.numel() for p in backbone["params"]) + sum(p.numel() for p in heads["params"]) == \
        sum(p.numel() for p in model.parameters())


def test_part_loss_sums_parts_and_masks_invalid_items():
    logits = [torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])]
    labels = torch.tensor([0, 0])
    ce = torch.nn.functional.cross_entropy
    expected = ce(logits[0], labels) + ce(logits[1], labels)
    assert part_loss(logits, labels).item() == pytest.approx(expected.item())
    only_first = ce(logits[0][:1], labels[:1]) + ce(logits[1][:1], labels[:1])
    assert part_loss(logits, labels, torch.tensor([True, False])).item() == pytest.approx(only_first.item())
    assert part_loss(logits, labels, torch.tensor([False, False])).item() == 0.0


def torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lpn_edge.cli", "train",
            *map(str, args)]


TORCHRUN_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_processes_with_torchrun_on_cpu(world, tmp_path):
    from torch.utils.data import default_collate

    from lpn_edge.config import save_config
    from lpn_edge.train.data import build_train_dataset
    from lpn_edge.train.loop import present_views

    save_config(tiny_run(1), tmp_path / "run.yaml")
    result = subprocess.run(torchrun("--config", tmp_path / "run.yaml", "--data", world, "--out", tmp_path / "run"),
                            check=False, capture_output=True, text=True, timeout=300, env=TORCHRUN_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on cpu x2" in result.stdout
    state = read_checkpoint(tmp_path / "run" / "model.pt")
    assert state["epoch"] == 1 and (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 2
    # metrics.csv counts the images of both processes, not rank 0's share
    dataset = build_train_dataset(tiny_run(1), world)
    dataset.set_epoch(0)
    shares = []
    for rank in (0, 1):
        batches = EpochBatches(len(dataset), 4, seed=0, epoch=0, rank=rank, world=2)
        shares.append(sum(len(labels) for batch in batches
                          for _, labels in present_views(default_collate([dataset[i] for i in batch])).values()))
    import csv

    with open(tmp_path / "run" / "metrics.csv") as handle:
        row = next(csv.DictReader(handle))
    assert min(shares) > 0 and float(row["images"]) == sum(shares)


def _worker_pids(launcher_pid, timeout=120):
    """{rank: pid} of the workers torchrun started (its child processes, told apart by their RANK variable)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        children = []
        for task in os.listdir(f"/proc/{launcher_pid}/task"):
            with open(f"/proc/{launcher_pid}/task/{task}/children") as handle:
                children += [int(pid) for pid in handle.read().split()]
        ranks = {}
        for pid in children:
            try:
                with open(f"/proc/{pid}/environ", "rb") as handle:
                    env = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
            except OSError:
                continue
            if b"RANK" in env:
                ranks[int(env[b"RANK"])] = pid
        if len(ranks) == 2:
            return ranks
        time.sleep(0.2)
    raise AssertionError("torchrun did not start two workers")


@pytest.mark.slow
def test_sigterm_to_one_torchrun_rank_stops_all_and_saves(world, tmp_path):
    """SIGTERM to rank 1 alone: both ranks stop at the same step, rank 0 writes last.pt, every process exits, and the
    run resumes. Checkpoints are otherwise never written here (checkpoint_every 1000), so last.pt is the stop's."""
    import re

    from lpn_edge.config import save_config

    run = tmp_path / "run"
    save_config(tiny_run(200, checkpoint_every=1000), tmp_path / "run.yaml")
    launcher = subprocess.Popen(torchrun("--config", tmp_path / "run.yaml", "--data", world, "--out", run),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=TORCHRUN_ENV,
                                start_new_session=True)
    try:
        workers = _worker_pids(launcher.pid)
        deadline = time.time() + 180
        while not (run / "metrics.csv").exists() and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.2)  # the first epoch is done: both ranks are training
        assert launcher.poll() is None, launcher.stderr.read()[-2000:]
        os.kill(workers[1], signal.SIGTERM)
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    for pid in workers.values():  # gone (or a zombie until reaped)
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"
    assert "stopped by SIGTERM" in out, err[-3000:]  # rank 0 learnt of rank 1's signal
    assert set(re.findall(r"exitcode\s*:\s*(-?\d+)", err)) <= {"143"}, err[-3000:]
    state = read_checkpoint(run / "last.pt")
    assert state["epoch"] >= 1 and not (run / "model.pt").exists()
    # every rank's RNG state is kept, and the ranks draw different random numbers (seed + rank)
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    resumed = subprocess.run(torchrun("--data", world, "--resume", run, f"train.epochs={state['epoch'] + 1}"),
                             check=False, capture_output=True, text=True, timeout=300, env=TORCHRUN_ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_checkpoint(run / "model.pt")["epoch"] == state["epoch"] + 1


def test_two_view_cvusa_training_and_evaluation(tmp_path):
    from data_helpers import make_cvusa_raw

    from lpn_edge.eval.evaluate import EvalOptions, evaluate

    root = make_cvusa_raw(tmp_path / "cvusa", {"train": [f"{i:07d}" for i in range(1, 7)]})
    val_keys = _write_cvusa_val(root, 14)
    config = RunConfig(
        model=ModelConfig(backbone="resnet18", views=2, share_weights=False, parts=2, num_classes=6,
                          satellite_partition="ring_outer_first", ground_partition="row", image_size=(64, 64)),
        data=DataConfig(dataset="cvusa", batch_size=3, num_workers=0, pad=2, satellite_rotation=False,
                        use_google=False),
        train=TrainConfig(epochs=1, backbone_weights="none"))
    result = train(config, root, tmp_path / "run", progress=False)
    assert result.model is not None and result.history[0]["images"] == 12  # 6 pairs x 2 views
    report = evaluate(result.model, root, EvalOptions(progress=False))
    assert set(report.metrics) == {"ground2sat", "sat2ground"}
    # The protocol written out (test_metrics' plain loop) on embeddings of the val files, pair i = label i; with
    # 14 pairs R@10 is not 1 by construction.
    from metrics_helpers import loop_evaluation

    from lpn_edge import load_model
    from lpn_edge.data.images import load_rgb
    from lpn_edge.data.transforms import eval_transform

    model, transform = load_model(result.model), eval_transform((64, 64))

    def embed(folder, view):
        with torch.no_grad():
            images = torch.stack([transform(load_rgb(root / folder / f"{key}.jpg")) for key in val_keys])
            return model.embed(images, view).numpy()

    ground, satellite, labels = embed("streetview/panos", "ground"), embed("bingmap/19", "satellite"), np.arange(14)
    assert report.metrics["ground2sat"] == pytest.approx(loop_evaluation(ground, labels, satellite, labels))
    assert report.metrics["sat2ground"] == pytest.approx(loop_evaluation(satellite, labels, ground, labels))


def _write_cvusa_val(root, count):
    """A raw CVUSA val split of `count` pairs of noise images (satellite 24x24, panorama 48x12)."""
    from data_helpers import noise_image, save

    keys = [f"{100 + i:07d}" for i in range(count)]
    rows = []
    for i, key in enumerate(keys):
        save(noise_image(500 + i), root / "bingmap" / "19" / f"{key}.jpg", quality=95)
        save(noise_image(700 + i, (48, 12)), root / "streetview" / "panos" / f"{key}.jpg", quality=95)
        rows.append(f"bingmap/19/{key}.jpg,streetview/panos/{key}.jpg,streetview/annotations/{key}.png\n")
    (root / "splits" / "val-19zl.csv").write_text("".join(rows))
    return keys


@pytest.mark.parametrize("setting,device,capability,expected", [
    ("auto", "cpu", None, "fp32"),
    ("fp32", "cpu", None, "fp32"),
    ("auto", "cuda", (7, 0), "fp16"),  # V100: bf16 only emulated
    ("auto", "cuda", (7, 5), "fp16"),  # T4: bf16 only emulated
    ("auto", "cuda", (8, 0), "bf16"),  # A100
    ("auto", "cuda", (8, 7), "bf16"),  # Jetson Orin
    ("auto", "cuda", (9, 0), "bf16"),  # H100
    ("auto", "cuda", (12, 0), "bf16"),
    ("fp16", "cuda", (9, 0), "fp16"),
    ("bf16", "cuda", (7, 5), "bf16"),  # asked for explicitly
    ("fp32", "cuda", (9, 0), "fp32"),
])
def test_precision_follows_native_bf16_support(setting, device, capability, expected):
    from lpn_edge.train.loop import choose_precision

    assert choose_precision(setting, device, capability) == expected


def test_precision_refuses_half_types_off_cuda():
    from lpn_edge.train.loop import choose_precision

    for setting in ("fp16", "bf16"):
        with pytest.raises(LpnEdgeError, match="needs a CUDA device"):
            choose_precision(setting, "cpu", None)


def test_warmup_factor_follows_the_authors_schedule():
    from lpn_edge.train.recipe import warmup_factor

    # The authors' train.py: warm_up starts at 0.1 and grows by 0.9 / W before each step of the first warm_epoch
    # epochs (W = steps per epoch x warm_epoch), capped at 1; the step's loss is multiplied by it.
    steps_per_epoch, warm_epochs = 3, 2
    factor, expected = 0.1, []
    for epoch in range(4):
        for _ in range(steps_per_epoch):
            if epoch < warm_epochs:
                factor = min(1.0, factor + 0.9 / (steps_per_epoch * warm_epochs))
                expected.append(factor)
            else:
                expected.append(1.0)
    got = [warmup_factor(epoch, step, steps_per_epoch, warm_epochs) for epoch in range(4)
           for step in range(steps_per_epoch)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert got[:6] == pytest.approx([0.25, 0.4, 0.55, 0.7, 0.85, 1.0])
    assert all(warmup_factor(epoch, step, 5, 0) == 1.0 for epoch in range(3) for step in range(5))


def test_warmup_scales_the_first_step(world, tmp_path):
    """With weight decay off, the first optimiser step under warm-up factor f equals a step without warm-up at f
    times the learning rates (SGD's first step is linear in the gradient, momentum or not)."""
    recipe = {"weight_decay": 0.0, "lr_backbone": 0.01, "lr_head": 0.1}
    factor = 0.1 + 0.9 / (4 * 2)  # 15 drone items in batches of 4: 4 steps per epoch; 2 warm-up epochs
    warm = train(tiny_run(3, warmup_epochs=2, **recipe), world, tmp_path / "warm", progress=False, max_steps=1)
    scaled = train(tiny_run(3, weight_decay=0.0, lr_backbone=0.01 * factor, lr_head=0.1 * factor), world,
                   tmp_path / "scaled", progress=False, max_steps=1)
    plain = train(tiny_run(3, **recipe), world, tmp_path / "plain", progress=False, max_steps=1)
    a, b, c = weights(warm.checkpoint), weights(scaled.checkpoint), weights(plain.checkpoint)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-7, msg=key)
    assert any(not torch.allclose(a[k], c[k], rtol=1e-4, atol=1e-7) for k in a)


def test_ranks_draw_differently_and_each_restores_its_own_rng_state(tmp_path):
    import random

    import numpy as np

    from lpn_edge.checkpoint import save_checkpoint
    from lpn_edge.train.loop import restore_rng, rng_state, seed_epoch

    cpu = torch.device("cpu")

    def draws():
        return torch.rand(4).tolist(), random.random(), float(np.random.rand())

    first = {}
    for rank in (0, 1, 2):
        seed_epoch(7, 3, rank)
        first[rank] = draws()
    assert len({str(d) for d in first.values()}) == 3  # no two ranks share dropout masks or augmentations
    seed_epoch(7, 3, 1)
    assert draws() == first[1]  # and each stays a function of (seed, epoch, rank)

    states, after = [], []
    for rank in (0, 1):  # each rank's generators part-way through an epoch, and what they draw next
        seed_epoch(7, 3, rank)
        draws()
        states.append(rng_state(cpu))
        after.append(draws())
    # through a checkpoint file, as a resumed run reads them
    from lpn_edge.model import LPN

    path = save_checkpoint(tmp_path / "last.pt", LPN(ModelConfig(backbone="resnet18", num_classes=3)),
                           RunConfig(), rng=states)
    saved = read_checkpoint(path)["rng"]
    for rank in (1, 0):
        seed_epoch(99, 0)
        restore_rng(saved, rank, cpu)
        assert draws() == after[rank]
    seed_epoch(99, 0)
    restore_rng(states[1], 0, cpu)  # an older single-process checkpoint: one dict
    assert draws() == after[1]
    # a run stopped inside an epoch resumes with as many processes as it stopped with; between epochs with any
    from lpn_edge.train.loop import _check_resumable_world

    with pytest.raises(LpnEdgeError, match="2 process"):
        _check_resumable_world({"epoch": 0, "step": 1, "rng": states}, 1, path)
    _check_resumable_world({"epoch": 0, "step": 1, "rng": states}, 2, path)
    _check_resumable_world({"epoch": 1, "step": 0, "rng": states}, 1, path)


def _batchnorm_statistics(model):
    return {name: (module.running_mean.clone(), module.running_var.clone()) for name, module in model.named_modules()
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)}


@pytest.mark.parametrize("google_valid", [[False, True, False, True], [False, False, True, False]])
def test_missing_images_stay_out_of_the_forward_pass(google_valid):
    """A batch with placeholders for missing street/Google images trains exactly as a batch of the present images
    only: same BatchNorm running statistics (trunks and heads) and same weights after an optimiser step. A view with
    a single present image is left out of the step (BatchNorm1d cannot train on one item)."""
    import copy

    from lpn_edge.model import LPN
    from lpn_edge.train.loop import forward_batch

    config = ModelConfig(backbone="resnet18", num_classes=5, image_size=(64, 64), dropout=0.5)
    torch.manual_seed(0)
    model = LPN(config).train()
    reference = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 2, 3])
    ground_valid, google_valid = torch.tensor([True, False, True, True]), torch.tensor(google_valid)
    images = {
        view: torch.randn(4, 3, 64, 64, generator=generator) for view in ("satellite", "drone", "ground", "google")
    }
    batch = {"label": labels, "satellite": images["satellite"], "drone": images["drone"],
             "ground": torch.where(ground_valid[:, None, None, None], images["ground"], 0.0),
             "ground_valid": ground_valid,
             "google": torch.where(google_valid[:, None, None, None], images["google"], 0.0),
             "google_valid": google_valid}

    def sgd_step(net, loss):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        loss.backward()
        optimizer.step()

    torch.manual_seed(2)
    step = forward_batch(model, batch, torch.device("cpu"))
    sgd_step(model, step.loss)

    present = {"satellite": (images["satellite"], labels), "drone": (images["drone"], labels),
               "ground": (images["ground"][ground_valid], labels[ground_valid])}
    if google_valid.sum() >= 2:
        present["google"] = (images["google"][google_valid], labels[google_valid])
    torch.manual_seed(2)
    logits = reference({view: x for view, (x, _) in present.items()})
    sgd_step(reference, sum(part_loss(logits[view], present[view][1]) for view in present))

    ours, theirs = _batchnorm_statistics(model), _batchnorm_statistics(reference)
    assert any(name.startswith("backbones.ground") for name in ours) and any("classifiers" in n for n in ours)
    for name in ours:
        for a, b in zip(ours[name], theirs[name]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert step.images == sum(len(y) for _, y in present.values())


def test_bad_data_leaves_no_run_directory(tmp_path):
    with pytest.raises(LpnEdgeError, match="no University-1652 training data"):
        train(tiny_run(1), tmp_path / "nowhere", tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_start_that_failed_before_its_first_checkpoint_does_not_block_the_same_command(world, tmp_path):
    """Weights that cannot be read fail the start after config.yaml is written; once they can be read, the same
    command (no --force) trains in the same directory. Foreign files still make it refuse."""
    weights_file = tmp_path / "resnet18.pth"
    weights_file.write_bytes(b"not a state_dict")
    config, run = tiny_run(1, backbone_weights=str(weights_file)), tmp_path / "run"
    with pytest.raises(LpnEdgeError, match="cannot read backbone weights"):
        train(config, world, run, progress=False)
    assert (run / "config.yaml").is_file() and not (run / "last.pt").exists()  # what the failed start left
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), weights_file)
    result = train(config, world, run, progress=False)
    assert result.model is not None and read_checkpoint(result.model)["epoch"] == 1
    assert (run / "metrics.csv").read_text().count("\n") == 2  # header + the one epoch of this run
    assert not (run / ".lock").exists()  # released with the run
    # a directory that holds anything but lpn-edge's own files, or a checkpoint, is somebody's: refused as before
    from lpn_edge.train import run_dir

    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "config.yaml").write_text("model: {}\n")
    (stub / "tensorboard").mkdir()
    (stub / "tensorboard" / "events.out.tfevents.1.host.2.0").write_bytes(b"")
    assert run_dir.failed_start(stub)
    with pytest.raises(LpnEdgeError, match="before its first checkpoint.*--out"):  # --resume says what to do
        train(None, world, stub, resume=True, progress=False)
    (stub / "notes.txt").write_text("precious")
    with pytest.raises(LpnEdgeError, match="not empty"):
        run_dir.check_new_run(stub, force=False)
    (stub / "notes.txt").unlink()
    lock = run_dir.hold_lock(stub)  # a run still starting in it (a live process holds the lock): not a failed start
    try:
        assert not run_dir.failed_start(stub)
        with pytest.raises(LpnEdgeError, match="not empty"):
            run_dir.check_new_run(stub, force=False)
    finally:
        lock.release()
    assert not (stub / ".lock").exists()
    run_dir.prepare_new_run(stub, force=False)
    assert list(stub.iterdir()) == []


def _rows(run):
    import csv

    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_resume_inside_an_epoch_records_the_whole_epoch(world, tmp_path):
    straight = train(tiny_run(2), world, tmp_path / "straight", progress=False)
    stopped = train(tiny_run(2), world, tmp_path / "stopped", progress=False, max_steps=5)  # 4 steps/epoch: epoch 2
    assert read_checkpoint(stopped.checkpoint)["step"] == 1
    train(None, world, tmp_path / "stopped", resume=True, progress=False)
    expected, got = _rows(tmp_path / "straight"), _rows(tmp_path / "stopped")
    assert [row["epoch"] for row in got] == ["1", "2"] and straight.history[-1]["epoch"] == 2
    for want, have in zip(expected, got):
        assert int(have["images"]) == int(want["images"])
        for key in ("loss", "accuracy"):
            assert float(have[key]) == pytest.approx(float(want[key]), rel=1e-6, abs=1e-9), key
        assert float(have["seconds"]) > 0


def test_progress_goes_to_a_callback_after_every_step(world, tmp_path):
    calls, lines = [], []
    result = train(tiny_run(2), world, tmp_path / "run", progress=calls.append, say=lines.append)
    assert result.model is not None
    steps = 4  # 15 drone items in batches of 4
    assert [(p.epoch, p.step) for p in calls] == [(e, s) for e in (1, 2) for s in range(1, steps + 1)]
    assert all(p.epochs == 2 and p.steps == steps and p.images_per_s > 0 and p.loss > 0 for p in calls)
    assert [p.epoch_done for p in calls].count(True) == 2 and calls[-1].epoch_done and calls[-1].eta_s == 0
    assert calls[0].eta_s > calls[steps].eta_s > 0  # the time left shrinks as the run goes on
    assert any(line.startswith("training 3-view LPN") for line in lines)  # messages through `say`, not print
    # ... and a resumed epoch counts its steps from where it stopped
    train(tiny_run(2), world, tmp_path / "stopped", progress=False, max_steps=5)
    resumed = []
    train(None, world, tmp_path / "stopped", resume=True, progress=resumed.append)
    assert [(p.epoch, p.step) for p in resumed] == [(2, s) for s in range(2, steps + 1)]


def test_progress_printer_says_one_line_per_interval_and_one_per_epoch_end():
    from lpn_edge.train import ProgressPrinter, TrainProgress

    now, lines = [0.0], []
    printer = ProgressPrinter(lines.append, interval=10.0, clock=lambda: now[0])

    def at(t, step, steps=100, epoch=1):
        now[0] = t
        printer(TrainProgress(epoch=epoch, epochs=3, step=step, steps=steps, images_per_s=33.3, eta_s=125.0,
                              loss=2.5, accuracy=0.1))

    for second in range(35):  # one step a second
        at(float(second), second + 1)
    assert len(lines) == 3  # at 10, 20 and 30 s: never two lines within 10 s
    assert lines[0] == "epoch 1/3, step 11/100: loss 2.500, 33.3 img/s, about 2 min 05 s left"
    at(35.5, 100)  # the epoch's end is always said
    at(36.0, 1, epoch=2)  # ... and restarts the interval
    assert len(lines) == 4 and "step 100/100" in lines[-1]
    at(46.0, 11, epoch=2)
    assert len(lines) == 5 and lines[-1].startswith("epoch 2/3, step 11/100")
