"""FP16 variant of a deployable FP32 graph, for strongly typed TensorRT networks and GPU runtimes.

Weights and activations become float16, except the nodes ``calibration.graph.fp32_nodes`` names
(the head downstream of the text classifier, LayerNormalization, Softmax, L2-normalisations),
which compute in float32 with explicit Cast nodes at their boundaries. Graph inputs and outputs
stay float32, so the runtime feeds the FP16 model exactly as the FP32 one.

The conversion itself is onnxruntime's
``onnxruntime.transformers.float16.convert_float_to_float16``, called with:
- ``node_block_list = fp32_nodes(model)``: our rules are the only source of FP32 nodes;
- ``op_block_list = []``: its default list (``DEFAULT_OP_BLOCK_LIST``: ai.onnx.ml ops, TopK, Range,
  CumSum, Min, Max, Upsample, ...) would silently keep every Min/Max/TopK in FP32 whatever our rules
  say. Instead, an op left in FP16 whose schema has no float16 type fails loudly before conversion;
- ``keep_io_types=True``; ``force_fp16_initializers=False`` (initializers read only by FP32 nodes
  stay FP32); default ``min_positive_val`` / ``max_finite_val`` (weights clamped to the FP16 range).

Its output needs four repairs (seen on our graphs with onnxruntime 1.31), done here:
1. an initializer shared by an FP32 and an FP16 node (the simplifier merges equal tensors, e.g.
   zero biases) is converted and cast back for the FP32 node: FP32 nodes get their own copy first;
2. an FP16 tensor read by several FP32 nodes gets one Cast per reader, all with the same output
   name (not SSA): duplicates are dropped;
3. Casts are appended at the end of the node list: the graph is sorted topologically again;
4. between two FP32 nodes, and on FP32 graph inputs (``text_embeddings``) read by FP32 nodes, values
   make a float32 -> float16 -> float32 round trip (rounding the head's intermediate values, the
   output logits and the text classifier to FP16): such Cast pairs are removed.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import onnx
from onnx import TensorProto

from calibration.graph import fp32_nodes
from runtime.errors import CalibrationError, ModelFolderError

log = logging.getLogger(__name__)

FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
)
REDUCED_TYPES = frozenset({TensorProto.FLOAT16, TensorProto.BFLOAT16})
# Nodes whose float outputs may differ in type from their float inputs by definition.
TYPE_CHANGING_OPS = frozenset({"Cast", "CastLike"})
# Inputs read as parameters, left float32 by the converter (its ALWAYS_FLOAT_INPUTS):
# Resize roi and scales.
PARAMETER_INPUTS = {"Resize": (1, 2)}


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor ONNX type inference can type: graph inputs and outputs,
    initializers, Constant outputs and inferred intermediate values (``onnx.TensorProto`` enums)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*g.value_info, *g.input, *g.output)
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type
    }
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    """``tensor_types`` restricted to floating-point tensors (float, float16, bfloat16, double)."""
    return {name: t for name, t in tensor_types(model).items() if t in FLOAT_TYPES}


def node_float_types(node: onnx.NodeProto, types: dict[str, int]) -> tuple[set[int], set[int]]:
    """(float input types, float output types) of one node; parameter inputs (Resize scales)
    left out."""
    skip = PARAMETER_INPUTS.get(node.op_type, ())
    ins = {
        types[n] for i, n in enumerate(node.input) if i not in skip and types.get(n) in FLOAT_TYPES
    }
    outs = {types[n] for n in node.output if types.get(n) in FLOAT_TYPES}
    return ins, outs


def type_problems(model: onnx.ModelProto, fp32_names: set[str] = frozenset()) -> list[str]:
    """What a strongly typed network would have to cast implicitly, one line per problem.

    Checked: every node input/output has an inferred type; every node except Cast/CastLike has
    all its float inputs and float outputs of one type (Resize's roi/scales excepted); nodes
    named in ``fp32_names`` compute in float32; graph inputs and outputs that are float are float32.
    """
    types = tensor_types(model)
    problems = []
    for node in model.graph.node:
        untyped = [n for n in (*node.input, *node.output) if n and n not in types]
        if untyped:
            problems.append(f"{node.name} ({node.op_type}): no inferred type for {untyped}")
        if node.op_type in TYPE_CHANGING_OPS:
            continue
        ins, outs = node_float_types(node, types)
        if len(ins | outs) > 1:
            problems.append(f"{node.name} ({node.op_type}): mixed float types {_names(ins | outs)}")
        if node.name in fp32_names and (ins | outs) - {TensorProto.FLOAT}:
            problems.append(
                f"{node.name} ({node.op_type}) must compute in float32, has {_names(ins | outs)}"
            )
    for v in (*model.graph.input, *model.graph.output):
        if types.get(v.name) in REDUCED_TYPES:
            problems.append(
                f"graph input/output {v.name!r} is {_names({types[v.name]})}, not float32"
            )
    return problems


def _names(elem_types) -> list[str]:
    return sorted(TensorProto.DataType.Name(t) for t in elem_types)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP16 variant of an FP32 deployable graph (see the module docstring for what stays FP32).

    Args:
        model: FP32 graph of a deployable folder (image [1,3,H,W] float32 in, logits float32 out).
            Not modified.
    Returns:
        A new model with the same float32 inputs and outputs; it passes ``onnx.checker`` (full
        check) and ``type_problems`` is empty for it.
    Raises:
        CalibrationError: the graph already holds float16/bfloat16 tensors, has no text classifier
            to anchor the FP32 head, contains an op with no float16 version outside the FP32 nodes,
            or the converted graph fails the checks.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = _copy(model)
    _require_fp32(model)
    try:
        keep = fp32_nodes(model)
    except ModelFolderError as e:
        raise CalibrationError(f"cannot choose the FP32 nodes of this graph: {e}") from e
    try:
        _require_fp16_kernels(model, set(keep))
        _split_shared_initializers(model, set(keep))
        log.info("FP16: keeping %d of %d nodes in FP32", len(keep), len(model.graph.node))
        out = convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[],
            node_block_list=keep,
            force_fp16_initializers=False,
        )
        _drop_duplicate_nodes(out.graph)
        _topological_sort(out.graph)
        _drop_round_trips(out)
    except onnx.shape_inference.InferenceError as e:
        raise CalibrationError(f"ONNX type inference fails on this graph: {e}") from e
    _prune_value_info(out.graph)
    _check(out, set(keep))
    return out


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    assert isinstance(model, onnx.ModelProto), f"expected a ModelProto, got {type(model).__name__}"
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _require_fp32(model: onnx.ModelProto) -> None:
    g = model.graph
    reduced = [t.name for t in g.initializer if t.data_type in REDUCED_TYPES]
    reduced += [
        v.name
        for v in (*g.input, *g.output, *g.value_info)
        if v.type.tensor_type.elem_type in REDUCED_TYPES
    ]
    reduced += [
        n.name or n.output[0]
        for n in g.node
        if n.op_type == "Cast" and any(a.name == "to" and a.i in REDUCED_TYPES for a in n.attribute)
    ]
    if reduced:
        raise CalibrationError(
            f"the graph is not FP32 (already converted?): {len(reduced)} "
            f"float16/bfloat16 tensors or casts, e.g. {reduced[:3]}; "
            "convert the FP32 model.onnx"
        )


def _require_fp16_kernels(model: onnx.ModelProto, keep: set[str]) -> None:
    """Ops converted to FP16 must have a float16 version in their schema (e.g. Range has none)."""
    types = tensor_types(model)
    opset = {o.domain or "": o.version for o in model.opset_import}
    bad = set()
    for node in model.graph.node:
        io = (*node.input, *node.output)
        if node.name in keep or not any(types.get(n) == TensorProto.FLOAT for n in io):
            continue
        domain = node.domain or ""
        try:
            schema = onnx.defs.get_schema(node.op_type, opset.get(domain, 1), domain)
        except onnx.defs.SchemaError:
            bad.add(f"{node.op_type} (unknown schema)")
            continue
        allowed = {t for c in schema.type_constraints for t in c.allowed_type_strs}
        if "tensor(float)" in allowed and "tensor(float16)" not in allowed:
            bad.add(node.op_type)
    if bad:
        raise CalibrationError(f"ops with no float16 version outside the FP32 nodes: {sorted(bad)}")


def _split_shared_initializers(model: onnx.ModelProto, keep: set[str]) -> None:
    """Give FP32 nodes their own copy of float initializers that FP16 nodes also read."""
    g = model.graph
    readers = defaultdict(set)
    for node in g.node:
        for name in node.input:
            readers[name].add(node.name in keep)
    copies = {}
    for init in list(g.initializer):
        if init.data_type == TensorProto.FLOAT and readers.get(init.name) == {True, False}:
            dup = onnx.TensorProto()
            dup.CopyFrom(init)
            dup.name = _unique(f"{init.name}_fp32", g)
            g.initializer.append(dup)
            copies[init.name] = dup.name
    for node in g.node:
        if node.name in keep:
            for i, name in enumerate(node.input):
                node.input[i] = copies.get(name, name)
    if copies:
        log.info("FP16: %d initializers shared by FP32 and FP16 nodes duplicated", len(copies))


def _unique(name: str, g: onnx.GraphProto) -> str:
    used = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    while name in used:
        name += "_"
    return name


def _drop_duplicate_nodes(g: onnx.GraphProto) -> None:
    """Remove exact duplicates (same op, inputs, outputs and attributes) of an earlier node."""
    seen, kept = set(), []
    for node in g.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            kept.append(node)
    produced = Counter(o for n in kept for o in n.output if o)
    clash = [o for o, c in produced.items() if c > 1]
    if clash:
        raise CalibrationError(f"FP16 conversion left tensors with several producers: {clash[:3]}")
    if len(kept) != len(g.node):
        del g.node[:]
        g.node.extend(kept)


def _topological_sort(g: onnx.GraphProto) -> None:
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        OnnxModel.graph_topological_sort(g)
    except RuntimeError as e:
        raise CalibrationError(f"the FP16 graph is not a DAG: {e}") from e


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _drop_round_trips(model: onnx.ModelProto) -> None:
    """Remove float32 -> float16 -> float32 Cast pairs: readers of the second Cast read the first
    Cast's float32 input instead (a graph output is renamed onto that input's producer)."""
    g = model.graph
    types = tensor_types(model)
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    graph_inputs = {i.name for i in g.input} | {t.name for t in g.initializer}
    renames, dropped = {}, set()
    for index, node in enumerate(g.node):
        first = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if (
            _cast_to(node) != TensorProto.FLOAT
            or first is None
            or _cast_to(first) != TensorProto.FLOAT16
            or types.get(first.input[0]) != TensorProto.FLOAT
        ):
            continue
        src, dst = first.input[0], node.output[0]
        if dst in outputs:
            if src in graph_inputs or src in outputs or src in renames:
                # keep the pair: the output name cannot move onto a graph input, another
                # output, or a tensor already renamed onto one (readers redirected onto src
                # follow it: ``_follow``)
                continue
            renames[src] = dst  # the producer of src now writes the graph output directly
        else:
            renames[dst] = src
        dropped.add(index)
    nodes = [n for i, n in enumerate(g.node) if i not in dropped]
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = _follow(renames, name)
        for i, name in enumerate(node.output):
            if name in renames and renames[name] in outputs:
                node.output[i] = renames[name]
    _prune_unused(g, nodes)
    log.info("FP16: removed %d float32->float16->float32 round trips", len(dropped))


def _follow(renames: dict[str, str], name: str) -> str:
    while name in renames:
        name = renames[name]
    return name


def _prune_unused(g: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Keep only nodes that (transitively) feed a graph output."""
    needed = {o.name for o in g.output}
    live = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(n for n in node.input if n)
    del g.node[:]
    g.node.extend(reversed(live))


def _prune_value_info(g: onnx.GraphProto) -> None:
    """Drop value_info of tensors no node produces any more (left by the passes above)."""
    produced = {o for n in g.node for o in n.output}
    stale = [v for v in g.value_info if v.name not in produced]
    for v in stale:
        g.value_info.remove(v)


def _check(model: onnx.ModelProto, keep: set[str]) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise CalibrationError(f"the FP16 graph fails the ONNX checker: {e}") from e
    problems = type_problems(model, keep)
    if problems:
        raise CalibrationError(
            f"the FP16 graph is not consistently typed "
            f"({len(problems)} problems): " + "; ".join(problems[:5])
        )
