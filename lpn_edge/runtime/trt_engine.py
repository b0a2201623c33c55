"""Running a serialized TensorRT engine (10.x, as JetPack 6 ships, and 11.x) on numpy images.

`EngineRunner`: `Runtime.deserialize_cuda_engine`, one execution context, `set_input_shape`,
`set_tensor_address`, `execute_async_v3` on its own stream; device buffers come from `cuda_buffers` (cuda-python
or pycuda). The engine has one input `images` (N, 3, H, W) and one output; N must lie in its optimisation profile
(feed it through `batching.run_in_batches`). Check an engine's sidecar (`artifact.check_engine_sidecar` with
`runtime_info`) before loading it.

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
    """Runs a serialized engine on (N, 3, H, W) float32 images with the TensorRT runtime; N within the profile."""

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

    def run(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, ...) float32 output; N within the engine's optimisation profile."""
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
