"""Which nodes of a deployed FP32 graph must stay in high precision, by rule.

Kept FP32 in every reduced-precision variant:
- the **head**: every node that consumes the text classifier (the ``text_embeddings`` graph input,
  or the baked ``text_classifier*`` initializers the exporter names) and everything downstream
  of it: the final similarity / mask logits, prompt denoising, key smoothing, ZegCLIP's decoder;
- ``LayerNormalization`` and ``Softmax`` nodes;
- L2-normalisations: ``ReduceL2`` and the elementwise nodes that carry its result into a division.
INT8 also leaves the attention-score MatMuls (both inputs activations) unquantised.
"""

from __future__ import annotations

from collections import defaultdict, deque

import onnx

from runtime import io_names
from runtime.errors import ModelFolderError

FP32_OP_TYPES = frozenset({"LayerNormalization", "Softmax"})
# Ops that carry a norm to its division (onnxruntime's pre-processing may move a Transpose in).
NORM_CHAIN = frozenset({"Clip", "Max", "Expand", "Unsqueeze", "Reshape", "Transpose", "Add", "Div"})


def graph_maps(model: onnx.ModelProto | onnx.GraphProto):
    """(tensor name -> producing node, tensor name -> consuming nodes) of a model's graph."""
    g = model.graph if isinstance(model, onnx.ModelProto) else model
    producer = {o: n for n in g.node for o in n.output}
    consumers = defaultdict(list)
    for node in g.node:
        for name in node.input:
            consumers[name].append(node)
    return producer, consumers


def text_sources(graph: onnx.GraphProto) -> set[str]:
    """Tensor names holding the text classifier: the TEXT_EMBEDDINGS input or named initializers."""
    names = {i.name for i in graph.input if i.name == io_names.TEXT_EMBEDDINGS}
    names |= {i.name for i in graph.initializer if i.name.startswith(io_names.TEXT_CLASSIFIER)}
    return names


def downstream(graph: onnx.GraphProto, sources: set[str]) -> list[onnx.NodeProto]:
    """Every node that (transitively) consumes one of the tensors ``sources``, in graph order
    (nodes are identified by name: call ``name_nodes`` first)."""
    consumers, seen = graph_maps(graph)[1], set()
    queue = deque(sources)
    while queue:
        for node in consumers.get(queue.popleft(), ()):
            if node.name not in seen:
                seen.add(node.name)
                queue.extend(node.output)
    return [n for n in graph.node if n.name in seen]


def head_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The final similarity and everything after it (see module docstring).

    Raises:
        ModelFolderError: the graph has no recognisable text classifier (exported before the
            exporter named it): re-export the folder.
    """
    name_nodes(model)
    sources = text_sources(model.graph)
    if not sources:
        raise ModelFolderError(
            "the graph has no text_embeddings input and no text_classifier "
            "initializer: re-export the folder with this version of ovss-edge"
        )
    return downstream(model.graph, sources)


def l2_norm_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """ReduceL2 nodes and the clamp / broadcast / divide nodes fed by them (named nodes)."""
    consumers, picked = graph_maps(graph)[1], set()
    queue = deque(n for n in graph.node if n.op_type == "ReduceL2")
    while queue:
        node = queue.popleft()
        if node.name in picked:
            continue
        picked.add(node.name)
        if node.op_type == "Div":
            continue
        for out in node.output:
            queue.extend(c for c in consumers.get(out, ()) if c.op_type in NORM_CHAIN)
    return [n for n in graph.node if n.name in picked]


def attention_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose inputs are both activations (attention scores and their weighted sum)."""
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and not any(i in inits or i in consts for i in n.input)
    ]


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes every reduced-precision variant keeps in FP32 (unnamed nodes are named
    in place first, so the list is usable as a block list)."""
    name_nodes(model)
    keep = {n.name for n in head_nodes(model)}
    keep |= {n.name for n in model.graph.node if n.op_type in FP32_OP_TYPES}
    keep |= {n.name for n in l2_norm_nodes(model.graph)}
    return [n.name for n in model.graph.node if n.name in keep]


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (``<op_type>_<index>``), in place."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
