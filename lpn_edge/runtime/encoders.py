"""`open_encoder(path, device)`: an exported artifact (or, on a workstation, a checkpoint) -> an `Encoder`.

The backend is picked from the artifact itself:
  .onnx            full graph (metadata output "embedding"): ONNX Runtime on the providers `device` names
                   ("cpu" -> CPU; "cuda" -> CUDA; "tensorrt" -> TensorRT then CUDA), or the `providers` given. The
                   providers actually used are reported in `info.provider`; one that is missing is an LpnEdgeError,
                   never a silent CPU run (`onnx_runner`). GPU providers run through IO binding.
  .engine          TensorRT (device "cuda"): the `.json` sidecar is checked first (GPU, TensorRT and CUDA versions,
                   precision; a mismatch is one line), then `EngineRunner` (named tensors, `execute_async_v3`, one
                   stream, pinned host and device buffers allocated once per batch size and reused; batches within
                   the engine's profile, larger inputs in chunks).
  split artifacts  a backbone graph (metadata output "feature_map": `<stem>.split.onnx`, `.split.<precision>.engine`)
                   plus its heads `<stem>.split.npz` (given either file). device "cpu": the backbone through ONNX
                   Runtime, then the ring matrix and the folded heads in numpy (`split_heads`). device "cuda" /
                   "tensorrt": the backbone (TensorRT engine, or ONNX Runtime's CUDA / TensorRT provider with IO
                   binding) writes the feature map into a device buffer, `cuda_kernels.RingPoolKernel` turns it into
                   embeddings on the GPU, and only the (N, D) embeddings come back (`gpu_encoders`).
  .pt / .pt2       workstation backends in `lpn_edge.torch_encoders` (they import torch; nothing here does). This
                   module reaches them through one lazy import in `_open_workstation`, the single edge from the runtime
                   to a torch module that `tests/test_runtime_boundaries.py` allows; nothing else of the runtime may
                   import it, and the drone, which opens .onnx / .engine files, never executes that line.

Every encoder takes (N, H, W, 3) uint8 RGB frames (any size: resized and normalised as `preprocessing` says) or
(N, 3, H, W) float32 already preprocessed, and returns (N, D) float32 unit-norm rows (`encoder.ArrayEncoder`).
`info`: backend, provider / engine, precision, input size, view, the source checkpoint's fingerprint, D.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.artifact import decode_metadata
from lpn_edge.runtime.encoder import ArrayEncoder, Encoder, EncoderInfo
from lpn_edge.runtime.onnx_runner import BATCH, OnnxRunner

DEVICES = ("cpu", "cuda", "tensorrt")
# device -> the ONNX Runtime providers a full or split ONNX graph runs on (short names, `onnx_runner.PROVIDERS`)
DEVICE_PROVIDERS = {"cpu": ("cpu",), "cuda": ("cuda",), "tensorrt": ("tensorrt", "cuda")}
SUFFIXES = (".onnx", ".engine", ".npz", ".pt", ".pt2")


def open_encoder(path: str | Path, device: str = "cpu", *, providers: Sequence[str] | None = None,
                 precision: str | None = None, batch: int | None = None, threads: int | None = None,
                 view: str | None = None, flip: bool | None = None) -> Encoder:
    """The encoder of the artifact at `path` (see the module docstring for the backends).

    device: "cpu", "cuda" or "tensorrt" (ONNX Runtime's TensorRT provider; a `.engine` file needs "cuda").
    providers: ONNX files only, explicit ONNX Runtime providers in order of preference (overrides `device`'s).
    precision: the precision the artifact must have ("fp32", "fp16", "int8"); a different one is refused.
    batch: most images per backend call (ONNX Runtime chunk; a TensorRT engine's is its profile's maximum).
    threads: ONNX Runtime intra-op threads on the CPU (None: the physical cores, `onnx_runner.physical_cores`).
    view, flip: the view to embed and whether to add the mirrored image's embedding (test-time flip). An artifact
    has both baked in (asking for others is refused); a checkpoint takes them (default "drone", True).
    """
    path = Path(path)
    if device not in DEVICES:
        raise LpnEdgeError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if not path.is_file():
        raise LpnEdgeError(f"model {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LpnEdgeError(f"{path.name}: cannot tell the backend from the suffix {suffix or '(none)'}; expected one "
                           f"of {', '.join(SUFFIXES)}")
    if batch is not None and int(batch) < 1:
        raise LpnEdgeError(f"batch must be >= 1; got {batch}")
    if providers is not None and suffix not in (".onnx", ".npz"):
        raise LpnEdgeError(f"providers apply to ONNX files; {path.name} is a {suffix} file")
    if suffix in (".pt", ".pt2"):
        return _open_workstation(path, device, precision=precision, batch=batch, threads=threads, view=view,
                                 flip=flip)
    if suffix == ".engine":
        if device != "cuda":
            raise LpnEdgeError(f"{path.name} is a TensorRT engine: it runs on the GPU (device='cuda'), not {device!r}")
        from lpn_edge.runtime.gpu_encoders import open_engine

        return _checked(open_engine(path, precision=precision, batch=batch), view, flip)
    if suffix == ".npz":
        path = split_graph_of(path)
    wanted = tuple(providers) if providers is not None else DEVICE_PROVIDERS[device]
    runner = OnnxRunner(path, wanted, batch or BATCH, threads=threads)
    meta = decode_metadata(runner.session.get_modelmeta().custom_metadata_map, path)
    _check_precision(path, meta, precision)
    if meta.get("output") == "feature_map":
        heads = split_heads_of(path, meta)
        if runner.on_gpu:
            from lpn_edge.runtime.gpu_encoders import OnnxSplitGpuEncoder

            return _checked(OnnxSplitGpuEncoder(runner, heads, meta), view, flip)
        return _checked(SplitEncoder(runner, heads, meta), view, flip)
    return _checked(OnnxEncoder(runner, meta), view, flip)


def _open_workstation(path: Path, device: str, **options: Any) -> Encoder:
    # The one import of a torch module from the runtime (checkpoint and AOTInductor backends, for workstations);
    # tests/test_runtime_boundaries.py allows exactly this edge. A drone never opens .pt / .pt2 files.
    from lpn_edge.torch_encoders import open_torch_encoder

    return open_torch_encoder(path, device, **options)


def encoder_info(meta: dict, *, backend: str, provider: str) -> EncoderInfo:
    """EncoderInfo from an artifact's metadata (`artifact.artifact_metadata` plus "precision")."""
    return EncoderInfo(backend=backend, provider=provider, precision=str(meta.get("precision", "fp32")),
                       input_size=tuple(int(s) for s in meta["preprocessing"]["size"]), view=str(meta["view"]),
                       fingerprint=str(meta["source_fingerprint"]), dim=int(meta["embedding_dim"]))


def _check_precision(path: Path, meta: dict, precision: str | None) -> None:
    if precision is not None and meta.get("precision", "fp32") != precision:
        raise LpnEdgeError(f"{path.name} is a {meta.get('precision', 'fp32')} artifact, not {precision}")


def _checked(encoder: Encoder, view: str | None, flip: bool | None) -> Encoder:
    if view is not None and encoder.info.view != view:
        raise LpnEdgeError(f"this artifact embeds the {encoder.info.view} view, not {view}; export the {view} view "
                           f"(`lpn-edge export --view {view}`)")
    baked = getattr(encoder, "metadata", {}).get("flip")
    if flip is not None and baked is not None and bool(baked) != bool(flip):
        raise LpnEdgeError(f"this artifact was exported {'with' if baked else 'without'} test-time flip, not "
                           f"{'with' if flip else 'without'} (`lpn-edge export{'' if flip else ' --no-flip'}`)")
    return encoder


# -- split artifacts: where the heads and the backbone graph are --------------------------------------------------

def split_stem(path: Path) -> str:
    """`m-drone.split.onnx`, `m-drone.split.int8.onnx`, `m-drone.split.fp16.engine`, `m-drone.split.npz` ->
    `m-drone.split` (the name up to and including ".split"; else the name without its last suffix)."""
    name = path.name
    marker = name.rfind(".split.")
    return name[:marker + len(".split")] if marker >= 0 else path.stem


def split_heads_of(graph: Path, meta: dict) -> dict[str, np.ndarray]:
    """The heads `.npz` beside a split backbone graph or engine, checked to come from the same checkpoint."""
    from lpn_edge.runtime.split_heads import load_split_heads, split_heads_metadata

    path = graph.with_name(split_stem(graph) + ".npz")
    if not path.is_file():
        raise LpnEdgeError(f"{graph.name} is a split backbone (it outputs the feature map); its heads {path.name} "
                           "are missing beside it (`lpn-edge export --split` writes both)")
    heads = load_split_heads(path)
    theirs = split_heads_metadata(heads).get("source_fingerprint")
    if theirs != meta.get("source_fingerprint"):
        raise LpnEdgeError(f"{path.name} comes from checkpoint {theirs}, {graph.name} from "
                           f"{meta.get('source_fingerprint')}; export them together")
    return heads


def split_graph_of(heads: Path) -> Path:
    """The fp32 backbone graph `<stem>.split.onnx` beside a split heads file."""
    graph = heads.with_name(split_stem(heads) + ".onnx")
    if not graph.is_file():
        raise LpnEdgeError(f"{heads.name} holds split heads; its backbone graph {graph.name} is missing beside it")
    return graph


# -- CPU (and ONNX Runtime GPU) encoders ----------------------------------------------------------------------------

class OnnxEncoder(ArrayEncoder):
    """A full ONNX graph (images -> embedding) on ONNX Runtime."""

    def __init__(self, runner: OnnxRunner, meta: dict) -> None:
        self.runner, self.metadata = runner, meta
        self.info = encoder_info(meta, backend="onnxruntime", provider="+".join(runner.providers))

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.runner.run(images)


class SplitEncoder(ArrayEncoder):
    """A split backbone graph on ONNX Runtime's CPU provider, then ring pooling and the folded heads in numpy."""

    def __init__(self, runner: OnnxRunner, heads: dict[str, np.ndarray], meta: dict) -> None:
        self.runner, self.heads, self.metadata = runner, heads, meta
        self.info = encoder_info(meta, backend="split", provider="+".join(runner.providers) + "+numpy-heads")

    def run(self, images: np.ndarray) -> np.ndarray:
        from lpn_edge.runtime.split_heads import split_head_embedding

        return split_head_embedding(self.runner.run(images), self.heads)
