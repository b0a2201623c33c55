"""Where an ONNX graph's CPU time goes: ONNX Runtime's own per-node profile, summed by operator and, for the
convolutions, by layer shape with the rate each shape runs at. It is the profile behind a missed CPU speed target:
if the graph's FLOPs over the target time exceed the rate of the fastest layer, no scheduling can meet it.

    profile = profile_onnx_cpu("model-drone.onnx", batch=1, threads=1)
    print(format_profile(profile, reference_ms=737.0, target=0.5))

The session is the runtime's (`onnx_runner.cpu_session_options`), so the profile shows what the runtime runs:
the optimised graph, with BatchNorm folded and the NCHWc layout on x86.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError

CONV_WEIGHT_INPUT = {"Conv": 1, "FusedConv": 1, "ConvInteger": 1, "QLinearConv": 3}  # which input is the weight


def conv_flops(weight_shape, output_shape) -> float:
    """2 x multiply-adds of a convolution: every output element sums (C_in / groups) x kh x kw products, and the
    weight's shape is (C_out, C_in / groups, kh, kw), so groups need no separate term."""
    return 2.0 * math.prod(output_shape) * math.prod(weight_shape[1:])


@dataclass
class ConvShape:
    """The convolutions of one (weight shape, output shape) in one run: how many, their FLOPs and time."""

    weight: tuple[int, ...]
    output: tuple[int, ...]
    nodes: int = 0
    flops: float = 0.0
    seconds: float = 0.0

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds else float("nan")


@dataclass
class GraphProfile:
    """Per-run kernel time of one graph: `operators` {op: (seconds, nodes)}, `convs` by shape, slowest first."""

    model: str
    batch: int
    threads: int
    runs: int
    operators: dict[str, tuple[float, int]] = field(default_factory=dict)
    convs: list[ConvShape] = field(default_factory=list)

    @property
    def kernel_seconds(self) -> float:
        return sum(seconds for seconds, _nodes in self.operators.values())

    @property
    def conv_flops(self) -> float:
        return sum(shape.flops for shape in self.convs)

    @property
    def conv_seconds(self) -> float:
        return sum(shape.seconds for shape in self.convs)

    @property
    def fastest_conv_rate(self) -> float:
        """FLOP/s of the fastest conv shape: a rate this machine and kernel library are known to reach."""
        return max((shape.flops / shape.seconds for shape in self.convs if shape.seconds), default=float("nan"))

    def floor_seconds(self) -> float:
        """Kernel time per run if every convolution ran at the fastest conv shape's rate (other operators as
        measured): what better scheduling of the same kernels could at best reach."""
        return self.conv_flops / self.fastest_conv_rate + self.kernel_seconds - self.conv_seconds

    def as_dict(self) -> dict:
        return {"model": self.model, "batch": self.batch, "threads": self.threads, "runs": self.runs,
                "kernel_ms": self.kernel_seconds * 1e3, "conv_gflop": self.conv_flops / 1e9,
                "conv_ms": self.conv_seconds * 1e3, "floor_ms": self.floor_seconds() * 1e3,
                "operators": {op: {"ms": seconds * 1e3, "nodes": nodes}
                              for op, (seconds, nodes) in self.operators.items()},
                "convs": [{"weight": list(s.weight), "output": list(s.output), "nodes": s.nodes,
                           "gflop": s.flops / 1e9, "ms": s.seconds * 1e3, "gflops_per_s": s.gflops_per_s}
                          for s in self.convs]}


def conv_weight_shapes(optimized_model: str | Path) -> dict[str, tuple[int, ...]]:
    """{node name: weight shape (C_out, C_in / groups, kh, kw)} of every convolution in an optimised graph as
    ONNX Runtime saves it (`SessionOptions.optimized_model_filepath`). The profile itself cannot say: it leaves out
    the weights ONNX Runtime has pre-packed (those of QLinearConv)."""
    import onnx

    proto = onnx.load(str(optimized_model), load_external_data=False)
    dims = {tensor.name: tuple(int(d) for d in tensor.dims) for tensor in proto.graph.initializer}
    return {node.name: dims[node.input[CONV_WEIGHT_INPUT[node.op_type]]] for node in proto.graph.node
            if node.op_type in CONV_WEIGHT_INPUT and node.input[CONV_WEIGHT_INPUT[node.op_type]] in dims}


def summarise_events(events: list[dict], runs: int, weight_shapes: dict[str, tuple[int, ...]], model: str = "",
                     batch: int = 0, threads: int = 0) -> GraphProfile:
    """A GraphProfile of the last `runs` runs in an ONNX Runtime profile (its JSON event list): node kernel times
    inside the last `runs` `model_run` windows, summed per operator and per conv shape (`weight_shapes`, see
    `conv_weight_shapes`), divided by `runs`."""
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    if len(windows) < runs:
        raise LpnEdgeError(f"the profile holds {len(windows)} runs, fewer than the {runs} asked for")
    start = windows[-runs][0]
    operators: dict[str, list] = defaultdict(lambda: [0.0, 0])
    convs: dict[tuple, ConvShape] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < start:
            continue
        op, seconds = event["args"]["op_name"], event["dur"] * 1e-6
        operators[op][0] += seconds
        operators[op][1] += 1
        if op in CONV_WEIGHT_INPUT:
            node = event["name"].removesuffix("_kernel_time")
            if node not in weight_shapes:
                raise LpnEdgeError(f"no weight shape for convolution {node!r} of the profile")
            weight = weight_shapes[node]
            (output,) = event["args"]["output_type_shape"][0].values()
            output = tuple(int(d) for d in output)
            shape = convs.setdefault((weight, output), ConvShape(weight, output))
            shape.nodes += 1
            shape.flops += conv_flops(weight, output)
            shape.seconds += seconds
    for shape in convs.values():
        shape.nodes //= runs
        shape.flops /= runs
        shape.seconds /= runs
    return GraphProfile(model, batch, threads, runs,
                        {op: (seconds / runs, nodes // runs) for op, (seconds, nodes) in
                         sorted(operators.items(), key=lambda item: -item[1][0])},
                        sorted(convs.values(), key=lambda s: -s.seconds))


def _with_node_names(path: Path, scratch: Path) -> Path:
    """`path`, or a copy in `scratch` whose unnamed nodes are given names: ONNX Runtime names them in its profile
    but saves them unnamed in the optimised graph, and the two are matched by name."""
    import onnx

    proto = onnx.load(str(path))
    if all(node.name for node in proto.graph.node):
        return path
    taken = {node.name for node in proto.graph.node}
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    named = scratch / "named.onnx"
    onnx.save(proto, str(named))
    return named


def _feed(session, batch: int) -> dict[str, np.ndarray]:
    """Random input for every graph input, with the batch dimension set to `batch`; other dimensions must be fixed."""
    rng = np.random.default_rng(0)
    feed = {}
    for tensor in session.get_inputs():
        shape = [batch if i == 0 else d for i, d in enumerate(tensor.shape)]
        if not all(isinstance(d, int) for d in shape):
            raise LpnEdgeError(f"input {tensor.name!r} has shape {tensor.shape}: only the batch dimension may be "
                               f"dynamic to profile it")
        if tensor.type == "tensor(uint8)":
            feed[tensor.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif tensor.type == "tensor(float)":
            feed[tensor.name] = rng.random(shape, dtype=np.float32)
        else:
            raise LpnEdgeError(f"input {tensor.name!r} is {tensor.type}; expected uint8 or float32")
    return feed


def profile_onnx_cpu(path: str | Path, batch: int = 1, threads: int = 1, runs: int = 4,
                     warmup: int = 1) -> GraphProfile:
    """Run `path` on ONNX Runtime's CPU provider with the runtime's session options, `warmup` + `runs` times with
    profiling on, and summarise the last `runs` (see `summarise_events`)."""
    import onnxruntime as ort

    from lpn_edge.runtime.onnx_runner import cpu_session_options

    path = Path(path)
    if not path.is_file():
        raise LpnEdgeError(f"{path}: no such ONNX file")
    if batch < 1 or runs < 1 or warmup < 0:
        raise LpnEdgeError(f"batch and runs must be at least 1 and warmup at least 0; got {batch}, {runs}, {warmup}")
    with tempfile.TemporaryDirectory(prefix="lpn-profile-") as scratch:
        options = cpu_session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "ort")
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        session = ort.InferenceSession(str(_with_node_names(path, Path(scratch))), options,
                                       providers=["CPUExecutionProvider"])
        weight_shapes = conv_weight_shapes(options.optimized_model_filepath)
        feed = _feed(session, batch)
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return summarise_events(events, runs, weight_shapes, path.name, batch, threads)


def format_profile(profile: GraphProfile, reference_ms: float | None = None, target: float | None = None) -> str:
    """The profile as text: operators by time, conv shapes by time with their GFLOP/s, and the floor; with a
    reference time and a target ratio, the rate the target needs against the fastest conv rate. The machine's
    speed can drift between runs: take the reference from the same minutes, or scale the measured ratio by the
    floor's share of the measured time, which does not depend on the machine's speed."""
    kernel = profile.kernel_seconds
    lines = [f"# {profile.model}: batch {profile.batch}, {profile.threads} thread(s), mean of {profile.runs} runs, "
             f"{kernel * 1e3:.1f} ms kernel time per run"]
    for op, (seconds, nodes) in profile.operators.items():
        lines.append(f"{op:24s} {seconds * 1e3:9.2f} ms {100 * seconds / kernel:5.1f} %  {nodes:4d} nodes")
    lines.append(f"{'conv weight':24s} {'output':20s} {'nodes':>5s} {'GFLOP':>7s} {'ms':>8s} {'GFLOP/s':>8s}")
    for s in profile.convs:
        lines.append(f"{str(s.weight):24s} {str(s.output):20s} {s.nodes:5d} {s.flops / 1e9:7.3f} "
                     f"{s.seconds * 1e3:8.2f} {s.gflops_per_s:8.1f}")
    if not any(shape.seconds for shape in profile.convs):
        lines.append("no timed convolutions: no floor to give")
        return "\n".join(lines)
    fastest = profile.fastest_conv_rate
    lines.append(f"convolutions: {profile.conv_flops / 1e9:.2f} GFLOP in {profile.conv_seconds * 1e3:.1f} ms = "
                 f"{profile.conv_flops / profile.conv_seconds / 1e9:.1f} GFLOP/s; fastest shape {fastest / 1e9:.1f} "
                 f"GFLOP/s; every conv at that rate: {profile.floor_seconds() * 1e3:.1f} ms per run, "
                 f"{profile.floor_seconds() / kernel:.3f} of the measured time (the most a ratio to any reference "
                 f"can shrink by better use of these kernels)")
    if reference_ms is not None and target is not None:
        budget = target * reference_ms * 1e-3
        other = kernel - profile.conv_seconds
        needed = profile.conv_flops / (budget - other) if budget > other else float("inf")
        verdict = "below" if needed <= fastest else "ABOVE"
        lines.append(f"target {target} x {reference_ms:.1f} ms = {budget * 1e3:.1f} ms needs the convolutions at "
                     f"{needed / 1e9:.1f} GFLOP/s: {verdict} the fastest shape's rate (floor ratio "
                     f"{profile.floor_seconds() * 1e3 / reference_ms:.3f})")
    return "\n".join(lines)
