"""TensorRT engines from the exported ONNX, with the TensorRT Python API (10.x, as JetPack 6 ships, and 11.x).

Build: `OnnxParser` -> network, one optimisation profile from `--batch` for the `images` input, a workspace limit,
a timing cache reused across builds (a file per TensorRT version and GPU beside the engines), then
`build_serialized_network`. Which ONNX is parsed and with which typing and flags is decided per TensorRT version by
`trt_plan.plan_build` (strongly typed from 10.12; fp16 and int8 give the same artifact on every version: fp16
backbone with an fp32 tail, Q/DQ int8 with everything else fp32). Run (parity): `Runtime.deserialize_cuda_engine`,
`set_input_shape`, `set_tensor_address`, `execute_async_v3`.

Nothing here has been run in this project's CI (no TensorRT there): the tests that need it are marked `trt` and
skip without it. The decisions (`trt_plan`) and the ONNX graphs the engines are built from are tested on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.batching import run_in_batches
from lpn_edge.export.formats import FORMATS
from lpn_edge.export.metadata import set_onnx_metadata, sidecar_path, write_sidecar
from lpn_edge.export.staging import Staging
from lpn_edge.export.trt_plan import BuildPlan, LayerInfo, check_gpu, fp32_tail_layers, plan_build

INPUT_NAME = "images"


def require_tensorrt(note=None):
    """The `tensorrt` module, after checking everything an engine build needs; one-line errors otherwise.

    The GPU is looked for through the CUDA driver (cuda-python or pycuda), not torch: a CPU-only torch build on a
    GPU machine can still build engines (its parity reference then runs on the CPU, said through `note`).
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise LpnEdgeError(f"--trt needs TensorRT, which is not installed: {FORMATS['trt'].install_hint}") from None
    plan_build(str(trt.__version__), "fp32")  # refuses TensorRT < 10
    import torch

    from lpn_edge.export.cuda_memory import cuda_device_count

    remark = check_gpu(cuda_device_count(), torch.version.cuda)
    if remark and note is not None:
        note(remark)
    return trt


def runtime_info(trt, memory) -> dict:
    """This machine as `check_engine_sidecar` compares it: TensorRT and CUDA versions, GPU name and capability."""
    return {"tensorrt_version": str(trt.__version__), **memory.device_info()}


def _make_logger(trt):
    class _Logger(trt.ILogger):
        """Keeps the builder's and parser's errors for the one-line message (TensorRT prints nothing itself)."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg) -> None:
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            elif int(severity) == int(trt.ILogger.Severity.WARNING):
                self.warnings.append(str(msg))

    return _Logger()


def build_engine(trt, memory, onnx_path: Path, engine_path: Path, *, plan: BuildPlan, batch: tuple[int, int, int],
                 size: tuple[int, int], workspace_mb: int, timing_cache: Path,
                 fp32_tail_from: list[str] | None = None) -> dict:
    """Parse `onnx_path` (the graph `plan.onnx` names), build as `plan` says, write the serialized engine to
    `engine_path`; returns facts for the sidecar.

    fp32_tail_from: the pooled-feature tensor names where the fp32 tail begins; with `plan.fp32_tail_constraints`
    their layers and everything downstream are pinned to FLOAT (None: the graph has no tail).
    """
    from lpn_edge.fileio import atomic_write_bytes

    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network_flags = 0
    for name in plan.network_flags:
        network_flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise LpnEdgeError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {'; '.join(errors)[:500]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    channels_hw = (3, *size)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (batch[0], *channels_hw), (batch[1], *channels_hw), (batch[2], *channels_hw))
    config.add_optimization_profile(profile)
    cleared = []
    for name in plan.cleared_flags:
        if hasattr(trt.BuilderFlag, name):  # TF32 is on by default: TF32 convolutions and matmuls would not be fp32
            config.clear_flag(getattr(trt.BuilderFlag, name))
            cleared.append(name)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    facts = {"strongly_typed": plan.strongly_typed, "build_plan": plan.describe(), "onnx_source": onnx_path.name,
             "builder_flags": list(plan.builder_flags), "cleared_flags": cleared, "workspace_mb": workspace_mb,
             "batch_profile": list(batch), "device_memory_library": memory.name}
    if plan.fp32_tail_constraints:  # None: a graph without tail (the split backbone ends at the feature map)
        facts["fp32_tail_layers"] = _pin_fp32_tail(trt, network, fp32_tail_from) if fp32_tail_from is not None else 0
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise LpnEdgeError(f"timing cache {timing_cache} does not fit this GPU / TensorRT {trt.__version__}; delete it")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LpnEdgeError(f"TensorRT {trt.__version__} could not build {engine_path.name} from {onnx_path.name}: "
                           f"{'; '.join(logger.errors)[:500] or 'no error reported'}")
    engine_path.write_bytes(memoryview(serialized).tobytes())
    atomic_write_bytes(timing_cache, memoryview(config.get_timing_cache().serialize()).tobytes())
    facts["builder_warnings"] = len(logger.warnings)
    return facts


def _pin_fp32_tail(trt, network, start_tensors: list[str]) -> int:
    """Set precision FLOAT and FLOAT output types on the tail layers of a weakly typed network (with
    `OBEY_PRECISION_CONSTRAINTS` set, TensorRT must honour them); returns how many layers were pinned.

    The ONNX parser names each layer output after the ONNX tensor it implements, so the pooled features are found
    by name; everything downstream of them is found by walking the network (`trt_plan.fp32_tail_layers`).
    """
    float_types = (trt.float32, trt.float16)
    layers = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        layers.append(LayerInfo(layer.name, tuple(t.name for t in inputs if t is not None),
                                tuple(t.name for t in outputs), tuple(t.dtype in float_types for t in outputs)))
    tail = fp32_tail_layers(layers, start_tensors)
    for index in tail:
        layer = network.get_layer(index)
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
    return len(tail)


class EngineRunner:
    """Runs a serialized engine on (N, 3, H, W) float32 images with the TensorRT runtime; N within the profile."""

    def __init__(self, trt, memory, engine_path: Path) -> None:
        self.trt, self.memory, self.logger = trt, memory, _make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise LpnEdgeError(f"TensorRT cannot load {engine_path.name}: {'; '.join(self.logger.errors)[:300]}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or len(outputs) != 1:
            raise LpnEdgeError(f"{engine_path.name}: expected one input {INPUT_NAME!r} and one output, found "
                               f"inputs {inputs} and outputs {outputs}")
        self.output = outputs[0]
        self.stream = memory.stream()

    def run(self, images: np.ndarray) -> np.ndarray:
        trt, memory, context = self.trt, self.memory, self.context
        input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME)))
        images = np.ascontiguousarray(images, input_dtype)
        if not context.set_input_shape(INPUT_NAME, tuple(images.shape)):
            raise LpnEdgeError(f"engine refuses input shape {images.shape} (outside its optimisation profile)")
        output = np.empty(tuple(context.get_tensor_shape(self.output)),
                          np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output))))
        device_in, device_out = memory.alloc(images.nbytes), memory.alloc(output.nbytes)
        try:
            memory.to_device(device_in, images)
            context.set_tensor_address(INPUT_NAME, device_in)
            context.set_tensor_address(self.output, device_out)
            if not context.execute_async_v3(self.stream):
                raise LpnEdgeError(f"TensorRT execution failed: {'; '.join(self.logger.errors)[:300]}")
            memory.synchronize(self.stream)
            memory.to_host(output, device_out)
        finally:
            memory.free(device_in)
            memory.free(device_out)
        return output.astype(np.float32)


def build_and_check_engine(job, variant) -> None:
    """Build the engine of one graph variant, check parity against PyTorch, then keep it with its sidecar.

    job: the pipeline's export job (request, paths, parity, result); variant: its `GraphVariant`. Every file of the
    step (engine, sidecar, the fp16 ONNX a strongly typed fp16 build parses) is written under a temporary name and
    renamed only after the engine passed its parity check.
    """
    import onnx

    from lpn_edge.export.cuda_memory import cuda_memory
    from lpn_edge.export.pooling import pooling_outputs
    from lpn_edge.fileio import file_fingerprint

    trt = require_tensorrt(note=job.note if variant.name == "full" else None)
    request, precision = job.request, job.request.precision
    plan = plan_build(str(trt.__version__), precision)
    fp32_onnx = job.out_dir / f"{variant.stem}.onnx"
    # The pooled features, where the fp32 tail begins (the split graph has no tail: it ends at the feature map).
    tail_from = pooling_outputs(onnx.load(str(fp32_onnx)), job.pooling) if variant.heads is None else None
    final = job.out_dir / f"{variant.stem}.{precision}.engine"
    fp16_final = job.out_dir / f"{variant.stem}.fp16.onnx"
    with cuda_memory() as memory, Staging() as stage:
        info = runtime_info(trt, memory)
        sm = info["compute_capability"].replace(".", "")
        timing_cache = job.out_dir / f"timing-trt{trt.__version__}-sm{sm}.cache"
        job.progress(f"building {final.name} (TensorRT {trt.__version__}: {plan.describe()}; {info['gpu_name']}, "
                     f"batch {request.batch[0]}:{request.batch[1]}:{request.batch[2]}, buffers via {memory.name})")
        if plan.onnx == "int8":
            source = job.out_dir / f"{variant.stem}.int8.onnx"  # the Q/DQ graph the ONNX step wrote and checked
        elif plan.onnx == "fp16":
            source = stage.path(fp16_final)
            write_fp16_onnx(fp32_onnx, source, tail_from, variant.metadata)
        else:
            source = fp32_onnx
        tmp = stage.path(final)
        facts = build_engine(trt, memory, source, tmp, plan=plan, batch=request.batch, size=job.size,
                             workspace_mb=request.workspace_mb, timing_cache=timing_cache, fp32_tail_from=tail_from)
        facts["onnx_source"] = fp16_final.name if plan.onnx == "fp16" else source.name
        runner = EngineRunner(trt, memory, tmp)
        job.check_parity(final.name, f"tensorrt-{trt.__version__}", precision,
                         lambda images: variant.to_embedding(
                             run_in_batches(runner.run, images, request.batch[0], request.batch[2])))
        meta = {**variant.metadata, "precision": precision, **info, "tensorrt_build": facts,
                "artifact_fingerprint": file_fingerprint(tmp)}
        write_sidecar(stage.path(sidecar_path(final)), meta)
    job.add(final, "trt", precision, variant.output_name)
    job.add(sidecar_path(final), "trt", precision, "sidecar")
    job.add(timing_cache, "trt", precision, "timing_cache")
    if plan.onnx == "fp16":
        job.add(fp16_final, "onnx", "fp16", "trt_input")


def write_fp16_onnx(source: Path, destination: Path, tail_from: list[str] | None, metadata: dict) -> None:
    """Write the fp16 copy of the ONNX graph `source` that strongly typed fp16 builds parse: fp16 up to the
    pooled features `tail_from`, fp32 from there on (None: all fp16, for the split graph). Checked with the ONNX
    checker; the caller stages `destination`."""
    import onnx

    from lpn_edge.export.fp16 import convert_to_fp16

    converted = convert_to_fp16(onnx.load(str(source)), keep_fp32_from=tail_from or [])
    region = "pooling, heads and normalisation" if tail_from else "none"
    set_onnx_metadata(converted, {**metadata, "precision": "fp16", "fp32_region": region})
    onnx.save(converted, str(destination))
    onnx.checker.check_model(str(destination), full_check=True)
