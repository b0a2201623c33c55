"""Workstation encoders on PyTorch: an lpn-edge checkpoint (`.pt`) or an AOTInductor package (`.pt2`) behind the
runtime's `Encoder` protocol (`lpn_edge.runtime.encoder`).

They import torch, so they live outside `lpn_edge.runtime` (which a drone imports without torch). The runtime's
`open_encoder` reaches them through one lazy import (`runtime.encoders._open_workstation`), the only edge from the
runtime to a torch module, which `tests/test_runtime_boundaries.py` names and allows. Nothing here imports
`lpn_edge.runtime.encoders` (no import cycle).

  .pt   `LPN.embed(images, view, flip)` in exact fp32 (no TF32), on "cpu" or "cuda"; the view is chosen by the caller
        (default "drone"), flip by the caller (default True, the benchmark protocol).
  .pt2  the compiled embedding graph, loaded with `torch._inductor.aoti_load_package`, run in chunks within the batch
        range its sidecar records; it runs on the device it was compiled for (the sidecar says which).
Both compute in fp32 only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpn_edge.errors import LpnEdgeError
from lpn_edge.fileio import file_fingerprint
from lpn_edge.precision import exact_fp32
from lpn_edge.runtime.artifact import read_artifact_sidecar
from lpn_edge.runtime.batching import run_in_batches
from lpn_edge.runtime.encoder import ArrayEncoder, EncoderInfo

TORCH_DEVICES = ("cpu", "cuda")


def open_torch_encoder(path: str | Path, device: str = "cpu", *, precision: str | None = None,
                       batch: int | None = None, threads: int | None = None, view: str | None = None,
                       flip: bool | None = None) -> ArrayEncoder:
    """`.pt` -> `CheckpointEncoder`, `.pt2` -> `Pt2Encoder` (options as `runtime.encoders.open_encoder`)."""
    path = Path(path)
    if device not in TORCH_DEVICES:
        raise LpnEdgeError(f"{path.name} runs on PyTorch: device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise LpnEdgeError(f"device 'cuda' asked for {path.name}, but this PyTorch ({torch.__version__}) sees no CUDA "
                           "device")
    if precision not in (None, "fp32"):
        raise LpnEdgeError(f"{path.name} runs in fp32 only, not {precision} (export a TensorRT engine for "
                           f"{precision})")
    if path.suffix.lower() == ".pt2":
        return Pt2Encoder(path, device, batch=batch, threads=threads, view=view, flip=flip)
    return CheckpointEncoder(path, device, batch=batch, threads=threads, view=view, flip=flip)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for the block (None: unchanged), restored afterwards."""
    if not threads:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class CheckpointEncoder(ArrayEncoder):
    """An lpn-edge checkpoint embedded with `LPN.embed` (the reference every exported artifact is checked against)."""

    def __init__(self, path: Path, device: str = "cpu", *, batch: int | None = None, threads: int | None = None,
                 view: str | None = None, flip: bool | None = None) -> None:
        from lpn_edge.checkpoint import load_model

        self.model = load_model(path, device)
        self.view = view or "drone"
        self.model.check_view(self.view)
        self.flip = True if flip is None else bool(flip)
        self.device, self.batch, self.threads = torch.device(device), batch or 64, threads
        cfg = self.model.config
        self.info = EncoderInfo(backend="torch", provider=f"pytorch-{device}", precision="fp32",
                                input_size=tuple(int(s) for s in cfg.image_size), view=self.view,
                                fingerprint=file_fingerprint(path), dim=int(cfg.embedding_dim))

    def run(self, images: np.ndarray) -> np.ndarray:
        outputs = []
        with torch.no_grad(), exact_fp32(), torch_threads(self.threads):
            for start in range(0, len(images), self.batch):
                chunk = torch.from_numpy(images[start:start + self.batch]).to(self.device)
                outputs.append(self.model.embed(chunk, self.view, flip=self.flip).float().cpu().numpy())
        return np.concatenate(outputs)


class Pt2Encoder(ArrayEncoder):
    """An AOTInductor package (`lpn-edge export --pt2`) with its sidecar."""

    def __init__(self, path: Path, device: str = "cpu", *, batch: int | None = None, threads: int | None = None,
                 view: str | None = None, flip: bool | None = None) -> None:
        meta = read_artifact_sidecar(path, "package")
        built_for = meta.get("device", "cpu")
        if built_for != device:
            raise LpnEdgeError(f"{path.name} was compiled for {built_for}, not {device}: open it with "
                               f"device={built_for!r} or compile it on a {device} machine")
        for key, asked in (("view", view), ("flip", flip)):
            if asked is not None and meta.get(key) != asked:
                raise LpnEdgeError(f"{path.name} embeds {key} {meta.get(key)}, not {asked}; export it with that "
                                   f"{key}")
        low, high = (int(b) for b in meta["batch"][::2])
        self.range = (low, min(high, batch) if batch else high)
        if self.range[1] < low:
            raise LpnEdgeError(f"batch {batch} is below {path.name}'s smallest batch {low}")
        self.device, self.threads, self.metadata = torch.device(device), threads, meta
        self.compiled = load_pt2(path)
        self.info = EncoderInfo.from_metadata(meta, backend="pt2", provider=f"aotinductor-{device}")

    def run(self, images: np.ndarray) -> np.ndarray:
        with torch_threads(self.threads):
            return run_pt2(self.compiled, images, self.device, self.range)


def load_pt2(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The compiled model of an AOTInductor package; one-line error when it cannot be loaded."""
    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as exc:  # noqa: BLE001 - the loader raises RuntimeError and C++ errors of many kinds
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise LpnEdgeError(f"cannot load the pt2 package {Path(path).name} ({detail})") from None


def run_pt2(compiled: Callable[[torch.Tensor], Any], images: np.ndarray, device: torch.device,
            batch: tuple[int, int]) -> np.ndarray:
    """(N, 3, H, W) float32 -> (N, D) float32 with a loaded package, in chunks within its batch range
    (smallest, largest); exact fp32."""

    def run(chunk: np.ndarray) -> np.ndarray:
        return compiled(torch.from_numpy(chunk).to(device)).float().cpu().numpy()

    with torch.no_grad(), exact_fp32():
        return run_in_batches(run, images, batch[0], batch[1])
