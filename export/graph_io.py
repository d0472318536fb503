"""Device-side graph I/O, as torch-free edits of a finished ONNX graph (``onnx.helper`` only).

Two edits, applied to the deployed graph after parity and simplification:

- ``add_input_format``: the IMAGE input becomes uint8 RGB 0..255 ([1,H,W,3] or [1,3,H,W]); the
  graph casts it to float32, transposes NHWC to NCHW and normalises it with the manifest's
  constants, ``(x - mean) * (1 / std)``, exactly as ``runtime.preprocess.normalize`` does on the
  host. A per-channel mean/std is what DeepStream's scalar ``net-scale-factor`` cannot express.
- ``add_postprocess``: LOGITS [1,C,h,w] stays an output (slide mode needs it) and two outputs
  are computed from it at (H, W): LABELS, the first-maximum ArgMax over classes of the logits
  resized with ``Resize(mode=linear, coordinate_transformation_mode=half_pixel)`` (PyTorch's
  ``interpolate(mode='bilinear', align_corners=False)``, edges clamped; the numpy reference is
  ``runtime.postprocess.upsample_argmax``), as uint8 or int32 (never int64: TensorRT-unfriendly);
  SCORES float32, the top class's score: max over classes of Softmax(resized logits) for
  ``softmax`` methods, of the resized logits themselves for ``probability`` methods.

``device_graph`` applies both and runs ``check_graph`` (``onnx.checker`` and strict shape
inference); ``export.device_check`` runs the result against the graph before the edits and the
numpy host reference.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime import io_names
from runtime.errors import OvssError
from runtime.manifest import (
    INPUT_FORMATS,
    LABEL_DTYPES,
    SCORE_KINDS,
    PostprocessCfg,
    PreprocessCfg,
)

PREFIX = "graph_io/"  # names of every node and tensor these edits add
LABEL_TYPES = {"uint8": TensorProto.UINT8, "int32": TensorProto.INT32}


class GraphIoError(OvssError, ValueError):
    """The graph does not have the I/O an edit expects, or the edited graph fails the checks."""


def labels_dtype(vocab_mode: str, num_classes: int) -> str:
    """LABELS dtype: "uint8" for a fixed vocabulary of <= 255 classes, else "int32"."""
    return "uint8" if vocab_mode == "fixed" and num_classes <= 255 else "int32"


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _value(graph: onnx.GraphProto, name: str, kind: str) -> onnx.ValueInfoProto:
    values = graph.input if kind == "input" else graph.output
    for v in values:
        if v.name == name:
            return v
    raise GraphIoError(f"the graph has no {kind} named {name!r}")


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    """Static sizes as ints, symbolic ones as their names."""
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in _shape(value).dim]


def _shape(value: onnx.ValueInfoProto) -> onnx.TensorShapeProto:
    return value.type.tensor_type.shape


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [PREFIX + name], name=PREFIX + name, value=numpy_helper.from_array(array)
    )


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def add_input_format(model: onnx.ModelProto, pre: PreprocessCfg) -> onnx.ModelProto:
    """A copy of ``model`` whose IMAGE input has ``pre.input_format`` (float32-nchw: unchanged).

    Args:
        model: graph with IMAGE float32 [1,3,H,W] = (RGB 0..255 - mean) / std.
        pre: the folder's preprocessing (input size, mean, std on the 0..255 scale, format).
    Returns:
        The graph with IMAGE uint8 ``pre.image_shape``, RGB 0..255, normalised in-graph.
    """
    if pre.input_format not in INPUT_FORMATS:
        raise GraphIoError(f"input format {pre.input_format!r} is not one of {INPUT_FORMATS}")
    if pre.input_format == INPUT_FORMATS[0]:
        return model
    out = _copy(model)
    g = out.graph
    image = _value(g, io_names.IMAGE, "input")
    if _dims(image) != [1, 3, *pre.input_size]:
        raise GraphIoError(f"IMAGE is {_dims(image)}, expected [1, 3, {pre.input_size}]")
    normalised = PREFIX + "image_normalised"
    for node in g.node:
        node.input[:] = [normalised if n == io_names.IMAGE else n for n in node.input]
    nodes = _normalise_nodes(pre, normalised) + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    image.CopyFrom(
        helper.make_tensor_value_info(io_names.IMAGE, TensorProto.UINT8, list(pre.image_shape))
    )
    return out


def _normalise_nodes(pre: PreprocessCfg, output: str) -> list[onnx.NodeProto]:
    """Cast -> [Transpose NHWC->NCHW] -> Sub mean -> Mul 1/std, writing ``output``."""
    mean = np.asarray(pre.mean, np.float32).reshape(1, 3, 1, 1)
    inv_std = (1.0 / np.asarray(pre.std, np.float32)).reshape(1, 3, 1, 1)
    cast = PREFIX + "image_float"
    nodes = [
        helper.make_node(
            "Cast", [io_names.IMAGE], [cast], name=PREFIX + "cast", to=TensorProto.FLOAT
        )
    ]
    if pre.input_format == "uint8-nhwc":
        nodes.append(
            helper.make_node(
                "Transpose", [cast], [PREFIX + "nchw"], name=PREFIX + "nchw", perm=[0, 3, 1, 2]
            )
        )
        cast = PREFIX + "nchw"
    nodes += [
        _const("mean", mean),
        _const("inv_std", inv_std),
        helper.make_node("Sub", [cast, PREFIX + "mean"], [PREFIX + "centred"], name=PREFIX + "sub"),
        helper.make_node("Mul", [PREFIX + "centred", PREFIX + "inv_std"], [output], name=output),
    ]
    return nodes


def add_postprocess(
    model: onnx.ModelProto,
    output_hw: tuple[int, int],
    dtype: str,
    score: str,
    score_scale: float = 1.0,
) -> onnx.ModelProto:
    """A copy of ``model`` with LABELS and SCORES outputs computed from LOGITS.

    Args:
        model: graph with a LOGITS float32 [1,C,h,w] output (C static or symbolic; a symbolic
            batch axis, which the simplifier leaves on text-input graphs, is taken as 1).
        output_hw: (H, W) of LABELS and SCORES, pixels.
        dtype: LABELS dtype, "uint8" (C <= 255) or "int32".
        score: "softmax" (SCORES = max_c softmax_c) or "probability" (SCORES = max_c).
        score_scale: softmax temperature k: SCORES = max_c softmax_c(k * logits).
    Returns:
        The graph with outputs LOGITS, LABELS [1,H,W] ``dtype`` in [0,C), SCORES float32 [1,H,W].
    """
    if dtype not in LABEL_DTYPES or score not in SCORE_KINDS:
        raise GraphIoError(f"labels dtype {dtype!r} / score {score!r} not in the known kinds")
    if min(output_hw) < 1:
        raise GraphIoError(f"output size {output_hw} must be positive")
    out = _copy(model)
    g = out.graph
    logits = _dims(_value(g, io_names.LOGITS, "output"))
    batch_ok = logits[:1] == [1] or isinstance(logits[0], str)  # onnxslim may leave it symbolic
    if len(logits) != 4 or not batch_ok:
        raise GraphIoError(f"LOGITS is {logits}, expected [1, C, h, w] (the batch may be symbolic)")
    if any(o.name in (io_names.LABELS, io_names.SCORES) for o in g.output):
        raise GraphIoError("the graph already has LABELS or SCORES outputs")
    up = PREFIX + "resized"
    g.node.extend(_resize_nodes(logits[1], output_hw, up))
    g.node.extend(_label_nodes(up, dtype))
    g.node.extend(_score_nodes(up, score, _opset(out), score_scale))
    shape = [1, *output_hw]
    g.output.extend(
        [
            helper.make_tensor_value_info(io_names.LABELS, LABEL_TYPES[dtype], shape),
            helper.make_tensor_value_info(io_names.SCORES, TensorProto.FLOAT, shape),
        ]
    )
    return out


def _resize_nodes(classes: int | str, output_hw: tuple[int, int], output: str):
    """LOGITS -> ``output`` [1,C,H,W]: bilinear, half_pixel (align_corners=False), sizes given.

    A static C gives constant sizes; a symbolic one (vocabulary as input) takes N and C from the
    logits' own shape."""
    hw = np.asarray(output_hw, np.int64)
    if isinstance(classes, int) and classes > 0:
        nodes = [_const("sizes", np.concatenate([np.asarray([1, classes], np.int64), hw]))]
    else:
        nodes = [
            helper.make_node(
                "Shape", [io_names.LOGITS], [PREFIX + "nc"], name=PREFIX + "nc", start=0, end=2
            ),
            _const("hw", hw),
            helper.make_node(
                "Concat",
                [PREFIX + "nc", PREFIX + "hw"],
                [PREFIX + "sizes"],
                name=PREFIX + "sizes",
                axis=0,
            ),
        ]
    nodes.append(
        helper.make_node(
            "Resize",
            [io_names.LOGITS, "", "", PREFIX + "sizes"],
            [output],
            name=PREFIX + "resize",
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        )
    )
    return nodes


def _label_nodes(up: str, dtype: str) -> list[onnx.NodeProto]:
    """ArgMax over classes (first maximum) -> LABELS; int64 -> float32 -> uint8 (exact for class
    indices; TensorRT casts to uint8 from float types), or int64 -> int32."""
    index = PREFIX + "argmax"
    nodes = [
        helper.make_node(
            "ArgMax", [up], [index], name=index, axis=1, keepdims=0, select_last_index=0
        )
    ]
    if dtype == "uint8":
        nodes.append(
            helper.make_node(
                "Cast",
                [index],
                [PREFIX + "argmax_f"],
                name=PREFIX + "argmax_f",
                to=TensorProto.FLOAT,
            )
        )
        index = PREFIX + "argmax_f"
    nodes.append(
        helper.make_node(
            "Cast", [index], [io_names.LABELS], name=PREFIX + "labels", to=LABEL_TYPES[dtype]
        )
    )
    return nodes


def _score_nodes(up: str, score: str, opset: int, scale: float = 1.0) -> list[onnx.NodeProto]:
    """[Mul by the temperature, Softmax over classes] -> ReduceMax over classes -> SCORES."""
    nodes, x = [], up
    if score == "softmax":
        if scale != 1.0:
            nodes.append(_const("score_scale", np.asarray(scale, np.float32)))
            x = PREFIX + "scaled"
            nodes.append(helper.make_node("Mul", [up, PREFIX + "score_scale"], [x], name=x))
        soft = PREFIX + "softmax"
        nodes.append(helper.make_node("Softmax", [x], [soft], name=soft, axis=1))
        x = soft
    if opset >= 18:  # ReduceMax takes its axes as an input from opset 18
        nodes.append(_const("axes", np.asarray([1], np.int64)))
        nodes.append(
            helper.make_node(
                "ReduceMax",
                [x, PREFIX + "axes"],
                [io_names.SCORES],
                name=PREFIX + "scores",
                keepdims=0,
            )
        )
    else:
        nodes.append(
            helper.make_node(
                "ReduceMax", [x], [io_names.SCORES], name=PREFIX + "scores", axes=[1], keepdims=0
            )
        )
    return nodes


def check_graph(model: onnx.ModelProto) -> None:
    """``onnx.checker`` (full) and strict shape inference (which also refuses declared output
    types or shapes that disagree with the inferred ones). Raises GraphIoError."""
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise GraphIoError(f"the edited graph fails the ONNX checks: {e}") from e


def device_graph(
    model: onnx.ModelProto,
    pre: PreprocessCfg,
    post: PostprocessCfg | None,
    score: str,
    score_scale: float = 1.0,
) -> onnx.ModelProto:
    """``model`` with ``pre.input_format`` and, when ``post`` is set, LABELS and SCORES;
    checked (``check_graph``). ``model`` itself is not modified."""
    out = add_input_format(model, pre)
    if post is not None:
        out = add_postprocess(out, post.output_hw, post.labels_dtype, score, score_scale)
    check_graph(out)
    return out
