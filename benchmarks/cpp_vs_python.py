"""End-to-end latency per frame, C++ runtime against Python runtime, onnxruntime CPU.

    python -m benchmarks.cpp_vs_python --model DIR --images A.png B.png [--runs 10] [--threads 2] \
        [--binary build/cpp/ovss_infer] [--json benchmarks/results/cpp_vs_python.json]

Same deployable folder, same images, same onnxruntime library (the C++ build links the Python
wheel's), same intra-op thread count. A frame's latency is one segmenter call on a decoded image:
preprocess + inference + postprocess (image decoding and model loading are not timed, on either
side). Each round runs, per image, ``ovss_infer --repeat 1+K`` in a fresh process (its first call
is dropped as warm-up) and K calls of an in-process ``runtime.segmenter.Segmenter``, alternating
which goes first; medians are over all rounds. The ratio is C++ median / Python median (< 1: C++
is faster). Also checks that both give identical label maps. Prints one JSON line; exit 2 on bad
input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import check_report_paths, cpu_model, publish
from runtime.cli import ArgumentParser, cli_main, setup_logging
from runtime.cli_checks import MAX_THREADS, count_arg, threads_arg
from runtime.errors import OvssError
from runtime.image import load_image
from runtime.segmenter import Segmenter

DEFAULT_BINARY = Path(__file__).resolve().parents[1] / "build" / "cpp" / "ovss_infer"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(
        prog="python -m benchmarks.cpp_vs_python", description=__doc__.splitlines()[0]
    )
    p.add_argument("--model", required=True, help="deployable folder")
    p.add_argument("--images", required=True, nargs="+", help="image files (PNG/JPEG)")
    p.add_argument("--runs", type=count_arg, default=10, help="interleaved rounds (>= 1)")
    p.add_argument(
        "--calls", type=count_arg, default=3, help="timed calls per image per round and side"
    )
    p.add_argument(
        "--threads",
        type=threads_arg,
        default=min(len(os.sched_getaffinity(0)), MAX_THREADS),
        help="onnxruntime intra-op threads, both sides (default: all cores)",
    )
    p.add_argument("--mode", default="auto", choices=("auto", "whole", "slide"))
    p.add_argument("--binary", default=str(DEFAULT_BINARY), help="the ovss_infer program")
    p.add_argument("--json", help="also write the result here")
    return p.parse_args(argv)


def cpp_calls(
    args: argparse.Namespace, image: str, labels_png: str | None
) -> tuple[list[float], dict]:
    """One ovss_infer process: its per-call times (first call dropped) and its JSON line."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            args.binary,
            "--model",
            args.model,
            "--image",
            image,
            "--out",
            str(Path(tmp) / "overlay.png"),
            "--threads",
            str(args.threads),
            "--mode",
            args.mode,
            "--repeat",
            str(args.calls + 1),
            "--backend",
            "onnxruntime",
            "--no-legend",
        ] + (["--labels-out", labels_png] if labels_png else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OvssError(f"{args.binary} failed ({done.returncode}): {done.stderr.strip()}")
    line = json.loads(done.stdout.strip().splitlines()[-1])
    return line["runs_call_ms"][1:], line


def python_calls(seg: Segmenter, image: np.ndarray, calls: int) -> tuple[list[float], list[dict]]:
    """``calls`` timed Segmenter calls: wall ms each, and the stage timings they report."""
    walls, stages = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        res = seg(image)
        walls.append((time.perf_counter() - t0) * 1e3)
        stages.append(res.timings_ms)
    return walls, stages


def summary(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {
        "median": round(float(np.median(v)), 3),
        "p10": round(float(np.percentile(v, 10)), 3),
        "p90": round(float(np.percentile(v, 90)), 3),
        "n": int(v.size),
    }


def stage_medians(rows: list[dict]) -> dict:
    """Median per stage over a list of ``timings_ms`` dicts."""
    return {k: round(float(np.median([row[k] for row in rows])), 3) for k in rows[0]}


def labels_match(seg: Segmenter, image: np.ndarray, png: str) -> bool:
    """Whether the C++ label PNG equals the Python labels for ``image``."""
    from PIL import Image

    with Image.open(png) as im:
        return bool(np.array_equal(np.asarray(im).astype(np.int32), seg(image).labels))


def bench_image(args: argparse.Namespace, seg: Segmenter, path: str) -> dict:
    """Interleaved rounds on one image; per-image summaries and the sanity check."""
    image = load_image(path)
    python_calls(seg, image, 2)  # warm-up
    cpp, py, py_stages, cpp_stages, line = [], [], [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        png = str(Path(tmp) / "labels.png")
        for r in range(args.runs):
            order = ("cpp", "py") if r % 2 == 0 else ("py", "cpp")
            for side in order:
                if side == "cpp":
                    times, line = cpp_calls(args, path, png if r == 0 else None)
                    cpp += times
                    cpp_stages.append(line["timings_ms"])
                else:
                    times, stages = python_calls(seg, image, args.calls)
                    py += times
                    py_stages += stages
        same = labels_match(seg, image, png) if len(seg.classes) <= 256 else None
    return {
        "image": path,
        "image_hw": list(image.shape[:2]),
        "mode": line["mode"],
        "windows": line["windows"],
        "labels_identical": same,
        "cpp_ms": summary(cpp),
        "python_ms": summary(py),
        "cpp_stage_median_ms": stage_medians(cpp_stages),
        "python_stage_median_ms": stage_medians(py_stages),
        "ratio_cpp_over_python": round(float(np.median(cpp) / np.median(py)), 4),
    }


def run(args: argparse.Namespace) -> dict:
    import onnxruntime

    if not Path(args.binary).is_file():
        raise OvssError(f"{args.binary} not found: build it with make cpp")
    with Segmenter(args.model, "onnxruntime", mode=args.mode, threads=args.threads) as seg:
        per_image = [bench_image(args, seg, p) for p in args.images]
        manifest = seg.manifest
    cpp = [row["cpp_ms"]["median"] for row in per_image]
    py = [row["python_ms"]["median"] for row in per_image]
    return {
        "benchmark": "cpp_vs_python",
        "model": str(args.model),
        "backbone": manifest.backbone,
        "input_size": list(manifest.preprocess.input_size),
        "weights_random": manifest.weights.random,
        "threads": args.threads,
        "runs": args.runs,
        "calls_per_run": args.calls,
        "onnxruntime": onnxruntime.__version__,
        "cpu": cpu_model(),
        "cpp_median_ms_mean_over_images": round(float(np.mean(cpp)), 3),
        "python_median_ms_mean_over_images": round(float(np.mean(py)), 3),
        "ratio_cpp_over_python": round(float(np.mean(cpp) / np.mean(py)), 4),
        "per_image": per_image,
    }


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    setup_logging()
    check_report_paths(args)
    try:
        result = run(args)
    except OSError as e:  # the C++ program or a file it needs is missing: bad input, one line
        raise OvssError(str(e)) from e
    publish(result, "benchmarks.cpp_vs_python", argv, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
