"""Command line: segment one image with a deployable folder and print one JSON line.

    python -m runtime.infer --model DIR --image IMG --out OUT.png [--classes "road,car,person"]

Works without torch (``--classes`` needs a folder exported with ``--text-encoder`` and the
``text`` extra). Exit status 2 with a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from runtime.backends import BACKENDS
from runtime.errors import OvssError
from runtime.fsutil import atomic_write
from runtime.manifest import PRECISIONS
from runtime.image import load_image
from runtime.postprocess import legend, overlay, palette
from runtime.segmenter import MODES, Segmenter
from runtime.vocab import read_classes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.infer", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="deployable folder (manifest.json + model.onnx)")
    p.add_argument("--image", required=True, help="image file, or sample:NAME (scikit-image sample)")
    p.add_argument("--out", required=True, help="overlay PNG to write")
    p.add_argument("--labels-out", help="also write the label map as an 8-bit PNG")
    p.add_argument("--classes", help="new vocabulary, encoded on the device: 'a,b,c' or a text "
                   "file (one class per line, # comments); needs a folder exported with "
                   "--text-encoder")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto: a TensorRT engine that fits this GPU, else onnxruntime (GPU providers "
                   "only where the probe finds a GPU)")
    p.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay a captured CUDA graph")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="graph variant: fp32, or fp16 / int8 made by calibration.calibrate")
    p.add_argument("--mode", default="auto", choices=MODES)
    p.add_argument("--stride", type=int, help="slide step in pixels")
    p.add_argument("--short-side", type=int, help="rescale so the short side has this length first")
    p.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0,1]")
    p.add_argument("--no-legend", action="store_true", help="overlay only, no legend strip below")
    return p.parse_args(argv)


def _save_png(path: str, array: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        classes = None if args.classes is None else read_classes(args.classes)
        image = load_image(args.image)
        with Segmenter(args.model, args.backend, mode=args.mode, stride=args.stride,
                       precision=args.precision,
                       short_side=args.short_side, threads=args.threads,
                       **({"cuda_graph": True} if args.cuda_graph else {})) as seg:
            if classes is not None:
                seg.set_classes(classes)
            result = seg(image)
            random_weights, reasons = seg.manifest.weights.random, list(seg.backend_reasons)
        colours = palette(len(result.classes))
        shown = overlay(image, result.labels, colours, args.alpha)
        if not args.no_legend:
            idx = [result.classes.index(n) for n in result.classes_present]
            shown = legend(shown, list(result.classes_present), colours[idx])
        _save_png(args.out, shown)
        if args.labels_out:
            if len(result.classes) > 256:
                raise OvssError("--labels-out needs at most 256 classes for an 8-bit PNG")
            _save_png(args.labels_out, result.labels.astype(np.uint8))
    except (OvssError, ImportError) as e:  # ImportError: a missing extra, named in the message
        print(f"error: {e}", file=sys.stderr)
        return 2
    line = {
        "backend": result.backend,
        "precision": args.precision,
        "providers": list(result.providers),
        "backend_reasons": reasons,
        "classes": len(result.classes),
        "classes_present": list(result.classes_present),
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
