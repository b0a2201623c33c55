"""Every wrong use of the command line is one line on stderr and exit status 2, before any work is done."""

import os
import pickle
import stat

import pytest
from typer.testing import CliRunner

from lpn_edge.cli import app


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "empty").mkdir()
    (root / "no-images").mkdir()
    (root / "no-images" / "notes.txt").write_text("not an image")
    (root / "x.pt").mkdir()  # a directory that looks like a checkpoint
    (root / "a-file").write_text("")
    with open(root / "random.pt", "wb") as handle:
        pickle.dump({"weights": [1, 2, 3], "kind": object}, handle, protocol=4)
    return root


def _cases(root):
    ckpt = str(root / "random.pt")  # every check below must fire before the checkpoint is opened
    cases = {
        "eval --device tpu": ["eval", ckpt, "--data", str(root), "--device", "tpu"],
        "train --device tpu": ["train", "--data", str(root), "--out", str(root / "run-a"), "--device", "tpu"],
        "eval --batch-size 0": ["eval", ckpt, "--data", str(root), "--batch-size", "0"],
        "eval --workers -1": ["eval", ckpt, "--data", str(root), "--workers", "-1"],
        "eval --plots -1": ["eval", ckpt, "--data", str(root), "--plots", "-1"],
        "eval --json DIR": ["eval", ckpt, "--data", str(root), "--json", str(root / "empty")],
        "eval --parts x": ["eval", ckpt, "--data", str(root), "--parts", "a,b"],
        "eval CKPT is a directory": ["eval", str(root / "x.pt"), "--data", str(root)],
        "eval CKPT is a foreign pickle": ["eval", ckpt, "--data", str(root)],
        "export --out FILE": ["export", ckpt, "--onnx", "--out", str(root / "a-file")],
        "train data.batch_size=1": ["train", "--data", str(root), "--out", str(root / "run-b"), "data.batch_size=1"],
        "train unknown key": ["train", "--data", str(root), "--out", str(root / "run-c"), "train.nope=1"],
        "data check empty": ["data", "check", str(root / "empty")],
        "data check no images": ["data", "check", str(root / "no-images")],
        "synth --drone-per-location 1": ["synth", str(root / "w"), "--drone-per-location", "1"],
        "synth --size 8": ["synth", str(root / "w"), "--size", "8"],
        "inspect missing": ["inspect", str(root / "missing.yaml")],
        "convert-official missing": ["convert-official", str(root / "missing.pth"), "--out", str(root / "o.pt")],
    }
    import torch

    if not torch.cuda.is_available():
        cases["eval --device cuda without GPU"] = ["eval", ckpt, "--data", str(root), "--device", "cuda"]
        cases["train --device cuda without GPU"] = ["train", "--data", str(root), "--out", str(root / "run-d"),
                                                    "--device", "cuda"]
    return cases


def test_every_wrong_use_is_one_line_and_exit_2(places):
    runner = CliRunner()
    failures = []
    for name, argv in _cases(places).items():
        result = runner.invoke(app, argv)
        lines = result.stderr.strip().splitlines()
        if result.exit_code != 2 or "Traceback" in result.output + result.stderr or len(lines) != 1 \
                or not lines[0].startswith("error: "):
            failures.append(f"{name}: exit {result.exit_code}, stderr {result.stderr!r}, {result.exception!r}")
    assert not failures, "\n".join(failures)


def test_errors_name_the_value_and_the_flag(places):
    runner = CliRunner()

    def error(argv):
        return runner.invoke(app, argv).stderr

    assert "a directory" in error(["eval", str(places / "x.pt"), "--data", str(places)])
    assert "--drone-per-location" in error(["synth", str(places / "w"), "--drone-per-location", "1"])
    assert "--batch-size" in error(["eval", str(places / "random.pt"), "--data", str(places), "--batch-size", "0"])
    assert "data.batch_size" in error(["train", "--data", str(places), "--out", str(places / "r"), "data.batch_size=1"])
    foreign = error(["eval", str(places / "random.pt"), "--data", str(places)])
    assert "Warning" not in foreign and foreign.strip().endswith("could run code")


def test_a_bad_device_leaves_no_run_directory(places):
    CliRunner().invoke(app, ["train", "--data", str(places), "--out", str(places / "run-e"), "--device", "tpu"])
    assert not (places / "run-e").exists()


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    from lpn_edge.fileio import atomic_write_text

    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "new.json", "{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)  # a replaced file keeps the mode its owner gave it
    atomic_write_text(path, "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
