"""Write a DeepStream Gst-nvinfer config (``[property]`` group) for a deployable folder.

    python -m export.deepstream DIR --out CONFIG.txt [--precision fp32|fp16|int8] [--engine FILE]
        [--threshold T] [--absolute-paths] [--allow-approx-normalisation]

UNTESTED ON DEVICE: written from the DeepStream documentation and the open nvinfer sources, and
checked here only as text (configparser) against the manifest and the ONNX graph.

What nvinfer can and cannot do, and what this writes:
    - Input: nvinfer feeds the engine FLOAT planar data, ``y = net-scale-factor * (x - offsets)``
      with ONE scalar scale (NvDsInferDataType has no UINT8). A uint8 folder's graph therefore
      cannot be used as-is; this writes a copy next to the config whose IMAGE input is float32
      [1,3,H,W] (RGB 0..255, ``net-scale-factor=1``, ``offsets=0;0;0``) feeding the graph's own
      Cast (and, for uint8-nhwc, a Transpose to NHWC first), so the per-channel normalisation
      stays in the graph and is exact for the integer pixels nvinfer produces. A float32-nchw
      folder needs CLIP's per-channel std as one scalar: refused unless
      ``--allow-approx-normalisation`` (then ``offsets`` = mean, exact, and the scale is the mean
      of 1/std, with the per-channel error in a warning and in the config); re-export with
      ``--input-format uint8-nchw`` for the exact path.
    - Output: nvinfer's segmentation parser reads the FIRST output layer as per-class scores
      [C,h,w] and takes the argmax itself; a pixel whose best score is not above
      ``segmentation-threshold`` (>= 0, in the graph's own units) gets class -1. LABELS / SCORES
      (``--postprocess graph``) are not per-class maps, so the config always parses LOGITS, at
      feature resolution (nvsegvisual scales the class map up to its own size).
    - Engine: nvinfer builds one from ``onnx-file`` on first run and serialises it as
      ``<onnx-file>_b1_gpu0_<mode>.engine``, the default ``model-engine-file`` here, so later runs
      reuse it. ``--engine`` names another one, e.g. from ``python -m export.engine`` (float32
      folders only: those engines take the folder graph's own input).

Prints one JSON line on success; exits 2 with one ``error:`` line on bad input (``runtime.cli``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime import io_names
from runtime.cli import ArgumentParser, add_verbose_arg, cli_main, nonneg_float, setup_logging
from runtime.cli_checks import check_outputs as check_output_paths
from runtime.engine_cache import engine_dir
from runtime.errors import ConfigError, ModelFolderError
from runtime.folder_files import model_file
from runtime.fsutil import atomic_write_bytes, atomic_write_text
from runtime.manifest import INPUT_FORMATS, METADATA_KEY, PRECISIONS, Manifest, load_manifest

log = logging.getLogger(__name__)
# Gst-nvinfer network-mode: 0 FP32, 1 INT8, 2 FP16.
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
NETWORK_TYPE_SEGMENTATION = 2
MODEL_COLOR_FORMAT_RGB = 0
SCALING_FILTER_BILINEAR = 1  # NvBufSurfTransformInter_Bilinear
LABELS_FILE = "labels.txt"
UNTESTED = "UNTESTED ON DEVICE: checked as text only, never run under DeepStream"


@dataclass(frozen=True)
class Normalisation:
    """nvinfer's ``y = scale * (x - offsets)`` for the folder, and its error against the exact
    per-channel ``(x - mean) / std``.

    Attributes:
        scale: net-scale-factor.
        offsets: per-channel RGB offsets on the 0..255 scale.
        rel_error: per channel, ``scale * std_c - 1`` (0 when exact).
    """

    scale: float
    offsets: tuple[float, float, float]
    rel_error: tuple[float, float, float]

    @property
    def exact(self) -> bool:
        return not any(self.rel_error)


@dataclass(frozen=True)
class DeepStreamConfig:
    """What ``write_config`` wrote: the config, the label file, the graph nvinfer parses, the
    engine path it names, the [property] values and any warnings."""

    config: Path
    labels: Path
    onnx: Path
    engine: Path
    properties: dict[str, str]
    warnings: tuple[str, ...]


def normalisation(m: Manifest) -> Normalisation:
    """The nvinfer normalisation for ``m``: exact (1, 0;0;0) when the graph normalises (uint8
    formats), else offsets = mean and scale = mean over channels of 1/std."""
    pre = m.preprocess
    if pre.input_format != INPUT_FORMATS[0]:
        return Normalisation(1.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    scale = sum(1.0 / s for s in pre.std) / 3
    return Normalisation(scale, pre.mean, tuple(scale * s - 1.0 for s in pre.std))


def _check_folder(m: Manifest) -> tuple[int, int]:
    """(H, W) of a folder nvinfer can run: fixed vocabulary, one static IMAGE input."""
    if m.vocab_mode != "fixed":
        raise ModelFolderError(
            f"vocab_mode {m.vocab_mode!r}: nvinfer feeds only the image input (the text "
            "embeddings would need a custom NvDsInferInitializeInputLayers library); re-export "
            "with --vocab-mode fixed"
        )
    names = [t.name for t in m.inputs]
    if names != [io_names.IMAGE]:
        raise ModelFolderError(
            f"nvinfer needs one input {io_names.IMAGE!r}; the folder has {names}"
        )
    return m.preprocess.input_size


def _load_graph(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as e:  # DecodeError and friends: not an ONNX file
        raise ModelFolderError(f"{str(path)!r} is not a readable ONNX graph: {e}") from e


def _dims(value) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in _shape(value).dim]


def _shape(value):
    return value.type.tensor_type.shape


def check_outputs(model, classes: int) -> tuple[int, int]:
    """(h, w) of LOGITS, which must be the graph's first output, float32 [1, classes, h, w]:
    nvinfer's segmentation parser reads the first output layer."""
    from onnx import TensorProto

    outputs = list(model.graph.output)
    if not outputs or outputs[0].name != io_names.LOGITS:
        raise ModelFolderError(
            f"nvinfer parses the first graph output; it is {outputs[0].name if outputs else None!r}"
            f", not {io_names.LOGITS!r}"
        )
    first = outputs[0]
    dims = _dims(first)
    if first.type.tensor_type.elem_type != TensorProto.FLOAT or dims[:2] != [1, classes]:
        raise ModelFolderError(
            f"{io_names.LOGITS} is {dims}; nvinfer's segmentation parser needs float32 "
            f"[1, {classes}, h, w] (one score map per class)"
        )
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[2:]):
        raise ModelFolderError(f"{io_names.LOGITS} is {dims}: needs a static [1, C, h, w]")
    return dims[2], dims[3]


def float_input_graph(model, input_format: str, input_hw: tuple[int, int]):
    """A copy of a uint8-input graph whose IMAGE is float32 [1,3,H,W] RGB 0..255 (what nvinfer
    feeds with net-scale-factor=1, offsets=0): IMAGE's consumers, which must all be Casts, now
    cast float (integer-valued) to float; uint8-nhwc gets a Transpose NCHW -> NHWC first."""
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    image = next((v for v in g.input if v.name == io_names.IMAGE), None)
    consumers = [n for n in g.node if io_names.IMAGE in n.input]
    if image is None or not consumers or any(n.op_type != "Cast" for n in consumers):
        raise ModelFolderError(
            f"the graph's {io_names.IMAGE!r} input does not feed Cast nodes only, as the uint8 "
            "export writes it; cannot give it nvinfer's float input"
        )
    if input_format == "uint8-nhwc":
        nhwc = "ovss_nvinfer_nhwc"
        for node in consumers:
            node.input[:] = [nhwc if n == io_names.IMAGE else n for n in node.input]
        g.node.insert(
            0,
            helper.make_node("Transpose", [io_names.IMAGE], [nhwc], name=nhwc, perm=[0, 2, 3, 1]),
        )
    image.CopyFrom(
        helper.make_tensor_value_info(io_names.IMAGE, TensorProto.FLOAT, [1, 3, *input_hw])
    )
    # The manifest copy in the metadata describes the uint8 graph, not this one.
    kept = [p for p in out.metadata_props if p.key != METADATA_KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(kept)
    onnx.checker.check_model(out)
    return out


def _graph_for_nvinfer(folder: Path, m: Manifest, precision: str, out_dir: Path, stem: str):
    """(graph path nvinfer parses, (h, w) of LOGITS): the folder's own graph for float32-nchw,
    else a float-input copy written to ``out_dir/<stem>.<precision>.onnx``."""
    path = model_file(folder, m, precision)  # confined to the folder, sha256 checked
    model = _load_graph(path)
    hw = check_outputs(model, len(m.classes))
    if m.preprocess.input_format == INPUT_FORMATS[0]:
        return path, hw
    converted = float_input_graph(model, m.preprocess.input_format, m.preprocess.input_size)
    target = out_dir / f"{stem}.{precision}.onnx"
    atomic_write_bytes(target, converted.SerializeToString())
    return target, hw


def _check_engine(folder: Path, m: Manifest, engine: Path) -> None:
    """Refuse an engine that ``export.engine`` built from a uint8 folder graph: its input is
    uint8, which nvinfer cannot feed."""
    if m.preprocess.input_format == INPUT_FORMATS[0]:
        return
    if engine.resolve().parent == engine_dir(folder).resolve():
        raise ModelFolderError(
            f"{str(engine)!r} was built by export.engine from the folder's uint8-input graph, "
            "which nvinfer cannot feed; leave --engine out and let nvinfer build one"
        )


def _path(target: Path, config_dir: Path, absolute: bool) -> str:
    """``target`` as written in the config: absolute, or relative to the config's folder (nvinfer
    resolves relative paths against the config file's folder)."""
    target = target.resolve()
    return str(target) if absolute else os.path.relpath(target, config_dir.resolve())


def _warnings(m: Manifest, norm: Normalisation) -> list[str]:
    """What the user must know about this config besides its being untested."""
    warnings = []
    if m.weights.random:
        warnings.append("random-init weights: the masks are meaningless")
    if not norm.exact:
        errs = ", ".join(f"{c} {e:+.2%}" for c, e in zip("RGB", norm.rel_error))
        warnings.append(
            f"approximate normalisation: one net-scale-factor for CLIP's per-channel std; "
            f"relative error per channel {errs}; exact: re-export with --input-format uint8-nchw"
        )
    return warnings


def _comments(m: Manifest, folder: Path, precision: str, warnings: list[str]) -> list[str]:
    return [
        f"Gst-nvinfer config for {folder.resolve()} ({m.method} {m.backbone}, "
        f"{len(m.classes)} classes, {precision}), written by python -m export.deepstream.",
        f"{UNTESTED}.",
        "Pixels: nvinfer resizes each frame to infer-dims (no aspect kept), as runtime --mode "
        "whole; no short-side rescale, no sliding windows.",
        *(f"WARNING: {w}." for w in warnings),
    ]


def properties(
    m: Manifest,
    precision: str,
    onnx_file: str,
    engine_file: str,
    labels_file: str,
    threshold: float,
    norm: Normalisation,
) -> list[tuple[str, str, str]]:
    """The [property] entries as (key, value, comment), in the order written."""
    h, w = m.preprocess.input_size
    offsets = ";".join(f"{o:g}" for o in norm.offsets)
    return [
        ("gpu-id", "0", ""),
        ("gie-unique-id", "1", ""),
        ("process-mode", "1", "1: primary, full frame"),
        ("interval", "0", "infer every batch"),
        ("network-type", str(NETWORK_TYPE_SEGMENTATION), "2: segmentation"),
        ("onnx-file", onnx_file, "the graph nvinfer parses (float32 [1,3,H,W] input)"),
        (
            "model-engine-file",
            engine_file,
            "built by nvinfer from onnx-file on first run (and reused after), or an engine "
            "from python -m export.engine for a float32-nchw folder",
        ),
        ("network-mode", str(NETWORK_MODE[precision]), "0 FP32, 1 INT8, 2 FP16"),
        ("batch-size", "1", "the graph's batch is 1"),
        ("infer-dims", f"3;{h};{w}", "C;H;W of the image input"),
        ("model-color-format", str(MODEL_COLOR_FORMAT_RGB), "0: RGB"),
        ("net-scale-factor", f"{norm.scale:.9g}", "y = net-scale-factor * (x - offsets)"),
        ("offsets", offsets, "per channel, RGB, 0..255 scale"),
        ("scaling-filter", str(SCALING_FILTER_BILINEAR), "1: bilinear resize to infer-dims"),
        ("maintain-aspect-ratio", "0", ""),
        ("num-detected-classes", str(len(m.classes)), "C, the number of classes"),
        (
            "output-blob-names",
            io_names.LOGITS,
            "per-class scores [C,h,w] at feature resolution; nvinfer takes the argmax",
        ),
        (
            "segmentation-threshold",
            f"{threshold:g}",
            f"class -1 where no {io_names.LOGITS} value is above it (graph units, score "
            f"{m.score!r}, not probabilities; >= 0)",
        ),
        ("labelfile-path", labels_file, "one class per line"),
        ("output-tensor-meta", "0", "1: also attach the raw logits as NvDsInferTensorMeta"),
    ]


def _no_control(value: str, what: str) -> str:
    """``value`` with no control character (a newline in a path would start a new key or group
    in the key file nvinfer reads: refused, never written)."""
    bad = [c for c in str(value) if ord(c) < 0x20 or ord(c) == 0x7F]
    if bad:
        raise ConfigError(f"{what} {str(value)!r} has a control character ({bad[0]!r}): refused")
    return str(value)


def render(comments: list[str], props: list[tuple[str, str, str]]) -> str:
    """The config text: ``#`` comment lines, then the [property] group.

    Raises:
        ConfigError: a value has a control character (a newline would inject keys).
    """
    lines = [f"# {_no_control(c, 'comment')}" for c in comments] + ["", "[property]"]
    for key, value, comment in props:
        _no_control(value, key)
        if comment:
            lines.append(f"# {comment}")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def write_config(
    *,
    folder: str | Path,
    out: str | Path,
    precision: str = "fp32",
    engine: str | Path | None = None,
    threshold: float = 0.0,
    absolute_paths: bool = False,
    allow_approx_normalisation: bool = False,
) -> DeepStreamConfig:
    """Write the nvinfer config ``out``, ``labels.txt`` beside it and, for uint8 folders, the
    float-input graph ``<out stem>.<precision>.onnx`` beside it.

    Args:
        folder: deployable folder (manifest.json + graphs), fixed vocabulary.
        out: the config file to write (its folder must exist).
        precision: fp32, or a fp16 / int8 variant the folder holds.
        engine: model-engine-file; default ``<onnx-file>_b1_gpu0_<mode>.engine`` (nvinfer's name).
        threshold: segmentation-threshold >= 0, in the units of the graph's LOGITS.
        absolute_paths: absolute paths instead of paths relative to the config's folder.
        allow_approx_normalisation: accept a float32-nchw folder (scalar-std approximation).
    Raises:
        ModelFolderError: a folder, precision or graph nvinfer cannot run as configured.
    """
    folder, out = Path(folder), Path(out)
    if precision not in PRECISIONS:
        raise ModelFolderError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    assert threshold >= 0, f"segmentation-threshold must be >= 0 (nvinfer refuses), got {threshold}"
    m = load_manifest(folder)
    _check_folder(m)
    norm = normalisation(m)
    if not norm.exact and not allow_approx_normalisation:
        raise ModelFolderError(
            "float32-nchw folder: nvinfer has one net-scale-factor, not CLIP's per-channel std "
            f"(relative error up to {max(map(abs, norm.rel_error)):.1%}); re-export with "
            "--input-format uint8-nchw (exact), or pass --allow-approx-normalisation"
        )
    m.model_for(precision)  # unknown or missing variant: fail before writing anything
    config_dir = out.parent
    onnx_path, _ = _graph_for_nvinfer(folder, m, precision, config_dir, out.stem)
    suffix = {0: "fp32", 1: "int8", 2: "fp16"}[NETWORK_MODE[precision]]
    engine_path = Path(engine) if engine else Path(f"{onnx_path}_b1_gpu0_{suffix}.engine")
    _check_engine(folder, m, engine_path)
    labels = atomic_write_text(config_dir / LABELS_FILE, "\n".join(m.classes) + "\n")
    props = properties(
        m,
        precision,
        _path(onnx_path, config_dir, absolute_paths),
        _path(engine_path, config_dir, absolute_paths),
        _path(labels, config_dir, absolute_paths),
        threshold,
        norm,
    )
    warnings = _warnings(m, norm)
    atomic_write_text(out, render(_comments(m, folder, precision, warnings), props))
    return DeepStreamConfig(
        out, labels, onnx_path, engine_path, {k: v for k, v, _ in props}, (UNTESTED, *warnings)
    )


def parse_args(argv: list[str] | None = None):
    p = ArgumentParser(prog="python -m export.deepstream", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="deployable folder (fixed vocabulary)")
    p.add_argument("--out", required=True, help="the nvinfer config file to write")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="graph variant")
    p.add_argument("--engine", help="model-engine-file (default: nvinfer's own name)")
    p.add_argument(
        "--threshold",
        type=nonneg_float,
        default=0.0,
        help="segmentation-threshold, in LOGITS units (default 0)",
    )
    p.add_argument("--absolute-paths", action="store_true", help="absolute paths in the config")
    p.add_argument(
        "--allow-approx-normalisation",
        action="store_true",
        help="accept a float32-nchw folder: one scale for the per-channel std (inexact)",
    )
    add_verbose_arg(p)
    return p.parse_args(argv)


def check_paths(args) -> None:
    """Before reading the folder: ``--out`` and the labels file beside it can be written,
    ``--engine`` is not a folder, and no path has a control character (ConfigError,
    OutputPathError)."""
    for value, what in ((args.out, "--out"), (args.engine, "--engine"), (args.folder, "folder")):
        if value is not None:
            _no_control(value, what)
    out = Path(args.out)
    check_output_paths(
        files=[(out, "--out"), (out.parent / LABELS_FILE, "labels file"), (args.engine, "--engine")]
    )


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    check_paths(args)
    result = write_config(
        folder=args.folder,
        out=args.out,
        precision=args.precision,
        engine=args.engine,
        threshold=args.threshold,
        absolute_paths=args.absolute_paths,
        allow_approx_normalisation=args.allow_approx_normalisation,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
