"""Running an exported ONNX graph with ONNX Runtime, on execution providers the caller chooses.

Providers are named short (`PROVIDERS`: "cpu", "cuda", "tensorrt", ...) in order of preference, e.g.
`providers=("cuda", "cpu")`. Every named provider must be available in this onnxruntime build and must really be
used by the session: asking for CUDA where it is missing (a CPU-only onnxruntime, no driver, missing CUDA
libraries) is an LpnEdgeError, never a silent CPU run. `OnnxRunner.providers` reports the providers the session
actually uses (`InferenceSession.get_providers()`), and `backend` names them for parity figures
("onnxruntime-cpu").

CPU threads: `cpu_session_options(threads)` is what every session here is made with (BENCHMARKS.md, "ONNX Runtime
session options", has the measurements behind it). `threads=None` keeps ONNX Runtime's own choice (one thread per
physical core, spinning workers); a given count also turns intra-op spinning off, which costs nothing measurable
when the machine is idle and keeps a busy machine usable (spinning workers burn the cores other processes need, and
a pool of N threads on a loaded machine waits for its slowest thread: see README "Running beside other work").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError

# Short name -> ONNX Runtime execution provider name.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
}
BATCH = 16  # images per session.run when the caller does not say (bounded memory for ResNet-50 at 256 px)


def cpu_session_options(threads: int | None = None, spinning: bool | None = None):
    """`onnxruntime.SessionOptions` for lpn-edge graphs: every graph optimisation (constant folding, Conv+BatchNorm
    and Conv+ReLU fusion, the NCHWc layout on x86), one graph at a time (sequential execution, one inter-op thread)
    and `threads` intra-op threads (None: ONNX Runtime's default, one per physical core). `spinning` (default: off
    when `threads` is given) lets idle intra-op workers busy-wait for the next kernel."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        if threads < 1:
            raise LpnEdgeError(f"threads must be at least 1, got {threads}")
        options.intra_op_num_threads = int(threads)
    if spinning is None:
        spinning = threads is None
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def provider_names(providers: Sequence[str]) -> list[str]:
    """("cuda", "cpu") -> ["CUDAExecutionProvider", "CPUExecutionProvider"]; LpnEdgeError for an unknown name or
    one this onnxruntime build does not have (said with what it does have and how to get the missing one)."""
    import onnxruntime as ort

    if isinstance(providers, str) or not providers:
        raise LpnEdgeError(f"providers must be a non-empty sequence of names such as ('cuda', 'cpu'); got "
                           f"{providers!r}")
    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown:
        raise LpnEdgeError(f"unknown ONNX Runtime provider {unknown[0]!r}; expected one of {', '.join(PROVIDERS)}")
    available = set(ort.get_available_providers())
    for short in providers:
        if PROVIDERS[short] not in available:
            have = ", ".join(s for s, name in PROVIDERS.items() if name in available) or "none"
            hint = ' (pip install "lpn-edge[gpu]", which brings onnxruntime-gpu)' if short in ("cuda", "tensorrt") \
                else ""
            raise LpnEdgeError(f"ONNX Runtime provider {short!r} is not available in this onnxruntime "
                               f"{ort.__version__} (it has: {have}){hint}")
    return [PROVIDERS[p] for p in providers]


class OnnxRunner:
    """One ONNX Runtime session over a graph with one input and one output (an lpn-edge export).

    `run((N, 3, H, W) float32) -> (N, ...)` float32, in chunks of `batch` rows. `threads`: CPU intra-op threads
    (see `cpu_session_options`; None: ONNX Runtime's default).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cpu",), batch: int = BATCH,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path, self.batch = Path(path), int(batch)
        wanted = provider_names(providers)
        try:
            self.session = ort.InferenceSession(str(self.path), cpu_session_options(threads), providers=wanted)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception classes for unloadable graphs
            raise LpnEdgeError(f"ONNX Runtime cannot load {self.path.name} ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0][:200]})") from None
        used = self.session.get_providers()
        dropped = [name for name in wanted if name not in used]
        if dropped:  # ORT falls back with a warning when a provider's libraries fail to load: not here
            raise LpnEdgeError(f"ONNX Runtime did not enable {', '.join(dropped)} for {self.path.name} (it runs on "
                               f"{', '.join(used)}); check the CUDA / TensorRT libraries, or ask for ('cpu',)")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise LpnEdgeError(f"{self.path.name}: expected one input and one output, found {len(inputs)} and "
                               f"{len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name

    @property
    def providers(self) -> list[str]:
        """The execution providers the session uses, in ONNX Runtime's names and order."""
        return self.session.get_providers()

    @property
    def backend(self) -> str:
        """e.g. "onnxruntime-cpu" or "onnxruntime-cuda+cpu" (short names of the providers in use)."""
        short = {name: key for key, name in PROVIDERS.items()}
        return "onnxruntime-" + "+".join(short.get(name, name) for name in self.providers)

    def run(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> the graph's output for all N rows."""
        chunks = [self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(images[i:i + self.batch],
                                                                                              np.float32)})[0]
                  for i in range(0, len(images), self.batch)]
        return np.concatenate(chunks)


def run_onnx(path: str | Path, images: np.ndarray, batch: int = BATCH,
             providers: Sequence[str] = ("cpu",)) -> np.ndarray:
    """(N, 3, H, W) float32 images -> the graph's single output for all N, on `providers` (the CPU by default)."""
    return OnnxRunner(path, providers, batch).run(images)
