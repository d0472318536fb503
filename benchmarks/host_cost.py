"""Host work next to the network: preprocess and postprocess against inference, per vocabulary
size and label-map path, on frames of a fixed size (e.g. 720p), interleaved, one run.

    python -m benchmarks.host_cost --models DIR_C20,DIR_C150 --frame-size 1280x720 \
        --images ../shared/data/camvid/test --mode whole --threads 2 --runs 20 \
        --json OUT.json --png OUT.png

Every round runs each (model, label path) on the same frame; ratios are taken within a call
((preprocess + postprocess) / inference) or within a round (a model's postprocess over the
first model's), then their medians reported. Torch-free: it runs where the runtime runs.
Prints one JSON line; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from benchmarks.machine import cpu_model, save_png, torch_free_main
from benchmarks.stages import load_frames
from runtime.cli import (
    ArgumentParser,
    add_segmenter_args,
    add_verbose_arg,
    cli_main,
    segmenter_kwargs,
)
from runtime.cli_checks import MAX_IMAGE_SIDE, count_arg, nonneg_count
from runtime.errors import OvssError
from runtime.label_kernel import NUMBA_AVAILABLE
from runtime.label_map import METHODS as LABEL_METHODS
from runtime.preprocess import resize_rgb
from runtime.segmenter import Segmenter

STAGES = ("preprocess", "inference", "postprocess")


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: WxH -> (H, W), positive ints."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 1280x720), got {text!r}") from None
    if not (0 < w <= 2 * MAX_IMAGE_SIDE and 0 < h <= 2 * MAX_IMAGE_SIDE):
        raise argparse.ArgumentTypeError(
            f"frame size must be positive and at most {2 * MAX_IMAGE_SIDE} a side, got {text!r}"
        )
    return h, w


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks.host_cost", description=__doc__.splitlines()[0])
    add_segmenter_args(p, skip={"--model", "--classes"})
    p.add_argument("--models", required=True, help="comma-separated deployable folders")
    p.add_argument("--frame-size", type=frame_size, default=(720, 1280), metavar="WxH")
    p.add_argument("--images", default="sample:astronaut", help="image, sample:NAME or folder")
    p.add_argument("--frames", type=count_arg, default=5, help="frames taken from a folder")
    p.add_argument(
        "--label-methods", default="fast,exact", help=f"comma-separated, from {LABEL_METHODS}"
    )
    p.add_argument("--runs", type=count_arg, default=20)
    p.add_argument("--warmup", type=nonneg_count, default=2)
    p.add_argument("--json", help="write the report here too")
    p.add_argument("--png", help="stage bars per config as a PNG (needs matplotlib)")
    add_verbose_arg(p)
    return p.parse_args(argv)


def _list(text: str, allowed: tuple[str, ...] | None, what: str) -> list[str]:
    out = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in out if allowed is not None and v not in allowed]
    if bad or not out:
        hint = f"; choose from {allowed}" if allowed else ""
        raise OvssError(f"bad {what} {bad or text!r}{hint}")
    return out


def _median(values) -> float:
    return round(float(np.median(values)), 3)


def run_benchmark(args: argparse.Namespace) -> dict:
    folders = _list(args.models, None, "--models")
    methods = _list(args.label_methods, LABEL_METHODS, "--label-methods")
    frames = [resize_rgb(f, args.frame_size) for f in load_frames(args.images, args.frames)]
    segs: dict[str, Segmenter] = {}
    try:
        for folder, method in itertools.product(folders, methods):
            kw = segmenter_kwargs(args, folder=folder, label_method=method)
            seg = Segmenter(**kw)
            segs[f"C={len(seg.classes)} {method} ({folder})"] = seg
        for i in range(args.warmup):
            for seg in segs.values():
                seg(frames[i % len(frames)])
        rows: dict[str, list[dict]] = {name: [] for name in segs}
        for i in range(args.runs):  # interleaved: every config sees the same frame per round
            for name, seg in segs.items():
                rows[name].append(dict(seg(frames[i % len(frames)]).timings_ms))
        results = [_summary(name, seg, rows[name]) for name, seg in segs.items()]
        first = next(iter(rows))
        for r in results:  # per round: this config's postprocess over the first config's
            pairs = zip(rows[r["config"]], rows[first])
            ratios = [a["postprocess"] / b["postprocess"] for a, b in pairs]
            r["postprocess_vs_first"] = _median(ratios)
        m = next(iter(segs.values())).manifest
    finally:
        for seg in segs.values():
            seg.close()
    return {
        "results": results,
        "first_config": first,
        "method": m.method,
        "backbone": m.backbone,
        "input_size": m.preprocess.input_size[0],
        "weights_random": m.weights.random,
        "frame_hw": list(args.frame_size),
        "frames": len(frames),
        "runs": args.runs,
        "threads": args.threads,
        "numba": NUMBA_AVAILABLE,
        "cpu": cpu_model(),
    }


def _summary(name: str, seg: Segmenter, rows: list[dict]) -> dict:
    med = {k: _median([r[k] for r in rows]) for k in STAGES}
    host = [(r["preprocess"] + r["postprocess"]) / r["inference"] for r in rows]
    return {
        "config": name,
        "classes": len(seg.classes),
        "label_method": seg.label_method,
        "mode": seg.mode,
        "backend": seg.backend.name,
        "median_ms": med,
        "host_vs_inference": _median(host),
        "postprocess_vs_inference": _median([r["postprocess"] / r["inference"] for r in rows]),
    }


def plot(report: dict, path: str) -> None:
    """Stacked median stage bars, one per config, with the host/inference ratio written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    fig, ax = plt.subplots(figsize=(9, 1.8 + 0.55 * len(rows)))
    left = np.zeros(len(rows))
    names = [f"C={r['classes']} {r['label_method']}" for r in rows]
    for stage in STAGES:
        vals = np.array([r["median_ms"][stage] for r in rows])
        ax.barh(names, vals, left=left, label=stage)
        left += vals
    for y, r in enumerate(rows):
        med = r["median_ms"]
        note = f"  pre {med['preprocess']:.2f} + post {med['postprocess']:.2f} ms"
        ax.text(left[y], y, f"{note} = {r['host_vs_inference']:.2f} x inference", va="center")
    if left.max() > 50 * left.min():  # an exact path next to fast ones
        ax.set_xscale("log")
    ax.set_xlim(right=left.max() * 2.0)
    ax.set_xlabel("median ms per frame")
    h, w = report["frame_hw"]
    ax.set_title(
        f"{report['method']} @ {report['input_size']} px, {w}x{h} frames"
        + (" (random weights)" if report["weights_random"] else "")
    )
    ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    save_png(fig, path)


@cli_main
def main(argv: list[str] | None = None) -> int:
    return torch_free_main("benchmarks.host_cost", argv, parse_args, run_benchmark, plot)


if __name__ == "__main__":
    sys.exit(main())
