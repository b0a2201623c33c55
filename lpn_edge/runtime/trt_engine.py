"""Running a serialized TensorRT engine (10.x, as JetPack 6 ships, and 11.x) on numpy images.

`EngineRunner`: `Runtime.deserialize_cuda_engine`, one execution context, `set_input_shape`,
`set_tensor_address`, `execute_async_v3` on its own stream; device buffers and pinned host buffers come from
`cuda_buffers` (cuda-python or pycuda), made once for the profile's largest batch and reused. The engine has one
input `images` (N, 3, H, W) and one output; N must lie in its optimisation profile (`run_all` chunks any N).
Check an engine's sidecar (`artifact.check_engine_sidecar` with `runtime_info`) before loading it.

Nothing here has been run in this project's CI (no TensorRT there): the tests that need it are marked `trt` and
skip without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError

INPUT_NAME = "images"


def runtime_info(trt, memory) -> dict:
    """This machine as `check_engine_sidecar` compares it: TensorRT and CUDA versions, GPU name and capability.

    trt: the `tensorrt` module; memory: a `cuda_buffers.CudaMemory`.
    """
    return {"tensorrt_version": str(trt.__version__), **memory.device_info()}


def make_logger(trt):
    """A TensorRT ILogger that keeps errors and warnings (`.errors`, `.warnings`) for one-line messages; TensorRT
    itself prints nothing through it."""

    class _Logger(trt.ILogger):
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


class EngineRunner:
    """Runs a serialized engine on (N, 3, H, W) float32 images with the TensorRT runtime; N within the profile.

    Buffers are made once, for the profile's largest batch: the device input and output, and a pinned host array
    for each (`host_input`, `host_output`); tensor addresses are set once. A call copies the images into the pinned
    input, enqueues copy in -> `execute_async_v3` -> copy out on the runner's one stream and waits: nothing is
    allocated per call. `enqueue(rows)` alone leaves the output on the device (`device_output`) for a caller that
    continues on the GPU on `stream` (the split encoder's ring-pool kernel).
    """

    def __init__(self, trt, memory, engine_path: Path) -> None:
        self.trt, self.memory, self.logger = trt, memory, make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise LpnEdgeError(f"TensorRT cannot load {Path(engine_path).name}: {'; '.join(self.logger.errors)[:300]}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or len(outputs) != 1:
            raise LpnEdgeError(f"{Path(engine_path).name}: expected one input {INPUT_NAME!r} and one output, found "
                               f"inputs {inputs} and outputs {outputs}")
        self.output = outputs[0]
        self.stream = memory.stream()
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output)))
        smallest, _, largest = (tuple(shape) for shape in self.engine.get_tensor_profile_shape(INPUT_NAME, 0))
        self.batch_range = (int(smallest[0]), int(largest[0]))
        self.input_tail = tuple(int(d) for d in largest[1:])
        self.output_layout = self._layout(Path(engine_path).name)
        self._rows: int | None = None  # the batch the context's input shape is set for
        self.set_rows(self.batch_range[1])
        self.output_tail = tuple(int(d) for d in self.context.get_tensor_shape(self.output))[1:]
        rows = self.batch_range[1]
        self.host_input = memory.pinned((rows, *self.input_tail), self.input_dtype)
        self.host_output = memory.pinned((rows, *self.output_tail), self.output_dtype)
        self.device_input = memory.alloc(self.host_input.nbytes)
        self.device_output = memory.alloc(self.host_output.nbytes)
        self.context.set_tensor_address(INPUT_NAME, self.device_input)
        self.context.set_tensor_address(self.output, self.device_output)

    def _layout(self, name: str) -> str:
        """"nchw" (TensorRT's LINEAR) or "nhwc" (HWC) of the output tensor; vectorised formats are refused."""
        formats = {self.trt.TensorFormat.LINEAR: "nchw", getattr(self.trt.TensorFormat, "HWC", None): "nhwc"}
        found = self.engine.get_tensor_format(self.output)
        if found not in formats:
            raise LpnEdgeError(f"{name}: output {self.output!r} has the vectorised format {found}; expected a linear "
                               "layout (NCHW or NHWC)")
        return formats[found]

    @property
    def rows(self) -> int | None:
        """The batch the context's input shape is set for."""
        return self._rows

    def set_rows(self, rows: int) -> None:
        """The context's input shape for `rows` images; set only when it changes (the context keeps it)."""
        if rows == self._rows:
            return
        low, high = self.batch_range
        if not low <= rows <= high or not self.context.set_input_shape(INPUT_NAME, (rows, *self.input_tail)):
            raise LpnEdgeError(f"engine refuses a batch of {rows} (its optimisation profile takes {low} to {high})")
        self._rows = rows

    def enqueue(self, rows: int, copy_out: bool = True) -> None:
        """Enqueue on `stream`: `host_input[:rows]` to the device, the engine, and (with copy_out) the output to
        `host_output[:rows]`. Asynchronous: `memory.synchronize(stream)` before reading the host output."""
        self.set_rows(rows)
        self.memory.to_device_async(self.device_input, self.host_input[:rows], self.stream)
        self.logger.errors.clear()  # a failure reports its own errors, not those of an earlier call
        if not self.context.execute_async_v3(self.stream):
            raise LpnEdgeError(f"TensorRT execution failed: {'; '.join(self.logger.errors)[:300]}")
        if copy_out:
            self.memory.to_host_async(self.host_output[:rows], self.device_output, self.stream)

    def run(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, ...) float32 output; N within the engine's optimisation profile."""
        rows = len(images)
        self.set_rows(rows)
        if tuple(images.shape[1:]) != self.input_tail:
            raise LpnEdgeError(f"engine takes (N, {', '.join(map(str, self.input_tail))}) input; got {images.shape}")
        self.host_input[:rows] = images
        self.enqueue(rows)
        self.memory.synchronize(self.stream)
        return self.host_output[:rows].astype(np.float32)

    def run_all(self, images: np.ndarray, largest: int | None = None) -> np.ndarray:
        """Any N: chunks within the profile (at most `largest` rows), short last chunk padded (`run_in_batches`)."""
        from lpn_edge.runtime.batching import run_in_batches

        low, high = self.batch_range
        return run_in_batches(self.run, images, low, min(high, largest or high))
