"""Command line: segment one image with a deployable folder and print one JSON line.

    python -m runtime.infer --model DIR --image IMG --out OUT.png [--classes voc|FILE|"a,b,c"]

Works without torch (``--classes`` needs a folder exported with ``--text-encoder`` and the
``text`` extra). Exit status 2 with a one-line message on bad input (``runtime.cli``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from runtime.cli import (
    ArgumentParser,
    add_max_pixels_arg,
    add_segmenter_args,
    add_verbose_arg,
    cli_main,
    segmenter_kwargs,
    setup_logging,
    unit_float,
)
from runtime.errors import ConfigError
from runtime.fsutil import atomic_write
from runtime.image import load_image
from runtime.outputs import check_output_file
from runtime.postprocess import (
    UNKNOWN_COLOUR,
    UNKNOWN_NAME,
    class_colours,
    label_png,
    legend,
    load_palette,
    overlay,
)
from runtime.segmenter import Segmenter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m runtime.infer", description=__doc__.splitlines()[0])
    add_segmenter_args(p)
    p.add_argument(
        "--image", required=True, help="image file, or sample:NAME (scikit-image sample)"
    )
    p.add_argument("--out", required=True, help="overlay PNG to write")
    p.add_argument(
        "--labels-out",
        help="also write the label map: a palette PNG whose pixel values are the class indices",
    )
    p.add_argument(
        "--scores-out",
        metavar="FILE",
        help="also write the confidence map (top-class probability per pixel): FILE.npy "
        "(float32 HxW in [0, 1]) or a grey PNG (round(255 * p))",
    )
    p.add_argument(
        "--palette",
        metavar="FILE",
        help="class colours from an image: a palette PNG, or a colour strip such as CamVid's "
        "palette11.png (default: a fixed VOC-style palette)",
    )
    p.add_argument("--alpha", type=unit_float, default=0.5, help="overlay opacity in [0,1]")
    p.add_argument("--no-legend", action="store_true", help="overlay only, no legend strip below")
    add_max_pixels_arg(p)
    add_verbose_arg(p)
    return p.parse_args(argv)


def _save_png(path: str, array: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _save_scores(path: str, scores: np.ndarray) -> None:
    """The confidence map as float32 .npy, or as an 8-bit grey PNG for any other suffix."""
    if Path(path).suffix.lower() == ".npy":

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a name
                np.save(f, scores.astype(np.float32))

        atomic_write(path, write)
        return
    _save_png(path, np.clip(np.rint(scores * 255.0), 0, 255).astype(np.uint8))


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path is writable and distinct, before the image and the model are loaded.

    Raises:
        OutputPathError: a folder where a file goes, a file as a parent, no permission.
        ConfigError: two outputs, or an output and the input image, are the same file.
    """
    named = {"--out": args.out, "--labels-out": args.labels_out, "--scores-out": args.scores_out}
    seen: dict[str, str] = {}
    if not args.image.startswith("sample:"):
        seen[str(Path(args.image).resolve())] = "--image"
    for flag, path in named.items():
        if path is None:
            continue
        check_output_file(path, flag)
        key = str(Path(path).resolve())
        if key in seen:
            raise ConfigError(f"{flag} {path!r} is the same file as {seen[key]}")
        seen[key] = flag


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # a bad --classes fails here, before any model is loaded
    setup_logging(args.verbose)
    check_outputs(args)
    image = load_image(args.image, max_pixels=args.max_pixels)
    if args.palette:
        load_palette(args.palette)  # a bad palette fails before the model is loaded
    with Segmenter(**segmenter_kwargs(args)) as seg:
        if args.classes is not None:
            seg.set_classes(args.classes)
        result = seg(image, scores=args.scores_out is not None)
        random_weights, reasons = seg.manifest.weights.random, list(seg.backend_reasons)
    colours = class_colours(len(result.classes), args.palette)
    shown = overlay(image, result.labels, colours, args.alpha)
    if not args.no_legend:
        names = list(result.classes_present)
        swatches = colours[[result.classes.index(n) for n in names]]
        if result.unknown > 0:
            names, swatches = names + [UNKNOWN_NAME], np.vstack([swatches, UNKNOWN_COLOUR])
        shown = legend(shown, names, swatches)
    labels_png = label_png(result.labels, colours) if args.labels_out else None  # checks C
    _save_png(args.out, shown)
    if labels_png is not None:
        atomic_write(args.labels_out, lambda tmp: labels_png.save(tmp, format="PNG"))
    if args.scores_out:
        _save_scores(args.scores_out, result.scores)
    line = {
        "backend": result.backend,
        "precision": args.precision,
        "providers": list(result.providers),
        "backend_reasons": reasons,
        "classes": len(result.classes),
        "classes_present": list(result.classes_present),
        "score_threshold": args.score_threshold,
        "unknown_fraction": round(result.unknown, 6),
        "timings_ms": result.timings_ms,
        "mode": result.mode,
        "windows": result.windows,
        "image_hw": list(image.shape[:2]),
        "weights_random": random_weights,
        "out": str(Path(args.out)),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
