"""Per-layer sensitivity of an INT8 Q/DQ graph, to choose ``Int8Cfg.exclude_nodes``.

Measured with onnxruntime's own debugging tools (``onnxruntime.quantization.qdq_loss_debug``):
both graphs are augmented so that the tensors around each quantized node become outputs, run on
the same feeds, and compared as SQNR (signal-to-quantization-noise ratio, dB; higher is better):

- ``sqnr_db``: the node's quantized activation input before vs after its own Q/DQ, inside the
  INT8 graph: the error this one quantization adds;
- ``xmodel_db``: the FP32 graph's activation vs the INT8 graph's dequantized one: the error
  accumulated up to this node (all the Q/DQ upstream);
- ``weight_sqnr_db``: the node's float weight vs its dequantized int8 weight.

The FP32 graph is compared after the same ORT pre-processing ``quantize_int8`` applies, so tensor
names match. Memory: every saved tensor of every feed is held at once (ORT's
``collect_activations``); MaskCLIP ViT-B/16 at 448 holds roughly 0.6 GB per feed, hence
``max_feeds`` (default 2).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from calibration.int8 import (
    Q_OPS,
    WEIGHTED_OPS,
    FeedReader,
    check_feeds,
    load_named,
    preprocess,
    require_quantization,
)
from runtime.errors import CalibrationError

SAVED_SUFFIX = "_ReshapedSavedOutput"  # qdq_loss_debug's name for a saved tensor
WEIGHT_SUFFIX = "_quantized"  # ORT's name for an int8 weight initializer


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantized node (see module docstring for the three SQNRs; NaN = not measurable)."""

    node: str
    op_type: str
    tensor: str
    sqnr_db: float
    xmodel_db: float
    weight_sqnr_db: float


def _qdq_inputs(model: onnx.ModelProto, op_types) -> dict[str, list[tuple[str, str | None]]]:
    """Quantized ``op_types`` node -> [(float tensor before its activation Q, or None for a
    weight, weight initializer name or None)] for each DQ input."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        for name in node.input:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                out.setdefault(node.name, []).append((q.input[0], None))
            elif dq.input[0] in inits:
                out.setdefault(node.name, []).append((None, dq.input[0]))
    return out


def _keep_outputs(path: Path, wanted: set[str]) -> None:
    """Keep only the saved outputs (and their Reshape nodes) of ``wanted`` tensors, in place."""
    model = onnx.load(str(path))
    drop = {
        o.name
        for o in model.graph.output
        if o.name.endswith(SAVED_SUFFIX) and o.name[: -len(SAVED_SUFFIX)] not in wanted
    }
    kept = [o for o in model.graph.output if o.name not in drop]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    nodes = [n for n in model.graph.node if not set(n.output) & drop]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))


def _activations(debug, model_path: Path, aug_path: Path, op_types, wanted: set[str], feeds):
    """``{tensor: [array per feed]}`` for the ``wanted`` inputs/outputs of ``op_types`` nodes."""
    debug.modify_model_output_intermediate_tensors(
        str(model_path), str(aug_path), op_types_for_saving=op_types
    )
    _keep_outputs(aug_path, wanted)
    return debug.collect_activations(str(aug_path), FeedReader(feeds))


def sensitivity(
    fp32_model: onnx.ModelProto | str | Path,
    int8_model: onnx.ModelProto | str | Path,
    feeds: list[dict[str, np.ndarray]],
    max_feeds: int = 2,
    op_types=WEIGHTED_OPS,
    workdir: str | Path | None = None,
) -> list[LayerSensitivity]:
    """Quantization error per quantized node of ``int8_model``, worst (lowest ``sqnr_db``) first.

    Args:
        fp32_model: the FP32 graph ``int8_model`` was made from (``quantize_int8``'s input).
        int8_model: ``Int8Result.model`` or its file.
        feeds: inputs as for ``quantize_int8`` (use held-out images); only the first
            ``max_feeds`` are run (memory, see module docstring).
        op_types: the quantized op types to report (``Int8Cfg.op_types``).
        workdir: where the temp graphs go (removed after); None: the system's temp folder.
    Raises:
        CalibrationError: bad feeds, or ``int8_model`` has no Q/DQ node.
    """
    require_quantization()
    from onnxruntime.quantization import qdq_loss_debug as debug

    int8 = load_named(int8_model)
    check_feeds(int8, feeds)
    feeds = list(feeds)[: max(1, max_feeds)]
    inputs = _qdq_inputs(int8, op_types)
    if not inputs:
        raise CalibrationError("int8_model has no quantized node (no DequantizeLinear input)")
    wanted = {t for pairs in inputs.values() for t, _ in pairs if t}
    quantize_outputs = {n.output[0] for n in int8.graph.node if n.op_type == "QuantizeLinear"}
    post = {
        n.output[0]
        for n in int8.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in quantize_outputs
    }
    op_types = sorted({n.op_type for n in int8.graph.node if n.name in inputs})
    with tempfile.TemporaryDirectory(prefix=".ovss-sens-", dir=workdir) as tmp:
        tmp = Path(tmp)
        float_path = preprocess(load_named(fp32_model), tmp)
        int8_path = tmp / "int8.onnx"
        onnx.save(int8, str(int8_path))
        qdq_acts = _activations(
            debug, int8_path, tmp / "int8_aug.onnx", list(Q_OPS), wanted | post, feeds
        )
        float_acts = _activations(
            debug, float_path, tmp / "float_aug.onnx", op_types, wanted, feeds
        )
        weights = debug.compute_weight_error(
            debug.create_weight_matching(str(float_path), str(int8_path))
        )
    matched = debug.create_activation_matching(qdq_acts, float_acts)
    for match in matched.values():
        match.setdefault("float", [])  # compute_activation_error indexes it unconditionally
    errors = debug.compute_activation_error(matched)
    rows = [_row(int8, name, pairs, errors, weights) for name, pairs in inputs.items()]
    return sorted(rows, key=lambda r: (math.isnan(r.sqnr_db), r.sqnr_db))


def _row(model: onnx.ModelProto, name: str, pairs, errors: dict, weights: dict) -> LayerSensitivity:
    op_type = next(n.op_type for n in model.graph.node if n.name == name)
    acts = [
        (errors[t]["qdq_err"], errors[t].get("xmodel_err", math.nan), t)
        for t, _ in pairs
        if t and t in errors
    ]
    sqnr, xmodel, tensor = min(acts) if acts else (math.nan, math.nan, "")
    w = [
        weights[w[: -len(WEIGHT_SUFFIX)]]
        for _, w in pairs
        if w and w.endswith(WEIGHT_SUFFIX) and w[: -len(WEIGHT_SUFFIX)] in weights
    ]
    return LayerSensitivity(
        name, op_type, tensor, float(sqnr), float(xmodel), float(min(w)) if w else math.nan
    )


def _db(x: float) -> str:
    """A table cell: NaN (not measured, e.g. no weight) is "n/a"; +inf (exact) stays "inf"."""
    return "n/a" if math.isnan(x) else f"{x:.1f}"


def to_table(rows: list[LayerSensitivity], top: int = 15) -> str:
    """The ``top`` rows as a markdown table (SQNRs in dB; "n/a" where not measured)."""
    lines = [
        "| # | node | op | tensor | SQNR (dB) | x-model SQNR (dB) | weight SQNR (dB) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for i, r in enumerate(rows[:top], 1):
        lines.append(
            f"| {i} | {r.node} | {r.op_type} | {r.tensor} | {_db(r.sqnr_db)} | "
            f"{_db(r.xmodel_db)} | {_db(r.weight_sqnr_db)} |"
        )
    return "\n".join(lines)
