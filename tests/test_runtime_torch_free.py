"""The runtime imports and runs with torch, torchvision and onnx blocked: what a drone without PyTorch has.

The parent process exports a tiny LPN (ResNet-18, 64 px) with the export API; a child process in which importing
torch, torchvision or onnx raises ImportError imports every module of `lpn_edge.runtime`, reads the artifact's
metadata through ONNX Runtime and embeds images with it, with the bare runner and with `open_encoder` (preprocessed
floats and uint8 frames); the parent compares with the PyTorch embedding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import export_tiny_onnx

from lpn_edge.checkpoint import load_model
from lpn_edge.runtime.preprocessing import preprocess

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "torchvision", "onnx")

# Runs in the child before anything else: a meta-path finder that refuses the blocked packages (and their
# submodules); then every runtime module is imported and used.
CHILD = f"""
import importlib, json, pkgutil, sys
import numpy as np

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked in this test (a drone without it)")
        return None

sys.meta_path.insert(0, Blocker())
for name in {BLOCKED!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker let {{name}} through")

import lpn_edge.runtime
modules = [m.name for m in pkgutil.walk_packages(lpn_edge.runtime.__path__, "lpn_edge.runtime.")]
for name in modules:
    importlib.import_module(name)

from lpn_edge.runtime.artifact import read_onnx_metadata
from lpn_edge.runtime.encoders import open_encoder
from lpn_edge.runtime.onnx_runner import OnnxRunner

onnx_path, images_path, out_path = sys.argv[1:4]
meta = read_onnx_metadata(onnx_path)
runner = OnnxRunner(onnx_path, providers=("cpu",))
images = np.load(images_path)
np.save(out_path, runner.run(images))
encoder = open_encoder(onnx_path, "cpu", threads=1)
np.save(out_path.replace(".npy", "-encoder.npy"), encoder.embed(images))
frames = (np.arange(2 * 70 * 60 * 3) % 251).astype(np.uint8).reshape(2, 70, 60, 3)
np.save(out_path.replace(".npy", "-frames.npy"), encoder.embed(frames))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
heavy += sorted(m for m in sys.modules if m.startswith(("lpn_edge.export", "lpn_edge.train", "lpn_edge.model",
                                                        "lpn_edge.eval")))
print(json.dumps({{"modules": modules, "meta": meta, "providers": runner.providers, "backend": runner.backend,
                   "loaded": heavy, "encoder": [encoder.info.backend, encoder.info.provider]}}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_tiny_onnx(tmp_path_factory.mktemp("torch-free"))


def test_runtime_imports_and_embeds_without_torch_torchvision_onnx(exported, tmp_path):
    ckpt, onnx_path = exported
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    np.save(tmp_path / "images.npy", images.numpy())
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.run([sys.executable, "-c", CHILD, str(onnx_path), str(tmp_path / "images.npy"),
                            str(tmp_path / "out.npy")], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    expected_modules = {f"lpn_edge.runtime.{p.stem}" for p in (REPO / "lpn_edge" / "runtime").glob("*.py")
                        if p.stem != "__init__"}
    assert set(report["modules"]) == expected_modules  # every module was imported
    assert report["loaded"] == []  # nothing of torch, onnx or the build side came along
    assert report["meta"]["source_checkpoint"] == "tiny.pt" and report["meta"]["preprocessing"]["size"] == [64, 64]
    assert report["meta"]["output"] == "embedding" and report["meta"]["precision"] == "fp32"
    assert report["providers"] == ["CPUExecutionProvider"] and report["backend"] == "onnxruntime-cpu"
    with torch.no_grad():
        expected = load_model(ckpt).embed(images, "drone").numpy()
    got = np.load(tmp_path / "out.npy")
    assert got.shape == expected.shape == (3, 2048)
    assert ((got * expected).sum(1) >= 0.99999).all()
    assert report["encoder"] == ["onnxruntime", "CPUExecutionProvider"]
    assert ((np.load(tmp_path / "out-encoder.npy") * expected).sum(1) >= 0.99999).all()
    frames = (np.arange(2 * 70 * 60 * 3) % 251).astype(np.uint8).reshape(2, 70, 60, 3)
    with torch.no_grad():
        expected_frames = load_model(ckpt).embed(torch.from_numpy(preprocess(frames, (64, 64))), "drone").numpy()
    assert ((np.load(tmp_path / "out-frames.npy") * expected_frames).sum(1) >= 0.99999).all()
