"""ONNX export of a module images -> one output, with a dynamic batch, metadata and structural checks.

The exporter is torch's dynamo-based one (`torch.onnx.export(..., dynamo=True)`), the default and maintained path
in torch >= 2.9; the TorchScript exporter is deprecated there. It is traced with a batch of 2 (DESIGN.md section 9:
a batch of 1 would be specialised away).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.onnx_graph import set_onnx_metadata
from lpn_edge.runtime.trt_engine import INPUT_NAME

TRACE_BATCH = 2
# Loggers of the exporter that narrate (with tracebacks) its attempt to convert its opset-18 graph down to the
# requested opset; the outcome is read from the file and reported once instead.
_EXPORTER_LOGGERS = ("onnxscript.version_converter", "torch.onnx._internal.exporter._compat")


def export_onnx(module: torch.nn.Module, size: tuple[int, int], path: Path, *, output_name: str, opset: int,
                metadata: dict) -> tuple[int, object]:
    """Write `module` ((N, 3, H, W) float32 `images` -> (N, ...) `output_name`) to `path` as ONNX.

    Returns (opset, proto): the opset the file really has, and the ModelProto as written. torch's exporter
    implements opset >= 18 and converts down when asked for less, which can fail (opset 17 with ReduceL2); then
    the file keeps 18 and `metadata["opset"]` says so.
    Checks, on the graph in memory before it is written (once): `onnx.checker.check_model(full_check=True)` and a
    symbolic batch dimension on the input and the output. Raises LpnEdgeError when the exporter fails.
    """
    import onnx

    example = torch.randn(TRACE_BATCH, 3, *size)
    module = module.eval()
    # One eager pass first: the model caches constants such as the ring weight matrix on first use, and their
    # construction (data-dependent Python floats) cannot be traced; built here, they enter the graph as initialisers.
    with torch.no_grad():  # not inference_mode: inference tensors cached here would upset the tracer
        module(example)
    batch = torch.export.Dim("batch")
    log = io.StringIO()
    try:
        # The exporter reports its progress on stdout; keep it for the error message only.
        with contextlib.redirect_stdout(log), _quiet(_EXPORTER_LOGGERS):
            program = torch.onnx.export(module, (example,), None, dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[output_name],
                                        dynamic_shapes={"images": {0: batch}}, optimize=True, verbose=False)
            proto = program.model_proto
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the user needs one line
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise LpnEdgeError(f"ONNX export of {type(module).__name__} failed ({type(exc).__name__}: {detail})") from None
    # The training flag can be flipped back by exporters on the top-level module: keep the caller's model in eval.
    module.eval()
    opset_written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    set_onnx_metadata(proto, {**metadata, "opset": opset_written})
    proto.doc_string = f"lpn-edge export: {metadata.get('view')} view, output {output_name}"
    onnx.checker.check_model(proto, full_check=True)
    check_dynamic_batch(proto, path)
    onnx.save(proto, str(path))
    return opset_written, proto


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Silence the named loggers for the block (their news is checked from the result instead)."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, saved):
            lg.disabled = was


def check_dynamic_batch(proto, path: Path) -> None:
    """The first dimension of the input and of every output must be symbolic (not a fixed number)."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            fixed = dims[0].dim_value if dims else "missing"
            raise LpnEdgeError(f"{path}: {value.name} has a fixed batch dimension ({fixed}); expected a dynamic one")


def pooling_nodes(proto, ring_weights: np.ndarray) -> list:
    """The MatMul nodes that multiply by `ring_weights` ((h*w, n), float32) held as a graph initialiser.

    Finding one is the proof that partition pooling went into the graph as one MatMul with the ring weights.
    """
    from onnx import numpy_helper

    initialisers = {init.name: init for init in proto.graph.initializer}
    found = []
    for node in proto.graph.node:
        if node.op_type != "MatMul":
            continue
        for name in node.input:
            init = initialisers.get(name)
            if init is not None and tuple(init.dims) == ring_weights.shape and \
                    np.allclose(numpy_helper.to_array(init), ring_weights, rtol=0, atol=1e-7):
                found.append(node)
                break
    return found
