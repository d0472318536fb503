"""Honest names on finished graphs: I/O shapes as the manifest declares them, ``graph.name``,
``doc_string`` and metadata.

Run once per graph after every edit (simplification, device I/O) and before it is written:

- ``name_model_graph``: the deployed graph's inputs and outputs get the manifest's shapes
  (``num_classes`` on TEXT_EMBEDDINGS and on every class axis of a vocabulary-as-input graph,
  instead of the simplifier's ``Sigmoidlogits_dim_0``; 1 for a batch axis it left symbolic), and
  the same symbolic names wherever they occur inside; ``graph.name`` "ovss_<method>_<backbone>";
  a ``doc_string`` with method, backbone, class count and each input's and output's meaning
  (``runtime.io_names.MEANINGS``).
- ``name_text_graph``: the same for ``text_encoder.onnx``, plus ``metadata_props`` with the
  tokenizer, context length and embedding width.

Both end with ``export.graph_io.check_graph`` (``onnx.checker`` and strict shape inference).
"""

from __future__ import annotations

import re

import onnx

from export.graph_io import check_graph
from runtime import io_names
from runtime.manifest import Manifest, TensorSpec

TOKENIZER = "clip-bpe"  # runtime.tokenizer.ClipTokenizer over the folder's vocabulary file


def graph_name(method: str, backbone: str, part: str = "") -> str:
    """``ovss_<method>_<backbone>[_<part>]`` with every non-alphanumeric run as one ``_``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", "_".join(p for p in ("ovss", method, backbone, part) if p))


def _set_dims(value: onnx.ValueInfoProto, shape: tuple, renames: dict[str, str | int]) -> None:
    """Give ``value``'s symbolic (or unnamed) dims the sizes or names of ``shape``, noting in
    ``renames`` the symbolic names it replaces; static dims stay as they are."""
    dims = value.type.tensor_type.shape.dim
    assert len(dims) == len(shape), f"{value.name}: graph rank {len(dims)}, manifest {shape}"
    for dim, want in zip(dims, shape):
        if dim.HasField("dim_value"):  # static sizes are the graph's own
            continue
        if dim.dim_param and dim.dim_param != want:
            renames[dim.dim_param] = want
        if isinstance(want, str):
            dim.dim_param = want
        else:
            dim.dim_value = want


def _rename_inside(graph: onnx.GraphProto, renames: dict[str, str | int]) -> None:
    """Apply ``renames`` (to a name, or to a static size) to the symbolic dims of every
    intermediate value."""
    for value in graph.value_info:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in renames:
                want = renames[dim.dim_param]
                if isinstance(want, str):
                    dim.dim_param = want
                else:
                    dim.dim_value = want


def _apply_specs(graph: onnx.GraphProto, specs: tuple[TensorSpec, ...]) -> None:
    values = {v.name: v for v in [*graph.input, *graph.output]}
    renames: dict[str, str | int] = {}
    for spec in specs:
        _set_dims(values[spec.name], tuple(spec.shape), renames)
    _rename_inside(graph, renames)


def _io_lines(specs: tuple[TensorSpec, ...]) -> list[str]:
    return [f"  {s.name} {s.dtype} [{','.join(map(str, s.shape))}]: {s.meaning}" for s in specs]


def name_model_graph(model: onnx.ModelProto, manifest: Manifest) -> onnx.ModelProto:
    """Set ``model``'s I/O shapes, ``graph.name`` and ``doc_string`` from ``manifest`` (in
    place; returned for chaining) and check it. Raises GraphIoError when the checks fail."""
    g = model.graph
    _apply_specs(g, (*manifest.inputs, *manifest.outputs))
    g.name = graph_name(manifest.method, manifest.backbone)
    vocab = (
        "vocabulary as input (C = num_classes, the rows of text_embeddings)"
        if manifest.vocab_mode == "input"
        else "fixed vocabulary (baked text classifier)"
    )
    lines = [
        f"ovss-edge {manifest.method} on {manifest.backbone}: open-vocabulary segmentation, "
        f"{len(manifest.classes)} export classes, {vocab}.",
        "inputs:",
        *_io_lines(manifest.inputs),
        "outputs:",
        *_io_lines(manifest.outputs),
    ]
    g.doc_string = model.doc_string = "\n".join(lines)
    check_graph(model)
    return model


def name_text_graph(
    model: onnx.ModelProto, method: str, backbone: str, context_length: int, embed_dim: int
) -> onnx.ModelProto:
    """Name ``text_encoder.onnx``'s graph, document it and record its tokenizer, context length
    and width in ``metadata_props`` (in place; returned). Raises GraphIoError on failed checks."""
    g = model.graph
    g.name = graph_name(method, backbone, "text_encoder")
    meanings = [
        f"  {n}: {io_names.MEANINGS[n]}" for n in (io_names.TEXT_TOKENS, io_names.TEXT_FEATURES)
    ]
    doc = "\n".join(
        [
            f"ovss-edge CLIP text tower of {method} on {backbone}: prompt tokens -> "
            f"{embed_dim}-d text features (runtime.text_encoder).",
            *meanings,
        ]
    )
    g.doc_string = model.doc_string = doc
    meta = {
        "tokenizer": TOKENIZER,
        "context_length": str(context_length),
        "embed_dim": str(embed_dim),
        "method": method,
        "backbone": backbone,
    }
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {**dict(keep), **meta})
    check_graph(model)
    return model
