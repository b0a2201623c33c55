"""Building TensorRT engines from the exported ONNX, with the TensorRT Python API (10.x, as JetPack 6 ships, and 11.x).

Build: `OnnxParser` -> network, one optimisation profile from `--batch` for the `images` input, a workspace limit,
a timing cache reused across builds (a file per TensorRT version and GPU beside the engines), then
`build_serialized_network`. Which ONNX is parsed and with which typing and flags is decided per TensorRT version by
`trt_plan.plan_build` (strongly typed from 10.12; fp16 and int8 give the same artifact on every version: fp16
backbone with an fp32 tail, Q/DQ int8 with everything else fp32). Plain functions: the export job
(`pipeline`) composes them, runs the engine with `lpn_edge.runtime.trt_engine.EngineRunner` and checks parity.

Nothing here has been run in this project's CI (no TensorRT there): the tests that need it are marked `trt` and
skip without it. The decisions (`trt_plan`) and the ONNX graphs the engines are built from are tested on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.formats import FORMATS
from lpn_edge.export.onnx_graph import set_onnx_metadata
from lpn_edge.export.trt_plan import BuildPlan, LayerInfo, check_gpu, fp32_tail_layers, plan_build
from lpn_edge.runtime.trt_engine import INPUT_NAME, make_logger


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

    from lpn_edge.runtime.cuda_buffers import cuda_device_count

    remark = check_gpu(cuda_device_count(), torch.version.cuda)
    if remark and note is not None:
        note(remark)
    return trt


def build_engine(trt, memory, onnx_path: Path, engine_path: Path, *, plan: BuildPlan, batch: tuple[int, int, int],
                 size: tuple[int, int], workspace_mb: int, timing_cache: Path,
                 fp32_tail_from: list[str] | None = None) -> dict:
    """Parse `onnx_path` (the graph `plan.onnx` names), build as `plan` says, write the serialized engine to
    `engine_path`; returns facts for the sidecar.

    fp32_tail_from: the pooled-feature tensor names where the fp32 tail begins; with `plan.fp32_tail_constraints`
    their layers and everything downstream are pinned to FLOAT (None: the graph has no tail).
    """
    from lpn_edge.fileio import atomic_write_bytes

    logger = make_logger(trt)
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


def write_fp16_onnx(source: Path, destination: Path, tail_from: list[str] | None, metadata: dict) -> None:
    """Write the fp16 copy of the ONNX graph `source` that strongly typed fp16 builds parse: fp16 up to the
    pooled features `tail_from`, fp32 from there on (None: all fp16, for the split graph). Checked with the ONNX
    checker; the caller stages `destination`."""
    import onnx

    from lpn_edge.export.fp16 import convert_to_fp16

    converted = convert_to_fp16(onnx.load(str(source)), keep_fp32_from=tail_from or [])
    region = "pooling, heads and normalisation" if tail_from else "none"
    set_onnx_metadata(converted, {**metadata, "precision": "fp16", "fp32_region": region})
    onnx.checker.check_model(converted, full_check=True)  # in memory: the file is written once, checked once
    onnx.save(converted, str(destination))
