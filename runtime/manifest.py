"""The deployable folder's manifest: a flat, typed description of ``model.onnx`` and how to feed it.

Written by ``export`` (to ``DIR/manifest.json`` and into the ONNX ``metadata_props``), read and
validated here so the runtime needs neither torch nor a tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import io_names
from runtime.errors import ModelFolderError
from runtime.folder_files import check_name, check_sha256, resolve_in_folder
from runtime.fsutil import atomic_write_text

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
VOCAB_MODES = ("fixed", "input")
METADATA_KEY = "ovss_manifest"
PRECISIONS = ("fp32", "fp16", "int8")
# preprocess.input_format: what the graph's IMAGE input is (export.build --input-format).
INPUT_FORMATS = ("float32-nchw", "uint8-nhwc", "uint8-nchw")
# Manifest.score: how a method's logits become per-class scores (softmax over classes, or the
# logits are per-class probabilities already).
SCORE_KINDS = ("softmax", "probability")
LABEL_DTYPES = ("uint8", "int32")
# Manifests written before ``score`` existed: the methods whose logits are probabilities.
PROBABILITY_METHODS = ("zegclip", "cliprc")
# Limits on what a manifest may be: refused before parsing (size) or right after (depth).
MAX_MANIFEST_BYTES = 16 << 20
MAX_JSON_DEPTH = 32
# Sane bounds of numeric fields (inclusive).
MAX_INPUT_SIDE = 16384
OPSET_RANGE = (7, 99)
CONTEXT_LENGTH_RANGE = (2, 1024)
EMBED_DIM_RANGE = (1, 65536)


@dataclass(frozen=True)
class PreprocessCfg:
    """How an RGB uint8 image becomes the model input.

    Attributes:
        input_size: (H, W) of the fixed model input, pixels.
        mean, std: per-channel RGB normalisation on the 0..255 scale.
        feature_stride: input pixels per logit cell (patch size for ViT, 32 for ModifiedResNet).
        input_format: the IMAGE input: ``float32-nchw`` (the host resizes and normalises:
            float32 [1,3,H,W]), or ``uint8-nhwc`` / ``uint8-nchw`` (the host only resizes: uint8
            [1,H,W,3] / [1,3,H,W] RGB 0..255; the graph casts, transposes and normalises with
            ``mean`` / ``std``).
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_stride: int
    input_format: str = "float32-nchw"

    @property
    def image_dtype(self) -> str:
        """dtype of the IMAGE input: "float32" or "uint8"."""
        return "float32" if self.input_format == "float32-nchw" else "uint8"

    @property
    def image_shape(self) -> tuple[int, int, int, int]:
        """Shape of the IMAGE input: (1, H, W, 3) for uint8-nhwc, else (1, 3, H, W)."""
        h, w = self.input_size
        return (1, h, w, 3) if self.input_format == "uint8-nhwc" else (1, 3, h, w)


@dataclass(frozen=True)
class PostprocessCfg:
    """In-graph post-processing (``export.build --postprocess graph``): the graph computes
    ``io_names.LABELS`` and ``io_names.SCORES`` from its LOGITS (which it still outputs).

    Attributes:
        output_hw: (H, W) of LABELS and SCORES, pixels (the logits are bilinearly resized to it).
        labels_dtype: dtype of LABELS: "uint8" (fixed vocabulary of <= 255 classes) or "int32".
    """

    output_hw: tuple[int, int]
    labels_dtype: str


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, dtype, shape (ints or axis names) and meaning."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    meaning: str


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from. ``random``: random-init weights (the masks are meaningless)."""

    source: str
    sha256: str
    random: bool


@dataclass(frozen=True)
class Variant:
    """A reduced-precision graph of the same model, written by ``calibration.calibrate``.

    Attributes:
        file, sha256: the graph file in the folder and its hash.
        settings: how it was made (calibration method, images, exclusions, ...).
        accuracy: its summary against FP32 (label agreement, mean |logit error|, mIoU if labels).
    """

    file: str
    sha256: str
    settings: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextEncoderInfo:
    """The optional on-device text encoder, written by ``export.build --text-encoder``.

    Attributes:
        file, sha256: the text tower graph (``io_names.TEXT_TOKENS`` int64 [N, L], L up to
            context_length -> ``io_names.TEXT_FEATURES`` float32 [N, embed_dim], unnormalised)
            and its hash.
        vocab_file, vocab_sha256: the gzipped CLIP BPE merges file and its hash.
        context_length: tokens per prompt (77 for CLIP).
        embed_dim: D, the width of the model's text-embedding input.
        templates: prompt templates with one ``{}`` for the class name (e.g. "a photo of a {}."),
            the set the export's own classifier was built with.
    """

    file: str
    sha256: str
    vocab_file: str
    vocab_sha256: str
    context_length: int
    embed_dim: int
    templates: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs to run ``model_file`` without the training code.

    Attributes (besides the self-explanatory ones):
        score: the method's normalisation of its logits: ``softmax`` (scaled cosine logits:
            probabilities are softmax over classes) or ``probability`` (ZegCLIP, CLIP-RC: the
            logits are per-class sigmoid scores minus the seen bias already).
        score_scale: softmax temperature k > 0: probabilities are softmax(k * logits) (100,
            CLIP's logit scale, for graphs that output raw cosines).
        postprocess: in-graph post-processing (LABELS and SCORES outputs), or None: the host
            upsamples and takes the argmax of LOGITS.
        seen_bias: ZegCLIP / CLIP-RC inductive: the value subtracted from the probability
            scores of training-seen classes (0.1 officially); 0 = none (transductive, a method
            without one, or an export older than this field). For ``vocab_mode: input`` the
            runtime subtracts it from the classes given as ``seen=`` (``Segmenter``).
        seen_classes: the names in ``classes`` that are seen: with ``vocab_mode: fixed`` the
            bias is already in the graph's LOGITS; with ``input`` the runtime subtracts it from
            them for the folder's own vocabulary. Non-empty only with ``seen_bias`` > 0.
        build_commands: per precision (fp32 and each variant), the ``trtexec`` and
            ``polygraphy`` command lines that build its TensorRT engine on the target without
            our Python (default builder settings, paths relative to the folder;
            ``export.trtexec.folder_commands``; ``ovss-engine --print-trtexec`` for others).
    """

    method: str
    backbone: str
    weights: WeightsInfo
    classes: tuple[str, ...]
    vocab_mode: str
    preprocess: PreprocessCfg
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    package_version: str
    model_file: str = "model.onnx"
    model_sha256: str = ""
    text_embeddings_file: str | None = None
    text_embeddings_sha256: str = ""
    method_cfg: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)
    text_encoder: TextEncoderInfo | None = None
    score: str = "softmax"
    score_scale: float = 1.0
    postprocess: PostprocessCfg | None = None
    seen_bias: float = 0.0
    seen_classes: tuple[str, ...] = ()
    build_commands: dict[str, dict[str, str]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def model_for(self, precision: str) -> tuple[str, str]:
        """(file, sha256) of the graph for ``precision`` (``fp32`` is ``model_file``).

        Raises:
            ModelFolderError: unknown precision, or a variant this folder does not hold.
        """
        if precision not in PRECISIONS:
            raise ModelFolderError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if precision == "fp32":
            return self.model_file, self.model_sha256
        if precision not in self.variants:
            have = ["fp32", *sorted(self.variants)]
            raise ModelFolderError(
                f"this folder has no {precision} variant (it has {have}); "
                f"make one with python -m calibration.calibrate --precision {precision}"
            )
        v = self.variants[precision]
        return v.file, v.sha256

    def to_json(self) -> str:
        """Serialise to indented JSON (tuples become lists)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/manifest.json`` atomically."""
        return atomic_write_text(Path(folder) / MANIFEST_FILE, self.to_json() + "\n")

    def input(self, name: str) -> TensorSpec:
        """The input spec called ``name``; raises ModelFolderError if absent."""
        return _find(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        """The output spec called ``name``; raises ModelFolderError if absent."""
        return _find(self.outputs, name, "output")


def _find(specs: tuple[TensorSpec, ...], name: str, kind: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise ModelFolderError(f"manifest declares no {kind} tensor named {name!r}")


def _require(d: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    """``d[key]`` of one of ``types``; a bool is not an int (JSON ``true`` is not 1)."""
    if not isinstance(d, dict) or key not in d:
        raise ModelFolderError(f"manifest is missing '{where}{key}'")
    value = d[key]
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ModelFolderError(f"manifest field '{where}{key}' has type {type(value).__name__}")
    return value


def _is_int(value: Any) -> bool:
    """A JSON integer: an int that is not a bool (a float such as 224.0 or 224.5 is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number (int or float, not bool; NaN and infinities refused)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(d: dict, key: str, bounds: tuple[int, int], where: str) -> int:
    """``d[key]``, an integer in ``bounds`` (inclusive)."""
    value = _require(d, key, int, where)
    if not bounds[0] <= value <= bounds[1]:
        raise ModelFolderError(
            f"manifest field '{where}{key}' is {value}, outside [{bounds[0]}, {bounds[1]}]"
        )
    return value


def _dim(value: Any, where: str) -> int | str:
    """One axis of a tensor spec: an integer >= 1, or a non-empty axis name."""
    if (_is_int(value) and value >= 1) or (isinstance(value, str) and value):
        return value
    raise ModelFolderError(
        f"manifest field '{where}shape' has axis {value!r}: an integer >= 1 or an axis name"
    )


def _specs(items: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(items, list) or not items:
        raise ModelFolderError(f"manifest field '{where}' must be a non-empty list")
    specs = tuple(
        TensorSpec(
            name=_require(t, "name", str, f"{where}[]."),
            dtype=_require(t, "dtype", str, f"{where}[]."),
            shape=tuple(_dim(v, f"{where}[].") for v in _require(t, "shape", list, f"{where}[].")),
            meaning=_require(t, "meaning", str, f"{where}[]."),
        )
        for t in items
    )
    names = [t.name for t in specs]
    if len(set(names)) != len(names):
        raise ModelFolderError(f"manifest field '{where}' names a tensor twice: {names}")
    return specs


def manifest_from_dict(d: dict, *, require_hashes: bool = False) -> Manifest:
    """Build and validate a Manifest from parsed JSON; ModelFolderError names the bad field.

    Fields added after format 1 was first written (``preprocess.input_format``, ``score``,
    ``postprocess``, ``seen_bias``, ``seen_classes``) may be absent: float32-nchw input, the
    method's known score kind, host post-processing, no seen-class bias.

    Refused besides missing fields and wrong types: file names that are absolute or have a
    ``..`` component (``runtime.folder_files``), hashes that are not 64 hex digits, a bool
    where a number belongs, floats where integers belong (no truncation), NaN / infinite
    numbers, numbers outside sane bounds, a ``feature_stride`` that does not divide the input
    size, and LOGITS specs whose class count or spatial size disagree with ``classes`` /
    ``input_size / feature_stride``.

    Args:
        require_hashes: every named file must state its sha256 (``model_sha256``,
            ``text_embeddings_sha256``, each variant's and the text encoder's): True for a
            folder's ``manifest.json`` (``load_manifest``); False accepts "" (the graph's
            metadata copy, written before the file's own hash exists).
    """
    if not isinstance(d, dict):
        raise ModelFolderError("manifest must be a JSON object")
    version = _require(d, "format_version", int, "")
    if version != FORMAT_VERSION:
        raise ModelFolderError(
            f"manifest format_version {version} is not supported ({FORMAT_VERSION})"
        )
    w = _require(d, "weights", dict, "")
    classes = _require(d, "classes", list, "")
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise ModelFolderError("manifest 'classes' must be a non-empty list of names")
    vocab_mode = _require(d, "vocab_mode", str, "")
    if vocab_mode not in VOCAB_MODES:
        raise ModelFolderError(f"manifest vocab_mode {vocab_mode!r} not in {VOCAB_MODES}")
    method = _require(d, "method", str, "")
    manifest = Manifest(
        method=method,
        backbone=_require(d, "backbone", str, ""),
        weights=WeightsInfo(
            source=_require(w, "source", str, "weights."),
            sha256=_require(w, "sha256", str, "weights."),
            random=_require(w, "random", bool, "weights."),
        ),
        classes=tuple(classes),
        vocab_mode=vocab_mode,
        preprocess=_preprocess(_require(d, "preprocess", dict, "")),
        inputs=_specs(d.get("inputs"), "inputs"),
        outputs=_specs(d.get("outputs"), "outputs"),
        opset=_int_in(d, "opset", OPSET_RANGE, ""),
        package_version=_require(d, "package_version", str, ""),
        model_file=check_name(_require(d, "model_file", str, ""), "model_file"),
        model_sha256=check_sha256(
            _require(d, "model_sha256", str, ""), "model_sha256", required=require_hashes
        ),
        text_embeddings_file=_optional_name(d, "text_embeddings_file"),
        text_embeddings_sha256=_text_embeddings_sha256(d, require_hashes),
        method_cfg=_method_cfg(d.get("method_cfg", {})),
        parity=_parity(d.get("parity", {})),
        variants=_variants(d.get("variants", {}), require_hashes),
        text_encoder=_text_encoder(d.get("text_encoder"), require_hashes),
        score=_score(d, method),
        score_scale=_score_scale(d),
        postprocess=_postprocess(d.get("postprocess")),
        seen_bias=_seen_bias(d),
        seen_classes=_seen_classes(d),
        build_commands=_build_commands(d.get("build_commands", {})),
        format_version=version,
    )
    _check_seen(manifest)
    _check_text_encoder(manifest)
    _check_image_input(manifest)
    _check_postprocess(manifest)
    _check_logits(manifest)
    _check_text_input(manifest)
    return manifest


def _optional_name(d: dict, key: str) -> str | None:
    """An optional file name field (absent or null: none)."""
    value = d.get(key)
    return None if value is None else check_name(value, key)


def _text_embeddings_sha256(d: dict, require: bool) -> str:
    """``text_embeddings_sha256``: a sha256 whenever ``text_embeddings_file`` is set."""
    value = d.get("text_embeddings_sha256", "")
    if d.get("text_embeddings_file") is None:
        return check_sha256(value, "text_embeddings_sha256", required=False)
    if require and value == "":
        raise ModelFolderError(
            "manifest field 'text_embeddings_sha256' is missing or empty, but "
            "'text_embeddings_file' is set: every named file needs its sha256 (re-export "
            "the folder)"
        )
    return check_sha256(value, "text_embeddings_sha256", required=require)


# method_cfg keys the runtime reads, and what each must be (None is always allowed).
_METHOD_CFG_CHECKS = {
    "short_side": (lambda v: _is_int(v) and 0 <= v <= MAX_INPUT_SIDE, "an integer >= 0"),
    "slide_stride": (lambda v: _is_int(v) and 1 <= v <= MAX_INPUT_SIDE, "an integer >= 1"),
    "prob_thd": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "slide_edge": (lambda v: isinstance(v, str), "a string"),
    "key_smoothing": (lambda v: isinstance(v, bool), "true or false"),
    "seen_bias": (
        lambda v: isinstance(v, list) and all(_is_number(b) for b in v),
        "a list of finite numbers",
    ),
}


def _method_cfg(value: Any) -> dict[str, Any]:
    """``method_cfg``: an object whose entries the runtime reads have their types."""
    if not isinstance(value, dict):
        raise ModelFolderError("manifest field 'method_cfg' must be an object")
    for key, (ok, what) in _METHOD_CFG_CHECKS.items():
        v = value.get(key)
        if v is not None and not ok(v):
            raise ModelFolderError(
                f"manifest field 'method_cfg.{key}' must be {what}, got {str(v)[:80]!r}"
            )
    return value


def _parity(value: Any) -> dict[str, Any]:
    """``parity``: an object (its numbers are reports, not read back)."""
    if not isinstance(value, dict):
        raise ModelFolderError("manifest field 'parity' must be an object")
    return value


def _preprocess(pre: dict) -> PreprocessCfg:
    """The ``preprocess`` entry; ``input_format`` absent (older manifests) = float32-nchw.

    Refused: ``input_size`` not two integers in [1, 16384] (224.5 or true are not integers),
    ``mean`` / ``std`` not three finite numbers (NaN, infinities refused) with ``std`` > 0,
    ``feature_stride`` not an integer >= 1 that divides both sides of ``input_size``.
    """
    size = _require(pre, "input_size", list, "preprocess.")
    mean, std = (
        _require(pre, "mean", list, "preprocess."),
        _require(pre, "std", list, "preprocess."),
    )
    if len(size) != 2 or not all(_is_int(v) and 1 <= v <= MAX_INPUT_SIDE for v in size):
        raise ModelFolderError(
            f"manifest preprocess.input_size must be [H, W], integers in [1, {MAX_INPUT_SIDE}], "
            f"got {str(size)[:80]}"
        )
    for key, values in (("mean", mean), ("std", std)):
        if len(values) != 3 or not all(_is_number(v) for v in values):
            raise ModelFolderError(
                f"manifest preprocess.{key} must be 3 finite numbers, got {str(values)[:80]}"
            )
    if min(std) <= 0:
        raise ModelFolderError(f"manifest preprocess.std must be > 0, got {std}")
    stride = _require(pre, "feature_stride", int, "preprocess.")
    if stride < 1 or size[0] % stride or size[1] % stride:
        raise ModelFolderError(
            f"manifest preprocess.feature_stride {stride} must be >= 1 and divide the input "
            f"size {size}"
        )
    input_format = pre.get("input_format", INPUT_FORMATS[0])
    if input_format not in INPUT_FORMATS:
        raise ModelFolderError(
            f"manifest preprocess.input_format {input_format!r} is not one of {INPUT_FORMATS}"
        )
    return PreprocessCfg(
        input_size=(size[0], size[1]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        feature_stride=stride,
        input_format=input_format,
    )


def _score(d: dict, method: str) -> str:
    """``score``; absent (older manifests): "probability" for ZegCLIP / CLIP-RC, else "softmax"."""
    score = d.get("score")
    if score is None:
        return "probability" if method in PROBABILITY_METHODS else "softmax"
    if score not in SCORE_KINDS:
        raise ModelFolderError(f"manifest score {score!r} is not one of {SCORE_KINDS}")
    return score


def _score_scale(d: dict) -> float:
    """``score_scale``, a positive finite number; absent (older manifests): 100 for MaskCLIP
    without key smoothing (raw cosines), else 1."""
    raw_cosine = d.get("method") == "maskclip" and not d.get("method_cfg", {}).get(
        "key_smoothing", True
    )
    scale = d.get("score_scale", 100.0 if raw_cosine else 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < 1e6:
        raise ModelFolderError(f"manifest score_scale must be a number in (0, 1e6), got {scale!r}")
    return float(scale)


def _seen_bias(d: dict) -> float:
    """``seen_bias``, a finite number >= 0; absent (older manifests): 0."""
    value = d.get("seen_bias", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
        raise ModelFolderError(f"manifest seen_bias must be a number in [0, 1e6), got {value!r}")
    return float(value)


def _build_commands(value: Any) -> dict[str, dict[str, str]]:
    """``build_commands``: {precision: {tool: command line}}; absent (older manifests): {}."""
    ok = isinstance(value, dict) and all(
        p in PRECISIONS
        and isinstance(c, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in c.items())
        for p, c in value.items()
    )
    if not ok:
        raise ModelFolderError(
            "manifest build_commands must map a precision to {tool: command line}, got "
            f"{str(value)[:80]!r}"
        )
    return {p: dict(c) for p, c in value.items()}


def _seen_classes(d: dict) -> tuple[str, ...]:
    """``seen_classes``, a list of names; absent (older manifests): none."""
    names = d.get("seen_classes", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelFolderError(f"manifest seen_classes must be a list of names, got {names!r}")
    return tuple(names)


def _check_seen(m: Manifest) -> None:
    """A seen bias belongs to a probability-scored method; seen classes are in ``classes``,
    once each, and come with a bias."""
    if m.seen_bias and m.score != "probability":
        raise ModelFolderError(
            f"manifest seen_bias {m.seen_bias} needs score 'probability' (got {m.score!r})"
        )
    unknown = sorted(set(m.seen_classes) - set(m.classes))
    if unknown or len(set(m.seen_classes)) != len(m.seen_classes):
        raise ModelFolderError(
            f"manifest seen_classes {list(m.seen_classes)} must be distinct names of 'classes'"
        )
    if m.seen_classes and not m.seen_bias:
        raise ModelFolderError("manifest seen_classes are given but seen_bias is 0")


def _postprocess(d: Any) -> PostprocessCfg | None:
    """The optional ``postprocess`` entry (absent or null: host post-processing)."""
    if d is None:
        return None
    hw = _require(d, "output_hw", list, "postprocess.")
    if len(hw) != 2 or not all(type(v) is int and v > 0 for v in hw):
        raise ModelFolderError(f"manifest postprocess.output_hw must be [H,W] > 0, got {hw}")
    dtype = _require(d, "labels_dtype", str, "postprocess.")
    if dtype not in LABEL_DTYPES:
        raise ModelFolderError(
            f"manifest postprocess.labels_dtype {dtype!r} is not one of {LABEL_DTYPES}"
        )
    return PostprocessCfg((hw[0], hw[1]), dtype)


def _check_image_input(m: Manifest) -> None:
    """The IMAGE input spec, where declared, has the dtype and shape of ``input_format``."""
    pre = m.preprocess
    if pre.input_format == INPUT_FORMATS[0] and not any(t.name == io_names.IMAGE for t in m.inputs):
        return  # older hand-made manifests may not declare it; uint8 formats must
    spec = m.input(io_names.IMAGE)
    if spec.dtype != pre.image_dtype or tuple(spec.shape) != pre.image_shape:
        raise ModelFolderError(
            f"manifest input {io_names.IMAGE!r} is {spec.dtype} {list(spec.shape)}, but "
            f"preprocess.input_format {pre.input_format!r} at {list(pre.input_size)} needs "
            f"{pre.image_dtype} {list(pre.image_shape)}"
        )


def _check_postprocess(m: Manifest) -> None:
    """In-graph post-processing declares LOGITS, LABELS and SCORES outputs that fit it."""
    post = m.postprocess
    if post is None:
        return
    if post.labels_dtype == "uint8" and (m.vocab_mode != "fixed" or len(m.classes) > 255):
        raise ModelFolderError(
            "manifest postprocess.labels_dtype 'uint8' needs a fixed vocabulary of <= 255 "
            f"classes (vocab_mode {m.vocab_mode!r}, {len(m.classes)} classes): use 'int32'"
        )
    m.output(io_names.LOGITS)
    want = (1, *post.output_hw)
    for name, dtype in ((io_names.LABELS, post.labels_dtype), (io_names.SCORES, "float32")):
        spec = m.output(name)
        if spec.dtype != dtype or tuple(spec.shape) != want:
            raise ModelFolderError(
                f"manifest output {name!r} is {spec.dtype} {list(spec.shape)}; "
                f"postprocess needs {dtype} {list(want)}"
            )


def _check_logits(m: Manifest) -> None:
    """LOGITS (and MASK_LOGITS), where declared: [1, C, H/p, W/p] with C = ``len(classes)`` for
    a fixed vocabulary (an axis name for ``input``) and p = ``feature_stride``; fixed axes only
    (an axis name matches anything)."""
    pre = m.preprocess
    h, w = (side // pre.feature_stride for side in pre.input_size)
    for spec in m.outputs:
        if spec.name not in (io_names.LOGITS, io_names.MASK_LOGITS):
            continue
        if len(spec.shape) != 4:
            raise ModelFolderError(
                f"manifest output {spec.name!r} has shape {list(spec.shape)}: [1, C, h, w] expected"
            )
        classes = spec.shape[1]
        if m.vocab_mode == "fixed" and classes != len(m.classes):
            raise ModelFolderError(
                f"manifest output {spec.name!r} has {classes} classes, but 'classes' has "
                f"{len(m.classes)}"
            )
        for axis, want, what in ((2, h, "height"), (3, w, "width")):
            got = spec.shape[axis]
            if isinstance(got, int) and got != want:
                raise ModelFolderError(
                    f"manifest output {spec.name!r} {what} {got} is not input_size / "
                    f"feature_stride = {want} ({list(pre.input_size)} / {pre.feature_stride})"
                )


def _check_text_input(m: Manifest) -> None:
    """A ``vocab_mode: input`` manifest declares the text-embedding input [C, D] (D an integer)
    and names the default embeddings file; a fixed one declares no such input."""
    has = any(t.name == io_names.TEXT_EMBEDDINGS for t in m.inputs)
    if m.vocab_mode == "fixed":
        if has:
            raise ModelFolderError(
                f"manifest vocab_mode 'fixed' declares a {io_names.TEXT_EMBEDDINGS!r} input"
            )
        return
    if not has:
        raise ModelFolderError(
            f"manifest vocab_mode 'input' needs a {io_names.TEXT_EMBEDDINGS!r} input"
        )
    spec = m.input(io_names.TEXT_EMBEDDINGS)
    if len(spec.shape) != 2 or not _is_int(spec.shape[1]):
        raise ModelFolderError(
            f"manifest input {io_names.TEXT_EMBEDDINGS!r} has shape {list(spec.shape)}: "
            "[C, D] with an integer D expected"
        )
    if m.text_embeddings_file is None:
        raise ModelFolderError("manifest vocab_mode 'input' needs 'text_embeddings_file'")


def _variants(d: Any, require_hashes: bool = False) -> dict[str, Variant]:
    """``variants``: {precision: {file, sha256, settings, accuracy}}; a variant always states
    its sha256 (calibrate writes it into the folder's manifest only)."""
    if not isinstance(d, dict):
        raise ModelFolderError("manifest field 'variants' must be an object")
    out = {}
    for precision, v in d.items():
        if precision not in PRECISIONS[1:]:
            raise ModelFolderError(f"manifest variant {precision!r} is not one of {PRECISIONS[1:]}")
        where = f"variants.{precision}."
        if not isinstance(v, dict):
            raise ModelFolderError(f"manifest field 'variants.{precision}' must be an object")
        settings, accuracy = v.get("settings", {}), v.get("accuracy", {})
        if not isinstance(settings, dict) or not isinstance(accuracy, dict):
            raise ModelFolderError(f"manifest fields '{where}settings/accuracy' must be objects")
        out[precision] = Variant(
            file=check_name(_require(v, "file", str, where), f"{where}file"),
            sha256=check_sha256(
                _require(v, "sha256", str, where), f"{where}sha256", required=require_hashes
            ),
            settings=settings,
            accuracy=accuracy,
        )
    return out


def _text_encoder(d: Any, require_hashes: bool = False) -> TextEncoderInfo | None:
    """The optional ``text_encoder`` entry (absent or null in older manifests).

    Refused besides bad names and hashes: ``context_length`` outside [2, 1024], ``embed_dim``
    outside [1, 65536] (integers, not floats or bools), no templates.
    """
    if d is None:
        return None
    where = "text_encoder."
    info = TextEncoderInfo(
        file=check_name(_require(d, "file", str, where), f"{where}file"),
        sha256=check_sha256(
            _require(d, "sha256", str, where), f"{where}sha256", required=require_hashes
        ),
        vocab_file=check_name(_require(d, "vocab_file", str, where), f"{where}vocab_file"),
        vocab_sha256=check_sha256(
            _require(d, "vocab_sha256", str, where), f"{where}vocab_sha256", required=require_hashes
        ),
        context_length=_int_in(d, "context_length", CONTEXT_LENGTH_RANGE, where),
        embed_dim=_int_in(d, "embed_dim", EMBED_DIM_RANGE, where),
        templates=tuple(_require(d, "templates", list, where)),
    )
    if not info.templates:
        raise ModelFolderError("manifest text_encoder.templates must be a non-empty list")
    for t in info.templates:
        _check_template(t)
    return info


def _check_template(template: Any) -> None:
    """A template must be a string that formats one class name through exactly one ``{}``."""
    try:
        ok = isinstance(template, str) and template.count("{}") == 1 and bool(template.format("x"))
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise ModelFolderError(
            f"manifest text_encoder template {template!r} must be a string with "
            "one '{}' for the class name"
        )


def _check_text_encoder(m: Manifest) -> None:
    """A text encoder only makes sense for a text-input graph of the same width."""
    if m.text_encoder is None:
        return
    if m.vocab_mode != "input":
        raise ModelFolderError("manifest has a text_encoder but vocab_mode is not 'input'")
    dim = m.input(io_names.TEXT_EMBEDDINGS).shape[-1]
    if dim != m.text_encoder.embed_dim:
        raise ModelFolderError(
            f"manifest text_encoder.embed_dim {m.text_encoder.embed_dim} does "
            f"not match the {io_names.TEXT_EMBEDDINGS} input width {dim}"
        )


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` 1, ``[[1]]`` 2), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, (dict, list)):
            depth = max(depth, level)
            stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return depth


def read_manifest_json(path: str | os.PathLike) -> Any:
    """Parse a manifest file within the limits.

    Raises:
        ModelFolderError: larger than ``MAX_MANIFEST_BYTES`` (checked before reading), not UTF-8
            JSON, or nested deeper than ``MAX_JSON_DEPTH``.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ModelFolderError(
            f"{str(path)!r} is {size} bytes, over the manifest limit of {MAX_MANIFEST_BYTES}"
        )
    with open(path, "rb") as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:  # grew since the stat
        raise ModelFolderError(f"{str(path)!r} is over the manifest limit of {MAX_MANIFEST_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{str(path)!r} is not valid JSON: {e}") from e
    except RecursionError as e:
        raise ModelFolderError(
            f"{str(path)!r} is nested deeper than {MAX_JSON_DEPTH} levels"
        ) from e
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ModelFolderError(f"{str(path)!r} is nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def load_manifest(folder: str | Path) -> Manifest:
    """Read and validate ``folder/manifest.json`` (its real path inside the folder's).

    Every file it names must state its sha256 (``manifest_from_dict(require_hashes=True)``).

    Raises:
        ModelFolderError: the folder or manifest is missing, a symlink out of the folder, too
            large or deep, not JSON, or has missing/bad fields.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {str(folder)!r} does not exist or is not a folder")
    path = resolve_in_folder(folder, MANIFEST_FILE, MANIFEST_FILE)
    if not path.is_file():
        raise ModelFolderError(
            f"{str(folder / MANIFEST_FILE)!r} is missing: not a deployable folder "
            "(run export.build)"
        )
    return manifest_from_dict(read_manifest_json(path), require_hashes=True)
