"""Camera-loop throughput: pipelined (capture thread + queue) vs sequential, same source and model.

    python -m benchmarks.camera --model DIR [--source FILE|DIR] --frames 100 --runs 10 \
        --json benchmarks/results/camera_tiny.json --plot benchmarks/results/camera_tiny.png

Without ``--source`` a synthetic mp4v video of ``--frames`` frames at ``--size`` is written to a
temporary folder. The Segmenter is loaded once; each run opens the source afresh and runs
``runtime.camera.run_loop`` over ``--frames`` frames, overlay and legend drawn and an mp4 written,
as the camera CLI does. The pipelined loop waits for room instead of dropping (``drop="never"``), so
both modes process the same frames and throughput compares like with like. Warm-up rounds first,
then ``--runs`` interleaved rounds, the order alternating (pipelined, sequential; sequential,
pipelined; ...). ``ratio_pipelined_over_sequential`` is the ratio of median frames per second
(> 1: pipelining helps). Needs no torch. Prints one JSON line; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from benchmarks.machine import check_report_paths, cpu_model, publish
from runtime.camera import LoopCfg, LoopStats, peak_rss_mb, run_loop
from runtime.cli import ArgumentParser, cli_main, setup_logging
from runtime.cli_checks import (
    MAX_IMAGE_SIDE,
    count_arg,
    int_range,
    nonneg_count,
    short_side,
    threads_arg,
)
from runtime.errors import OvssError, SourceError
from runtime.fsutil import atomic_write
from runtime.segmenter import MODES, Segmenter
from runtime.sources import open_source, parse_size, require_cv2
from runtime.video_out import VideoSink

log = logging.getLogger(__name__)
LOOPS = ("pipelined", "sequential")
BITS = 10  # frame index bits drawn by synthetic_video


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks.camera", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="deployable folder")
    p.add_argument("--source", help="finite source (video file or image folder); else synthetic")
    p.add_argument("--frames", type=count_arg, default=100, help="frames processed per run")
    p.add_argument(
        "--size", type=parse_size, default=(320, 240), help="synthetic video WIDTHxHEIGHT"
    )
    p.add_argument("--runs", type=count_arg, default=10, help="timed interleaved rounds")
    p.add_argument("--warmup", type=nonneg_count, default=1, help="untimed rounds first")
    p.add_argument("--queue", type=int_range(1, 64), default=2, help="pipelined queue size")
    p.add_argument(
        "--threads", type=threads_arg, help="onnxruntime intra-op threads (default: all cores)"
    )
    p.add_argument("--mode", default="auto", choices=MODES)
    p.add_argument(
        "--short-side", type=short_side, help="rescale so the short side has this length first"
    )
    p.add_argument("--json", help="also write the report here (atomically)")
    p.add_argument("--plot", help="also write a PNG of frames/s per run here (needs matplotlib)")
    args = p.parse_args(argv)
    if min(args.size) < 32 or max(args.size) > 2 * MAX_IMAGE_SIDE:
        p.error(f"--size must be 32x32 .. {2 * MAX_IMAGE_SIDE} a side, got {args.size}")
    return args


def synthetic_video(
    path: str | os.PathLike, frames: int, width: int, height: int, fps: float = 30.0
) -> Path:
    """Write an mp4v video: a moving colour gradient, and frame ``i``'s index as ``BITS`` black or
    white blocks (``width // BITS`` px wide, ``height // 4`` px high) along the top edge, most
    significant bit first, coarse enough to survive compression.

    Returns:
        The path.
    Raises:
        SourceError: OpenCV cannot write it.
    """
    cv2 = require_cv2()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SourceError(f"OpenCV cannot write {str(path)!r}")
    yy, xx = np.mgrid[0:height, 0:width]
    block = width // BITS
    for i in range(frames):
        rgb = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx + yy) % 256], -1)
        rgb = rgb.astype(np.uint8)
        for b in range(BITS):
            rgb[: height // 4, b * block : (b + 1) * block] = 255 * ((i >> (BITS - 1 - b)) & 1)
        writer.write(rgb[:, :, ::-1].copy())
    writer.release()
    return Path(path)


def one_run(seg: Segmenter, spec: str, loop: str, frames: int, queue: int, out: Path) -> LoopStats:
    """One loop over ``frames`` frames of ``spec`` into the mp4 ``out``."""
    cfg = LoopCfg(
        queue_size=queue,
        sequential=loop == "sequential",
        drop="never",
        max_frames=frames,
        log_every_s=0,
    )
    source = open_source(spec)
    return run_loop(source, seg, VideoSink(out, source.fps or 30.0), cfg)


def time_interleaved(
    seg: Segmenter, spec: str, args: argparse.Namespace, tmp: str
) -> dict[str, list[LoopStats]]:
    """``--warmup`` untimed rounds, then ``--runs`` rounds of both loops, alternating the order."""
    runs: dict[str, list[LoopStats]] = {name: [] for name in LOOPS}
    for r in range(args.warmup + args.runs):
        for name in LOOPS if r % 2 == 0 else LOOPS[::-1]:
            stats = one_run(seg, spec, name, args.frames, args.queue, Path(tmp) / f"{name}.mp4")
            if stats.frames_processed < args.frames:
                raise OvssError(
                    f"source {spec!r} has only {stats.frames_processed} frames; lower --frames"
                )
            if r >= args.warmup:
                runs[name].append(stats)
        log.info("round %d/%d done", r + 1, args.warmup + args.runs)
    return runs


def summarize(name: str, runs: list[LoopStats]) -> dict:
    """One result row: frames/s and latency p50 over runs (median, p10, p90)."""
    fps = np.array([s.fps for s in runs])
    lat = np.array([s.latency_p50_ms for s in runs])
    return {
        "loop": name,
        "runs": len(runs),
        "median_fps": round(float(np.median(fps)), 3),
        "p10_fps": round(float(np.percentile(fps, 10)), 3),
        "p90_fps": round(float(np.percentile(fps, 90)), 3),
        "median_latency_p50_ms": round(float(np.median(lat)), 3),
        "fps_per_run": [round(float(f), 3) for f in fps],
        "stage_median_ms": runs[len(runs) // 2].stage_median_ms,
    }


def run_benchmark(args: argparse.Namespace, threads: int) -> dict:
    """Load the model, make or open the source, time both loops; returns the report."""
    seg = Segmenter(args.model, mode=args.mode, short_side=args.short_side, threads=threads)
    with tempfile.TemporaryDirectory(prefix="ovss-bench-camera-") as tmp, seg:
        spec = args.source or str(synthetic_video(Path(tmp) / "in.mp4", args.frames, *args.size))
        frame_hw = first_frame_hw(spec)
        runs = time_interleaved(seg, spec, args, tmp)
        facts = {
            "model": str(args.model),
            "weights_random": seg.manifest.weights.random,
            "providers": list(seg.backend.providers),
            "input_size": seg.manifest.preprocess.input_size,
        }
    rows = [summarize(name, runs[name]) for name in LOOPS]
    fps = {r["loop"]: r["median_fps"] for r in rows}
    ratio = fps["pipelined"] / fps["sequential"]
    return {
        "results": rows,
        "ratio_pipelined_over_sequential": round(ratio, 3),
        "source": args.source or f"synthetic {args.size[0]}x{args.size[1]} mp4v",
        "frame_hw": list(frame_hw),
        "frames": args.frames,
        "queue": args.queue,
        "threads": threads,
        "cpu": cpu_model(),
        "peak_rss_mb": round(peak_rss_mb(), 2),
        "opencv_version": require_cv2().__version__,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        **facts,
    }


def first_frame_hw(spec: str) -> tuple[int, int]:
    """(H, W) of the first frame of ``spec``."""
    source = open_source(spec)
    try:
        frame = source.read()
    finally:
        source.close()
    return frame.image.shape[:2] if frame is not None else (0, 0)


def write_plot(report: dict, path: Path) -> str | None:
    """Frames/s of every run per loop, with the medians; None without matplotlib."""
    if find_spec("matplotlib") is None:
        log.info("matplotlib is not installed: no plot written (the JSON has every number)")
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = report["results"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for x, r in enumerate(rows):
        ax.scatter([x] * len(r["fps_per_run"]), r["fps_per_run"], alpha=0.5, color="tab:blue")
        ax.hlines(r["median_fps"], x - 0.25, x + 0.25, color="tab:red")
        ax.annotate(f"{r['median_fps']:.3g} fps", (x + 0.27, r["median_fps"]), va="center")
    ax.set_xticks(range(len(rows)), [r["loop"] for r in rows])
    ax.set_xlim(-0.6, len(rows) - 0.1)
    ax.set(
        ylabel="frames/s (dots: runs, line: median)",
        title=f"camera loop, {report['source']}, {report['frames']} frames/run\n"
        f"pipelined/sequential = {report['ratio_pipelined_over_sequential']:.2f}x, "
        f"{report['threads']} thread(s)",
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return str(path)


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    setup_logging()
    check_report_paths(args)
    threads = args.threads or len(os.sched_getaffinity(0))
    report = run_benchmark(args, threads)
    report["plot"] = write_plot(report, Path(args.plot)) if args.plot else None
    publish(report, "benchmarks.camera", argv, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
