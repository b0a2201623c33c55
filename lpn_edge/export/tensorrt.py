"""TensorRT engines from the exported ONNX, with the TensorRT Python API (10.x, as JetPack 6 ships, and 11.x).

Build: `OnnxParser` -> network, one optimisation profile from `--batch` for the `images` input, a workspace limit,
a timing cache reused across builds (a file per TensorRT version and GPU beside the engines), then
`build_serialized_network`. Precision:
  * TensorRT 10: fp32 (TF32 switched off, so "fp32" means fp32), fp16 via `BuilderFlag.FP16`, int8 via
    `BuilderFlag.INT8` and an `IInt8EntropyCalibrator2` fed from the calibration images;
  * TensorRT >= 11: strongly typed networks only (precision flags and the calibrator API are removed there):
    fp16 from an fp16 copy of the ONNX
    (`fp16.convert_to_fp16`), int8 from the Q/DQ ONNX (`quantize.quantize_int8`, written by the ONNX step).
Run (parity): `Runtime.deserialize_cuda_engine`, `set_input_shape`, `set_tensor_address`, `execute_async_v3`.

Nothing here has been run in this project's CI (no TensorRT there): the tests that need it are marked `trt` and
skip without it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.batching import run_in_batches
from lpn_edge.export.formats import FORMATS
from lpn_edge.export.metadata import set_onnx_metadata, sidecar_path, write_sidecar
from lpn_edge.export.staging import Staging

INPUT_NAME = "images"


def require_tensorrt():
    """The `tensorrt` module, after checking everything an engine build needs; one-line errors otherwise."""
    try:
        import tensorrt as trt
    except ImportError:
        raise LpnEdgeError(f"--trt needs TensorRT, which is not installed: {FORMATS['trt'].install_hint}") from None
    major = tensorrt_major(trt)
    if major < 10:
        raise LpnEdgeError(f"--trt needs TensorRT >= 10, found {trt.__version__}")
    import torch

    from lpn_edge.export.cuda_memory import cuda_memory

    if not torch.cuda.is_available():
        raise LpnEdgeError("--trt builds for the GPU it runs on, and no CUDA GPU is visible here "
                           "(check the driver and CUDA_VISIBLE_DEVICES)")
    cuda_memory()  # raises when neither cuda-python nor pycuda is installed
    return trt


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


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


def _make_calibrator(trt, memory, images: np.ndarray, batch: int, cache_path: Path):
    """An entropy calibrator over (N, 3, H, W) images in batches of `batch` (TensorRT 10 implicit int8)."""

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            # Whole batches only: the calibration profile has a fixed batch size.
            self.batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]
            self.next = 0
            self.buffer = memory.alloc(int(np.ascontiguousarray(self.batches[0]).nbytes))

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            if self.next >= len(self.batches):
                return None  # tells TensorRT the calibration data is exhausted
            memory.to_device(self.buffer, np.ascontiguousarray(self.batches[self.next], np.float32))
            self.next += 1
            return [int(self.buffer)]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_path.write_bytes(memoryview(cache).tobytes())

    return _Calibrator()


def build_engine(trt, memory, onnx_path: Path, engine_path: Path, *, precision: str, batch: tuple[int, int, int],
                 size: tuple[int, int], workspace_mb: int, timing_cache: Path, calibration: np.ndarray | None = None,
                 calibration_cache: Path | None = None) -> dict:
    """Parse `onnx_path`, build, write the serialized engine to `engine_path`; returns facts for the sidecar.

    For TensorRT >= 11 `onnx_path` must already carry the precision (fp16 ONNX, Q/DQ ONNX); for 10 it is the fp32
    graph and the precision comes from builder flags (int8: `calibration` images and `calibration_cache` needed).
    """
    from lpn_edge.fileio import atomic_write_bytes

    major = tensorrt_major(trt)
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT >= 10, and strong typing the only mode in >= 11 (no flag needed;
    # NVIDIA's 10 -> 11 migration guide builds with a plain create_network()).
    network = builder.create_network(0)
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
    facts = {"strongly_typed": major >= 11, "onnx_source": onnx_path.name, "workspace_mb": workspace_mb,
             "batch_profile": list(batch), "device_memory_library": memory.name}
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: TF32 convolutions would not be fp32
    if major < 11 and precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if major < 11 and precision == "int8":
        if calibration is None or calibration_cache is None:
            raise LpnEdgeError("TensorRT int8 needs calibration images")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, memory, calibration, batch[1], calibration_cache)
        if not calibrator.batches:
            raise LpnEdgeError(f"int8 calibration needs at least one batch of {batch[1]} images (--batch OPT); "
                               f"have {len(calibration)}")
        config.int8_calibrator = calibrator
        calibration_profile = builder.create_optimization_profile()
        fixed = (batch[1], *channels_hw)
        calibration_profile.set_shape(INPUT_NAME, fixed, fixed, fixed)
        config.set_calibration_profile(calibration_profile)
        facts.update(calibration_images=len(calibrator.batches) * batch[1], calibration_cache=calibration_cache.name)
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

    job: the pipeline's export job (request, paths, parity, result); variant: its `GraphVariant`.
    """
    from lpn_edge.fileio import file_fingerprint
    from lpn_edge.export.cuda_memory import cuda_memory

    trt, memory = require_tensorrt(), cuda_memory()
    info = runtime_info(trt, memory)
    request, precision = job.request, job.request.precision
    major = tensorrt_major(trt)
    sm = info["compute_capability"].replace(".", "")
    timing_cache = job.out_dir / f"timing-trt{trt.__version__}-sm{sm}.cache"
    source = job.out_dir / f"{variant.stem}.onnx"
    final = job.out_dir / f"{variant.stem}.{precision}.engine"
    job.progress(f"building {final.name} (TensorRT {trt.__version__}, {precision}, {info['gpu_name']}, "
                 f"batch {request.batch[0]}:{request.batch[1]}:{request.batch[2]}, buffers via {memory.name})")
    calibration_cache = None
    if major >= 11 and precision == "int8":
        source = job.out_dir / f"{variant.stem}.int8.onnx"  # the Q/DQ graph the ONNX step wrote and checked
    if major >= 11 and precision == "fp16":
        source = _fp16_onnx(job, variant, source)
    if major < 11 and precision == "int8":
        digest = hashlib.sha256(job.calibration.tobytes() + file_fingerprint(source).encode()).hexdigest()[:12]
        calibration_cache = job.out_dir / f"{variant.stem}.int8-{digest}.calib"  # valid for this model + images only
    with Staging() as stage:
        tmp = stage.path(final)
        facts = build_engine(trt, memory, source, tmp, precision=precision, batch=request.batch, size=job.size,
                             workspace_mb=request.workspace_mb, timing_cache=timing_cache,
                             calibration=job.calibration, calibration_cache=calibration_cache)
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
    if calibration_cache is not None and calibration_cache.is_file():
        job.add(calibration_cache, "trt", precision, "calibration_cache")


def _fp16_onnx(job, variant, source: Path) -> Path:
    """TensorRT >= 11 takes fp16 from the graph's types: write (and keep) an fp16 copy of the ONNX."""
    import onnx

    from lpn_edge.export.fp16 import convert_to_fp16
    from lpn_edge.export.pooling import pooling_outputs

    target = job.out_dir / f"{variant.stem}.fp16.onnx"
    proto = onnx.load(str(source))
    # The split graph ends at the feature map: all fp16. The full graph keeps pooling onwards in fp32.
    keep = pooling_outputs(proto, job.pooling) if variant.heads is None else []
    with Staging() as stage:
        tmp = stage.path(target)
        converted = convert_to_fp16(proto, keep_fp32_from=keep)
        set_onnx_metadata(converted, {**variant.metadata, "precision": "fp16", "fp32_region": "pooling, heads and "
                                      "normalisation" if keep else "none"})
        onnx.save(converted, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    job.add(target, "onnx", "fp16", "trt_input")
    return target

