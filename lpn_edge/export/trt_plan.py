"""How an engine is built on a given TensorRT version: pure decisions, testable without TensorRT or a GPU.

One artifact per precision, whatever the TensorRT version:
  * fp32: the fp32 ONNX, TF32 switched off (so "fp32" means fp32).
  * fp16: the backbone in fp16, the tail (ring pooling, heads, L2 normalisation) in fp32, where fp16 could overflow
    (a sum of 512 squares) or lose the 1e-12 clamp. From TensorRT 10.12 on (weak typing is deprecated there, and
    11 removes it) the network is strongly typed and parsed from the fp16 ONNX (`fp16.convert_to_fp16`, the tail
    kept fp32). Before 10.12 (JetPack 6 ships 10.3), where weak typing is still the supported default, the build
    is weakly typed: the fp32 ONNX with `BuilderFlag.FP16`, plus `OBEY_PRECISION_CONSTRAINTS` and per-layer
    precision / output type FLOAT on every tail layer (`fp32_tail_layers`), so the tail is fp32 there too (the
    backbone may run fp16 or fp32 layer by layer, as TensorRT times fastest).
  * int8: the Q/DQ ONNX (`quantize.quantize_int8`, explicit quantization) on every version: strongly typed from
    10.12, weakly typed with `BuilderFlag.INT8` before (which TensorRT needs to honour Q/DQ in a weakly typed
    network). The implicit-calibration API (`IInt8EntropyCalibrator2`, `get_batch_size`, calibration profiles) is
    deprecated since 10.1 and removed in 11; every supported version (>= 10) has Q/DQ, so it is never used.
Layers between Q/DQ pairs run int8; every other layer of an int8 engine runs fp32 on every version (no FP16 flag).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lpn_edge.errors import LpnEdgeError

MINIMUM_TENSORRT = (10, 0)
STRONG_TYPING_FROM = (10, 12)  # TensorRT 10.12 release notes: weak typing APIs deprecated; 11: strong typing only


def tensorrt_version(text: str) -> tuple[int, int]:
    """"10.3.0.30" -> (10, 3); a one-line error for something else."""
    pieces = str(text).split(".")
    try:
        return int(pieces[0]), int(pieces[1]) if len(pieces) > 1 else 0
    except ValueError:
        raise LpnEdgeError(f"cannot read the TensorRT version {text!r} (expected MAJOR.MINOR...)") from None


@dataclass(frozen=True)
class BuildPlan:
    """What `tensorrt.build_engine` does for one precision on one TensorRT version (names are TensorRT enum names)."""

    tensorrt: tuple[int, int]
    precision: str
    strongly_typed: bool
    onnx: str  # which ONNX is parsed: "fp32" (the exported graph), "fp16" (its fp16 copy) or "int8" (Q/DQ graph)
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members passed to create_network
    builder_flags: tuple[str, ...]  # BuilderFlag members set
    cleared_flags: tuple[str, ...]  # BuilderFlag members cleared (when the version has them)
    fp32_tail_constraints: bool  # pin the tail layers to FLOAT (weakly typed fp16 only)

    def describe(self) -> str:
        typing = "strongly typed" if self.strongly_typed else "weakly typed"
        flags = ", ".join(self.builder_flags) or "no precision flags"
        tail = ", tail layers pinned to fp32" if self.fp32_tail_constraints else ""
        return f"{typing}, {self.onnx} ONNX, {flags}{tail}"


def plan_build(version: str | tuple[int, int], precision: str) -> BuildPlan:
    """The build of a `precision` engine ("fp32", "fp16", "int8") on TensorRT `version` ("10.3.0" or (10, 3))."""
    if precision not in ("fp32", "fp16", "int8"):
        raise LpnEdgeError(f"TensorRT precision must be fp32, fp16 or int8, got {precision!r}")
    found = tensorrt_version(version) if isinstance(version, str) else tuple(version)
    if found < MINIMUM_TENSORRT:
        raise LpnEdgeError(f"--trt needs TensorRT >= {MINIMUM_TENSORRT[0]}, found {found[0]}.{found[1]}")
    strong = found >= STRONG_TYPING_FROM
    # 10.x needs the flag for strong typing; in 11 it is the only mode and the flag is deprecated (ignored).
    network_flags = ("STRONGLY_TYPED",) if strong and found[0] == 10 else ()
    onnx = {"fp32": "fp32", "fp16": "fp16" if strong else "fp32", "int8": "int8"}[precision]
    builder_flags: tuple[str, ...] = ()
    if not strong and precision == "fp16":
        builder_flags = ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    elif not strong and precision == "int8":
        builder_flags = ("INT8",)
    return BuildPlan(found, precision, strong, onnx, network_flags, builder_flags, ("TF32",),
                     fp32_tail_constraints=not strong and precision == "fp16")


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a network (a TensorRT layer, or an ONNX node for tests): tensor names in and out, and whether
    each output is a floating-point tensor (only those can be given a float precision)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    float_outputs: tuple[bool, ...]


def fp32_tail_layers(layers: Sequence[LayerInfo], start_tensors: Iterable[str]) -> list[int]:
    """Indices of the layers to pin to fp32: those producing a `start_tensors` tensor (the pooled features), every
    layer downstream of one, and the input-less (constant) layers that feed only such layers; of these, only layers
    whose outputs are all floating-point (shape arithmetic stays integer). `layers` must be in topological order
    (TensorRT's and ONNX's order). Raises LpnEdgeError when a start tensor is not produced by any layer.
    """
    start = set(start_tensors)
    produced = {name for layer in layers for name in layer.outputs}
    missing = sorted(start - produced)
    if missing:
        raise LpnEdgeError(f"cannot pin the fp32 tail: no layer produces {', '.join(missing[:3])} (the pooled "
                           "features); the network does not come from this ONNX graph")
    reachable: set[str] = set(start)
    tail: set[int] = set()
    for index, layer in enumerate(layers):
        if any(name in start for name in layer.outputs) or any(name in reachable for name in layer.inputs):
            tail.add(index)
            reachable.update(layer.outputs)
    consumers: dict[str, set[int]] = {}
    for index, layer in enumerate(layers):
        for name in layer.inputs:
            consumers.setdefault(name, set()).add(index)
    for index, layer in enumerate(layers):
        users = set().union(*(consumers.get(name, set()) for name in layer.outputs))
        if not layer.inputs and users and users <= tail:
            tail.add(index)
    return sorted(i for i in tail if layers[i].float_outputs and all(layers[i].float_outputs))


def onnx_layers(proto) -> list[LayerInfo]:
    """The nodes of an ONNX ModelProto as `LayerInfo` (types from shape inference; initialisers are not layers)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.input) + list(inferred.value_info) + list(inferred.output)}
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    return [LayerInfo(node.name, tuple(i for i in node.input if i), tuple(node.output),
                      tuple(types.get(o) in floats for o in node.output)) for node in proto.graph.node]


def check_gpu(device_count: int, torch_cuda_version: str | None) -> str | None:
    """Whether an engine can be built here, from the CUDA driver's device count (cuda-python / pycuda, not torch).

    Raises LpnEdgeError when the driver sees no GPU. Returns a note when torch cannot use the GPU because it is a
    CPU-only build (`torch.version.cuda` is None): the engine is still built; the PyTorch reference runs on the CPU.
    """
    if device_count < 1:
        raise LpnEdgeError("--trt builds for the GPU it runs on, and the CUDA driver sees no GPU here "
                           "(check the driver, nvidia-smi and CUDA_VISIBLE_DEVICES)")
    if torch_cuda_version is None:
        return ("torch is a CPU-only build (torch.version.cuda is None): the engine is built for the GPU, the "
                "PyTorch parity reference runs on the CPU (install a CUDA build of torch to run it on the GPU)")
    return None

