"""Command line: export a method + vocabulary to a deployable folder.

    python -m export.build --method maskclip --backbone ViT-B-16 --pretrained openai \
        --classes voc --image-size 448 --output DIR

Dispatches to ``BUILDERS[method]``; prints one JSON line on success, exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from export.config import VOCAB_MODES, ExportCfg
from export.registry import BUILDERS
from runtime.errors import OvssError
from training.students import STUDENTS
from training.text_classifier import TEMPLATE_SETS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.build", description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted(BUILDERS))
    p.add_argument("--backbone", required=True, help="open_clip name: ViT-B-16, RN50, ovss-tiny-vit, ...")
    p.add_argument("--pretrained", default="none", help="none | open_clip tag (openai) | checkpoint path")
    p.add_argument("--fallback-random", action="store_true",
                   help="use random weights (with a loud warning) if the weights cannot be obtained")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", required=True, help="voc|context|coco_stuff|ade20k|cityscapes|camvid, "
                   "a text file (one class per line), or 'a,b,c'")
    p.add_argument("--templates", default=None, choices=sorted(TEMPLATE_SETS),
                   help="default: the checkpoint's own, else maskclip85 for MaskCLIP / MaskCLIP+, "
                   "zegclip for ZegCLIP / CLIP-RC")
    p.add_argument("--image-size", type=int, default=None,
                   help="default: 448 for MaskCLIP, the checkpoint's size (512) for ZegCLIP / CLIP-RC")
    p.add_argument("--output", required=True)
    p.add_argument("--vocab-mode", default="fixed", choices=VOCAB_MODES)
    p.add_argument("--text-encoder", action="store_true",
                   help="also export CLIP's text tower + BPE vocabulary (text_encoder.onnx) so the "
                   "device can set new class names without torch; needs --vocab-mode input")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-simplify", dest="simplify", action="store_false")
    p.add_argument("--atol", type=float, default=1e-4, help="parity gate on max |logit diff|")
    p.add_argument("--cache-dir", help="text-classifier cache folder")
    z = p.add_argument_group("ZegCLIP / CLIP-RC / MaskCLIP+")
    z.add_argument("--checkpoint", help="our training checkpoint or an official ZegCLIP / CLIP-RC .pth "
                   "(without it the head / student is random: --pretrained then gives the CLIP "
                   "weights)")
    z.add_argument("--seen", help="training-seen class names (comma-separated) for the seen-class bias; "
                   "default: from our checkpoint")
    z.add_argument("--seen-bias", type=float, help="default 0.1 (inductive) or 0 (transductive)")
    z.add_argument("--text-embeddings", help=".npy [C,D] classifier used as it is")
    z.add_argument("--num-tokens", type=int, default=10, help="VPT prompts (random head only)")
    m = p.add_argument_group("MaskCLIP+")
    m.add_argument("--student", choices=sorted(STUDENTS),
                   help="target network (default: the checkpoint's; required without --checkpoint)")
    g = p.add_argument_group("MaskCLIP")
    g.add_argument("--no-residual", dest="residual", action="store_false")
    g.add_argument("--no-ffn", dest="ffn", action="store_false")
    g.add_argument("--numerics", default="official", choices=["official", "clip"])
    g.add_argument("--no-key-smoothing", dest="key_smoothing", action="store_false")
    g.add_argument("--ks-thresh", type=float, default=1.0)
    g.add_argument("--ks-norm", default="spatial", choices=["spatial", "token"])
    g.add_argument("--no-prompt-denoising", dest="prompt_denoising", action="store_false")
    g.add_argument("--pd-thresh", type=float, default=0.5)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("export", "training", "runtime"):
        logging.getLogger(name).setLevel(logging.INFO)
    cfg = ExportCfg(**vars(parse_args(argv)))
    try:
        result = BUILDERS[cfg.method](cfg)
    except OvssError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.manifest
    print(json.dumps({
        "output": str(result.output), "method": m.method, "backbone": m.backbone,
        "weights": m.weights.source, "weights_random": m.weights.random, "classes": len(m.classes),
        "parity": m.parity, "simplified": result.export.simplified,
        "text_encoder": m.text_encoder is not None,
        "nodes": [result.export.nodes_traced, result.export.nodes_final],
        "seconds": round(result.seconds, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
