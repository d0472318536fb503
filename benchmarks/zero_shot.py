"""ZegCLIP and CLIP-RC latency: full model and decoder only, PyTorch eager vs onnxruntime, per C.

    python -m benchmarks.zero_shot --backbone ViT-B-16 --image-size 512 --methods zegclip,cliprc \
        --classes 20,171,500 --parts full,decoder --runs 10 --warmup 2 \
        --json benchmarks/results/zero_shot_vitb16_512.json

Weights are random (CLIP and head): timings hold, outputs are meaningless. The text classifier is
random unit rows [C,D] and the seen bias 0.1 on the first 3/4 of the classes. The full model is the
deployed export wrapper (text folded into q_proj; CLIP-RC fuses regions before the mask product);
the decoder is the same wrapper's modules after the backbone, fed real backbone outputs of one
image. Each graph is exported with ``run_export`` (parity-gated, simplified), and the checked graph
is the timed one. For every (method, part, C): warm-up rounds, then ``--runs`` interleaved rounds
(pytorch, onnxruntime, ...) on the same threads. Prints one JSON line; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.latency import bench_main
from runtime.cli import ArgumentParser
from runtime.cli_checks import (
    count_arg,
    image_side,
    nonneg_count,
    positive_float,
    seed_arg,
    threads_arg,
)
from training.methods import METHODS

PARTS = ("full", "decoder")


def zero_shot_methods() -> list[str]:
    """The registered methods of kind ``zero_shot`` (``training.methods``), the ones timed here."""
    return sorted(n for n, s in METHODS.items() if s.kind == "zero_shot")


MAX_CLASSES = 65536  # class counts: a [C, D] text input and C score maps per case


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks.zero_shot", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", required=True, help="open_clip ViT name: ViT-B-16, ovss-tiny-vit")
    p.add_argument("--image-size", type=image_side, default=512, help="square input side, px")
    p.add_argument(
        "--methods",
        default=",".join(zero_shot_methods()),
        help="comma-separated zero-shot methods (default: all of them)",
    )
    p.add_argument("--classes", default="20,171,500", help="comma-separated class counts C")
    p.add_argument("--parts", default="full,decoder", help="comma-separated: full, decoder")
    p.add_argument("--runs", type=count_arg, default=10, help="timed interleaved rounds per case")
    p.add_argument("--warmup", type=nonneg_count, default=2, help="untimed rounds first, per case")
    p.add_argument(
        "--threads", type=threads_arg, help="torch and onnxruntime threads (default: all cores)"
    )
    p.add_argument(
        "--atol",
        type=positive_float,
        default=1e-3,
        help="export parity gate on the scores (sigmoid - bias, in [-0.1, 1])",
    )
    p.add_argument("--seed", type=seed_arg, default=0, help="weights, text and image")
    p.add_argument("--json", help="also write the report here (atomically), and a PNG beside it")
    args = p.parse_args(argv)
    args.methods, args.parts = _csv(args.methods), _csv(args.parts)
    try:
        args.classes = [int(c) for c in _csv(args.classes)]
    except ValueError:
        p.error(f"--classes must be comma-separated integers, got {args.classes!r}")
    if not args.methods or not args.classes or not 1 <= min(args.classes) <= max(args.classes):
        p.error("--methods and --classes need at least one entry; class counts must be >= 1")
    if max(args.classes) > MAX_CLASSES:
        p.error(f"--classes: class counts must be <= {MAX_CLASSES}, got {max(args.classes)}")
    if not args.parts or set(args.parts) - set(PARTS):
        p.error(f"--parts must be a comma-separated subset of {','.join(PARTS)}")
    return args


def _run(args: argparse.Namespace, threads: int) -> dict:
    from benchmarks.zero_shot_cases import run_benchmark  # torch, after the arguments are parsed

    return run_benchmark(args, threads)


def _add_plot(report: dict, args: argparse.Namespace) -> None:
    from benchmarks.zero_shot_cases import add_plot

    add_plot(report, args)


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.zero_shot", parse_args, _run, argv, finish=_add_plot)


if __name__ == "__main__":
    sys.exit(main())
