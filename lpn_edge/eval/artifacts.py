"""Evaluating what flies: exported artifacts (.onnx, .engine, .pt2, split graphs) run through the runtime's encoders
(`lpn_edge.runtime.encoders.open_encoder`) under the benchmark protocol, and their difference to the checkpoint.

An artifact embeds one view. It also serves every view that goes through the same backbone with the same partition:
with `share_weights` (the default) the drone and satellite views of a three-view model share one backbone, so one
artifact evaluates drone2sat and sat2drone. Otherwise the other view needs its own artifact (`gallery_model`, from
the same checkpoint), and a task without one is refused before any image is read.

`--compare CKPT` embeds the same images with the checkpoint (at the artifact's input size and flip) and reports, per
task: both sets of metrics, the mean and minimum cosine between the two embeddings of each image (queries and
gallery), and the top-1 agreement (queries whose best gallery item is the same for both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError

ARTIFACT_SUFFIXES = (".onnx", ".engine", ".pt2", ".npz")
BRANCH_VIEW = {"google": "ground"}  # a view that is not a key of view_branches -> the one whose branch it uses


def is_artifact(path: str | Path) -> bool:
    """True for an exported artifact (what `open_encoder` runs), False for a checkpoint (.pt)."""
    return Path(path).suffix.lower() in ARTIFACT_SUFFIXES


@dataclass
class ArtifactModel:
    """The encoders of one or two artifacts of one checkpoint, by the views they serve."""

    encoders: dict[str, object]  # view -> Encoder
    model_views: tuple[str, ...]  # every view of the model the artifacts come from
    parts: int
    image_size: tuple[int, int]
    flip: bool
    fingerprint: str
    describe: dict  # what ran, for the JSON: path, backend, provider, precision per artifact

    def embed(self, dataset, view: str, batch_size: int, num_workers: int, progress: bool, desc: str) -> np.ndarray:
        """(N, D) float32 embeddings of a dataset of (transformed image tensor, label) items with `view`'s encoder."""
        import torch
        from tqdm import tqdm

        encoder = self.encoders[view]
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        chunks = [encoder.embed(images.numpy().astype(np.float32, copy=False))
                  for images, _ in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)]
        return np.concatenate(chunks) if chunks else np.zeros((0, encoder.info.dim), np.float32)

    def runnable(self, tasks: list, main: Path, requested: str) -> tuple[list, list[str]]:
        """(the tasks whose views the artifacts serve, a note per task left out). A task asked for by name, or
        "all" when none can run, is refused with what to export and pass (before any image is read)."""
        keep, refusals = [], []
        for task in tasks:
            missing = [v for v in (task.query_view, task.gallery_view) if v not in self.encoders]
            if not missing:
                keep.append(task)
                continue
            why = (f"{task.name} needs the {missing[0]} view, and {main.name} serves {', '.join(self.encoders)} only "
                   f"(the model's {missing[0]} branch does not share its weights)")
            refusals.append((why, f"export the {missing[0]} view from the same checkpoint (`lpn-edge export CKPT "
                                  f"--onnx --view {missing[0]}`) and pass it with --gallery-model"))
        if refusals and (requested != "all" or not keep):
            raise LpnEdgeError(": ".join(refusals[0]))
        return keep, [f"{why}: left out (--gallery-model adds it)" for why, _ in refusals]


def served_views(meta: dict) -> tuple[str, ...]:
    """The views an artifact of `meta` (its metadata) embeds correctly: its own, and every view with the same
    backbone branch and the same partition."""
    from lpn_edge.config import RunConfig
    from lpn_edge.model.lpn import view_branches

    model = RunConfig.from_dict(meta["config"], "artifact metadata (config)").model
    branches = view_branches(model)

    def partition(view: str) -> str:
        return model.ground_partition if view in ("ground", "google") else model.satellite_partition

    own = meta["view"]
    return tuple(v for v in branches if branches[v] == branches[BRANCH_VIEW.get(own, own)]
                 and partition(v) == partition(own))


def open_artifacts(main: Path, gallery_model: Path | None, device: str | None, batch_size: int,
                   flip: bool) -> ArtifactModel:
    """Open the artifact (and the gallery view's artifact) for evaluation; refuse mixed checkpoints or flips."""
    from lpn_edge.config import RunConfig
    from lpn_edge.model.lpn import view_branches
    from lpn_edge.runtime.encoders import open_encoder

    wanted_device = device or ("cuda" if main.suffix.lower() == ".engine" else "cpu")
    encoders: dict[str, object] = {}
    describe = {}
    first = None
    for path in [main] + ([Path(gallery_model)] if gallery_model is not None else []):
        encoder = open_encoder(path, wanted_device, batch=batch_size)
        meta = encoder.metadata
        if first is None:
            first = (encoder, meta)
        elif encoder.info.fingerprint != first[0].info.fingerprint:
            raise LpnEdgeError(f"--gallery-model {path.name} comes from checkpoint {encoder.info.fingerprint}, "
                               f"{main.name} from {first[0].info.fingerprint}; export both from one checkpoint")
        if bool(meta.get("flip", True)) != bool(flip):
            raise LpnEdgeError(f"{path.name} was exported {'with' if meta.get('flip', True) else 'without'} test-time "
                               f"flip; evaluate it {'without' if flip else 'with'} --no-flip, or re-export it")
        for view in served_views(meta):
            encoders.setdefault(view, encoder)
        describe[str(path)] = {"backend": encoder.info.backend, "provider": encoder.info.provider,
                               "precision": encoder.info.precision, "view": encoder.info.view}
    encoder, meta = first
    model = RunConfig.from_dict(meta["config"], "artifact metadata (config)").model
    return ArtifactModel(encoders, tuple(view_branches(model)), int(meta["parts"]), encoder.info.input_size,
                         bool(meta.get("flip", True)), encoder.info.fingerprint, describe)


def agreement(artifact: tuple[np.ndarray, np.ndarray], checkpoint: tuple[np.ndarray, np.ndarray]) -> dict:
    """Per task: mean and min cosine between the artifact's and the checkpoint's embedding of each image (queries and
    gallery together), and the fraction of queries whose top-1 gallery item is the same for both."""
    cosines = []
    for ours, theirs in zip(artifact, checkpoint):
        norms = np.maximum(np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1), 1e-12)
        cosines.append((ours * theirs).sum(1) / norms)
    cosine = np.concatenate(cosines)
    top_ours = np.argmax(artifact[0] @ artifact[1].T, axis=1)
    top_theirs = np.argmax(checkpoint[0] @ checkpoint[1].T, axis=1)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "top1_agreement": float((top_ours == top_theirs).mean()), "images": int(len(cosine))}


def format_agreement(rows: dict[str, dict]) -> str:
    """Markdown table: task | mean cosine | min cosine | top-1 agreement (percent)."""
    width = max(len("task"), *(len(name) for name in rows))
    lines = [f"| {'task':<{width}} | mean cosine |  min cosine | top-1 agreement |",
             f"|{'-' * (width + 2)}|------------:|------------:|----------------:|"]
    for name, row in rows.items():
        lines.append(f"| {name:<{width}} | {row['mean_cosine']:>11.6f} | {row['min_cosine']:>11.6f} | "
                     f"{100 * row['top1_agreement']:>14.2f}% |")
    return "\n".join(lines)
