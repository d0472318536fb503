"""Command line: export a method + vocabulary to a deployable folder.

    python -m export.build --method maskclip --backbone ViT-B-16 --pretrained openai \\
        --classes voc --image-size 448 --output DIR

Dispatches to the registered method's exporter (``training.methods.METHODS``); the method flags
are generated from each method's config, so every option a method has is a flag and a flag that
does not apply to ``--method`` is refused. Prints one JSON line on success, exits 2 with one
``error:`` line on bad input. torch is imported only after the arguments are parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing

from export.config import POSTPROCESS_MODES
from runtime.cli import ArgumentParser, add_verbose_arg, cli_main, setup_logging
from runtime.cli_checks import (
    MAX_IMAGE_SIDE,
    check_input_file,
    check_outputs,
    finite_float,
    image_side,
    int_range,
    nonneg_float,
    open_unit_float,
    opset_arg,
    positive_float,
    seed_arg,
    short_side,
)
from runtime.manifest import INPUT_FORMATS
from runtime.vocab import parse_vocabulary
from training.methods import METHODS, get_method

GENERAL_HELP = "general"
# argparse type of each numeric method option (of a tuple option: of each item), so a value out of
# range (0, negative, nan, inf, a 100000-pixel input) is one argparse error line, never a
# traceback or a 120 GB allocation after the model is built. A numeric option missing here gets a
# plain finite int / float (a test checks every numeric option has an entry).
OPTION_TYPES: dict[str, typing.Callable[[str], object]] = {
    "image_size": image_side,
    "slide_stride": int_range(1, MAX_IMAGE_SIDE),
    "short_side": short_side,
    "pamr_steps": int_range(1, 100),
    "pamr_dilations": int_range(1, 64),
    "num_tokens": int_range(1, 1024),
    "total_d_layer": int_range(0, 1024),
    "decoder_layers": int_range(1, 64),
    "decoder_heads": int_range(1, 256),
    "gaussian_std": nonneg_float,
    "logit_scale": positive_float,
    "prob_thd": open_unit_float,
    "seen_bias": nonneg_float,
    "ks_thresh": finite_float,
    "pd_thresh": finite_float,
    "mean": finite_float,
    "std": positive_float,
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _item_type(name: str, kind: type):
    """argparse type of option ``name`` whose values are ``kind``: bounded for numbers."""
    if kind is int:
        return OPTION_TYPES.get(name, int_range(-(2**31), 2**31 - 1))
    if kind is float:
        return OPTION_TYPES.get(name, finite_float)
    return kind


def _argparse_kind(hint, name: str = "") -> dict:
    """argparse keywords for a config field's type hint (bool, int, float, str, tuple, Optional);
    numbers get the bounded type of ``OPTION_TYPES[name]`` (else any finite number)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _argparse_kind(args[0], name)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        item = args[0]
        return {"type": _item_type(name, item), "nargs": "+" if Ellipsis in args else len(args)}
    if hint in (int, float, str):
        return {"type": _item_type(name, hint)}
    raise TypeError(f"no command-line form for a field of type {hint!r}")


def method_flags() -> dict[str, dict]:
    """{field name: argparse keywords} over every registered method's config, with each
    method's default in the help text. A field shared by several methods must have one type."""
    flags: dict[str, dict] = {}
    defaults: dict[str, list[str]] = {}
    for name in sorted(METHODS):
        spec = METHODS[name]
        hints = typing.get_type_hints(spec.config)
        for f in spec.fields():
            kind = _argparse_kind(hints[f.name], f.name)
            known = flags.setdefault(
                f.name,
                {**kind, "help": f.metadata.get("help", ""), "choices": f.metadata.get("choices")},
            )
            if {k: known.get(k) for k in kind} != kind:
                raise TypeError(f"option {f.name!r} has different types in different methods")
            defaults.setdefault(f.name, []).append(f"{name} {_shown(f.default)}")
    for name, kw in flags.items():
        kw["help"] = f"{kw['help']} [{'; '.join(defaults[name])}]"
    return flags


def output_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``120x200``) -> (H, W), both positive ints; ArgumentTypeError otherwise."""
    parts = text.lower().split("x")
    try:
        hw = tuple(int(p) for p in parts)
    except ValueError:
        hw = ()
    if len(hw) != 2 or min(hw) < 1:
        raise argparse.ArgumentTypeError(
            f"output size must be HxW with positive integers (e.g. 120x200), got {text!r}"
        )
    return hw


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(
        prog="python -m export.build",
        description=__doc__.splitlines()[0],
        epilog="methods: " + "; ".join(f"{n}: {METHODS[n].summary}" for n in sorted(METHODS)),
    )
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument(
        "--backbone", required=True, help="open_clip name: ViT-B-16, RN50, ovss-tiny-vit, ..."
    )
    p.add_argument(
        "--pretrained", default="none", help="none | open_clip tag (openai) | checkpoint path"
    )
    p.add_argument(
        "--fallback-random",
        action="store_true",
        help="use random weights (with a loud warning) if the weights cannot be obtained",
    )
    p.add_argument("--seed", type=seed_arg, default=0, help="0..2**32-1")
    p.add_argument(
        "--classes",
        required=True,
        help="voc|context|coco_stuff|ade20k|cityscapes|camvid, "
        "a text file (one class per line), or 'a,b,c'",
    )
    p.add_argument("--output", required=True)
    p.add_argument("--vocab-mode", default="fixed", choices=("fixed", "input"))
    p.add_argument(
        "--text-encoder",
        action="store_true",
        help="also export CLIP's text tower + BPE vocabulary (text_encoder.onnx) so the "
        "device can set new class names without torch; needs --vocab-mode input",
    )
    p.add_argument(
        "--opset", type=opset_arg, default=17, help="ONNX opset, 17..20 (torch.onnx's range)"
    )
    p.add_argument("--no-simplify", dest="simplify", action="store_false")
    p.add_argument(
        "--atol", type=nonneg_float, default=1e-4, help="parity gate on max |logit diff| (>= 0)"
    )
    p.add_argument("--cache-dir", help="text-classifier cache folder")
    p.add_argument(
        "--checkpoint",
        help="ZegCLIP / CLIP-RC: our training checkpoint or an official "
        ".pth; MaskCLIP+: our checkpoint (without it the head / student is random)",
    )
    p.add_argument(
        "--seen",
        help="ZegCLIP / CLIP-RC: training-seen class names (comma-separated) "
        "for the seen-class bias; default: from our checkpoint. An official checkpoint "
        "carries none: with --vocab-mode fixed give --seen, or --seen-bias 0 to export it "
        "transductive (--vocab-mode input: seen= at set_vocabulary / set_classes)",
    )
    p.add_argument(
        "--text-embeddings",
        help="a .npy [C,D] classifier, one row per --classes entry in order, used as it is "
        "(not renormalised, e.g. the official float16 files)",
    )
    d = p.add_argument_group("device I/O")
    d.add_argument(
        "--postprocess",
        default="host",
        choices=POSTPROCESS_MODES,
        help="host: the graph outputs logits only (the runtime upsamples); graph: also labels "
        "(uint8/int32 argmax) and scores (float32 top-class score) at --output-size",
    )
    d.add_argument(
        "--output-size",
        type=output_size,
        help="HxW of the in-graph labels and scores (default: the model input size); "
        "needs --postprocess graph",
    )
    d.add_argument(
        "--input-format",
        default=INPUT_FORMATS[0],
        choices=INPUT_FORMATS,
        help="image input: float32-nchw (normalised on the host) or uint8-nhwc / uint8-nchw "
        "(RGB 0..255: the graph casts, transposes and normalises)",
    )
    g = p.add_argument_group(
        "method options (generated from each method's config; [method default] in brackets)"
    )
    flags = method_flags()
    for name, kw in flags.items():
        g.add_argument(
            _flag(name),
            dest=name,
            default=argparse.SUPPRESS,
            **{k: v for k, v in kw.items() if v is not None},
        )
    add_verbose_arg(p)
    args = p.parse_args(argv)
    spec = get_method(args.method)
    own = {f.name for f in spec.fields()}
    foreign = sorted(_flag(n) for n in vars(args) if n in flags and n not in own)
    if foreign:
        p.error(
            f"{', '.join(foreign)} do(es) not apply to --method {args.method} (its options: "
            f"{', '.join(_flag(n) for n in sorted(own))})"
        )
    return args


def _options(args: argparse.Namespace, spec) -> dict:
    """The method options the user gave, tuples as tuples."""
    own = {f.name for f in spec.fields()}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in own}


def check_paths(args: argparse.Namespace) -> None:
    """Before any model is built: ``--output`` and ``--cache-dir`` can be written as folders,
    and ``--checkpoint`` / ``--text-embeddings`` are existing files (OutputPathError or
    ConfigError otherwise)."""
    check_outputs(dirs=[(args.output, "--output"), (args.cache_dir, "--cache-dir")])
    check_input_file(args.checkpoint, "--checkpoint")
    check_input_file(args.text_embeddings, "--text-embeddings")


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    parse_vocabulary(args.classes)  # bad vocabularies fail before any model is loaded
    from export.config import ExportCfg  # torch-free; the exporter below imports torch
    from export.registry import build

    spec = get_method(args.method)
    general = {f.name for f in dataclasses.fields(ExportCfg)} - {"options"}
    cfg = ExportCfg(
        **{k: v for k, v in vars(args).items() if k in general}, options=_options(args, spec)
    )
    check_paths(args)  # after the config's own checks (inputs the method does not take)
    result = build(cfg)
    m = result.manifest
    print(
        json.dumps(
            {
                "output": str(result.output),
                "method": m.method,
                "backbone": m.backbone,
                "weights": m.weights.source,
                "weights_random": m.weights.random,
                "classes": len(m.classes),
                "parity": m.parity,
                "simplified": result.export.simplified,
                "text_encoder": m.text_encoder is not None,
                "input_format": m.preprocess.input_format,
                "postprocess": None if m.postprocess is None else dataclasses.asdict(m.postprocess),
                "nodes": [result.export.nodes_traced, result.export.nodes_final],
                "seconds": round(result.seconds, 1),
                "removed": list(result.removed),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
