"""Per-stage latency of the deployed runtime: preprocess, host-to-device, compute, device-to-host,
postprocess, for each backend and precision asked for, interleaved, plus peak RSS.

    python -m benchmarks.stages --model DIR --backends auto --precisions fp32,int8 \
        --images ../shared/data/camvid/test --frames 10 --runs 20 --json OUT.json --png OUT.png

Torch-free (only the runtime), so the same command runs on a Jetson or a GPU box: there the
``auto`` / ``tensorrt`` backends pick the engine, and TensorRT's copies and compute are timed
with CUDA events on its stream. onnxruntime does its copies inside ``run``: its host-to-device
and device-to-host are reported as null and counted in compute. Prints one JSON line; exits 2
on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import save_png, torch_free_main
from runtime.backends import BACKENDS
from runtime.camera import peak_rss_mb, rss_mb
from runtime.cli import (
    ArgumentParser,
    add_segmenter_args,
    add_verbose_arg,
    cli_main,
    segmenter_kwargs,
)
from runtime.cli_checks import count_arg, nonneg_count
from runtime.errors import OvssError
from runtime.image import load_image
from runtime.manifest import PRECISIONS
from runtime.segmenter import Segmenter

log = logging.getLogger(__name__)
STAGES = ("preprocess", "h2d", "compute", "d2h", "postprocess")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks.stages", description=__doc__.splitlines()[0])
    add_segmenter_args(
        p,
        skip={"--backend", "--precision", "--classes"},
        help={"--threads": "onnxruntime intra-op threads (default: all cores)"},
    )
    p.add_argument("--backends", default="auto", help=f"comma-separated, from {list(BACKENDS)}")
    p.add_argument("--precisions", default="fp32", help=f"comma-separated, from {list(PRECISIONS)}")
    p.add_argument(
        "--images",
        default="sample:astronaut",
        help="an image file, sample:NAME, or a folder of frames (cycled)",
    )
    p.add_argument("--frames", type=count_arg, default=10, help="frames taken from an image folder")
    p.add_argument("--runs", type=count_arg, default=20)
    p.add_argument("--warmup", type=nonneg_count, default=3)
    p.add_argument("--json", help="write the report here too")
    p.add_argument("--png", help="stacked stage bars as a PNG (needs matplotlib)")
    add_verbose_arg(p)
    return p.parse_args(argv)


def load_frames(source: str, count: int) -> list[np.ndarray]:
    """Frames to cycle through: one image, or the first ``count`` images of a folder (sorted)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[
            : max(1, count)
        ]
        if not files:
            raise OvssError(f"no images in {source!r}")
        return [load_image(f) for f in files]
    return [load_image(source)]


def _split(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    out = [v.strip() for v in values if v.strip()]
    bad = [v for v in out if v not in allowed]
    if bad or not out:
        raise OvssError(f"unknown {what} {bad}; choose from {list(allowed)}")
    return out


def stage_times(seg: Segmenter, frame: np.ndarray) -> dict[str, float | None]:
    """Run one frame; its stage times in ms (h2d / d2h None where the backend cannot split them)."""
    t0 = time.perf_counter()
    result = seg(frame)
    total = (time.perf_counter() - t0) * 1e3
    t = result.timings_ms
    split = seg.backend.last_timings
    if split is not None and split.h2d is not None and split.d2h is not None:
        # TensorRT's events time the last window; whole-image mode runs one window per frame.
        copies = (split.h2d + split.d2h) * result.windows
        row = {
            "h2d": split.h2d * result.windows,
            "compute": t["inference"] - copies,
            "d2h": split.d2h * result.windows,
        }
    else:
        row = {"h2d": None, "compute": t["inference"], "d2h": None}
    return {"preprocess": t["preprocess"], **row, "postprocess": t["postprocess"], "total": total}


def summarize(name: str, seg: Segmenter, rows: list[dict], rss_after_load: float | None) -> dict:
    med = {}
    for k in (*STAGES, "total"):
        vals = [r[k] for r in rows if r[k] is not None]
        med[k] = round(float(np.median(vals)), 3) if vals else None
    totals = [r["total"] for r in rows]
    return {
        "config": name,
        "backend": seg.backend.name,
        "providers": list(seg.backend.providers),
        "backend_reasons": list(getattr(seg, "backend_reasons", ())),
        "precision": seg.precision,
        "median_ms": med,
        "p90_total_ms": round(float(np.percentile(totals, 90)), 3),
        "fps_at_median": round(1e3 / med["total"], 2),
        "runs": len(rows),
        "rss_after_load_mib": None if rss_after_load is None else round(rss_after_load, 1),
    }


def run_benchmark(args: argparse.Namespace) -> dict:
    backends = _split(args.backends.split(","), BACKENDS, "backends")
    precisions = _split(args.precisions.split(","), PRECISIONS, "precisions")
    if args.runs < 1 or args.warmup < 0:
        raise OvssError("--runs must be >= 1 and --warmup >= 0")
    frames = load_frames(args.images, args.frames)
    segs, rss = {}, {}
    try:
        for b in backends:
            for p in precisions:
                name = f"{b}/{p}"
                kwargs = segmenter_kwargs(args, backend=b, precision=p)
                if b == "onnxruntime":
                    kwargs.pop("cuda_graph", None)
                segs[name] = Segmenter(**kwargs)
                rss[name] = rss_mb()
                log.info(
                    "%s runs on %s %s",
                    name,
                    segs[name].backend.name,
                    list(segs[name].backend.providers),
                )
        for i in range(args.warmup):
            for seg in segs.values():
                seg(frames[i % len(frames)])
        rows = {name: [] for name in segs}
        for i in range(
            args.runs
        ):  # interleaved: every config sees the same frame in the same round
            for name, seg in segs.items():
                rows[name].append(stage_times(seg, frames[i % len(frames)]))
        m = next(iter(segs.values())).manifest
        results = [summarize(name, seg, rows[name], rss[name]) for name, seg in segs.items()]
    finally:
        for seg in segs.values():
            seg.close()
    from runtime.probe import cached_probe

    probe = cached_probe()
    return {
        "results": results,
        "method": m.method,
        "backbone": m.backbone,
        "input_size": m.preprocess.input_size[0],
        "classes": len(m.classes),
        "weights_random": m.weights.random,
        "mode": args.mode,
        "frames": len(frames),
        "frame_hw": list(frames[0].shape[:2]),
        "peak_rss_mib": round(peak_rss_mb(), 1),
        "gpus": [g.name for g in probe.gpus],
        "tensorrt": probe.tensorrt,
        "onnxruntime": probe.ort_version,
    }


def plot(report: dict, path: str) -> None:
    """Horizontal stacked bars of the median stage times, one bar per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.6 * len(rows)))
    left = np.zeros(len(rows))
    for stage in STAGES:
        vals = np.array([r["median_ms"][stage] or 0.0 for r in rows])
        ax.barh([r["config"] for r in rows], vals, left=left, label=stage)
        left += vals
    ax.set_xlabel("median ms per frame")
    ax.set_title(
        f"{report['method']} {report['backbone']} @ {report['input_size']} px"
        + (" (random weights)" if report["weights_random"] else "")
    )
    ax.legend(ncol=len(STAGES), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    save_png(fig, path)


@cli_main
def main(argv: list[str] | None = None) -> int:
    return torch_free_main("benchmarks.stages", argv, parse_args, run_benchmark, plot)


if __name__ == "__main__":
    sys.exit(main())
