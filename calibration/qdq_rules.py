"""TensorRT explicit-quantization rules for INT8 graphs, and the graph lookups they use.

``check_qdq_rules`` is what ``calibration.int8`` promises and what tests and ``calibrate`` verify:
signed INT8, symmetric (zero point 0), per-channel weight scales on the output axis, no Q/DQ
around the nodes kept float (LayerNormalization, Softmax, the head, attention-score MatMuls).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from calibration import graph
from runtime.errors import ModelFolderError

WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")
Q_OPS = ("QuantizeLinear", "DequantizeLinear")


def load_named(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    """A copy of ``model`` (or the model at that path) with every node named."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelFolderError(f"no ONNX model at {str(path)!r}")
        copy = onnx.load(str(path))
    graph.name_nodes(copy)
    return copy


class GraphIndex:
    """Producer / consumer / constant lookups over one graph."""

    def __init__(self, model: onnx.ModelProto):
        self.producer, self.consumers = graph.graph_maps(model)
        self.inits = {i.name: i for i in model.graph.initializer}

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def is_const(self, name: str) -> bool:
        node = self.producer.get(name)
        return name in self.inits or (node is not None and node.op_type == "Constant")

    def reads_dq(self, node: onnx.NodeProto) -> bool:
        return any(self.op(i) == "DequantizeLinear" for i in node.input)

    def feeds_q(self, node: onnx.NodeProto) -> bool:
        return any(
            c.op_type == "QuantizeLinear" for o in node.output for c in self.consumers.get(o, ())
        )

    def op(self, name: str) -> str | None:
        node = self.producer.get(name)
        return None if node is None else node.op_type

    def is_weight(self, name: str) -> bool:
        """A constant, or the DQ of a constant."""
        node = self.producer.get(name)
        return self.is_const(name) or (
            node is not None and node.op_type == "DequantizeLinear" and self.is_const(node.input[0])
        )


def quantized_nodes(model: onnx.ModelProto, op_types=WEIGHTED_OPS) -> list[str]:
    """Names of the ``op_types`` nodes with at least one input produced by a DequantizeLinear
    (with ``quantize_outputs``, float nodes such as a Reshape may read DQ outputs too: not
    listed)."""
    index = GraphIndex(model)
    return [n.name for n in model.graph.node if n.op_type in op_types and index.reads_dq(n)]


def _check_qdq_node(index: GraphIndex, node: onnx.NodeProto) -> list[str]:
    """Signed int8, zero point 0, positive scale; per-channel check of weight DQs elsewhere."""
    where = f"{node.name} ({node.op_type})"
    if len(node.input) < 3 or not node.input[2]:
        return [f"{where}: no zero point (defaults to uint8), expected an int8 zero"]
    zp, scale = index.const(node.input[2]), index.const(node.input[1])
    if zp is None or scale is None:
        return [f"{where}: scale and zero point must be constants"]
    found = []
    if zp.dtype != np.int8:
        found.append(f"{where}: zero point dtype {zp.dtype}, expected int8 (signed, symmetric)")
    if np.any(zp != 0):
        found.append(
            f"{where}: non-zero zero point {zp.ravel()[:4].tolist()} (TensorRT is symmetric)"
        )
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        found.append(f"{where}: scale must be finite and > 0")
    return found


def _weight_axis(consumer: onnx.NodeProto, index: int, rank: int) -> int | None:
    """Output-channel axis of the weight at ``consumer.input[index]`` (None: not a weight slot)."""
    if consumer.op_type in ("Conv", "ConvTranspose") and index == 1:
        return 0 if consumer.op_type == "Conv" else 1
    if consumer.op_type == "Gemm" and index == 1:
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if consumer.op_type == "MatMul":
        return rank - 1 if index == 1 else rank - 2
    return None


def _check_weight_dq(index: GraphIndex, dq: onnx.NodeProto, per_channel: bool) -> list[str]:
    """Per-channel scale along the output-channel axis of every weight consumer (int8 weight
    initializer -> DQ, or float weight -> Q -> DQ)."""
    weight, q = index.const(dq.input[0]), index.producer.get(dq.input[0])
    if weight is None and q is not None and q.op_type == "QuantizeLinear":
        weight = index.const(q.input[0])
    if weight is None:
        return []
    scale = index.const(dq.input[1])
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % max(weight.ndim, 1)
    found = []
    for node in index.consumers.get(dq.output[0], ()):
        want = _weight_axis(node, list(node.input).index(dq.output[0]), weight.ndim)
        if want is None or weight.shape[want] <= 1 or not per_channel:
            continue
        where = f"{node.name} ({node.op_type}) weight {dq.input[0]}"
        if scale is None or scale.size == 1:
            found.append(f"{where}: per-tensor scale, expected per-channel along axis {want}")
        elif scale.shape != (weight.shape[want],) or axis != want:
            found.append(
                f"{where}: scale {scale.shape} on axis {axis}, expected "
                f"({weight.shape[want]},) on axis {want}"
            )
    return found


def check_qdq_rules(
    model: onnx.ModelProto, *, keep_attention: bool = True, per_channel: bool = True
) -> list[str]:
    """TensorRT explicit-quantization rules this package promises; [] when all hold.

    Checks: every Q/DQ has an int8 zero point equal to 0 and a positive scale; weight DQs (int8
    initializers read by Conv/MatMul/Gemm) are per-channel on the output axis (when
    ``per_channel`` and the channel count > 1); LayerNormalization, Softmax and head nodes read no
    DQ output; Softmax (when ``keep_attention``) and head outputs feed no Q; attention-score
    MatMuls read no DQ output (when ``keep_attention``). Graphs without a text classifier are
    checked without head rules.

    Returns:
        One human-readable line per violation, naming the node.
    """
    named = load_named(model)
    index = GraphIndex(named)
    found = []
    for node in named.graph.node:
        if node.op_type in Q_OPS:
            found += _check_qdq_node(index, node)
        if node.op_type == "DequantizeLinear":
            found += _check_weight_dq(index, node, per_channel)
    try:
        head = {n.name for n in graph.head_nodes(named) if n.op_type not in Q_OPS}
    except ModelFolderError:
        head = set()
    for node in named.graph.node:
        where = f"{node.name} ({node.op_type})"
        if (node.name in head or node.op_type in graph.FP32_OP_TYPES) and index.reads_dq(node):
            found.append(f"{where}: must stay float but reads a DequantizeLinear output")
        if (node.name in head or (node.op_type == "Softmax" and keep_attention)) and index.feeds_q(
            node
        ):
            found.append(f"{where}: must stay float but its output feeds a QuantizeLinear")
        if (
            keep_attention
            and node.op_type == "MatMul"
            and node.name not in head
            and not any(index.is_weight(i) for i in node.input)
            and index.reads_dq(node)
        ):
            found.append(f"{where}: attention MatMul (two activations) is quantized")
    return found
