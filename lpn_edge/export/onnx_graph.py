"""Small helpers for rewriting ONNX ModelProtos in place: graph surgery shared by the int8 and fp16 converters, and
the artifact metadata in `metadata_props` (encoded as `lpn_edge.runtime.artifact` reads it back)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpn_edge.errors import LpnEdgeError
from lpn_edge.runtime.artifact import encode_metadata


def set_onnx_metadata(model_proto, meta: dict[str, Any]) -> None:
    """Replace the ModelProto's metadata_props with `meta` (values JSON-encoded, `artifact.encode_metadata`)."""
    del model_proto.metadata_props[:]
    for key, value in encode_metadata(meta).items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def rewrite_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Replace the metadata of the ONNX file at `path` (e.g. a converted copy that must state its own precision)."""
    import onnx

    proto = onnx.load(str(path))
    set_onnx_metadata(proto, meta)
    onnx.save(proto, str(path))


def replace_repeated(container, items: list) -> None:
    """Make the repeated protobuf field `container` hold copies of `items` (which may be its own elements)."""
    copies = [type(item)() for item in items]
    for copy, item in zip(copies, items):
        copy.CopyFrom(item)
    del container[:]
    container.extend(copies)


def drop_unused_initialisers(graph) -> None:
    used = {name for node in graph.node for name in node.input}
    replace_repeated(graph.initializer, [init for init in graph.initializer if init.name in used])


def sort_topologically(graph) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (ONNX requires it)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise LpnEdgeError("rewritten ONNX graph has a cycle or a dangling input; this is a bug in lpn-edge")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    replace_repeated(graph.node, ordered)
