"""The end-to-end locate loop, one frame at a time: a camera frame on disk (JPEG) -> decode -> preprocess -> encode
-> top-k over a synthetic gallery of --gallery-size tiles -> position, through the runtime's `Localizer`, with the
breakdown of each frame's time (decode, preprocess, encode, match medians), beside the reference loop measured in
the same run, frame for frame.

The reference loop is the authors' way with torch: PIL decode, their evaluation transform (bicubic resize,
ToTensor, ImageNet normalisation), eager fp32 `LPN.embed` with flip, then the query against the whole gallery as
one matmul and topk (their evaluation holds the features as float32 tensors; on the GPU the gallery stays in fp16,
DESIGN's matching anchor). `top1_agreement` is the share of timed frames whose best tile is the same in both loops.

The gallery is random unit rows stored as an lpn-edge index (fp16, memory-mapped) of each artifact's fingerprint,
with tile centres on a 50 m grid, so that the runtime refuses nothing and estimates positions as in flight.
Frames: drone photos of --data, else smooth random colour fields, 512 x 512 JPEG.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lpn_edge.bench.artifacts import (
    CHECKPOINT_SUFFIXES,
    ENGINE_SUFFIXES,
    artifact_info,
    find_reference,
    reference_model,
)
from lpn_edge.bench.match import synthetic_gallery
from lpn_edge.bench.options import BenchOptions, Results, cuda_or_reason, torch_or_reason
from lpn_edge.bench.stats import measure, summarise

REFERENCE = "reference loop (PIL, torchvision transform, eager fp32, matmul + topk)"
STEPS = ("decode", "preprocess", "encode", "match")
FRAME_SIZE = (512, 512)
FRAMES = 16  # distinct frame files, cycled
TOP_K = 5
GRID_DEGREES = 0.00045  # about 50 m of latitude between neighbouring tile centres
SETTLE_SECONDS = 0.1  # as encode: let one pool's spinning workers sleep before the other loop's frame


def frame_files(options: BenchOptions, folder: Path, count: int = FRAMES) -> list[Path]:
    """`count` JPEG frames: the drone photos of --data while they last, then random colour fields written here."""
    from lpn_edge.bench.subject import colour_field
    from lpn_edge.runtime.preprocessing import find_images

    photos = find_images(options.data / "drone")[:count] if options.data and (options.data / "drone").is_dir() else []
    rng = np.random.default_rng(2)
    for i in range(len(photos), count):
        path = folder / f"frame-{i:03d}.jpg"
        colour_field(rng, FRAME_SIZE).save(path, quality=90)
        photos.append(path)
    return photos


def write_gallery(folder: Path, info, rows: int) -> tuple[Path, np.ndarray]:
    """An index of `rows` random unit fp16 embeddings for the encoder `info` describes; (path, the embeddings)."""
    from lpn_edge.runtime.gallery import write_index
    from lpn_edge.runtime.localize import GALLERY_VIEW

    embeddings = synthetic_gallery(rows, info.dim)
    side = int(np.ceil(np.sqrt(rows)))  # tiles on a square grid, row by row
    cell = np.arange(rows)
    path = write_index(folder / f"gallery-{info.fingerprint[:12]}-{info.dim}.lpnidx", embeddings,
                       [f"{i:07d}" for i in range(rows)], fingerprint=info.fingerprint, view=GALLERY_VIEW,
                       latitude=47.0 + (cell // side) * GRID_DEGREES, longitude=8.0 + (cell % side) * GRID_DEGREES,
                       input_size=info.input_size, source={"synthetic": "lpn-edge bench locate"})
    return path, embeddings


class _Scene:
    """What every row of one run shares: the frames, and per encoder (fingerprint, dim) one gallery index and, per
    device, its copy as the reference loop holds it (written and copied once, not per row)."""

    def __init__(self, options: BenchOptions, folder: Path, progress: Callable[[str], None]) -> None:
        self.options, self.folder, self.progress = options, folder, progress
        self.frames = frame_files(options, folder)
        self._galleries: dict[tuple[str, int], tuple[Path, np.ndarray]] = {}
        self._tensors: dict[tuple[str, int, str], object] = {}

    def gallery(self, info) -> Path:
        key = (info.fingerprint, info.dim)
        if key not in self._galleries:
            self.progress(f"locate: writing a {self.options.gallery_size} x {info.dim} fp16 gallery index")
            self._galleries[key] = write_gallery(self.folder, info, self.options.gallery_size)
        return self._galleries[key][0]

    def reference_gallery(self, torch, info, device: str):
        """The gallery as the reference holds it: float32 on the CPU (their evaluation's features), fp16 on a GPU."""
        key = (info.fingerprint, info.dim, device)
        if key not in self._tensors:
            self.gallery(info)
            embeddings = self._galleries[(info.fingerprint, info.dim)][1]
            self._tensors[key] = torch.from_numpy(embeddings if device == "cuda" else
                                                  embeddings.astype(np.float32)).to(device)
        return self._tensors[key]


def reference_loop(torch, model, config, view: str, gallery, device: str) -> Callable[[Path], int]:
    """The reference's frame -> best gallery row, on `device` (the gallery tensor already there)."""
    from PIL import Image

    from lpn_edge.data.transforms import eval_transform

    transform = eval_transform(tuple(config.model.image_size))

    def locate(path: Path) -> int:
        with torch.inference_mode():
            image = transform(Image.open(path).convert("RGB")).unsqueeze(0).to(device)
            query = model.embed(image, view)
            scores = gallery @ query[0].to(gallery.dtype)
            return int(torch.topk(scores, TOP_K).indices[0])

    return locate


def run(options: BenchOptions, results: Results, progress: Callable[[str], None]) -> None:
    artifacts = [m for m in options.models if m.suffix not in CHECKPOINT_SUFFIXES
                 and artifact_info(m).get("output", "embedding") == "embedding"]
    if not artifacts:
        results.skip("locate", "all", "no runtime artifact among --model (the loop runs exported models)")
        return
    torch, no_torch = torch_or_reason()
    reference_path = find_reference(options) if torch is not None else None
    reference = None  # (model, config)
    if torch is None:
        results.skip("locate", REFERENCE, no_torch)
    elif reference_path is None:
        results.skip("locate", REFERENCE, "no checkpoint: pass one with --model or --reference")
    else:
        reference = reference_model(reference_path)
    gpu_torch, no_gpu = cuda_or_reason(options.device)
    with tempfile.TemporaryDirectory(prefix="lpn-bench-locate-") as scratch:
        scene = _Scene(options, Path(scratch), progress)
        for path in artifacts if options.cpu_rows else ():
            if path.suffix in ENGINE_SUFFIXES:
                results.skip("locate", f"{path.name} on the CPU", "TensorRT engines run on a GPU")
                continue
            for threads in options.threads:
                loop_rows(scene, results, path, "cpu", threads, torch, reference)
        if gpu_torch is None:
            results.skip("locate", "GPU rows (ONNX Runtime CUDA, TensorRT; GPU matching)", no_gpu)
            return
        if reference is not None:
            reference = (reference[0].cuda(), reference[1])  # after the CPU rows: in place
        for path in artifacts:
            loop_rows(scene, results, path, "cuda", None, gpu_torch, reference)


def loop_rows(scene: _Scene, results: Results, path: Path, device: str, threads: int | None, torch,
              reference) -> None:
    """Time the runtime's loop for one artifact on one device (CPU: with `threads`) beside the reference loop
    (`reference`: (model, config) or None), frame for frame."""
    from lpn_edge.errors import LpnEdgeError
    from lpn_edge.runtime.encoders import open_encoder
    from lpn_edge.runtime.localize import Localizer

    try:
        encoder = open_encoder(path, device=device, threads=threads)
    except LpnEdgeError as exc:
        results.skip("locate", f"{path.name} on {device}", str(exc))
        return
    with encoder, Localizer(encoder, scene.gallery(encoder.info), top_k=TOP_K) as localizer:
        _time_loops(scene, results, path, device, threads, torch, reference, encoder, localizer)


def _time_loops(scene, results, path, device, threads, torch, reference, encoder, localizer) -> None:
    options = scene.options
    cycle, runtime_best, breakdowns = itertools.cycle(scene.frames), [], []

    def runtime_frame():
        location = localizer.locate(next(cycle))
        runtime_best.append(location.tiles[0])
        breakdowns.append(location.timings)

    functions = {}
    reference_best: list[int] = []
    if reference is not None:
        if threads is not None:
            torch.set_num_threads(threads)
        gallery = scene.reference_gallery(torch, encoder.info, device)
        locate = reference_loop(torch, *reference, options.view, gallery, device)
        reference_cycle = itertools.cycle(scene.frames)
        functions[REFERENCE] = lambda: reference_best.append(locate(next(reference_cycle)))
    name = f"{path.name} {encoder.info.provider} + {localizer.engine} matching"
    functions[name] = runtime_frame
    setting = f"{device}, {threads} thread(s)" if threads else device
    scene.progress(f"locate: {setting}, {options.gallery_size} tiles: {', '.join(functions)}")
    times = measure(functions, options.iters, options.warmup,
                    sync=torch.cuda.synchronize if device == "cuda" else None,
                    settle=SETTLE_SECONDS if device == "cpu" and threads > 1 else 0.0)
    details = {"device": device, "batch": 1, "threads": threads, "gallery": options.gallery_size,
               "engine": localizer.engine, "precision": encoder.info.precision}
    reference_row = None
    if reference is not None:
        reference_row = results.add("locate", REFERENCE, summarise(times[REFERENCE]), reference_row=True,
                                    **{**details, "engine": "torch matmul + topk", "precision": "fp32"})
    timed = breakdowns[options.warmup:]
    row = results.add("locate", name, summarise(times[name]), reference=reference_row, **details,
                      breakdown_ms={step: float(np.median([t[step] for t in timed])) * 1e3 for step in STEPS})
    if reference is not None:
        theirs = [localizer.tile_id(best) for best in reference_best[options.warmup:]]
        row["top1_agreement"] = float(np.mean([a == b for a, b in zip(runtime_best[options.warmup:], theirs)]))
