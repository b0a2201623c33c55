"""The GPU rows of the encoding benchmark (see `encode`). Written for an H100/H200-class card; on a machine without
a CUDA device `encode.run` skips them with the reason, and nothing here is imported.

Rows, each at every --batch size (DESIGN.md section 8 anchors: batch 1 and 64):
  reference  pytorch eager fp32 (input already on the GPU): the figure the targets are ratios of, with PyTorch's
             default numerics (cuDNN convolutions may use TF32, as the authors' code gets them; the row records
             both TF32 flags);
  pytorch eager fp16 channels_last, and the same replayed as a CUDA graph (static input buffer, one warm-up on a
             side stream, then `graph.replay()`): what generic PyTorch tools give;
  ONNX Runtime CUDA provider per ONNX artifact: `session.run` from host numpy (host copies) and I/O binding to
             device buffers that stay bound between calls (no host copies);
  TensorRT engine per .engine: the runtime's encoder from host numpy (host copies: copy in, execute, copy
             out) and `execute_async_v3` on its runner's buffers, filled once (no copies); one deserialised engine.
Every row but the no-copies ones carries its accuracy on the accuracy images (cosine, top-1 agreement) against the
CPU eager fp32 embeddings, as the CPU rows do: a fast row that computes the wrong thing shows it. A split graph
has no no-copies row (its backbone alone is not the embedding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpn_edge.bench.stats import measure, summarise

REFERENCE = "pytorch eager fp32 (cuda)"


def gpu_part(options, results, progress, torch, reference_path, artifacts, images, accuracy,
             reference_accuracy) -> None:
    from lpn_edge.bench.accuracy import accuracy_of
    from lpn_edge.bench.artifacts import ENGINE_SUFFIXES, reference_model

    model = None
    if reference_path is not None:
        model, _ = reference_model(reference_path, "cuda")
    else:
        results.skip("encode", REFERENCE, "no checkpoint for the reference")
    half = None
    if model is not None:
        import copy

        half = copy.deepcopy(model).half().to(memory_format=torch.channels_last)
    largest = max(options.batch)
    opened = []  # (row name, opener result): every artifact opened once, for all batch sizes
    openers = {".onnx": ("onnxruntime-cuda", OrtCuda), **{suffix: ("tensorrt", TensorRtEngine)
                                                           for suffix in ENGINE_SUFFIXES}}
    for path in artifacts:
        if path.suffix not in openers:
            continue
        kind, opener = openers[path.suffix]
        try:
            opened.append((f"{path.name} {kind}", opener(path, largest)))
        except Exception as error:  # noqa: BLE001 - no CUDA provider, no tensorrt, an engine for another GPU
            results.skip("encode", f"{path.name} {kind}", f"{type(error).__name__}: {error}")

    def check(run, name: str, precision: str) -> dict | None:
        try:
            return accuracy_of(run, name, precision, accuracy, reference_accuracy)
        except Exception as error:  # noqa: BLE001 - a path that cannot run the accuracy images: said, timed anyway
            results.skip("encode", f"{name}: accuracy", f"{type(error).__name__}: {error}")
            return None

    try:
        _time_batches(options, results, progress, torch, model, half, opened, images, check)
    finally:
        for _name, artifact in opened:
            artifact.close()


def _on_gpu(torch, module, view: str, half: bool = False):
    """(N, 3, H, W) float32 host images -> (N, D) float32 host embeddings of `module` on the GPU."""
    def run(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).cuda()
        if half:
            x = x.half().contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module.embed(x, view).float().cpu().numpy()

    return run


def _time_batches(options, results, progress, torch, model, half, opened, images, check) -> None:
    from lpn_edge.precision import tf32_flags

    sync = torch.cuda.synchronize
    accuracies: dict[str, dict | None] = {}
    if model is not None:
        accuracies[REFERENCE] = check(_on_gpu(torch, model, options.view), REFERENCE, "fp32")
        accuracies["pytorch eager fp16 channels_last (cuda)"] = check(_on_gpu(torch, half, options.view, half=True),
                                                                      "eager fp16", "fp16")
    for name, artifact in opened:
        accuracies[f"{name} (host copies)"] = check(artifact.encoder.embed, name, artifact.encoder.info.precision)
    tf32 = tf32_flags(torch)
    for batch in options.batch:
        host = np.ascontiguousarray(images[:batch]) if batch <= len(images) else \
            np.random.default_rng(batch).standard_normal((batch, *images.shape[1:]), dtype=np.float32)
        device = torch.from_numpy(host).cuda()
        functions = {}
        if model is not None:
            def eager(x=device):
                with torch.inference_mode():
                    return model.embed(x, options.view)

            functions[REFERENCE] = eager
            device_half = device.half().contiguous(memory_format=torch.channels_last)

            def eager_half(x=device_half):
                with torch.inference_mode():
                    return half.embed(x, options.view)

            functions["pytorch eager fp16 channels_last (cuda)"] = eager_half
            graph = cuda_graph(torch, half, device_half, options.view)
            if graph is not None:
                name = "pytorch fp16 channels_last CUDA graph replay"
                functions[name] = graph.replay
                accuracies[name] = check(graph.run, "CUDA graph", "fp16")
        for name, artifact in opened:
            try:
                with_copies, without_copies = artifact.functions(host)
            except Exception as error:  # noqa: BLE001 - e.g. a batch outside the engine's profile: said per row
                results.skip("encode", f"{name}, batch {batch}", f"{type(error).__name__}: {error}")
                continue
            functions[f"{name} (host copies)"] = with_copies
            if without_copies is not None:
                functions[f"{name} (no host copies)"] = without_copies
        if not functions:
            continue
        progress(f"encode: cuda, batch {batch}: {', '.join(functions)}")
        times = measure(functions, options.iters, options.warmup, sync=sync)
        reference = None
        if REFERENCE in times:
            reference = results.add("encode", REFERENCE, summarise(times.pop(REFERENCE), batch), device="cuda",
                                    batch=batch, precision="fp32", tf32=tf32, reference_row=True,
                                    accuracy=accuracies.get(REFERENCE))
        for name, samples in times.items():
            results.add("encode", name, summarise(samples, batch), reference=reference, device="cuda", batch=batch,
                        host_copies=None if name.startswith("pytorch") else "(host copies)" in name,
                        accuracy=accuracies.get(name))


class _Graph:
    """A captured `embed`: `replay` alone (timed), `run` any number of images through it (accuracy)."""

    def __init__(self, graph, static_input, static_output) -> None:
        self.graph, self.static_input, self.static_output = graph, static_input, static_output

    def replay(self) -> None:
        self.graph.replay()

    def run(self, images: np.ndarray) -> np.ndarray:
        import torch

        rows, out = len(self.static_input), []
        for start in range(0, len(images), rows):
            chunk = images[start:start + rows]
            padded = np.zeros((rows, *chunk.shape[1:]), np.float32)
            padded[:len(chunk)] = chunk
            self.static_input.copy_(torch.from_numpy(padded).to(self.static_input.device, self.static_input.dtype)
                                    .contiguous(memory_format=torch.channels_last))
            self.graph.replay()
            out.append(self.static_output[:len(chunk)].float().cpu().numpy())
        return np.concatenate(out)


def cuda_graph(torch, model, static_input, view: str):
    """`model.embed(static_input)` captured as a CUDA graph (None, with the reason printed, when capture fails)."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):  # warm-up outside the capture: cuDNN picks its algorithms, allocations happen
                model.embed(static_input, view)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_output = model.embed(static_input, view)
        return _Graph(graph, static_input, static_output)
    except Exception as error:  # noqa: BLE001 - capture is best-effort; the eager rows stand
        import warnings

        warnings.warn(f"CUDA graph capture failed ({type(error).__name__}: {error})", stacklevel=2)
        return None


class OrtCuda:
    """An ONNX artifact on the CUDA provider through the runtime's encoder, opened once: its embed (host copies), and
    its session run on the encoder runner's own I/O binding for the batch, filled once (no host copies)."""

    def __init__(self, path: Path, largest: int) -> None:
        from lpn_edge.runtime.encoders import open_encoder

        self.encoder = open_encoder(path, device="cuda", batch=largest)

    def functions(self, host: np.ndarray):
        """(run with host copies, run on bound device buffers) for the images `host`."""
        if self.encoder.info.backend == "split":
            return (lambda: self.encoder.embed(host)), None  # the backbone alone is not the embedding
        runner = self.encoder.runner
        binding, _output = runner.bind(host)  # the binding the encoder's own calls for this batch size use

        def without_copies():
            runner.session.run_with_iobinding(binding)  # synchronous: returns when the outputs are written

        return (lambda: self.encoder.embed(host)), without_copies

    def close(self) -> None:
        self.encoder.close()


class TensorRtEngine:
    """A serialized engine, opened once through the runtime's encoder (sidecar checked; pinned host buffers; host
    copies), and `execute_async_v3` alone on that encoder's EngineRunner: its own device buffers, filled once per
    batch size (no copies). The runner's context is shared, so setting its input shape here makes a split
    encoder's next call run eagerly and capture anew instead of replaying a graph of another shape."""

    def __init__(self, path: Path, largest: int) -> None:
        from lpn_edge.runtime.encoders import open_encoder

        self.encoder = open_encoder(path, device="cuda", batch=largest)
        self.runner = self.encoder.runner
        self.memory = self.runner.memory

    def functions(self, host: np.ndarray):
        """(the encoder from host images, the engine alone on resident device buffers) for the images `host`."""
        if self.encoder.info.backend == "split":
            return (lambda: self.encoder.embed(host)), None  # the backbone engine alone is not the embedding
        runner = self.runner
        runner.set_rows(len(host))
        self.memory.to_device(runner.device_input, np.ascontiguousarray(host, runner.input_dtype))

        def without_copies():
            runner.set_rows(len(host))  # a no-op unless another batch size ran in between
            if not runner.context.execute_async_v3(runner.stream):
                raise RuntimeError("TensorRT execution failed")
            self.memory.synchronize(runner.stream)

        return (lambda: self.encoder.embed(host)), without_copies

    def close(self) -> None:
        self.encoder.close()  # the runner's buffers, stream and graphs too
