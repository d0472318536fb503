"""Trace a wrapper to ONNX, check it, prove parity with PyTorch, and simplify when parity holds."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.utils
import torch

from export.parity import ParityReport, compare, ort_outputs
from runtime import io_names
from runtime.errors import OvssError

log = logging.getLogger(__name__)


class ExportError(OvssError, RuntimeError):
    """The exported graph failed the checker or the parity gates."""


@dataclass(frozen=True)
class OnnxExport:
    """The final graph and how it was validated."""

    model: onnx.ModelProto
    parity: ParityReport
    simplified: bool
    nodes_traced: int
    nodes_final: int


def _trace(
    model,
    dummy_inputs: dict[str, torch.Tensor],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> onnx.ModelProto:
    buf = io.BytesIO()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(
        False
    )  # nn.MultiheadAttention fast path does not export
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter(
                "ignore", (DeprecationWarning, torch.jit.TracerWarning, UserWarning)
            )
            torch.onnx.export(
                model,
                tuple(dummy_inputs.values()),
                buf,
                dynamo=False,
                input_names=list(dummy_inputs),
                output_names=output_names,
                dynamic_axes=dynamic_axes or None,
                opset_version=opset,
                do_constant_folding=True,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    proto = onnx.load_from_string(buf.getvalue())
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the exported graph: {e}") from e
    return proto


def _simplify(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    try:
        import onnxslim

        return onnxslim.slim(proto)
    except Exception as e:  # a simplifier failure must not fail the export
        log.warning("graph simplification failed, keeping the traced graph: %s", e)
        return None


def run_export(
    *,
    model: torch.nn.Module,
    dummy_inputs: dict[str, torch.Tensor],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
    simplify: bool,
    atol: float,
    min_label_agreement: float,
    label_size: tuple[int, int] | None = None,
) -> OnnxExport:
    """Export ``model`` and accept it only if onnxruntime reproduces PyTorch.

    Args:
        model: export wrapper returning tensors in ``output_names`` order.
        dummy_inputs: {input name: tensor}; also the parity inputs.
        output_names, dynamic_axes: as for ``torch.onnx.export``.
        opset: ONNX opset (>= 17).
        simplify: run onnxslim and keep its graph only when parity still holds.
        atol, min_label_agreement: parity gates.
        label_size: (H, W) of the LABELS output; default the IMAGE input's size.
    Raises:
        ExportError: checker failure, or parity failure of the traced graph.
    """
    with torch.no_grad():
        outs = model(*dummy_inputs.values())
        ref = {n: t.numpy() for n, t in zip(output_names, outs)}
        margins = label_margins(outs[0], label_size or dummy_inputs[io_names.IMAGE].shape[-2:])
    finite_or_raise(ref)
    feeds = {n: t.numpy() for n, t in dummy_inputs.items()}
    proto = _trace(model, dummy_inputs, output_names, dynamic_axes, opset)
    parity = compare(
        ref,
        ort_outputs(proto.SerializeToString(), feeds, output_names),
        atol,
        min_label_agreement,
        margins,
    )
    log.info(
        "parity (traced): max|diff| %.3g, labels %.5f (%.5f where decided, %.2f%% ties)",
        parity.max_abs_diff,
        parity.label_agreement,
        parity.decided_agreement,
        100 * parity.tie_fraction,
    )
    if not parity.passed:
        raise ExportError(
            f"PyTorch/onnxruntime parity failed: max|diff| {parity.max_abs_diff:.3g} "
            f"(excess over {atol} + {parity.rtol}|ref|: {parity.max_excess:.3g}), "
            f"decided labels {parity.decided_agreement:.5f} (>= {min_label_agreement})"
        )
    if parity.tie_fraction > 0.5:
        log.warning(
            "%.0f%% of label pixels are ties in PyTorch (typical of random weights, whose text "
            "tower embeds every class alike): the label check covers only the rest; the "
            "score check still covers every element",
            100 * parity.tie_fraction,
        )
    traced_nodes = len(proto.graph.node)
    slim = _simplify(proto) if simplify else None
    if slim is not None:
        slim_parity = compare(
            ref,
            ort_outputs(slim.SerializeToString(), feeds, output_names),
            atol,
            min_label_agreement,
            margins,
        )
        if slim_parity.passed:
            log.info(
                "simplified %d -> %d nodes; parity max|diff| %.3g",
                traced_nodes,
                len(slim.graph.node),
                slim_parity.max_abs_diff,
            )
            return OnnxExport(slim, slim_parity, True, traced_nodes, len(slim.graph.node))
        log.warning(
            "simplified graph breaks parity (%.3g); keeping the traced graph",
            slim_parity.max_abs_diff,
        )
    return OnnxExport(proto, parity, False, traced_nodes, traced_nodes)


def keep_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``proto`` that computes only the outputs ``names`` (dead nodes dropped).

    onnxruntime runs every node of a graph whatever outputs a caller asks for, so an output the
    runtime never reads still costs its full price (the full-resolution label map is C*S*S work).
    """
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in inits]
    pruned = onnx.utils.Extractor(proto).extract_model(inputs, names)
    pruned.ir_version, pruned.producer_name = proto.ir_version, proto.producer_name
    del pruned.opset_import[:]
    pruned.opset_import.extend(proto.opset_import)
    onnx.checker.check_model(pruned)
    return pruned


def name_text_classifier(proto: onnx.ModelProto, text: np.ndarray, atol: float = 0.0) -> int:
    """Rename (in place) every initializer holding the baked text classifier ``text`` [C,D] (as
    it is, transposed, or with singleton axes such as a 1x1 conv weight) to
    ``io_names.TEXT_CLASSIFIER`` (then
    ``.1``, ``.2``, ...), rewiring its consumers. Returns how many were renamed."""
    text = np.asarray(text, dtype=np.float32)
    renames = {}
    for init in proto.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) != text.size:
            continue
        array = onnx.numpy_helper.to_array(init)
        if np.squeeze(array).ndim > 2:  # [1,C,D], [C,D,1,1] -> [C,D]; [D] when C = 1
            continue
        as_is = array.reshape(text.shape)
        transposed = array.reshape(text.shape[::-1]).T
        if not (
            np.allclose(as_is, text, rtol=0, atol=atol)
            or np.allclose(transposed, text, rtol=0, atol=atol)
        ):
            continue
        new = io_names.TEXT_CLASSIFIER + (f".{len(renames)}" if renames else "")
        renames[init.name] = new
        init.name = new
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    return len(renames)


def label_margins(logits: torch.Tensor, size) -> np.ndarray:
    """Top-2 gap of the bilinearly upsampled scores [1,C,h,w] -> [1,H,W] (inf for one class)."""
    up = torch.nn.functional.interpolate(
        logits, size=tuple(size), mode="bilinear", align_corners=False
    )
    if up.shape[1] < 2:
        return np.full((1,) + tuple(size), np.inf)
    top = up.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]).numpy()


def parity_image(size: int, mean, std, seed: int = 0) -> torch.Tensor:
    """A smooth, image-like normalised input [1,3,S,S]: low-resolution noise, upsampled."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, size // 32), max(2, size // 32), generator=g) * 255.0
    img = torch.nn.functional.interpolate(
        low, size=(size, size), mode="bilinear", align_corners=False
    )
    mean_t = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return ((img - mean_t) / std_t).contiguous()


def finite_or_raise(arrays: dict[str, np.ndarray]) -> None:
    """Raise ExportError if any reference output holds NaN or inf."""
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise ExportError(f"PyTorch output {name!r} is not finite")
