"""The manifest checked against the graph a backend loaded (as the C++ runtime does).

A manifest is a claim about its graph; a folder whose manifest and graph disagree (edited by
hand, or a graph swapped in with its hash) would otherwise run with the wrong input size, class
names or stride and give silently wrong labels. ``check_graph`` refuses, with a
``ModelFolderError`` naming the tensor and the axis:

- other input names or order, or a manifest output the graph lacks;
- a tensor whose dtype differs from its manifest spec;
- another rank, or a fixed axis of another size (an axis that either side leaves symbolic or
  dynamic matches anything);
- an IMAGE input that is not ``preprocess.input_format`` at ``preprocess.input_size``;
- LOGITS / MASK_LOGITS whose class axis is not ``len(classes)`` (fixed vocabulary) or whose
  spatial size is not ``input_size / feature_stride``, where the graph states them.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime import io_names
from runtime.backends import TensorInfo
from runtime.errors import ModelFolderError
from runtime.manifest import Manifest, TensorSpec


def _fixed(dim) -> int | None:
    """The size of a fixed axis, None for a symbolic (str) or dynamic (-1) one."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 else None


def check_shape(name: str, got: Sequence, want: Sequence, what: str) -> None:
    """``got`` (the graph's) agrees with ``want``: same rank, equal where both are fixed.

    Raises:
        ModelFolderError: names the tensor, the axis and both shapes.
    """
    if len(got) != len(want):
        raise ModelFolderError(
            f"graph tensor {name!r} has shape {list(got)}, but {what} says {list(want)} "
            f"(rank {len(got)} vs {len(want)})"
        )
    for axis, (g, w) in enumerate(zip(got, want)):
        if _fixed(g) is not None and _fixed(w) is not None and g != w:
            raise ModelFolderError(
                f"graph tensor {name!r} has shape {list(got)}, but {what} says {list(want)} "
                f"(axis {axis}: {g} vs {w})"
            )


def _check_spec(got: TensorInfo, want: TensorSpec) -> None:
    if got.dtype != want.dtype:
        raise ModelFolderError(
            f"graph tensor {got.name!r} is {got.dtype}, but the manifest says {want.dtype}"
        )
    check_shape(got.name, got.shape, want.shape, "the manifest")


def check_names(
    manifest: Manifest, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]
) -> None:
    """The graph's inputs are the manifest's (same order); the manifest's outputs are in it."""
    want_in = tuple(t.name for t in manifest.inputs)
    want_out = tuple(t.name for t in manifest.outputs)
    got_in, got_out = tuple(t.name for t in inputs), tuple(t.name for t in outputs)
    if got_in != want_in or not set(want_out) <= set(got_out):
        raise ModelFolderError(
            f"model inputs {got_in} / outputs {got_out} do not match the "
            f"manifest's {want_in} / {want_out}"
        )


def check_graph(
    manifest: Manifest, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]
) -> None:
    """Refuse a graph whose inputs / outputs (a backend's ``input_specs`` / ``output_specs``)
    disagree with ``manifest`` (see the module docstring).

    Raises:
        ModelFolderError: the first disagreement found.
    """
    check_names(manifest, inputs, outputs)
    by_name = {t.name: t for t in (*inputs, *outputs)}
    for spec in (*manifest.inputs, *manifest.outputs):
        _check_spec(by_name[spec.name], spec)
    pre = manifest.preprocess
    image = by_name.get(io_names.IMAGE)
    if image is not None:
        if image.dtype != pre.image_dtype:
            raise ModelFolderError(
                f"graph input {io_names.IMAGE!r} is {image.dtype}, but preprocess.input_format "
                f"{pre.input_format!r} needs {pre.image_dtype}"
            )
        check_shape(image.name, image.shape, pre.image_shape, "preprocess.input_size")
    h, w = (side // pre.feature_stride for side in pre.input_size)
    classes = len(manifest.classes) if manifest.vocab_mode == "fixed" else -1
    for name in (io_names.LOGITS, io_names.MASK_LOGITS):
        if name in by_name:
            check_shape(
                name,
                by_name[name].shape,
                (1, classes, h, w),
                f"{len(manifest.classes)} classes and input_size / feature_stride",
            )
