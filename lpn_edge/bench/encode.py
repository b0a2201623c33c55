"""Encoding: preprocessed images -> embeddings, through each runtime artifact, against PyTorch eager fp32 `LPN.embed`
of the checkpoint (the reference), in the same run.

CPU: for each --threads count (ONNX Runtime intra-op threads and `torch.set_num_threads` alike) and --batch size,
the reference, each ONNX artifact as a plain ONNX Runtime session (only its thread count set: the "before") and as
the runtime opens it (`cpu_session_options`: the "after"), and split graphs and pt2 packages as `open_encoder` runs
them, timed interleaved call by call. Each artifact's accuracy
against the reference (cosine per image, top-1 agreement over a small retrieval set) is printed beside it.

GPU (torch sees a CUDA device): the reference eager fp32 and fp16 channels_last; PyTorch fp16 channels_last replayed
as a CUDA graph (the generic tool); each ONNX artifact on ONNX Runtime's CUDA provider with and without host copies
(I/O binding to device buffers); each TensorRT engine through the runtime's EngineRunner (host copies) and executed
on device-resident buffers (without). Input already on the GPU where "without host copies".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpn_edge.bench.accuracy import REFERENCE, accuracy_images, accuracy_of
from lpn_edge.bench.artifacts import (
    CHECKPOINT_SUFFIXES,
    ENGINE_SUFFIXES,
    artifact_info,
    find_reference,
    reference_model,
)
from lpn_edge.bench.options import BenchOptions, Results, cuda_or_reason, torch_or_reason
from lpn_edge.bench.stats import measure, summarise
from lpn_edge.errors import LpnEdgeError

SETTLE_SECONDS = 0.1  # pause between interleaved multi-threaded calls, so one pool's spinning stops first (stats)


@dataclass
class Subject:
    """One way of running one artifact: `run(images (N, 3, H, W) float32 host) -> (N, D)`."""

    name: str
    path: Path
    precision: str
    run: Callable[[np.ndarray], np.ndarray]
    host_copies: bool | None = None  # None: the backend does not distinguish (CPU)
    close: Callable[[], None] = field(default=lambda: None)


def image_size(options: BenchOptions, reference_config) -> tuple[int, int]:
    if reference_config is not None:
        return tuple(reference_config.model.image_size)
    for model in options.models:
        size = artifact_info(model).get("preprocessing", {}).get("size")
        if size:
            return tuple(size)
    raise LpnEdgeError("cannot tell the input size: give a checkpoint (--model or --reference) or lpn-edge artifacts")


def open_onnx_cpu(path: Path, threads: int, tuned: bool) -> Subject:
    """The artifact on ONNX Runtime's CPU provider: `tuned` as the runtime opens it (`open_encoder`, i.e.
    `cpu_session_options`), else a plain session with only its thread count set."""
    import onnxruntime as ort

    precision = artifact_info(path).get("precision", "fp32")
    if tuned:
        from lpn_edge.runtime.encoders import open_encoder

        encoder = open_encoder(path, device="cpu", threads=threads, batch=1 << 16)
        return Subject(f"{path.name} onnxruntime-cpu (lpn-edge session)", path, precision, encoder.embed)
    plain = ort.SessionOptions()
    plain.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Subject(f"{path.name} onnxruntime-cpu (plain session)", path, precision,
                   lambda images: session.run(None, {name: images})[0])


def open_encoder_cpu(path: Path, threads: int) -> Subject:
    """Any other runtime artifact (a split graph or its heads, a pt2 package) as `open_encoder` runs it on the CPU."""
    from lpn_edge.runtime.encoders import open_encoder

    encoder = open_encoder(path, device="cpu", threads=threads)  # its own batching, as in the runtime
    return Subject(f"{path.name} {encoder.info.provider}", path, encoder.info.precision, encoder.embed,
                   close=getattr(encoder, "close", lambda: None))


def run(options: BenchOptions, results: Results, progress: Callable[[str], None]) -> None:
    torch, no_torch = torch_or_reason()
    reference_path = find_reference(options)
    model = config = None
    if torch is None:
        results.skip("encode", REFERENCE, no_torch)
    elif reference_path is None:
        results.skip("encode", REFERENCE, "no checkpoint: pass one with --model or --reference (the artifacts' "
                                          "source_checkpoint was not found beside them)")
    else:
        model, config = reference_model(reference_path)
    size = image_size(options, config)
    artifacts = [m for m in options.models if m.suffix not in CHECKPOINT_SUFFIXES]
    onnx = [m for m in artifacts if m.suffix == ".onnx" and artifact_info(m).get("output", "embedding") == "embedding"]
    # split graphs (backbone on ONNX Runtime + numpy heads) and pt2 packages: as the runtime's encoders run them
    encoders = [m for m in artifacts if m not in onnx and m.suffix not in ENGINE_SUFFIXES]
    images = np.random.default_rng(0).standard_normal((max(options.batch), 3, *size), dtype=np.float32)
    accuracy = accuracy_images(options, size) if model is not None else None
    reference_accuracy = None
    if accuracy is not None:
        with torch.inference_mode():
            reference_accuracy = model.embed(torch.from_numpy(accuracy.images), options.view).numpy()
    if options.cpu_rows:
        cpu_part(options, results, progress, torch, model, onnx, encoders, images, accuracy, reference_accuracy)
    else:
        results.skip("encode", "CPU rows", "--device cuda: GPU rows only")
    gpu_torch, no_gpu = cuda_or_reason(options.device)
    if gpu_torch is None:
        results.skip("encode", "GPU rows (reference fp32/fp16 channels_last, CUDA graph, ONNX Runtime CUDA, "
                               "TensorRT)", no_gpu)
    else:
        from lpn_edge.bench.encode_gpu import gpu_part

        gpu_part(options, results, progress, gpu_torch, reference_path, artifacts, images, accuracy,
                 reference_accuracy)
    for m in artifacts:
        if m.suffix in ENGINE_SUFFIXES and gpu_torch is None:
            results.skip("encode", m.name, f"TensorRT engines run on a GPU: {no_gpu}")


def cpu_part(options, results, progress, torch, model, onnx, encoders, images, accuracy,
             reference_accuracy) -> None:
    accuracies: dict[Path, dict | None] = {}
    for threads in options.threads:
        subjects = []
        for path in onnx:
            subjects += [open_onnx_cpu(path, threads, tuned=False), open_onnx_cpu(path, threads, tuned=True)]
        subjects += [open_encoder_cpu(path, threads) for path in encoders]
        if torch is not None:
            torch.set_num_threads(threads)
        for subject in subjects:
            if subject.path not in accuracies:
                accuracies[subject.path] = accuracy_of(subject.run, subject.path.name, subject.precision, accuracy,
                                                       reference_accuracy)
        for batch in options.batch:
            batch_images = images[:batch]
            functions = {}
            if model is not None:
                tensor = torch.from_numpy(batch_images)

                def reference(tensor=tensor):
                    with torch.inference_mode():
                        return model.embed(tensor, options.view)

                functions[REFERENCE] = reference
            for subject in subjects:
                functions[subject.name] = (lambda s=subject, x=batch_images: s.run(x))
            progress(f"encode: cpu, {threads} thread(s), batch {batch}: {', '.join(functions)}")
            times = measure(functions, options.iters, options.warmup, settle=SETTLE_SECONDS if threads > 1 else 0.0)
            reference_row = None
            if model is not None:
                reference_row = results.add("encode", REFERENCE, summarise(times[REFERENCE], batch), device="cpu",
                                            batch=batch, threads=threads, precision="fp32", reference_row=True)
            for subject in subjects:
                results.add("encode", subject.name, summarise(times[subject.name], batch), reference=reference_row,
                            device="cpu", batch=batch, threads=threads, precision=subject.precision,
                            host_copies=subject.host_copies, accuracy=accuracies.get(subject.path))
        for subject in subjects:
            subject.close()
