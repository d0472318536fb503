"""Method against method: network latency of exported folders on one backend, interleaved.

    python -m benchmarks.methods --models maskclip=DIR1,sclip=DIR2,... --baseline maskclip \\
        --image FRAME --runs 10 --threads 2 --json benchmarks/results/methods_vitb16_448.json \\
        --png benchmarks/results/methods_vitb16_448.png

Every folder runs the same frame, resized to its input and normalised as its manifest says. After
``--warmup`` rounds, each of ``--runs`` rounds times every model once, in a rotated order, and the
report gives each model's median network time (``backend(feeds)``, no pre/post-processing) and
its ratio to the baseline's median in the same run. Torch-free; prints one JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_model, save_png, torch_free_main
from runtime import io_names
from runtime.backends import ModelRef, open_backend
from runtime.cli import (
    ArgumentParser,
    add_verbose_arg,
    cli_main,
)
from runtime.cli_checks import count_arg, nonneg_count, threads_arg
from runtime.engine_cache import manifest_input_shapes
from runtime.errors import ConfigError
from runtime.image import load_image
from runtime.manifest import load_manifest
from runtime.preprocess import normalize, resize_rgb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks.methods", description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="NAME=DIR,NAME=DIR,... deployable folders")
    p.add_argument("--baseline", help="NAME the ratios are relative to (default: the first)")
    p.add_argument("--image", required=True, help="image file (or sample:NAME)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "auto"))
    p.add_argument("--runs", type=count_arg, default=10)
    p.add_argument("--warmup", type=nonneg_count, default=2)
    p.add_argument("--threads", type=threads_arg, help="intra-op threads (default: all cores)")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--png", help="bar chart of the medians")
    add_verbose_arg(p)
    return p.parse_args(argv)


def _models(spec: str) -> dict[str, str]:
    pairs = [item.partition("=") for item in spec.split(",") if item.strip()]
    if not pairs or any(not name or not sep or not folder for name, sep, folder in pairs):
        raise ConfigError(f"--models must be NAME=DIR,NAME=DIR,...; got {spec!r}")
    models = {name.strip(): folder.strip() for name, _, folder in pairs}
    if len(models) != len(pairs):
        raise ConfigError("--models has a repeated name")
    return models


def _open(folder: str, image: np.ndarray, args):
    """(backend, feeds, manifest) for one folder's FP32 graph."""
    m = load_manifest(folder)
    name, sha = m.model_for("fp32")
    ref = ModelRef(Path(folder) / name, Path(folder), "fp32", sha, manifest_input_shapes(m.inputs))
    backend = open_backend(args.backend, ref, threads=args.threads).backend
    feeds = {io_names.IMAGE: normalize(resize_rgb(image, m.preprocess.input_size), m.preprocess)}
    if m.vocab_mode == "input":
        feeds[io_names.TEXT_EMBEDDINGS] = np.load(Path(folder) / m.text_embeddings_file)
    return backend, feeds, m


def run_benchmark(args: argparse.Namespace) -> dict:
    models = _models(args.models)
    baseline = args.baseline or next(iter(models))
    if baseline not in models:
        raise ConfigError(f"--baseline {baseline!r} is not one of {sorted(models)}")
    image = load_image(args.image)
    opened = {name: _open(folder, image, args) for name, folder in models.items()}
    providers = {name: list(o[0].providers) for name, o in opened.items()}
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    try:
        for r in range(args.warmup + args.runs):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                backend, feeds, _ = opened[name]
                t0 = time.perf_counter()
                backend(feeds, list(backend.output_names))
                if r >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
    finally:
        for backend, _, _ in opened.values():
            backend.close()
    med = {n: statistics.median(v) for n, v in times.items()}
    rows = [
        {
            "name": n,
            "method": opened[n][2].method,
            "folder": models[n],
            "input_size": opened[n][2].preprocess.input_size[0],
            "classes": len(opened[n][2].classes),
            "providers": providers[n],
            "median_ms": round(med[n], 2),
            "min_ms": round(min(times[n]), 2),
            "ratio_to_baseline": round(med[n] / med[baseline], 3),
        }
        for n in names
    ]
    return {
        "baseline": baseline,
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": args.threads,
        "cpu": cpu_model(),
        "results": rows,
        "weights_random": any(o[2].weights.random for o in opened.values()),
    }


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.5 * len(rows)))
    ax.barh([r["name"] for r in rows], [r["median_ms"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(
            r["median_ms"],
            i,
            f" {r['median_ms']:.0f} ms (x{r['ratio_to_baseline']:.2f})",
            va="center",
            fontsize=8,
        )
    ax.set_xlabel(f"median network ms, {report['runs']} interleaved runs")
    ax.set_title(
        f"vs {report['baseline']}" + (" (random weights)" if report["weights_random"] else "")
    )
    ax.set_xlim(0, max(r["median_ms"] for r in rows) * 1.35)
    save_png(fig, path)


@cli_main
def main(argv: list[str] | None = None) -> int:
    return torch_free_main("benchmarks.methods", argv, parse_args, run_benchmark, plot)


if __name__ == "__main__":
    sys.exit(main())
