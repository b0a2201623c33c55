"""The GPU rows of the encoding benchmark (see `encode`). Written for an H100/H200-class card; on a machine without
a CUDA device `encode.run` skips them with the reason, and nothing here is imported.

Rows, each at every --batch size (DESIGN.md section 8 anchors: batch 1 and 64):
  reference  pytorch eager fp32 (input already on the GPU): the figure the targets are ratios of;
  pytorch eager fp16 channels_last, and the same replayed as a CUDA graph (static input buffer, one warm-up on a
             side stream, then `graph.replay()`): what generic PyTorch tools give;
  ONNX Runtime CUDA provider per ONNX artifact: `session.run` from host numpy (host copies) and I/O binding to
             device buffers that stay bound between calls (no host copies);
  TensorRT engine per .engine/.plan: the runtime's EngineRunner.run from host numpy (host copies: allocation,
             copy in, execute, copy out) and `execute_async_v3` on buffers allocated and filled once (no copies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpn_edge.bench.stats import measure, summarise

REFERENCE = "pytorch eager fp32 (cuda)"


def gpu_part(options, results, progress, torch, reference_path, artifacts, images, accuracy,
             reference_accuracy) -> None:
    from lpn_edge.bench.artifacts import ENGINE_SUFFIXES, reference_model

    sync = torch.cuda.synchronize
    model = None
    if reference_path is not None:
        model, _ = reference_model(reference_path, "cuda")
    else:
        results.skip("encode", REFERENCE, "no checkpoint for the reference")
    half = None
    if model is not None:
        import copy

        half = copy.deepcopy(model).half().to(memory_format=torch.channels_last)
    onnx = [m for m in artifacts if m.suffix == ".onnx"]
    engines = [m for m in artifacts if m.suffix in ENGINE_SUFFIXES]
    for batch in options.batch:
        host = np.ascontiguousarray(images[:batch]) if batch <= len(images) else \
            np.random.default_rng(batch).standard_normal((batch, *images.shape[1:]), dtype=np.float32)
        device = torch.from_numpy(host).cuda()
        functions = {}
        closers = []
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
                functions["pytorch fp16 channels_last CUDA graph replay"] = graph.replay
        for path in onnx:
            try:
                with_copies, without_copies, close = ort_cuda(path, host)
            except Exception as error:  # noqa: BLE001 - no CUDA provider in this onnxruntime build, and the like
                results.skip("encode", f"{path.name} onnxruntime-cuda", f"{type(error).__name__}: {error}")
                continue
            functions[f"{path.name} onnxruntime-cuda (host copies)"] = with_copies
            functions[f"{path.name} onnxruntime-cuda (no host copies)"] = without_copies
            closers.append(close)
        for path in engines:
            try:
                with_copies, without_copies, close = tensorrt_engine(path, host)
            except Exception as error:  # noqa: BLE001 - no tensorrt, an engine for another GPU: said per engine
                results.skip("encode", f"{path.name} tensorrt", f"{type(error).__name__}: {error}")
                continue
            functions[f"{path.name} tensorrt (host copies)"] = with_copies
            functions[f"{path.name} tensorrt (no host copies)"] = without_copies
            closers.append(close)
        if not functions:
            continue
        progress(f"encode: cuda, batch {batch}: {', '.join(functions)}")
        times = measure(functions, options.iters, options.warmup, sync=sync)
        reference = None
        if REFERENCE in times:
            reference = results.add("encode", REFERENCE, summarise(times.pop(REFERENCE), batch), device="cuda",
                                    batch=batch, precision="fp32", reference_row=True)
        for name, samples in times.items():
            results.add("encode", name, summarise(samples, batch), reference=reference, device="cuda", batch=batch,
                        host_copies=None if name.startswith("pytorch") else "(host copies)" in name)
        for close in closers:
            close()


class _Graph:
    def __init__(self, graph) -> None:
        self.graph = graph

    def replay(self) -> None:
        self.graph.replay()


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
            model.embed(static_input, view)
        return _Graph(graph)
    except Exception as error:  # noqa: BLE001 - capture is best-effort; the eager rows stand
        import warnings

        warnings.warn(f"CUDA graph capture failed ({type(error).__name__}: {error})", stacklevel=2)
        return None


def ort_cuda(path: Path, host: np.ndarray):
    """(run with host copies, run on bound device buffers, close) for an ONNX artifact on the CUDA provider."""
    import onnxruntime as ort

    from lpn_edge.runtime.onnx_runner import OnnxRunner

    runner = OnnxRunner(path, ("cuda", "cpu"), batch=len(host))
    session = runner.session
    input_value = ort.OrtValue.ortvalue_from_numpy(host, "cuda", 0)
    output_shape = session.run(None, {runner.input_name: host})[0].shape
    output_value = ort.OrtValue.ortvalue_from_shape_and_type(output_shape, np.float32, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(runner.input_name, input_value)
    binding.bind_ortvalue_output(runner.output_name, output_value)

    def without_copies():
        session.run_with_iobinding(binding)  # synchronous: returns when the outputs are written

    with_copies = runner.run
    try:  # the runtime's own GPU encoder (IO binding, buffers reused) when the encoders module is there
        from lpn_edge.runtime.encoders import open_encoder

        with_copies = open_encoder(path, device="cuda", batch=len(host)).embed
    except ImportError:
        pass
    return (lambda: with_copies(host)), without_copies, (lambda: None)


def tensorrt_engine(path: Path, host: np.ndarray):
    """(EngineRunner.run from host, execute on resident buffers, close) for a serialized engine."""
    import tensorrt as trt

    from lpn_edge.runtime.artifact import check_engine_sidecar, sidecar_path
    from lpn_edge.runtime.cuda_buffers import cuda_memory
    from lpn_edge.runtime.trt_engine import INPUT_NAME, EngineRunner, runtime_info

    memory = cuda_memory()
    if sidecar_path(path).is_file():
        check_engine_sidecar(path, runtime_info(trt, memory))
    runner = EngineRunner(trt, memory, path)
    context = runner.context
    images = np.ascontiguousarray(host, np.dtype(trt.nptype(runner.engine.get_tensor_dtype(INPUT_NAME))))
    if not context.set_input_shape(INPUT_NAME, tuple(images.shape)):
        raise RuntimeError(f"engine refuses batch {len(images)} (outside its optimisation profile)")
    output_shape = tuple(context.get_tensor_shape(runner.output))
    out_dtype = np.dtype(trt.nptype(runner.engine.get_tensor_dtype(runner.output)))
    device_in = memory.alloc(images.nbytes)
    device_out = memory.alloc(int(np.prod(output_shape)) * out_dtype.itemsize)
    memory.to_device(device_in, images)
    context.set_tensor_address(INPUT_NAME, device_in)
    context.set_tensor_address(runner.output, device_out)

    def without_copies():
        context.execute_async_v3(runner.stream)
        memory.synchronize(runner.stream)

    try:  # the runtime's encoder (pinned host buffers, device buffers reused) when the encoders module is there
        from lpn_edge.runtime.encoders import open_encoder

        encoder = open_encoder(path, device="cuda", batch=len(host))

        def with_copies():
            encoder.embed(host)
    except ImportError:
        def with_copies():
            runner.run(host)
            context.set_tensor_address(INPUT_NAME, device_in)  # run() pointed the context at its own buffers
            context.set_tensor_address(runner.output, device_out)

    def close():
        memory.free(device_in)
        memory.free(device_out)

    return with_copies, without_copies, close
