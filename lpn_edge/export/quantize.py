"""int8 explicit quantization: an fp32 ONNX graph -> a Q/DQ ONNX graph, from calibration statistics (numpy + onnx).

What TensorRT builds int8 engines from on every version (explicit quantization; see `trt_plan`). ONNX Runtime runs
it too, but as fp32 Convs (its CPU int8 graph is `quantize_cpu`'s, see `int8_placements`). Q/DQ placement follows
NVIDIA's recommendations for ResNets (TensorRT developer guide, "Q/DQ layer placement"; the ResNet case of NVIDIA's
quantization toolkits), so that a residual block runs int8 from its input to its output instead of falling back to
fp32 around BatchNorm, ReLU and the residual Add:
  * BatchNormalization after a Conv is folded into the Conv's weight and bias first (in float64), so the weights
    are quantized as TensorRT will run them and no BatchNorm stands between Q/DQ pairs;
  * every Conv: its data input behind QuantizeLinear -> DequantizeLinear with one symmetric per-tensor scale c / 127
    (one pair per tensor, shared by all its consumers), c the clipping value with the least int8 error over the
    calibration images (searched in (0, max|x|], see `_activation_ranges`), and its weight as an int8 initialiser
    with symmetric per-output-channel scales behind a DequantizeLinear;
  * every residual Add: its identity (skip) input behind Q/DQ too, the other input left as the output of the block's
    last Conv. TensorRT then fuses Conv + Add (+ ReLU) with int8 inputs and, as the next block's input is quantized,
    an int8 output; a Q/DQ pair between that Conv and the Add would split the fusion (the guide's "suboptimal
    fusion" example). In a block with a downsample branch the identity input is the downsample Conv's output (the
    shorter of the two paths from the block input); elsewhere it is the block input, whose Q/DQ the block's first
    Conv already has, so both consumers share one pair.
  * the ring-pooling MatMul / ReduceMax, the heads' Gemm and BatchNorm, the normalisation tail and the outputs stay
    fp32: the pooling and heads are < 0.1 % of the FLOPs and sit where the heads' BatchNorm magnifies errors
    (quantizing them halved the worst-row cosine margin in our tests).
A Conv whose weight is not a graph initialiser is left in fp32 and listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.onnx_graph import drop_unused_initialisers, replace_repeated, sort_topologically

QUANTIZED_OPS = ("Conv",)
CALIBRATION_BATCH = 4  # images per ONNX Runtime call while collecting statistics (all activations are kept)
INT8_MAX = 127
HISTOGRAM_BINS = 2048
CLIP_FRACTIONS = np.linspace(0.1, 1.0, 91)  # candidate clip values, as fractions of max|x|


@dataclass
class QuantizationReport:
    quantized: list[str] = field(default_factory=list)  # Conv node names with int8 inputs
    residual_adds: list[str] = field(default_factory=list)  # residual Add node names with an int8 identity input
    folded: int = 0  # BatchNormalization nodes folded into their Conv
    skipped: list[str] = field(default_factory=list)  # "name (why)" of matching nodes left in fp32
    calibration_images: int = 0

    def summary(self) -> str:
        text = (f"{len(self.quantized)} {'/'.join(QUANTIZED_OPS)} nodes quantized (per-tensor activation scales "
                f"fitted to {self.calibration_images} calibration images, per-channel weights; {self.folded} "
                f"BatchNorms folded into their Conv), {len(self.residual_adds)} residual Adds with an int8 "
                "identity input")
        if self.skipped:
            text += f"; left in fp32: {', '.join(self.skipped)}"
        return text


@dataclass(frozen=True)
class _Target:
    node_index: int
    activation: str  # input name of the data operand
    weight: str | None  # initialiser name of the weight operand; None for a residual Add (activation only)
    axis: int  # output-channel axis of the weight
    input_index: int = 0  # which input of the node `activation` is


def quantize_int8(source: Path, destination: Path, calibration) -> QuantizationReport:
    """Write the Q/DQ version of the ONNX graph `source` to `destination`.

    calibration: (N, 3, H, W) float32 preprocessed images (the graph's `images` input), or a `CalibrationImages`
    that decodes them a batch at a time (each pass over the statistics decodes the images again).
    """
    import onnx

    model = onnx.load(str(source))
    report = QuantizationReport(calibration_images=len(calibration))
    report.folded = fold_batch_norms(model)
    targets = _find_targets(model, report)
    if not targets:
        raise LpnEdgeError(f"{source.name}: no Conv node with an initialiser weight to quantize")
    residual = [_Target(index, model.graph.node[index].input[which], None, 0, which)
                for index, which in residual_adds(model)]
    targets += residual
    ranges = _activation_ranges(model, sorted({t.activation for t in targets}), calibration)
    _insert_qdq(model, targets, ranges)
    names = {t.node_index: model.graph.node[t.node_index].name or f"#{t.node_index}" for t in targets}
    report.quantized = [names[t.node_index] for t in targets if t.weight is not None]
    report.residual_adds = [names[t.node_index] for t in residual]
    # Nodes were appended: restore a topological order, then check the result like the fp32 export.
    sort_topologically(model.graph)
    onnx.save(model, str(destination))
    onnx.checker.check_model(str(destination), full_check=True)
    return report


def fold_batch_norms(model) -> int:
    """Fold each BatchNormalization whose input is a Conv output read by nothing else into that Conv (in place):
    W' = W * s, b' = (b - mean) * s + beta per output channel, s = gamma / sqrt(var + eps), in float64. Convs that
    share a weight (the image and its mirror under test-time flip) share the folded weight. Returns the count."""
    from onnx import helper, numpy_helper

    graph = model.graph
    values = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    folded_params: dict[tuple[str, ...], tuple[str, str]] = {}
    removed: set[int] = set()
    for position, norm in enumerate(graph.node):
        if norm.op_type != "BatchNormalization" or len(norm.output) != 1:
            continue
        conv = producer.get(norm.input[0])
        if conv is None or conv.op_type != "Conv" or readers.get(norm.input[0]) != 1 or norm.input[0] in outputs \
                or conv.input[1] not in values or not all(name in values for name in norm.input[1:5]) \
                or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in values):
            continue
        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
        key = (conv.input[1], bias, *norm.input[1:5])
        if key not in folded_params:
            eps = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
            gamma, beta, mean, var = (numpy_helper.to_array(values[n]).astype(np.float64) for n in norm.input[1:5])
            weight = numpy_helper.to_array(values[conv.input[1]]).astype(np.float64)
            old_bias = numpy_helper.to_array(values[bias]).astype(np.float64) if bias else np.zeros(len(gamma))
            scale = gamma / np.sqrt(var + eps)
            prefix = f"{conv.input[1]}_bnfold{len(folded_params)}"
            graph.initializer.extend([
                numpy_helper.from_array((weight * scale.reshape(-1, *[1] * (weight.ndim - 1))).astype(np.float32),
                                        f"{prefix}_weight"),
                numpy_helper.from_array(((old_bias - mean) * scale + beta).astype(np.float32), f"{prefix}_bias")])
            folded_params[key] = (f"{prefix}_weight", f"{prefix}_bias")
        weight_name, bias_name = folded_params[key]
        inputs = [conv.input[0], weight_name, bias_name]
        replacement = helper.make_node("Conv", inputs, [norm.output[0]], name=conv.name or f"{norm.name}_conv")
        replacement.attribute.extend(conv.attribute)
        conv.CopyFrom(replacement)
        removed.add(position)
    replace_repeated(graph.node, [node for position, node in enumerate(graph.node) if position not in removed])
    drop_unused_initialisers(graph)
    return len(removed)


def residual_adds(model) -> list[tuple[int, int]]:
    """(node index, index of the identity input) of every residual Add: an Add of two computed 4-D tensors.

    The identity input is the one at the shorter longest-path distance from the graph input: the block input
    itself, or the downsample Conv's output (one Conv away) against the main branch's two or three Convs.
    """
    import onnx

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in
             list(inferred.input) + list(inferred.value_info) + list(inferred.output)}
    constants = {init.name for init in graph.initializer}
    depth = {i.name: 0 for i in graph.input}
    for node in graph.node:  # topological order
        level = 1 + max((depth.get(name, 0) for name in node.input if name), default=0)
        for out in node.output:
            depth[out] = level
    found = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Add" or len(node.input) != 2 or any(i in constants for i in node.input):
            continue
        if not all(ranks.get(name) == 4 for name in node.input):
            continue
        first, second = (depth.get(name, 0) for name in node.input)
        found.append((index, 0 if first < second else 1))
    return found


def _find_targets(model, report: QuantizationReport) -> list[_Target]:
    """Every Conv with an initialiser weight (output channels on axis 0: (out, in / groups, kh, kw))."""
    initialisers = {init.name for init in model.graph.initializer}
    targets = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in QUANTIZED_OPS:
            continue
        if node.input[1] not in initialisers:
            report.skipped.append(f"{node.name or f'#{index}'} ({node.op_type} without an initialiser weight)")
            continue
        targets.append(_Target(index, node.input[0], node.input[1], axis=0))
    return targets


def _activation_ranges(model, names: list[str], calibration) -> dict[str, float]:
    """The clipping range of each named tensor: the value c in (0, max|x|] whose int8 grid (step c / 127) gives the
    smallest mean squared error over the calibration images (rounding inside, clipping outside).

    max|x| alone wastes the grid on rare outliers of post-ReLU activations; minimising the error over a histogram of
    |x| (two passes: max, then histogram) is the usual refinement and measurably closer to fp32 here.
    """
    maxima = dict.fromkeys(names, 0.0)
    for name, values in _activations(model, names, calibration):
        maxima[name] = max(maxima[name], float(np.abs(values).max()))
    histograms = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in names}
    for name, values in _activations(model, names, calibration):
        top = max(maxima[name], 1e-12)
        histograms[name] += np.histogram(np.abs(values), bins=HISTOGRAM_BINS, range=(0.0, top))[0]
    return {name: _best_clip(histograms[name], maxima[name]) for name in names}


def _activations(model, names: list[str], calibration):
    """Yield (name, values) of the named tensors for each calibration batch (ONNX Runtime CPU, exposed as outputs)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for batch in calibration_batches(calibration, CALIBRATION_BATCH):
        yield from zip(names, session.run(names, {input_name: np.ascontiguousarray(batch, np.float32)}))


def calibration_batches(calibration, batch: int):
    """Batches of at most `batch` images from an (N, 3, H, W) array or a lazily loading `CalibrationImages`."""
    if isinstance(calibration, np.ndarray):
        return (calibration[start:start + batch] for start in range(0, len(calibration), batch))
    return calibration.batches(batch)


def _best_clip(histogram: np.ndarray, maximum: float) -> float:
    """Clip value minimising the expected int8 quantization error of |x| distributed as `histogram` on [0, max]."""
    if maximum <= 0:
        return 0.0
    centres = (np.arange(HISTOGRAM_BINS) + 0.5) * (maximum / HISTOGRAM_BINS)
    best, best_error = maximum, np.inf
    for fraction in CLIP_FRACTIONS:
        clip = maximum * fraction
        step = clip / INT8_MAX
        rounding = np.where(centres <= clip, step * step / 12.0, 0.0)  # uniform rounding error inside the range
        clipping = np.where(centres > clip, (centres - clip) ** 2, 0.0)
        error = float((histogram * (rounding + clipping)).sum())
        if error < best_error:
            best, best_error = clip, error
    return best


def _insert_qdq(model, targets: list[_Target], ranges: dict[str, float]) -> None:
    from onnx import helper, numpy_helper

    graph = model.graph
    initialisers = {init.name: init for init in graph.initializer}
    dequantized: dict[str, str] = {}  # activation name -> its DequantizeLinear output
    # Weights are shared too: with test-time flip the heads and the ring weights serve the image and its mirror.
    dequantized_weights: dict[tuple[str, int], str] = {}
    for target in targets:
        node = graph.node[target.node_index]
        if target.activation not in dequantized:
            act = target.activation
            # A tensor that never left zero still needs a positive scale; any value reproduces the zeros.
            scale = max(ranges[act], 1e-8) / INT8_MAX
            graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{act}_scale"),
                                      numpy_helper.from_array(np.array(0, np.int8), f"{act}_zero_point")])
            graph.node.extend([
                helper.make_node("QuantizeLinear", [act, f"{act}_scale", f"{act}_zero_point"], [f"{act}_q"],
                                 name=f"{act}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{act}_q", f"{act}_scale", f"{act}_zero_point"],
                                 [f"{act}_dq"], name=f"{act}_DequantizeLinear"),
            ])
            dequantized[act] = f"{act}_dq"
        node.input[target.input_index] = dequantized[target.activation]
        if target.weight is None:
            continue
        if (target.weight, target.axis) not in dequantized_weights:
            dequantized_weights[(target.weight, target.axis)] = _dequantized_weight(
                graph, initialisers[target.weight], target.axis, f"{target.weight}_axis{target.axis}")
        node.input[1] = dequantized_weights[(target.weight, target.axis)]
    drop_unused_initialisers(graph)


def _dequantized_weight(graph, initialiser, axis: int, prefix: str) -> str:
    """Add the int8 weight, its scales and a DequantizeLinear to `graph`; return the dequantized tensor's name."""
    from onnx import helper, numpy_helper

    quantized, scales = quantize_per_channel(numpy_helper.to_array(initialiser).astype(np.float32), axis)
    graph.initializer.extend([numpy_helper.from_array(quantized, f"{prefix}_int8"),
                              numpy_helper.from_array(scales, f"{prefix}_scale"),
                              numpy_helper.from_array(np.zeros_like(scales, np.int8), f"{prefix}_zero_point")])
    graph.node.append(helper.make_node("DequantizeLinear", [f"{prefix}_int8", f"{prefix}_scale",
                                                            f"{prefix}_zero_point"],
                                       [f"{prefix}_dq"], name=f"{prefix}_DequantizeLinear", axis=axis))
    return f"{prefix}_dq"


def quantize_per_channel(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per-channel quantization: (int8 weight, float32 scale per index along `axis`)."""
    moved = np.moveaxis(weight, axis, 0)
    maxabs = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scales = (np.maximum(maxabs, 1e-12) / INT8_MAX).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    quantized = np.clip(np.rint(weight / scales.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, scales
