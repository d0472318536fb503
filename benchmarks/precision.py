"""Latency of a deployable folder's precision variants on onnxruntime CPU, side by side.

    python -m benchmarks.precision --model DIR --precisions fp32,int8 --runs 10 \
        --json benchmarks/results/precision_maskclip_vitb16_448.json

Times the graphs the runtime would run (``Manifest.model_for``), batch 1, interleaved rounds
after warm-up, on one real-looking input (the export parity image). Accuracy figures come from
the folder's ``precision_report.json`` (written by ``calibration.calibrate``) and are copied into
the report next to the timings. Prints one JSON line; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from pathlib import Path

import numpy as np

from benchmarks.latency import bench_main, cpu_model, time_interleaved
from calibration.calibrate import text_feeds
from runtime import io_names
from runtime.backends.ort import OrtBackend, require_ort
from runtime.cli import ArgumentParser
from runtime.cli_checks import count_arg, nonneg_count, threads_arg
from runtime.errors import CalibrationError, ModelFolderError
from runtime.fsutil import sha256_file
from runtime.manifest import PRECISIONS, load_manifest

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="deployable folder with variants")
    p.add_argument("--precisions", default="fp32,int8", help="comma-separated, fp32 first")
    p.add_argument("--runs", type=count_arg, default=10)
    p.add_argument("--warmup", type=nonneg_count, default=2)
    p.add_argument("--threads", type=threads_arg, help="intra-op threads (default: all cores)")
    p.add_argument("--json", help="write the report here too")
    return p.parse_args(argv)


def run_benchmark(args: argparse.Namespace, threads: int) -> dict:
    from export.onnx_export import parity_image  # torch: after the arguments are parsed

    wanted = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in wanted if p not in PRECISIONS]
    if bad or not wanted:
        raise CalibrationError(f"unknown precisions {bad}; choose from {PRECISIONS}")
    if args.runs < 1:
        raise CalibrationError("--runs must be >= 1")
    folder = Path(args.model)
    m = load_manifest(folder)
    files = {}
    for p in wanted:  # ModelFolderError for a missing variant
        name, sha = m.model_for(p)
        if sha and sha256_file(folder / name) != sha:
            raise ModelFolderError(f"{folder / name} does not match the manifest's sha256")
        files[p] = name
    ort = require_ort()
    size = m.preprocess.input_size[0]
    feeds = {io_names.IMAGE: parity_image(size, m.preprocess.mean, m.preprocess.std).numpy()}
    feeds.update(text_feeds(folder, m))
    impls = {}
    for p, name in files.items():
        cpu, quantized = ["CPUExecutionProvider"], p == "int8"
        backend = OrtBackend(folder / name, providers=cpu, threads=threads, quantized=quantized)
        impls[p] = functools.partial(backend, feeds, [io_names.LOGITS])
    outs = {p: fn()[io_names.LOGITS] for p, fn in impls.items()}
    times = time_interleaved(impls, args.warmup, args.runs)
    base = wanted[0]
    rows = []
    for p, ms in times.items():
        median = float(np.median(ms))
        rows.append(
            {
                "precision": p,
                "file": files[p],
                "median_ms": round(median, 2),
                "p90_ms": round(float(np.percentile(ms, 90)), 2),
                "runs": len(ms),
                f"speedup_vs_{base}": round(float(np.median(times[base])) / median, 3),
                "argmax_agreement_on_timed_input": round(
                    float((outs[p][0].argmax(0) == outs[base][0].argmax(0)).mean()), 4
                ),
            }
        )
    report_file = folder / "precision_report.json"
    accuracy = json.loads(report_file.read_text()) if report_file.is_file() else {}
    return {
        "results": rows,
        "method": m.method,
        "backbone": m.backbone,
        "input_size": size,
        "classes": len(m.classes),
        "weights_random": m.weights.random,
        "threads": threads,
        "cpu": cpu_model(),
        "onnxruntime_version": ort.__version__,
        "accuracy": {
            p: {k: v for k, v in accuracy[p].items() if k != "sensitivity"}
            for p in wanted
            if p in accuracy
        },
    }


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.precision", parse_args, run_benchmark, argv)


if __name__ == "__main__":
    raise SystemExit(main())
