"""`evaluate(model, data_dir, options) -> EvalReport`: the benchmark protocol plus the paper's robustness
studies (rotated and shifted queries, part subsets, drone distance groups, extra distractor tiles).

`model` is a checkpoint (.pt, embedded with PyTorch) or an exported artifact (.onnx, .engine, .pt2, split graph),
embedded through the runtime's encoders (`eval.artifacts`); `options.compare` (a checkpoint) adds the artifact's
difference to it."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpn_edge.data.layout import FOLDER_LAYOUTS
from lpn_edge.errors import LpnEdgeError
from lpn_edge.eval.metrics import format_metrics_table, per_query_metrics
from lpn_edge.eval.tasks import Task, distance_group, select_tasks


@dataclass(frozen=True)
class EvalOptions:
    task: str = "all"
    flip: bool = True
    batch_size: int = 64
    device: str | None = None
    num_workers: int = 0
    rotate: float = 0.0  # degrees, applied to query images (paper Table V)
    shift: int = 0  # pixels query images are shifted by (paper Table VII), see shift_mode
    # "paper": the authors' test (image_folder.py customData, pad=P): after the resize, P black columns on the left,
    # content moved right, right edge cropped; "reflect": content moved right and down, uncovered border reflected.
    shift_mode: str = "paper"
    parts: tuple[int, ...] | None = None  # evaluate with a subset of the parts (paper Table VI)
    distance_groups: bool = False  # drone queries split by distance (paper Table IX)
    distractors: Path | None = None  # extra gallery tiles <dir>/<id>/* that match no query
    plots: int = 0  # retrieval strips (Fig. 9) and heatmaps (Fig. 8) for this many queries per task
    out_json: Path | None = None  # default: <checkpoint>.eval.<data folder name>.json
    progress: bool = True
    gallery_model: Path | None = None  # artifacts only: the artifact of the other view (when weights are not shared)
    compare: Path | None = None  # artifacts only: a checkpoint to compare with (metrics, cosines, top-1 agreement)


SHIFT_MODES = ("paper", "reflect")


def query_shift(pixels: int, mode: str = "paper") -> tuple[tuple[int, int], str]:
    """``(dx, dy), fill`` of `lpn_edge.data.transforms.Shift` for ``eval --shift pixels --shift-mode mode``.

    "paper" is the shifted-query test of the paper's Table VII as the authors run it (wtyhub/LPN image_folder.py,
    ``customData(pad=P)``): resize, pad P black columns on the left, keep the top-left window of the original size,
    i.e. the content moves P pixels right and the first P columns are black. (The authors resize to 256 x 256
    whatever the model size; here the image is resized to the model's size, the same for 256 px models.)
    "reflect" moves the content P pixels right and P down and fills the uncovered border by reflection.
    A negative P moves the content the other way (left, and up for "reflect").
    """
    if mode not in SHIFT_MODES:
        raise LpnEdgeError(f"shift mode must be one of {', '.join(SHIFT_MODES)}, got {mode!r}")
    if mode == "paper":
        return (pixels, 0), "constant"
    return (pixels, pixels), "reflect"


@dataclass
class EvalReport:
    metrics: dict[str, dict[str, float]]  # row name ("drone2sat", "drone2sat [short]") -> metrics
    json_path: Path
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    # with options.compare: {"checkpoint": path, "metrics": {row: metrics}, "agreement": {task: figures}}
    comparison: dict | None = None
    notes: list[str] = field(default_factory=list)  # what the user must know (tasks an artifact cannot run)

    def table(self) -> str:
        if self.comparison is None:
            return format_metrics_table(self.metrics)
        from lpn_edge.eval.artifacts import format_agreement

        rows = {}
        for name, metrics in self.metrics.items():
            rows[f"{name} (artifact)"] = metrics
            rows[f"{name} (checkpoint)"] = self.comparison["metrics"][name]
        return format_metrics_table(rows) + "\n\n" + format_agreement(self.comparison["agreement"])


@dataclass
class _Side:
    features: np.ndarray
    labels: np.ndarray
    paths: list[Path]


def evaluate(checkpoint: str | Path, data_dir: str | Path, options: EvalOptions = EvalOptions()) -> EvalReport:
    """Evaluate a checkpoint or an exported artifact on a data set's test split and write the metrics as JSON beside
    it (`options.compare`: an artifact's difference to a checkpoint as well)."""
    from lpn_edge.data.layout import detect_layout
    from lpn_edge.eval.artifacts import is_artifact

    query_shift(options.shift, options.shift_mode)  # refuse a bad shift before any work
    started = time.perf_counter()
    checkpoint, data_dir = Path(checkpoint), Path(data_dir)
    artifact = is_artifact(checkpoint)
    if not artifact and (options.gallery_model is not None or options.compare is not None):
        raise LpnEdgeError(f"--gallery-model and --compare apply to exported artifacts; {checkpoint.name} is a "
                           "checkpoint")
    if artifact and options.plots:
        raise LpnEdgeError("--plots draws the checkpoint's feature maps; evaluate the checkpoint for figures")
    source = _ArtifactSource(checkpoint, options) if artifact else _CheckpointSource(checkpoint, options)
    if options.parts is not None:
        from lpn_edge.eval.features import check_parts

        check_parts(source.parts, options.parts)  # before minutes of encoding, not after
    layout = detect_layout(data_dir)
    if layout not in (*FOLDER_LAYOUTS, "cvusa-raw", "cvact-raw"):
        raise LpnEdgeError(f"{data_dir}: cannot evaluate a data set of layout {layout!r}; run `lpn-edge data check`")
    tasks = select_tasks(options.task, layout, data_dir, source.views)
    notes: list[str] = []
    if artifact:
        tasks, notes = source.artifacts.runnable(tasks, checkpoint, options.task)
    json_path = options.out_json or default_json_path(checkpoint, data_dir)
    id_table = _id_table(layout, data_dir, tasks)
    encoder = _Encoder(source.embed, source.image_size, data_dir, layout, options, id_table)
    reference = None
    if options.compare is not None:  # the checkpoint on the same images, at the artifact's size and flip
        compared = _CheckpointSource(Path(options.compare), options, size=source.image_size,
                                     flip=source.artifacts.flip)
        if compared.fingerprint != source.artifacts.fingerprint:
            raise LpnEdgeError(f"--compare {Path(options.compare).name} (fingerprint {compared.fingerprint}) is not "
                               f"the checkpoint {checkpoint.name} was exported from ({source.artifacts.fingerprint})")
        reference = _Encoder(compared.embed, source.image_size, data_dir, layout, options, id_table)
    metrics: dict[str, dict[str, float]] = {}
    comparison = None if reference is None else {"checkpoint": str(options.compare), "metrics": {}, "agreement": {}}
    plots: list[Path] = []
    for task in tasks:
        qf, gf, query, gallery = _task_features(encoder, task, options, source.parts)
        _score(metrics, task, qf, gf, query, gallery, options)
        if reference is not None:
            from lpn_edge.eval.artifacts import agreement

            rqf, rgf, rquery, rgallery = _task_features(reference, task, options, source.parts)
            _score(comparison["metrics"], task, rqf, rgf, rquery, rgallery, options)
            comparison["agreement"][task.name] = agreement((qf, gf), (rqf, rgf))
        if options.plots:
            plots += _draw(task, query, gallery, qf, gf, source.model, encoder, options, checkpoint)
    seconds = time.perf_counter() - started
    payload = {
        "checkpoint": str(checkpoint),
        "epoch": source.epoch,
        "data": str(data_dir.resolve()),
        "layout": layout,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items() if k != "progress"},
        "metrics": metrics,
        "seconds": round(seconds, 2),
    }
    if artifact:
        payload["artifacts"] = source.artifacts.describe
        payload["notes"] = notes
    if comparison is not None:
        payload["comparison"] = comparison
    from lpn_edge.fileio import atomic_write_text

    atomic_write_text(json_path, json.dumps(payload, indent=2, default=list))
    return EvalReport(metrics, json_path, plots, seconds, comparison, notes)


def _task_features(encoder: _Encoder, task: Task, options: EvalOptions, parts: int):
    """(query features, gallery features, query side, gallery side) of a task, distractors and part subset applied."""
    query = encoder.side(task.query, task.query_view, perturbed=True)
    gallery = encoder.side(task.gallery, task.gallery_view, perturbed=False)
    gallery = _with_distractors(query, gallery, encoder, task, options)
    qf, gf = query.features, gallery.features
    if options.parts is not None:
        from lpn_edge.eval.features import select_parts

        qf = select_parts(qf, parts, options.parts)
        gf = select_parts(gf, parts, options.parts)
    return qf, gf, query, gallery


def _score(metrics: dict, task: Task, qf: np.ndarray, gf: np.ndarray, query: _Side, gallery: _Side,
           options: EvalOptions) -> None:
    """The task's metrics (and its distance groups) into `metrics`."""
    per_query = per_query_metrics(qf, query.labels, gf, gallery.labels)
    metrics[task.name] = per_query.summary()
    if options.distance_groups and task.query_view == "drone":
        groups = np.array([distance_group(p) or "unknown" for p in query.paths])
        for group in ("short", "middle", "long", "unknown"):
            if (groups == group).any():
                metrics[f"{task.name} [{group}]"] = per_query.subset(groups == group).summary()


class _CheckpointSource:
    """A checkpoint embedded with PyTorch (`extract_features`); `size` / `flip` override its own (--compare)."""

    def __init__(self, path: Path, options: EvalOptions, size: tuple[int, int] | None = None,
                 flip: bool | None = None) -> None:
        from lpn_edge.checkpoint import model_from_payload, read_checkpoint
        from lpn_edge.fileio import file_fingerprint

        payload = read_checkpoint(path)
        self.model = model_from_payload(payload, path)
        self.epoch, self.fingerprint = payload.get("epoch"), file_fingerprint(path)
        self.views, self.parts = self.model.views, self.model.config.parts
        self.image_size = tuple(size or self.model.config.image_size)
        self.flip = options.flip if flip is None else flip
        self.options = options

    def embed(self, dataset, view: str, desc: str) -> np.ndarray:
        from lpn_edge.eval.features import extract_features

        options = self.options
        device = None if options.device == "tensorrt" else options.device  # --compare with ORT's TensorRT provider
        return extract_features(self.model, dataset, view, self.flip, options.batch_size, device,
                                options.num_workers, options.progress, desc=desc)


class _ArtifactSource:
    """Exported artifact(s) embedded through the runtime's encoders (`eval.artifacts`)."""

    model = None  # no PyTorch model: no figures
    epoch = None

    def __init__(self, path: Path, options: EvalOptions) -> None:
        from lpn_edge.eval.artifacts import open_artifacts

        self.artifacts = open_artifacts(path, options.gallery_model, options.device, options.batch_size,
                                        options.flip)
        self.views, self.parts = self.artifacts.model_views, self.artifacts.parts
        self.image_size, self.options = self.artifacts.image_size, options

    def embed(self, dataset, view: str, desc: str) -> np.ndarray:
        options = self.options
        return self.artifacts.embed(dataset, view, options.batch_size, options.num_workers, options.progress, desc)


def default_json_path(checkpoint: Path, data_dir: Path) -> Path:
    """``<checkpoint>.eval.<data folder name>.json``: results on other data never replace these.

    A file of that name written for another data folder (same name, other place) is refused, not replaced.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", data_dir.resolve().name) or "data"
    path = checkpoint.with_name(f"{checkpoint.stem}.eval.{name}.json")
    if path.is_file():
        try:
            earlier = json.loads(path.read_text()).get("data")
        except (OSError, ValueError, AttributeError):
            earlier = None
        if earlier not in (None, str(data_dir.resolve())):
            raise LpnEdgeError(f"{path} holds results on {earlier}, not {data_dir.resolve()}; "
                               "pass --json PATH to write these elsewhere")
    return path


def _id_table(layout: str, data_dir: Path, tasks: list[Task]) -> dict[str, int] | None:
    """The labels of every class id of the tasks' folders, shared by queries and galleries (None: raw pair layouts,
    whose query i and gallery i are one pair by construction)."""
    if layout not in FOLDER_LAYOUTS:
        return None
    from lpn_edge.data.class_folders import shared_id_table

    return shared_id_table(data_dir / folder for task in tasks for folder in (task.query, task.gallery))


class _Encoder:
    """Feature extraction with a cache: a folder embedded once serves every task that uses it.

    Folder labels come from ``id_table`` (class id -> label), one table for every query and gallery folder, so a
    query id is matched to the same id in the gallery and to nothing else.
    """

    def __init__(self, embed, image_size: tuple[int, int], data_dir: Path, layout: str, options: EvalOptions,
                 id_table: dict[str, int] | None = None) -> None:
        """embed(dataset, view, desc) -> (N, D) float32; image_size (H, W) of the transformed images."""
        self.embed, self.image_size, self.data_dir, self.layout, self.options = embed, image_size, data_dir, layout, \
            options
        self.id_table = id_table
        self.cache: dict[tuple, _Side] = {}

    def transform(self, perturbed: bool):
        from lpn_edge.data.transforms import eval_transform

        rotate = self.options.rotate if perturbed else 0.0
        shift, fill = query_shift(self.options.shift, self.options.shift_mode) if perturbed else ((0, 0), "reflect")
        return eval_transform(self.image_size, rotate_degrees=rotate, shift=shift, shift_fill=fill)

    def dataset(self, where: str | Path, perturbed: bool):
        from lpn_edge.data.university import RetrievalFolder

        if Path(where).is_absolute():  # distractor tiles: their labels are replaced, see _with_distractors
            return RetrievalFolder(where, self.transform(perturbed))
        if self.layout in FOLDER_LAYOUTS:
            if self.id_table is None:
                raise LpnEdgeError(f"{self.data_dir / where}: folder labels need the shared id table of the tasks")
            return RetrievalFolder(self.data_dir / where, self.transform(perturbed), id_to_label=self.id_table)
        from lpn_edge.data.crossview import list_pairs, readable_pairs
        from lpn_edge.eval.features import ImagePaths

        pairs, _ = readable_pairs(list_pairs(self.data_dir, "val", self.layout))
        paths = [getattr(pair, where) for pair in pairs]
        return ImagePaths(paths, range(len(pairs)), self.transform(perturbed))

    def side(self, where: str | Path, view: str, perturbed: bool) -> _Side:
        perturbed = perturbed and bool(self.options.rotate or self.options.shift)
        key = (str(where), view, perturbed)
        if key not in self.cache:
            dataset = self.dataset(where, perturbed)
            features = self.embed(dataset, view, desc=f"{Path(str(where)).name} ({view})")
            self.cache[key] = _Side(features, np.asarray(dataset.labels), list(dataset.paths))
        return self.cache[key]


def _with_distractors(query: _Side, gallery: _Side, encoder: _Encoder, task: Task, options: EvalOptions) -> _Side:
    """Append extra gallery tiles that match no query: each gets a label beyond every query and gallery label (a
    query id absent from the gallery must not become a distractor's)."""
    if options.distractors is None:
        return gallery
    extra = encoder.side(Path(options.distractors).resolve(), task.gallery_view, perturbed=False)
    first = max(query.labels.max(initial=0), gallery.labels.max(initial=0), len(encoder.id_table or ())) + 1
    labels = first + np.arange(len(extra.labels))
    return _Side(np.concatenate([gallery.features, extra.features]), np.concatenate([gallery.labels, labels]),
                 gallery.paths + extra.paths)


def _draw(task: Task, query: _Side, gallery: _Side, qf: np.ndarray, gf: np.ndarray, model, encoder: _Encoder,
          options: EvalOptions, checkpoint: Path) -> list[Path]:
    """Top-5 retrieval strips (paper Fig. 9) and activation heatmaps (Fig. 8) for the first queries."""
    import torch

    from lpn_edge.data.images import load_rgb
    from lpn_edge.eval.metrics import rank_gallery
    from lpn_edge.eval.plots import STRIP_LEGEND, StripRow, heatmap_panel, retrieval_grid

    picks = np.linspace(0, len(query.labels) - 1, num=min(options.plots, len(query.labels))).astype(int)
    top = rank_gallery(qf[picks], gf, k=min(5, len(gallery.labels)))
    rows = [StripRow(query.paths[q], [gallery.paths[g] for g in ranked],
                     [bool(gallery.labels[g] == query.labels[q]) for g in ranked],
                     scores=[float(gf[g] @ qf[q]) for g in ranked],
                     title=f"{task.name}   query {q}: {_query_id(query.paths[q])}")
            for q, ranked in zip(picks, top)]
    out_dir = checkpoint.parent / f"{checkpoint.stem}-plots"
    strips = retrieval_grid(rows, out_dir / f"{task.name}-retrieval.png", legend=STRIP_LEGEND)
    transform = encoder.transform(perturbed=False)
    images = [load_rgb(query.paths[q]) for q in picks]
    from lpn_edge.precision import exact_fp32

    with torch.no_grad(), exact_fp32():
        batch = torch.stack([transform(image) for image in images])
        device = next(model.parameters()).device
        maps = model.feature_map(batch.to(device), task.query_view).mean(dim=1).cpu().numpy()
    heatmaps = heatmap_panel(
        images, list(maps), out_dir / f"{task.name}-heatmaps.png",
        title=f"{task.name}: where the {task.query_view} features fire (channel mean of the last feature map)",
        labels=[f"query {q}: {_query_id(query.paths[q])}" for q in picks])
    return [strips, heatmaps]


def _query_id(path: Path) -> str:
    """'<class id>/<file>' of an image in a class folder: what a person looks up in the data set."""
    return f"{path.parent.name}/{path.name}"
