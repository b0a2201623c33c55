"""`export_model(checkpoint, out_dir, options)`: checkpoint -> ONNX / TensorRT / pt2 artifacts, each checked against
PyTorch before it is kept.

Order of work: refuse bad options (no work done: `options.check_options`, the Python modules of every format,
TensorRT and its GPU once, the compiler, the calibration folder), read the checkpoint once, then per format in
table order (`formats.FORMATS`, whose `builder` column names the `ExportJob` step): write under a temporary name
(`fileio.Staging`), check parity, rename. The format modules (`onnx_export`, `quantize`, `tensorrt`, `pt2`) are
plain functions; this job composes them and owns the parity checks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.formats import FORMATS
from lpn_edge.export.int8_placements import Int8Placement, placements_for
from lpn_edge.export.options import (
    MIN_CALIBRATION_IMAGES,
    ExportOptions,
    check_against_model,
    check_modules,
    check_options,
)
from lpn_edge.export.parity import ParityFigures, ParitySet, calibration_set, compare, parity_sets, require
from lpn_edge.export.reference import reference_device, run_module
from lpn_edge.fileio import Staging
from lpn_edge.runtime.artifact import artifact_metadata, sidecar_path, write_sidecar
from lpn_edge.runtime.onnx_runner import OnnxRunner


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
    pooled: list[str] | None = None  # names of the pooled tensors in its fp32 ONNX (full graph), set when written

    def to_embedding(self, outputs: np.ndarray) -> np.ndarray:
        """The graph's output -> (N, D) embedding."""
        if self.heads is None:
            return outputs
        from lpn_edge.runtime.split_heads import split_head_embedding

        return split_head_embedding(outputs, self.heads)


def export_model(checkpoint: str | Path, out_dir: str | Path, options: ExportOptions, *,
                 progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export an lpn-edge checkpoint as `options` say and check every artifact against the PyTorch model.

    `progress` receives one line per step (e.g. `print`). Raises LpnEdgeError (one line) for refused options, a bad
    checkpoint, a failed export or a failed parity check; an artifact that failed its check is deleted, never left
    under its final name.
    """
    check_options(options)
    check_modules(options)
    progress = progress or (lambda line: None)
    notes: list[str] = []
    trt = None
    if "trt" in options.build_order:
        from lpn_edge.export.tensorrt import require_tensorrt

        trt = require_tensorrt(note=notes.append)  # before the ONNX export: no wasted export without TensorRT
    if "pt2" in options.build_order:
        from lpn_edge.export.pt2 import require_compiler

        require_compiler()
    calibration = None
    if options.calib is not None:
        from lpn_edge.export.calibration import calibration_paths

        calibration = calibration_paths(options.calib, MIN_CALIBRATION_IMAGES)  # before any work is done
    job = ExportJob(options, Path(checkpoint), Path(out_dir), progress, trt, calibration)
    for text in notes:
        job.note(text)
    job.run()
    return job.result


class ExportJob:
    """One export: the model read once, its graph variants, parity images and PyTorch references, and one step
    per format (`FORMATS[name].builder`)."""

    def __init__(self, options: ExportOptions, checkpoint: Path, out_dir: Path, progress: Callable[[str], None],
                 trt, calibration_paths: list[Path] | None) -> None:
        from lpn_edge.checkpoint import model_from_payload, read_checkpoint
        from lpn_edge.export.calibration import CalibrationImages
        from lpn_edge.export.pooling import pooling_signature
        from lpn_edge.fileio import file_fingerprint
        from lpn_edge.model.backbones import feature_stride
        from lpn_edge.model.lpn import EmbeddingModel

        self.options, self.out_dir, self.progress, self.trt = options, out_dir, progress, trt
        self.result = ExportResult()
        payload = read_checkpoint(checkpoint)  # one-line error for a missing or foreign file; read once
        self.config = payload["config"]
        self.model = model_from_payload(payload, checkpoint)
        cfg = self.model.config
        self.size = check_against_model(options, cfg, feature_stride(cfg.backbone, cfg.stride))
        # What is exported, and the parity reference of every artifact: the model's own `embed`.
        self.embedding_model = EmbeddingModel(self.model, options.view, options.flip).eval()  # checks the view
        self.pooling = pooling_signature(self.model, options.view, self.size)  # what the full graph pools with
        self.checkpoint, self.fingerprint = checkpoint, file_fingerprint(checkpoint)
        self.base = f"{checkpoint.stem}-{options.view}"
        self.calibration = (CalibrationImages(tuple(calibration_paths), self.size)
                            if calibration_paths is not None else None)
        queries, gallery = options.parity_queries, options.parity_gallery
        self.sets = parity_sets(self.size, queries, gallery, options.parity_data)
        if options.parity_data is None:
            self.note("parity on random images only: no real images given (--parity-data DIR adds them)")
        elif len(self.sets) == 1:
            self.note(f"parity on random images only: too few real images at {options.parity_data}")
        self.int8_sets = self.sets
        if self.calibration is not None:
            # int8 scales are fitted to photos like the calibration images; noise images are out of that range, so
            # int8 artifacts are checked on (held-in) calibration images instead of random ones.
            self.int8_sets = [calibration_set(self.calibration.first(queries + gallery), queries, gallery)] + \
                self.sets[1:]
            self.note(f"int8 parity on {' and '.join(s.name for s in self.int8_sets)} images (not random noise, "
                      "which int8 scales fitted to photos are not meant for)")
        self._references: dict[str, np.ndarray] = {}
        self._reference_module: torch.nn.Module | None = None
        self.variants = [self._variant("full")] + ([self._variant("split")] if options.split else [])

    # -- building blocks -------------------------------------------------------------------------------------------

    def _variant(self, name: str) -> GraphVariant:
        options = self.options
        meta_args = dict(view=options.view, flip=options.flip, size=self.size, source=self.checkpoint,
                         source_fingerprint=self.fingerprint, opset=options.opset)
        if name == "full":
            return GraphVariant("full", self.embedding_model, "embedding", self.base,
                                artifact_metadata(self.config, output="embedding", **meta_args))
        from lpn_edge.export.split import SplitBackbone, fold_heads

        backbone = SplitBackbone(self.model, options.view, options.flip).eval()
        heads = fold_heads(self.model, options.view, self.size, flip_summed=options.flip)
        meta = artifact_metadata(self.config, output="feature_map", **meta_args)
        meta.update(flip_summed=options.flip, feature_size=list(self.model.feature_map_size(self.size)))
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

    def check_parity(self, artifact_name: str, backend: str, precision: str,
                     embed: Callable[[np.ndarray], np.ndarray]) -> None:
        """Embed every parity set with `embed` ((N, 3, H, W) -> (N, D)), record the figures, raise on failure."""
        figures = []
        reference_name = f"pytorch-{reference_device().type}-fp32"
        for images in (self.int8_sets if precision == "int8" else self.sets):
            figures.append(compare(self.reference(images), embed(images.images), images.queries,
                                   artifact=artifact_name, backend=backend, precision=precision,
                                   image_set=images.name, reference_name=reference_name))
            self.progress(f"parity: {figures[-1].line()}")
        self.result.parity.extend(figures)
        require(figures)

    def check_onnx_parity(self, path: Path, final_name: str, precision: str, variant: GraphVariant) -> None:
        """Parity of an ONNX file run by ONNX Runtime on the CPU (the backend available everywhere)."""
        runner = OnnxRunner(path, providers=("cpu",))
        self.check_parity(final_name, runner.backend, precision,
                          lambda images: variant.to_embedding(runner.run(images)))

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
        for name in self.options.build_order:
            getattr(self, FORMATS[name].builder)()

    def build_onnx(self) -> None:
        for variant in self.variants:
            self._onnx_fp32(variant)
        if self.options.precision == "int8":
            # Two int8 graphs, one per consumer: the Q/DQ placement TensorRT fuses (what every TensorRT version
            # builds int8 engines from), and the one ONNX Runtime's CPU provider runs as int8 kernels.
            for variant in self.variants:
                for placement in placements_for(self.options.formats):
                    self._onnx_int8(variant, placement)

    def _onnx_fp32(self, variant: GraphVariant) -> None:
        from lpn_edge.export.onnx_export import export_onnx
        from lpn_edge.export.pooling import pooling_outputs
        from lpn_edge.runtime.split_heads import save_split_heads

        final = self.out_dir / f"{variant.stem}.onnx"
        opset = self.options.opset
        self.progress(f"exporting {final.name} (ONNX opset {opset}, output {variant.output_name})")
        with Staging() as stage:
            tmp = stage.path(final)
            written, proto = export_onnx(variant.module, self.size, tmp, output_name=variant.output_name,
                                         opset=opset, metadata={**variant.metadata, "precision": "fp32"})
            variant.metadata["opset"] = written
            if written != opset:
                self.note(f"{final.name}: opset {written}, not the requested {opset}: torch's ONNX exporter "
                          f"implements opset >= 18 and could not convert this graph down (TensorRT >= 8.6 and ONNX "
                          f"Runtime >= 1.14 read opset 18); pass opset=18 to silence this")
            if variant.heads is None:
                try:
                    variant.pooled = pooling_outputs(proto, self.pooling)
                except LpnEdgeError as error:
                    raise LpnEdgeError(f"{final.name}: {error}") from None
            else:
                heads_final = self.out_dir / f"{variant.stem}.npz"
                save_split_heads(stage.path(heads_final), variant.heads, {**variant.metadata, "precision": "fp32"})
            self.check_onnx_parity(tmp, final.name, "fp32", variant)
        self.add(final, "onnx", "fp32", variant.output_name)
        if variant.heads is not None:
            self.add(heads_final, "onnx", "fp32", "split_heads")

    def _onnx_int8(self, variant: GraphVariant, placement: Int8Placement) -> None:
        source = self.out_dir / f"{variant.stem}.onnx"
        final = self.out_dir / f"{variant.stem}.{placement.suffix}.onnx"
        self.progress(f"quantizing {final.name} (int8 for {placement.target}, {len(self.calibration)} calibration "
                      "images)")
        with Staging() as stage:
            tmp = stage.path(final)
            summary = placement.quantize(source, tmp, self.calibration, variant.metadata)
            self.note(f"{final.name}: {summary}")
            self.check_onnx_parity(tmp, final.name, "int8", variant)
        self.add(final, "onnx", "int8", variant.output_name)

    def build_trt(self) -> None:
        from lpn_edge.runtime.cuda_buffers import cuda_memory

        with cuda_memory() as memory:
            for variant in self.variants:
                self._engine(memory, variant)

    def _engine(self, memory, variant: GraphVariant) -> None:
        """Build the engine of one graph variant, check parity, then keep it with its sidecar.

        Every file of the step (engine, sidecar, the fp16 ONNX a strongly typed fp16 build parses) is written under
        a temporary name and renamed only after the engine passed its parity check.
        """
        from lpn_edge.export.tensorrt import build_engine, write_fp16_onnx
        from lpn_edge.export.trt_plan import plan_build
        from lpn_edge.fileio import file_fingerprint
        from lpn_edge.runtime.batching import run_in_batches
        from lpn_edge.runtime.trt_engine import EngineRunner, runtime_info

        trt, options, precision = self.trt, self.options, self.options.precision
        plan = plan_build(str(trt.__version__), precision)
        fp32_onnx = self.out_dir / f"{variant.stem}.onnx"
        final = self.out_dir / f"{variant.stem}.{precision}.engine"
        fp16_final = self.out_dir / f"{variant.stem}.fp16.onnx"
        info = runtime_info(trt, memory)
        sm = info["compute_capability"].replace(".", "")
        timing_cache = self.out_dir / f"timing-trt{trt.__version__}-sm{sm}.cache"
        lo, opt, hi = options.batch
        with Staging() as stage:
            self.progress(f"building {final.name} (TensorRT {trt.__version__}: {plan.describe()}; "
                          f"{info['gpu_name']}, batch {lo}:{opt}:{hi}, buffers via {memory.name})")
            if plan.onnx == "int8":
                source = self.out_dir / f"{variant.stem}.int8.onnx"  # the Q/DQ graph the ONNX step wrote and checked
            elif plan.onnx == "fp16":
                source = stage.path(fp16_final)
                write_fp16_onnx(fp32_onnx, source, variant.pooled, variant.metadata)
            else:
                source = fp32_onnx
            tmp = stage.path(final)
            # The pooled features are where the fp32 tail begins (the split graph has none: it ends at the map).
            facts = build_engine(trt, memory, source, tmp, plan=plan, batch=options.batch, size=self.size,
                                 workspace_mb=options.workspace_mb, timing_cache=timing_cache,
                                 fp32_tail_from=variant.pooled)
            facts["onnx_source"] = fp16_final.name if plan.onnx == "fp16" else source.name
            runner = EngineRunner(trt, memory, tmp)
            self.check_parity(final.name, f"tensorrt-{trt.__version__}", precision,
                              lambda images: variant.to_embedding(run_in_batches(runner.run, images, lo, hi)))
            meta = {**variant.metadata, "precision": precision, **info, "tensorrt_build": facts,
                    "artifact_fingerprint": file_fingerprint(tmp)}
            write_sidecar(stage.path(sidecar_path(final)), meta)
        self.add(final, "trt", precision, variant.output_name)
        self.add(sidecar_path(final), "trt", precision, "sidecar")
        self.add(timing_cache, "trt", precision, "timing_cache")
        if plan.onnx == "fp16":
            self.add(fp16_final, "onnx", "fp16", "trt_input")

    def build_pt2(self) -> None:
        """Compile the full embedding graph, check parity, then keep the package and its sidecar."""
        from lpn_edge.export.pt2 import compile_pt2, device_info, package_batch, pt2_runner
        from lpn_edge.fileio import file_fingerprint

        variant = self.variants[0]
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        final = self.out_dir / f"{variant.stem}.pt2"
        if device.type == "cpu":
            self.note(f"{final.name}: compiled for CPU (no CUDA device here); it runs on CPU only")
        self.progress(f"compiling {final.name} (AOTInductor, {device.type}; takes a while)")
        batch = package_batch(self.options.batch)
        module = variant.module if device.type == "cpu" else copy.deepcopy(variant.module).to(device)
        with Staging() as stage:
            tmp = stage.path(final)
            compile_pt2(module, self.size, tmp, batch, device)
            self.check_parity(final.name, f"aotinductor-{device.type}", "fp32", pt2_runner(tmp, device, batch))
            meta = {**variant.metadata, "precision": "fp32", "batch": list(batch), **device_info(device),
                    "artifact_fingerprint": file_fingerprint(tmp)}
            meta.pop("opset", None)  # an ONNX notion
            write_sidecar(stage.path(sidecar_path(final)), meta)
        self.add(final, "pt2", "fp32", variant.output_name)
        self.add(sidecar_path(final), "pt2", "fp32", "sidecar")
