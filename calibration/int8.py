"""Explicit Q/DQ INT8 of a deployable FP32 graph, laid out the way TensorRT's explicit quantization
wants it, built with onnxruntime's static quantizer (``onnxruntime.quantization``).

Placement (what ``quantize_int8`` produces and ``check_qdq_rules`` verifies):
- signed INT8, symmetric: every zero point is an int8 0; activations [-127,127], weights
  [-127,127] (TensorRT supports symmetric quantization only);
- Q/DQ on the *inputs* of the weighted ops (Conv, MatMul, Gemm by default) only: their outputs are
  not quantized and biases stay FP32 (TensorRT's placement advice for weighted ops; the same choice
  as ModelOpt's INT8 ONNX path: ``QuantizeBias=False``, ``OpTypesToExcludeOutputQuantization``);
- weights stored as int8 initializers, per output channel (Conv axis 0, MatMul ``[K,N]`` axis 1,
  Gemm the output axis of B);
- one dedicated Q/DQ pair per consumer (``DedicatedQDQPair``: onnxruntime notes TensorRT cannot
  share a pair between nodes), and a DQ
  output feeds only the quantized op it was made for: float consumers of the same tensor read
  the float tensor;
- kept FP32 by rule (``calibration.graph``): the head (final similarity and everything after it),
  LayerNormalization, Softmax, L2-normalisations, and by default the attention-score MatMuls.
  A LayerNormalization output may still feed a Q whose DQ feeds a quantized GEMM: that is the GEMM's
  input quantization (TensorRT fuses it into the LN's epilogue; the LN itself computes in float).

Calibration is driven here rather than inside ``quantize_static``: through ``quantize_static`` the
entropy calibrator uses 128 histogram bins and 128 quantized bins, which leaves a single candidate
threshold (the absolute maximum, i.e. MinMax). We use TensorRT's entropy settings (2048 bins,
128 quantized bins), feed one input at a time (bounded memory), and hand the ranges to
``quantize_static`` as its calibration cache.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from calibration import graph
from calibration.graph import graph_maps
from calibration.qdq_rules import Q_OPS, WEIGHTED_OPS, check_qdq_rules, load_named, quantized_nodes
from runtime.errors import CalibrationError, ModelFolderError
from runtime.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)
METHODS = {"entropy": "Entropy", "percentile": "Percentile", "minmax": "MinMax"}
# TensorRT's legacy entropy calibrator: 2048-bin histograms, KL search over 128 quantized bins.
HIST_BINS, QUANT_BINS = 2048, 128
# Reasons a node stays float, in the order a node is attributed to one of them.
REASONS = ("head", "fp32_op", "l2_norm", "attention", "user", "user_op_type")


def require_quantization():
    """Import ``onnxruntime.quantization`` or raise an ImportError naming the extra to install."""
    try:
        from onnxruntime import quantization
    except ImportError as e:
        raise ImportError(
            "INT8 needs onnxruntime's quantization tools: "
            "pip install 'ovss-edge[calib,ort]' (or [calib,ort-gpu])"
        ) from e
    return quantization


@dataclass(frozen=True)
class Int8Cfg:
    """How to build the INT8 variant.

    Attributes:
        method: activation calibration, ``entropy`` (KL, TensorRT's choice), ``percentile`` or
            ``minmax``.
        percentile: for ``percentile``: the share of |activation| kept in range, in (0, 100].
        per_channel: per-output-channel weight scales (else one scale per weight tensor).
        op_types: op types whose inputs get Q/DQ.
        exclude_nodes: further node names to keep float (e.g. the worst rows of the
            sensitivity report).
        exclude_op_types: op types to keep float everywhere.
        keep_attention: keep the attention-score MatMuls (both inputs activations) float.
        quantize_outputs: also put Q/DQ on the outputs of the quantized ops (onnxruntime's own
            layout). onnxruntime CPU needs it to fuse QGemm / QLinearConv / QLinearMatMul: with
            inputs-only Q/DQ it runs the GEMMs in float plus the Q/DQ work (MaskCLIP ViT-B/16 at
            448, 2-core AVX-512 VNNI CPU: 1.08x the FP32 latency inputs-only, 0.51-0.54x with
            outputs). TensorRT accepts both; its advice is inputs only. Outputs that feed a node
            kept float stay float.
    """

    method: str = "entropy"
    percentile: float = 99.999
    per_channel: bool = True
    op_types: tuple[str, ...] = WEIGHTED_OPS
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    keep_attention: bool = True
    quantize_outputs: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise CalibrationError(
                f"unknown INT8 calibration method {self.method!r}; choose one of {sorted(METHODS)}"
            )
        if not 0.0 < float(self.percentile) <= 100.0:
            raise CalibrationError(f"percentile must be in (0, 100], got {self.percentile}")
        for name in ("op_types", "exclude_nodes", "exclude_op_types"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise CalibrationError(
                    f"{name} must be a sequence of non-empty names, got {value!r}"
                )
            object.__setattr__(self, name, tuple(value))
        if not self.op_types:
            raise CalibrationError("op_types is empty: nothing would be quantized")


@dataclass(frozen=True)
class Int8Result:
    """A quantized graph and what was done to it.

    Attributes:
        model: the Q/DQ ``onnx.ModelProto`` (same inputs and outputs as the FP32 graph).
        quantized_nodes: names of the ``op_types`` nodes that read DQ inputs (run in INT8).
        excluded_nodes: reason -> names of the nodes kept float by that rule (each node under its
            first reason of ``REASONS``; nodes of every op type, not only quantizable ones).
        seconds: wall time of pre-processing, calibration and quantization.
    """

    model: onnx.ModelProto
    quantized_nodes: tuple[str, ...]
    excluded_nodes: dict[str, tuple[str, ...]]
    seconds: float

    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` atomically (single file, weights inline)."""
        return atomic_write_bytes(path, self.model.SerializeToString())


class FeedReader:
    """``onnxruntime.quantization`` data reader over a list of feeds (``get_next``, ``rewind``,
    iteration)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds, self.pos = list(feeds), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.feeds):
            return None
        self.pos += 1
        return self.feeds[self.pos - 1]

    def rewind(self) -> None:
        self.pos = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def __iter__(self):
        self.rewind()
        while (feed := self.get_next()) is not None:
            yield feed


def quantize_int8(
    fp32: onnx.ModelProto | str | Path,
    feeds: list[dict[str, np.ndarray]],
    cfg: Int8Cfg = Int8Cfg(),
    workdir: str | Path | None = None,
) -> Int8Result:
    """Calibrate on ``feeds`` and return the explicit Q/DQ INT8 graph (see module docstring).

    Args:
        fp32: the FP32 graph (a deployable folder's ``model.onnx``) or its path; not modified.
        feeds: calibration inputs, each ``{input_name: float32 array}`` with the graph's input
            shapes, e.g. ``image`` [1,3,H,W] normalised like the runtime does, plus
            ``text_embeddings`` [C,D] for input-vocabulary graphs. A few hundred real images are
            typical; memory holds one feed's activations at a time.
        cfg: what to quantize and how to calibrate.
        workdir: where the temp graphs go (removed after; calibrate passes the folder's staging
            generation); None: the system's temp folder.
    Raises:
        CalibrationError: bad feeds or exclusions, onnxruntime failed, nothing was quantized, or
            the result breaks ``check_qdq_rules``.
        ModelFolderError: the graph has no recognisable text classifier (re-export it).
    """
    start = time.perf_counter()
    q = require_quantization()
    model = load_named(fp32)
    check_feeds(model, feeds)
    with tempfile.TemporaryDirectory(prefix=".ovss-int8-", dir=workdir) as tmp:
        tmp = Path(tmp)
        prep_path = preprocess(model, tmp)
        prepared = onnx.load(str(prep_path))
        excluded = exclusions(model, prepared, cfg)
        log.info(
            "INT8: %d nodes kept float (%s)",
            sum(map(len, excluded.values())),
            ", ".join(f"{k} {len(v)}" for k, v in excluded.items() if v),
        )
        needed = tensors_to_calibrate(prepared, cfg, excluded)
        ranges = _calibrate(q, prep_path, feeds, cfg, needed, tmp)
        log.info("writing the Q/DQ graph")
        out = _quantize(q, prep_path, ranges, excluded, cfg, tmp)
    skip = {n for names in excluded.values() for n in names}
    if cfg.quantize_outputs:
        untangle_float_consumers(out, lambda n: n.name not in skip)
    else:
        untangle_float_consumers(out, lambda n: n.op_type in cfg.op_types and n.name not in skip)
    drop_unused_domains(out)
    quantized = quantized_nodes(out, cfg.op_types)
    if not quantized:
        raise CalibrationError(
            f"no node was quantized (op_types={cfg.op_types}, "
            f"{sum(map(len, excluded.values()))} nodes excluded)"
        )
    problems = check_qdq_rules(out, keep_attention=cfg.keep_attention, per_channel=cfg.per_channel)
    if problems:
        raise CalibrationError(
            "the Q/DQ graph breaks the TensorRT placement rules:\n  " + "\n  ".join(problems)
        )
    return Int8Result(out, tuple(quantized), excluded, time.perf_counter() - start)


def graph_inputs(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Non-initializer graph inputs -> static shape (None for symbolic dims)."""
    inits = {i.name for i in model.graph.initializer}
    return {
        i.name: tuple(d.dim_value or None for d in i.type.tensor_type.shape.dim)
        for i in model.graph.input
        if i.name not in inits
    }


def check_feeds(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> None:
    """Raise CalibrationError unless every feed gives each graph input a finite float32 array of
    its declared shape."""
    if not isinstance(feeds, (list, tuple)) or not feeds:
        raise CalibrationError("calibration needs a non-empty list of feeds")
    shapes = graph_inputs(model)
    for i, feed in enumerate(feeds):
        if not isinstance(feed, dict) or set(feed) != set(shapes):
            got = sorted(feed) if isinstance(feed, dict) else type(feed).__name__
            raise CalibrationError(f"feed {i} must map exactly {sorted(shapes)}, got {got}")
        for name, want in shapes.items():
            x = feed[name]
            if not isinstance(x, np.ndarray) or x.dtype != np.float32:
                raise CalibrationError(f"feed {i}[{name!r}] must be a float32 ndarray")
            if len(x.shape) != len(want) or any(w and w != s for w, s in zip(want, x.shape)):
                raise CalibrationError(
                    f"feed {i}[{name!r}] has shape {x.shape}, graph wants {want}"
                )
            if not np.isfinite(x).all():
                raise CalibrationError(f"feed {i}[{name!r}] holds NaN or inf")


@contextlib.contextmanager
def scratch_in(folder: Path):
    """Point ``tempfile``'s default folder at ``folder`` for the block, so libraries that make
    their own temp folders (onnxruntime's ``quant_pre_process``) make them there: under the
    model folder's staging generation, cleaned with it, not in a global /tmp. Process-wide for
    the block: calibration runs it on one thread."""
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before


def preprocess(model: onnx.ModelProto, folder: Path) -> Path:
    """ORT's quantization pre-processing of a named ``model`` into ``folder/prepared.onnx``
    (ORT basic optimisation + ONNX shape inference; deterministic, so two runs name tensors alike).

    Symbolic shape inference is skipped: it fails on ViT graphs. ORT gets a path, not the
    ModelProto: ORT 1.31's ``quant_pre_process`` mishandles a ModelProto.
    """
    q = require_quantization()
    src, dst = Path(folder) / "named.onnx", Path(folder) / "prepared.onnx"
    onnx.save(model, str(src))
    try:
        with scratch_in(folder):  # ORT's own pre.quant.* scratch folder: here, not in /tmp
            q.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as e:  # onnxruntime raises untyped errors
        raise CalibrationError(f"onnxruntime quantization pre-processing failed: {e}") from e
    return dst


def _rule(fn, *models: onnx.ModelProto) -> set[str]:
    """Names picked by a graph rule on any of ``models`` (a model without a text classifier, e.g.
    one whose initializer the optimiser renamed, contributes nothing to head rules)."""
    names = set()
    for m in models:
        try:
            names |= {n.name for n in fn(m)}
        except ModelFolderError:
            if m is models[0]:
                raise
    return names


def exclusions(
    original: onnx.ModelProto, prepared: onnx.ModelProto, cfg: Int8Cfg
) -> dict[str, tuple[str, ...]]:
    """Reason -> names (in graph order) of the ``prepared`` nodes kept float.

    Rules run on both graphs, because ORT's pre-processing renames a few nodes (transpose
    optimiser) and can hide a pattern (a Transpose moved into an L2-norm chain).
    Raises:
        CalibrationError: a name of ``cfg.exclude_nodes`` is in neither graph, or is a
            quantizable node the pre-processing removed.
    """
    present = {n.name: n.op_type for n in prepared.graph.node}
    before = {n.name: n.op_type for n in original.graph.node}
    for name in cfg.exclude_nodes:
        if name not in present and (name not in before or before[name] in cfg.op_types):
            raise CalibrationError(
                f"exclude_nodes names {name!r}, which is not a node of the (pre-processed) graph"
            )
    both = (original, prepared)
    picks = {
        "head": _rule(graph.head_nodes, *both),
        "fp32_op": {n for n, op in present.items() if op in graph.FP32_OP_TYPES},
        "l2_norm": _rule(lambda m: graph.l2_norm_nodes(m.graph), *both),
        "attention": _rule(graph.attention_matmuls, *both) if cfg.keep_attention else set(),
        "user": set(cfg.exclude_nodes),
        "user_op_type": {n for n, op in present.items() if op in cfg.exclude_op_types},
    }
    groups, seen = {}, set()
    for reason in REASONS:
        names = [n.name for n in prepared.graph.node if n.name in picks[reason] - seen]
        groups[reason] = tuple(names)
        seen |= set(names)
    return groups


def tensors_to_calibrate(model: onnx.ModelProto, cfg: Int8Cfg, excluded: dict) -> set[str]:
    """Non-constant inputs (and outputs, with ``quantize_outputs``) of the nodes that will be
    quantized: the tensors that need ranges."""
    skip = {n for names in excluded.values() for n in names}
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    nodes = [n for n in model.graph.node if n.op_type in cfg.op_types and n.name not in skip]
    names = {i for n in nodes for i in n.input if i and i not in consts}
    if cfg.quantize_outputs:
        names |= {o for n in nodes for o in n.output}
    return names


def _calibrate(q, prep_path: Path, feeds, cfg: Int8Cfg, needed: set[str], tmp: Path) -> Path:
    """Activation ranges over ``feeds`` (one at a time), saved as ORT's calibration cache.

    ORT calibrates every input and output of every ``op_types`` node; histograms of tensors that
    will not be quantized are dropped before the (slow, ~0.6 s per tensor) entropy search.
    """
    method = getattr(q.CalibrationMethod, METHODS[cfg.method])
    extra = {"symmetric": True}
    if cfg.method == "entropy":
        extra.update(num_bins=HIST_BINS, num_quantized_bins=QUANT_BINS)
    elif cfg.method == "percentile":
        extra.update(num_bins=HIST_BINS, percentile=float(cfg.percentile))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print
            calibrator = q.create_calibrator(
                prep_path,
                list(cfg.op_types),
                augmented_model_path=str(tmp / "augmented.onnx"),
                calibrate_method=method,
                extra_options=extra,
            )
            for feed in tqdm(feeds, desc="INT8 calibration", unit="img"):
                calibrator.collect_data(FeedReader([feed]))
            histograms = getattr(getattr(calibrator, "collector", None), "histogram_dict", None)
            for name in set(histograms or ()) - needed:
                del histograms[name]
            log.info("%s ranges of %d tensors", cfg.method, len(needed))
            ranges = calibrator.compute_data()
    except Exception as e:
        raise CalibrationError(f"onnxruntime calibration failed: {e}") from e
    path = tmp / "ranges.json"
    q.save_tensors_data(ranges, path)
    return path


def _quantize(
    q, prep_path: Path, ranges: Path, excluded: dict, cfg: Int8Cfg, tmp: Path
) -> onnx.ModelProto:
    """``quantize_static`` with the TensorRT placement options, ranges from the cache."""
    out = tmp / "int8.onnx"
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT fuses float biases; an int32 bias DQ is not int8
        "OpTypesToExcludeOutputQuantization": [] if cfg.quantize_outputs else list(cfg.op_types),
        "DedicatedQDQPair": True,
        "QDQKeepRemovableActivations": True,
    }
    method = getattr(q.CalibrationMethod, METHODS[cfg.method])
    if "calibration_cache_path" not in inspect.signature(q.quantize_static).parameters:
        raise CalibrationError(
            "this onnxruntime's quantize_static takes no calibration cache: "
            "upgrade onnxruntime (1.31 works)"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            q.quantize_static(
                str(prep_path),
                str(out),
                None,
                quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=list(cfg.op_types),
                per_channel=cfg.per_channel,
                reduce_range=False,
                activation_type=q.QuantType.QInt8,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=sorted({n for v in excluded.values() for n in v}),
                calibrate_method=method,
                extra_options=extra,
                calibration_cache_path=str(ranges),
            )
    except Exception as e:
        raise CalibrationError(f"onnxruntime quantize_static failed: {e}") from e
    return onnx.load(str(out))


def untangle_float_consumers(model: onnx.ModelProto, reads_int8) -> int:
    """Rewire each consumer of an activation DQ for which ``reads_int8(node)`` is False back to
    the float tensor, in place; drop the Q/DQ left unread. Returns how many inputs were rewired.

    ORT's quantizer sends every consumer of a quantized tensor through the DQ when a single
    quantized op reads it (e.g. a residual Add beside the next Conv, or a head node).
    """
    producer, consumers = graph_maps(model)
    rewired = 0
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        qn = producer.get(dq.input[0])
        if qn is None or qn.op_type != "QuantizeLinear":
            continue  # a weight DQ
        for node in consumers.get(dq.output[0], ()):
            if reads_int8(node):
                continue
            for i, name in enumerate(node.input):
                if name == dq.output[0]:
                    node.input[i] = qn.input[0]
                    rewired += 1
    if rewired:
        _drop_dead_nodes(model)
    return rewired


def drop_unused_domains(model: onnx.ModelProto) -> None:
    """Remove opset imports no node uses (ORT's optimiser adds a dozen; TensorRT knows only the
    default domain), in place."""
    used = {n.domain or "" for n in model.graph.node}
    keep = [
        o for o in model.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")
    ]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads (after rewiring)."""
    while True:
        _, consumers = graph_maps(model)
        outputs = {o.name for o in model.graph.output}
        dead = [
            n
            for n in model.graph.node
            if n.op_type in Q_OPS and not any(consumers.get(o) or o in outputs for o in n.output)
        ]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)
