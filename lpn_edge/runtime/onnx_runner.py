"""Running an exported ONNX graph with ONNX Runtime, on execution providers the caller chooses.

Providers are named short (`PROVIDERS`: "cpu", "cuda", "tensorrt", ...) in order of preference, e.g.
`providers=("cuda", "cpu")`. Every named provider must be available in this onnxruntime build and must really be
used by the session: asking for CUDA where it is missing (a CPU-only onnxruntime, no driver, missing CUDA
libraries) is an LpnEdgeError, never a silent CPU run. `OnnxRunner.providers` reports the providers the session
actually uses (`InferenceSession.get_providers()`), and `backend` names them for parity figures
("onnxruntime-cpu").

Session options (`cpu_session_options`): every graph optimisation (ORT_ENABLE_ALL), `threads` intra-op threads
(default: the physical cores this process may run on, `physical_cores`, so `taskset` or `os.sched_setaffinity`
before the session decides them) and intra-op spinning off, which costs nothing measurable on an idle machine and
keeps a busy one usable (spinning workers burn the cores other processes need, and a pool that waits for its
slowest thread collapses when one core is taken; BENCHMARKS.md "ONNX Runtime session options" and "Under load" have
the measurements, README "Running beside other work" the advice).

GPU providers run through IO binding (`run_bound`): per batch size one input and one output OrtValue on the device,
bound once and reused, so a call copies the frames in and the result out and allocates nothing on the device;
`run_bound` hands the device-resident output to a caller that keeps working on the GPU (the split encoder's
ring-pool kernel).
"""

from __future__ import annotations

import os
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
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def physical_cores() -> int:
    """Physical CPU cores this process may use: distinct (package, core) pairs in /proc/cpuinfo, at most the CPUs
    of its affinity mask (a container or taskset may allow fewer); the logical CPU count where neither is known.
    Hyper-threads share a core's arithmetic units, so more ONNX Runtime threads than cores only adds contention."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    cores, package = set(), "0"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    package = value.strip()
                elif key.strip() == "core id":
                    cores.add((package, value.strip()))
    except OSError:
        pass
    return max(1, min(allowed, len(cores) or allowed))


def cpu_session_options(threads: int | None = None, spinning: bool = False):
    """`onnxruntime.SessionOptions` for lpn-edge graphs: every graph optimisation (constant folding, Conv+BatchNorm
    and Conv+ReLU fusion, the NCHWc layout on x86), one graph at a time (sequential execution, one inter-op thread)
    and `threads` intra-op threads (None: `physical_cores()`). `spinning` (default off) lets idle intra-op workers
    busy-wait for the next kernel: ONNX Runtime's own default, measured no faster idle and slower under load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None and int(threads) < 1:
        raise LpnEdgeError(f"threads must be at least 1, got {threads}")
    options.intra_op_num_threads = int(threads) if threads else physical_cores()
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

    `run((N, 3, H, W) float32) -> (N, ...)` float32, in chunks of `batch` rows; `threads` intra-op threads
    (None: `physical_cores()`; see `cpu_session_options`).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cpu",), batch: int = BATCH,
                 threads: int | None = None, session_options=None) -> None:
        """session_options: an onnxruntime.SessionOptions used as it is, in place of cpu_session_options(threads)
        (a benchmark's plain ONNX Runtime defaults)."""
        import onnxruntime as ort

        self.path, self.batch = Path(path), int(batch)
        if self.batch < 1:
            raise LpnEdgeError(f"batch must be >= 1; got {batch}")
        wanted = provider_names(providers)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options or cpu_session_options(threads),
                                                providers=wanted)
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
        self.output_tail = tuple(outputs[0].shape[1:])  # the output's shape after the batch (ints when static)
        self.on_gpu = used[0] in GPU_PROVIDERS
        self._ort = ort
        self._bindings: dict[int, tuple] = {}  # batch rows -> (io binding, input OrtValue, output OrtValue or None)

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
        """(N, 3, H, W) float32 -> the graph's output for all N rows (IO binding on a GPU provider)."""
        chunks = []
        for start in range(0, len(images), self.batch):
            chunk = np.ascontiguousarray(images[start:start + self.batch], np.float32)
            if self.on_gpu:
                chunks.append(self.run_bound(chunk).numpy())
            else:
                chunks.append(self.session.run([self.output_name], {self.input_name: chunk})[0])
        return np.concatenate(chunks)

    def run_bound(self, chunk: np.ndarray):
        """(n, 3, H, W) float32 on the host -> the output as an OrtValue on the GPU (valid until the next call
        with the same n): the input is copied into the OrtValue bound for n rows, the session writes its output
        into the one bound for n rows (`.data_ptr()` is its device address). GPU providers only."""
        binding, target = self.bind(chunk)
        self.session.run_with_iobinding(binding)
        return target if target is not None else binding.get_outputs()[0]

    def bind(self, chunk: np.ndarray) -> tuple:
        """(the I/O binding for chunk's n rows, its output OrtValue or None when ORT sizes the output): the chunk
        is copied into the bound device input, so `session.run_with_iobinding(binding)` then runs on device buffers
        alone, as often as wanted (a benchmark's no-copies figure). GPU providers only."""
        if not self.on_gpu:
            raise LpnEdgeError("I/O binding needs a GPU provider (cuda or tensorrt); this session runs on the CPU")
        binding, source, target = self._binding(chunk.shape)
        source.update_inplace(np.ascontiguousarray(chunk, np.float32))
        return binding, target

    def _binding(self, shape: tuple[int, ...]) -> tuple:
        entry = self._bindings.get(shape[0])
        if entry is None or tuple(entry[1].shape()) != tuple(shape):
            ort = self._ort
            source = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, "cuda", 0)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, source)
            target = None
            if all(isinstance(d, int) for d in self.output_tail):  # static after the batch: one buffer, reused
                target = ort.OrtValue.ortvalue_from_shape_and_type([shape[0], *self.output_tail], np.float32,
                                                                   "cuda", 0)
                binding.bind_ortvalue_output(self.output_name, target)
            else:  # ORT sizes the output itself (allocated by its arena on the device)
                binding.bind_output(self.output_name, "cuda", 0)
            entry = self._bindings[shape[0]] = (binding, source, target)
        return entry


def run_onnx(path: str | Path, images: np.ndarray, batch: int = BATCH,
             providers: Sequence[str] = ("cpu",)) -> np.ndarray:
    """(N, 3, H, W) float32 images -> the graph's single output for all N, on `providers` (the CPU by default)."""
    return OnnxRunner(path, providers, batch).run(images)
