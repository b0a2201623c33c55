"""An fp16 copy of an fp32 ONNX graph, for TensorRT >= 10.12 (strongly typed: the graph's types are the precision).

A minimal converter, no extra dependency: in the fp16 region, float initialisers, Constant values and Cast targets
become float16. The graph's inputs and outputs stay float32 (a Cast after each input and before each output), so
the file is a drop-in replacement for the fp32 one. Nodes that produce a `keep_fp32_from` tensor, and everything
downstream of one, stay fp32: for the embedding graph that is the ring pooling, the heads and the normalisation,
which are cheap and where fp16 could overflow (a sum of 512 squares) or lose the 1e-12 clamp.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lpn_edge.export.onnx_graph import drop_unused_initialisers, sort_topologically

# (op_type, input index) that must stay float32 whatever the computation precision.
FLOAT32_ONLY_INPUTS = {("Resize", 2)}


def convert_to_fp16(model, keep_fp32_from: Iterable[str] = ()):
    """Return an fp16 copy of the ONNX ModelProto `model` (float32 I/O), fp32 from `keep_fp32_from` on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    floats = _float_tensors(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    fp32_nodes = _fp32_region(graph, set(keep_fp32_from))
    initialisers = {init.name: init for init in graph.initializer}
    inputs = {i.name for i in graph.input}
    fp16_producer = {o for i, node in enumerate(graph.node) if i not in fp32_nodes for o in node.output}
    added: list = []
    cast_of: dict[tuple[str, int], str] = {}  # (tensor, target type) -> name of its cast copy

    def cast(name: str, to: int) -> str:
        """The name of `name` converted to type `to` (an fp16 initialiser copy or a Cast node, made once)."""
        key = (name, to)
        if key not in cast_of:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            cast_of[key] = f"{name}__{suffix}"
            if name in initialisers and to == TensorProto.FLOAT16:
                array = numpy_helper.to_array(initialisers[name]).astype(np.float16)
                graph.initializer.append(numpy_helper.from_array(array, cast_of[key]))
            else:
                added.append(helper.make_node("Cast", [name], [cast_of[key]], to=to, name=f"{name}_to_{suffix}"))
        return cast_of[key]

    for index, node in enumerate(graph.node):
        for i, name in enumerate(node.input):
            if name not in floats or (node.op_type, i) in FLOAT32_ONLY_INPUTS:
                continue
            if index in fp32_nodes and name in fp16_producer:
                node.input[i] = cast(name, TensorProto.FLOAT)
            elif index not in fp32_nodes and (name in initialisers or name in inputs):
                node.input[i] = cast(name, TensorProto.FLOAT16)
        if index not in fp32_nodes:
            _retype_attributes(node)
    for output in graph.output:
        if output.name in fp16_producer and output.name in floats:
            _rename_tensor(graph, output.name, f"{output.name}__fp16")
            added.append(helper.make_node("Cast", [f"{output.name}__fp16"], [output.name], to=TensorProto.FLOAT,
                                          name=f"{output.name}_output_to_fp32"))
    graph.node.extend(added)
    drop_unused_initialisers(graph)
    del graph.value_info[:]  # types changed; shape inference recomputes them
    sort_topologically(graph)
    return out


def _float_tensors(model) -> set[str]:
    """Names of the float32 tensors of `model` (inputs, initialisers, and all others by shape inference)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model).graph
    values = list(inferred.input) + list(inferred.value_info) + list(inferred.output)
    names = {v.name for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    return names | {i.name for i in inferred.initializer if i.data_type == TensorProto.FLOAT}


def _fp32_region(graph, keep: set[str]) -> set[int]:
    """Indices of nodes that produce a `keep` tensor or consume anything downstream of one."""
    reachable, region = set(keep), set()
    for index, node in enumerate(graph.node):  # ONNX nodes are topologically sorted
        if any(o in keep for o in node.output) or any(i in reachable for i in node.input):
            region.add(index)
            reachable.update(node.output)
    return region


def _retype_attributes(node) -> None:
    """Cast targets, Constant values and ConstantOfShape fills that are float32 become float16."""
    from onnx import TensorProto, numpy_helper

    for attribute in node.attribute:
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
            attribute.i = TensorProto.FLOAT16
        elif node.op_type in ("Constant", "ConstantOfShape") and attribute.HasField("t") and \
                attribute.t.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(attribute.t).astype(np.float16)
            attribute.t.CopyFrom(numpy_helper.from_array(array, attribute.t.name))


def _rename_tensor(graph, old: str, new: str) -> None:
    """Rename a node-produced tensor everywhere it is produced or consumed (not in graph.output)."""
    for node in graph.node:
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name == old:
                    field[i] = new
