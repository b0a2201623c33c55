"""`export_model`: checkpoint -> ONNX / TensorRT / pt2 artifacts, each checked against PyTorch before it is kept.

Order of work: refuse bad options (no work done), load the checkpoint, then per format: write under a temporary
name, check parity, rename. ONNX comes first because TensorRT builds from it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export import onnxrt
from lpn_edge.export.formats import MIN_CALIBRATION_IMAGES, ExportRequest, check_against_model, check_modules, \
    check_request
from lpn_edge.export.images import DEFAULT_PARITY_DATA, ParitySet, calibration_images, calibration_set, list_images, \
    parity_sets
from lpn_edge.export.metadata import artifact_metadata, rewrite_onnx_metadata
from lpn_edge.export.parity import ParityFigures, compare, require
from lpn_edge.export.reference import reference_device, run_module
from lpn_edge.export.staging import Staging


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str  # "onnx", "trt" or "pt2"
    precision: str
    role: str  # "embedding", "feature_map" (split graph), "split_heads", "sidecar", "timing_cache", ...


@dataclass
class ExportResult:
    """What `export_model` wrote and how each artifact compared with PyTorch."""

    artifacts: list[Artifact] = field(default_factory=list)
    parity: list[ParityFigures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # decisions the user must know about (device, data used, ...)

    def paths(self, role: str | None = None) -> list[Path]:
        return [a.path for a in self.artifacts if role is None or a.role == role]

    def lines(self) -> list[str]:
        """Human-readable summary: notes, artifacts, parity figures."""
        out = [f"note: {note}" for note in self.notes]
        out += [f"wrote {a.path} ({a.format}, {a.precision}, {a.role})" for a in self.artifacts]
        out += [f"parity: {f.line()}" for f in self.parity]
        return out


@dataclass
class GraphVariant:
    """One graph to export: the full embedding model, or the split backbone whose heads run outside the graph."""

    name: str  # "full" or "split"
    module: torch.nn.Module  # images (N, 3, H, W) -> output
    output_name: str  # "embedding" or "feature_map"
    stem: str  # file name without suffix
    metadata: dict
    heads: dict[str, np.ndarray] | None = None  # split heads: (N, C, h, w) feature map -> embedding

    def to_embedding(self, outputs: np.ndarray) -> np.ndarray:
        """The graph's output -> (N, D) embedding."""
        if self.heads is None:
            return outputs
        from lpn_edge.export.split_heads import split_head_embedding

        return split_head_embedding(outputs, self.heads)


def export_model(checkpoint: str | Path, out_dir: str | Path, formats: set[str], precision: str = "fp32",
                 calib_dir: str | Path | None = None, view: str = "drone", batch: tuple[int, int, int] = (1, 8, 32),
                 size: tuple[int, int] | None = None, split: bool = False, flip: bool = True, opset: int = 18,
                 workspace_mb: int = 2048, *, parity_queries: int = 32, parity_gallery: int = 64,
                 parity_data: str | Path | None = DEFAULT_PARITY_DATA,
                 progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export an lpn-edge checkpoint and check every artifact against the PyTorch model.

    formats: subset of {"onnx", "trt", "pt2"} ("trt" implies "onnx"). precision: "fp32", "fp16" (TensorRT only) or
    "int8" (needs `calib_dir`). batch: (min, opt, max) for the TensorRT profile and the pt2 batch range; the ONNX
    batch is unbounded. size: (H, W) input pixels, default the checkpoint's image_size. split: also write the
    backbone-only graph (feature map (N, C, h, w) out) and its folded heads (.npz). flip: bake test-time flip into the
    graphs. Parity uses `parity_queries` + `parity_gallery` random images, and as many real ones from `parity_data`
    (University-1652 layout) when present. `progress` receives one line per step (e.g. `print`).

    Raises LpnEdgeError (one line) for refused options, a bad checkpoint, a failed export or a failed parity check;
    an artifact that failed its check is deleted, never left under its final name.
    """
    request = check_request(set(formats), precision, calib_dir, view, batch, size, split, flip, opset, workspace_mb)
    check_modules(request)
    if "trt" in request.formats:
        from lpn_edge.export.tensorrt import require_tensorrt

        require_tensorrt()  # before the ONNX export: without TensorRT the user gets one line, not a wasted export
    if "pt2" in request.formats:
        from lpn_edge.export.pt2 import require_compiler

        require_compiler()
    if request.calib_dir is not None:
        found = len(list_images(request.calib_dir))
        if found < MIN_CALIBRATION_IMAGES:
            raise LpnEdgeError(f"--calib {request.calib_dir} holds {found} images; int8 calibration needs at least "
                               f"{MIN_CALIBRATION_IMAGES}")
    job = _ExportJob(request, Path(checkpoint), Path(out_dir), parity_queries, parity_gallery,
                     Path(parity_data) if parity_data else None, progress or (lambda line: None))
    job.run()
    return job.result


class _ExportJob:
    """State shared by the formats of one export: the model, its variants, parity images and references."""

    def __init__(self, request: ExportRequest, checkpoint: Path, out_dir: Path, queries: int, gallery: int,
                 parity_data: Path | None, progress: Callable[[str], None]) -> None:
        from lpn_edge.checkpoint import load_model, read_checkpoint
        from lpn_edge.fileio import file_fingerprint
        from lpn_edge.model.backbones import feature_stride
        from lpn_edge.export.pooling import ExportEmbedding
        from lpn_edge.model.lpn import EmbeddingModel

        self.request, self.out_dir, self.progress = request, out_dir, progress
        self.result = ExportResult()
        payload = read_checkpoint(checkpoint)  # one-line error for a missing or foreign file
        self.config = payload["config"]
        self.model = load_model(checkpoint, "cpu")
        cfg = self.model.config
        self.size = check_against_model(request, cfg, feature_stride(cfg.backbone, cfg.stride))
        self.embedding_model = EmbeddingModel(self.model, request.view, request.flip).eval()  # checks the view
        # What is exported: the same embedding with pooling in its exportable form (see export.pooling); the
        # model's own `embed` (embedding_model) stays the parity reference.
        self.export_module = ExportEmbedding(self.model, request.view, request.flip).eval()
        self.checkpoint, self.fingerprint = checkpoint, file_fingerprint(checkpoint)
        self.base = f"{checkpoint.stem}-{request.view}"
        self.calibration = (calibration_images(request.calib_dir, self.size, MIN_CALIBRATION_IMAGES)
                            if request.calib_dir is not None else None)
        self.sets = parity_sets(self.size, queries, gallery, parity_data)
        if len(self.sets) == 1:
            self.note(f"parity on random images only: no real images found at {parity_data}")
        if self.calibration is not None:
            # int8 scales are fitted to photos like the calibration images; noise images are out of that range, so
            # int8 artifacts are checked on (held-in) calibration images instead of random ones.
            self.int8_sets = [calibration_set(self.calibration.first(queries + gallery), queries, gallery)] + \
                self.sets[1:]
            self.note(f"int8 parity on {' and '.join(s.name for s in self.int8_sets)} images (not random noise, "
                      "which int8 scales fitted to photos are not meant for)")
        self._references: dict[str, np.ndarray] = {}
        self._reference_module: torch.nn.Module | None = None
        self.variants = [self._variant("full")] + ([self._variant("split")] if request.split else [])

    # -- building blocks -------------------------------------------------------------------------------------------

    @functools.cached_property
    def pooling(self):
        """The `PoolingSignature` of the exported view at the export size (what the full graph must pool with)."""
        from lpn_edge.export.pooling import pooling_signature

        return pooling_signature(self.model, self.request.view, self.size)

    def _variant(self, name: str) -> GraphVariant:
        request = self.request
        meta_args = dict(view=request.view, flip=request.flip, size=self.size, source=self.checkpoint,
                         source_fingerprint=self.fingerprint, opset=request.opset)
        if name == "full":
            return GraphVariant("full", self.export_module, "embedding", self.base,
                                artifact_metadata(self.config, output="embedding", **meta_args))
        from lpn_edge.export.split import SplitBackbone, fold_heads

        backbone = SplitBackbone(self.model, request.view, request.flip).eval()
        with torch.no_grad():
            feature_size = tuple(backbone(torch.zeros(1, 3, *self.size)).shape[-2:])
        heads = fold_heads(self.model, request.view, feature_size, flip_summed=request.flip)
        meta = artifact_metadata(self.config, output="feature_map", **meta_args)
        meta.update(flip_summed=request.flip, feature_size=list(feature_size))
        return GraphVariant("split", backbone, "feature_map", f"{self.base}.split", meta, heads)

    def reference(self, images: ParitySet) -> np.ndarray:
        """PyTorch fp32 embeddings of a parity set (computed once, on CUDA when present)."""
        if images.name not in self._references:
            device = reference_device()
            if self._reference_module is None:
                self._reference_module = (self.embedding_model if device.type == "cpu"
                                          else copy.deepcopy(self.embedding_model).to(device))
            self._references[images.name] = run_module(self._reference_module, images.images, device)
        return self._references[images.name]

    @property
    def reference_name(self) -> str:
        return f"pytorch-{reference_device().type}-fp32"

    def check_parity(self, artifact_name: str, backend: str, precision: str,
                     embed: Callable[[np.ndarray], np.ndarray]) -> None:
        """Embed every parity set with `embed` ((N, 3, H, W) -> (N, D)), record the figures, raise on failure."""
        figures = []
        for images in (self.int8_sets if precision == "int8" else self.sets):
            figures.append(compare(self.reference(images), embed(images.images), images.queries,
                                   artifact=artifact_name, backend=backend, precision=precision,
                                   image_set=images.name, reference_name=self.reference_name))
            self.progress(f"parity: {figures[-1].line()}")
        self.result.parity.extend(figures)
        require(figures)

    def note(self, text: str) -> None:
        """A decision the user must know about: printed now and kept in the result."""
        self.result.notes.append(text)
        self.progress(f"note: {text}")

    def add(self, path: Path, fmt: str, precision: str, role: str) -> None:
        artifact = Artifact(path, fmt, precision, role)
        if artifact not in self.result.artifacts:  # e.g. the timing cache shared by several engines
            self.result.artifacts.append(artifact)

    # -- formats ---------------------------------------------------------------------------------------------------

    def run(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in self.request.build_order:
            getattr(self, f"_build_{name}")()

    def _build_onnx(self) -> None:
        for variant in self.variants:
            self._onnx_fp32(variant)
        if self.request.precision == "int8":
            # The Q/DQ ONNX is the int8 artifact, and what every TensorRT version builds int8 engines from.
            for variant in self.variants:
                self._onnx_int8(variant)

    def _onnx_fp32(self, variant: GraphVariant) -> None:
        import onnx

        from lpn_edge.export.onnx_export import export_onnx
        from lpn_edge.export.pooling import pooling_outputs

        final = self.out_dir / f"{variant.stem}.onnx"
        self.progress(f"exporting {final.name} (ONNX opset {self.request.opset}, output {variant.output_name})")
        with Staging() as stage:
            tmp = stage.path(final)
            written = export_onnx(variant.module, self.size, tmp, output_name=variant.output_name,
                                  opset=self.request.opset, metadata={**variant.metadata, "precision": "fp32"})
            variant.metadata["opset"] = written
            if written != self.request.opset:
                self.note(f"{final.name}: opset {written}, not the requested {self.request.opset}: torch's ONNX "
                          f"exporter implements opset >= 18 and could not convert this graph down (TensorRT >= 8.6 "
                          f"and ONNX Runtime >= 1.14 read opset 18); pass opset=18 to silence this")
            if variant.heads is None:
                try:
                    pooling_outputs(onnx.load(str(tmp)), self.pooling)
                except LpnEdgeError as error:
                    raise LpnEdgeError(f"{final.name}: {error}") from None
            else:
                heads_final = self.out_dir / f"{variant.stem}.npz"
                from lpn_edge.export.split import save_split_heads

                save_split_heads(stage.path(heads_final), variant.heads, {**variant.metadata, "precision": "fp32"})
            self.check_parity(final.name, onnxrt.BACKEND, "fp32",
                              lambda images: variant.to_embedding(onnxrt.run_onnx(tmp, images)))
        self.add(final, "onnx", "fp32", variant.output_name)
        if variant.heads is not None:
            self.add(heads_final, "onnx", "fp32", "split_heads")

    def _onnx_int8(self, variant: GraphVariant) -> None:
        from lpn_edge.export.quantize import quantize_int8

        source = self.out_dir / f"{variant.stem}.onnx"
        final = self.out_dir / f"{variant.stem}.int8.onnx"
        self.progress(f"quantizing {final.name} (Q/DQ int8, {len(self.calibration)} calibration images)")
        with Staging() as stage:
            tmp = stage.path(final)
            report = quantize_int8(source, tmp, self.calibration)
            rewrite_onnx_metadata(tmp, {**variant.metadata, "precision": "int8", "quantization": report.summary()})
            self.note(f"{final.name}: {report.summary()}")
            self.check_parity(final.name, onnxrt.BACKEND, "int8",
                              lambda images: variant.to_embedding(onnxrt.run_onnx(tmp, images)))
        self.add(final, "onnx", "int8", variant.output_name)

    def _build_trt(self) -> None:
        from lpn_edge.export.tensorrt import build_and_check_engine

        for variant in self.variants:
            build_and_check_engine(self, variant)

    def _build_pt2(self) -> None:
        from lpn_edge.export.pt2 import build_and_check_pt2

        build_and_check_pt2(self, self.variants[0])


def variant_ring_weights(model, view: str, size: tuple[int, int]) -> np.ndarray:
    """The (h*w, n) float32 ring weight matrix the model uses for `view` at input size (H, W)."""
    from lpn_edge.model.partition import partition_matrix

    with torch.no_grad():
        feature_size = model.feature_map(torch.zeros(1, 3, *size), view).shape[-2:]
    kind = model.partition_kind(view)
    return partition_matrix(kind, int(feature_size[0]), int(feature_size[1]), model.config.parts).float().numpy()
