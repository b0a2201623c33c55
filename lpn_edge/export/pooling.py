"""How to find the partition pooling of an exported embedding graph again in its ONNX graph.

The exported module is the model's own `EmbeddingModel` (`LPN.embed`), whose pooling exports to a few clean
operators built from the reference definitions in `lpn_edge.model.partition`:
  * avg: one MatMul with the (h*w, n) ring weight matrix;
  * max: per part a Where over a constant boolean mask (cells outside the ring set to -inf) and a ReduceMax over
    the map (rings on small maps are first resized bilinearly, which enters the graph as one Resize);
  * avg+max: both, avg channels first.
Every export checks its graph against `LPN.embed` in PyTorch (fp32 cosine >= 0.99999).

`PoolingSignature` describes what the pooling of one exported graph must look like (weights and masks); the
functions below find those nodes in a graph. Their outputs are where the fp32 tail (pooling, heads,
normalisation) begins, which the fp16 conversion and the TensorRT < 10.12 precision constraints keep in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpn_edge.errors import LpnEdgeError
from lpn_edge.export.onnx_export import pooling_nodes
from lpn_edge.model.partition import partition_masks, partition_matrix


@dataclass(frozen=True)
class PoolingSignature:
    """What the pooling of an exported embedding graph is made of.

    pool: "avg", "max" or "avg+max". ring_weights: (h*w, n) float32 avg matrix. masks: (n, h', w') bool part masks
    over the (possibly resized) grid that max pooling reduces.
    """

    pool: str
    ring_weights: np.ndarray
    masks: np.ndarray

    @property
    def parts(self) -> int:
        return int(self.ring_weights.shape[1])


def ring_weights(model, view: str, size: tuple[int, int]) -> np.ndarray:
    """The (h*w, n) float32 avg pooling matrix `model` uses for `view` at input size (H, W) pixels.

    From the model's own geometry (`LPN.feature_map_size`) and the partition's reference definition, no forward
    pass; at the configured image size it equals the model's `pooling_weights(view)` buffer.
    """
    height, width = model.feature_map_size(size)
    return partition_matrix(model.partition_kind(view), height, width, model.config.parts).float().numpy()


def pooling_signature(model, view: str, size: tuple[int, int]) -> PoolingSignature:
    """The signature of `model`'s pooling for `view` at input size (H, W) pixels (no forward pass)."""
    height, width = model.feature_map_size(size)
    masks, _areas = partition_masks(model.partition_kind(view), height, width, model.config.parts)
    return PoolingSignature(model.config.pool, ring_weights(model, view, size), masks.numpy().copy())


def max_pooling_nodes(proto, masks: np.ndarray) -> dict[int, list]:
    """{part: ReduceMax nodes pooling that part}: ReduceMax over a Where whose condition is a constant mask that
    keeps exactly that part's cells (either `mask` selecting the data or `~mask` selecting the fill)."""
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {out: node for node in proto.graph.node for out in node.output}
    found: dict[int, list] = {}
    for node in proto.graph.node:
        where = producer.get(node.input[0]) if node.op_type == "ReduceMax" else None
        if where is None or where.op_type != "Where" or where.input[0] not in constants:
            continue
        condition = constants[where.input[0]].astype(bool)
        data_first = where.input[1] not in constants  # Where(mask, data, fill) or Where(~mask, fill, data)
        for part, mask in enumerate(masks):
            keep = mask if data_first else ~mask
            if condition.shape[-2:] == mask.shape and condition.size == mask.size and \
                    np.array_equal(condition.reshape(mask.shape), keep):
                found.setdefault(part, []).append(node)
    return found


def pooling_outputs(proto, signature: PoolingSignature) -> list[str]:
    """Names of the pooled tensors of the graph (where the fp32 tail begins); LpnEdgeError when the graph does not
    pool as `signature` says (a MatMul with the ring weights for avg, a masked ReduceMax per part for max)."""
    outputs = []
    if signature.pool in ("avg", "avg+max"):
        nodes = pooling_nodes(proto, signature.ring_weights)
        if not nodes:
            raise LpnEdgeError(f"no MatMul with the ring weights {signature.ring_weights.shape} found in the exported "
                               "graph; avg partition pooling did not export as one MatMul")
        outputs += [name for node in nodes for name in node.output]
    if signature.pool in ("max", "avg+max"):
        found = max_pooling_nodes(proto, signature.masks)
        missing = [part for part in range(signature.parts) if part not in found]
        if missing:
            raise LpnEdgeError(f"no masked ReduceMax for part(s) {missing} of the {signature.masks.shape} part masks "
                               "found in the exported graph; max partition pooling did not export as expected")
        outputs += [name for nodes in found.values() for node in nodes for name in node.output]
    return outputs
