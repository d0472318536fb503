"""MaskCLIP+ students against MaskCLIP: deployed latency on onnxruntime CPU at the same input size.

    python -m benchmarks.students --backbone ViT-B-16 --image-size 448 --students all --runs 10 \
        --atol 1 --json benchmarks/results/students_vitb16_448.json \
        --plot benchmarks/results/students_vitb16_448.png

MaskCLIP and every selected student (method ``maskclip_plus``, ``student=NAME``, random init,
classified by the text matrix of the same CLIP so D matches) are exported with the real builders
into one temporary folder at the same image size; the timed graph is each folder's deployed
``model.onnx``. Warm-up rounds, then ``--runs`` interleaved rounds (maskclip, student 1, student 2,
...), every session with the project's options on the same threads. ``ratio_vs_maskclip`` is
MaskCLIP's median / the model's median (> 1: the model is faster). GFLOPs and parameters are
counted on an eager twin of each graph, checked against onnxruntime on the timed input. Weights
are random: timings and FLOPs hold, the outputs are meaningless. A random DeepLab-v2 R101 has
logits near 1e5 at 448 px, so the exporter's 1e-4 parity gate fails on float32 noise alone (0.38,
labels all equal): the ViT-B/16 run passes ``--atol 1``, and the report keeps each graph's actual
diff and max|logit|. Prints one JSON line; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.latency import (
    CPU,
    OUTPUTS,
    bench_main,
    count_gflop,
    cpu_model,
    time_interleaved,
    training_free_eager,
)
from export.config import ExportCfg
from export.registry import BUILDERS
from runtime import io_names
from runtime.backends.ort import OrtBackend, require_ort
from runtime.cli import ArgumentParser
from runtime.cli_checks import (
    count_arg,
    image_side,
    nonneg_count,
    positive_float,
    threads_arg,
)
from runtime.errors import ConfigError, UnknownNameError
from runtime.fsutil import atomic_write
from training.methods.maskclip_plus import STUDENT_NAMES as STUDENTS
from training.methods.spec import TEMPLATE_NAMES

if TYPE_CHECKING:  # torch and the exporter are imported after the arguments are parsed
    import torch

    from export.builders import ExportResult
    from export.wrappers import LogitsOnnxModel

log = logging.getLogger(__name__)
MASKCLIP = "maskclip"
STRIDE = 32  # the students' deepest stride; also a multiple of every MaskCLIP patch size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks.students", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", required=True, help="open_clip name: ViT-B-16, ovss-tiny-vit, ...")
    p.add_argument("--pretrained", default="none", help="CLIP weights: none | open_clip tag | path")
    p.add_argument("--classes", default="camvid", help="vocabulary spec, as for export.build")
    p.add_argument(
        "--templates",
        default="single",
        choices=TEMPLATE_NAMES,
        help="prompt set; latency does not depend on it (the classifier is a constant)",
    )
    p.add_argument(
        "--image-size",
        type=image_side,
        default=448,
        help="square input side, multiple of 32 (<= 4096)",
    )
    p.add_argument(
        "--students",
        default="all",
        help=f"'all' or comma-separated names from {','.join(STUDENTS)}",
    )
    p.add_argument("--runs", type=count_arg, default=10, help="timed interleaved rounds")
    p.add_argument("--warmup", type=nonneg_count, default=2, help="untimed rounds first")
    p.add_argument(
        "--threads", type=threads_arg, help="torch and onnxruntime threads (default: all cores)"
    )
    p.add_argument(
        "--atol",
        type=positive_float,
        default=ExportCfg.atol,
        help="export parity gate, absolute (default: the exporter's). Random deep "
        "students have huge logits (DeepLab-v2 R101 at 448: ~1e5), where float32 "
        "noise alone exceeds 1e-4; the report has each graph's diff and max|logit|",
    )
    p.add_argument("--json", help="also write the report here (atomically)")
    p.add_argument("--plot", help="also write a PNG bar chart of the medians here")
    return p.parse_args(argv)


def select_students(spec: str) -> list[str]:
    """``all`` -> every STUDENTS key; else the comma-separated names, in order, without repeats.

    Raises UnknownNameError for an empty list or a name that is not a student."""
    names = list(STUDENTS) if spec.strip() == "all" else [s.strip() for s in spec.split(",")]
    names = list(dict.fromkeys(n for n in names if n))
    unknown = [n for n in names if n not in STUDENTS]
    if unknown or not names:
        raise UnknownNameError(
            f"unknown student(s) {unknown or [spec]}; students: {sorted(STUDENTS)}"
        )
    return names


def check_size(size: int) -> None:
    """Raise ConfigError unless ``size`` is a positive multiple of 32 (students' deepest stride)."""
    if size < STRIDE or size % STRIDE:
        raise ConfigError(
            f"--image-size {size} is not a positive multiple of {STRIDE} (the "
            f"students' deepest stride)"
        )


def export_graph(args: argparse.Namespace, name: str, folder: str) -> ExportResult:
    """Export MaskCLIP (``name`` == 'maskclip') or the random student ``name`` into ``folder``."""
    method, student = (MASKCLIP, None) if name == MASKCLIP else ("maskclip_plus", name)
    cfg = ExportCfg.create(
        method=method,
        backbone=args.backbone,
        output=folder,
        classes=args.classes,
        pretrained=args.pretrained,
        templates=args.templates,
        image_size=args.image_size,
        student=student,
        atol=args.atol,
    )
    log.info("exporting %s at %d px", name, args.image_size)
    return BUILDERS[method](cfg)


def student_eager(name: str, text: torch.Tensor, seed: int = 0) -> LogitsOnnxModel:
    """The exported random student, rebuilt as the builder does (same seed), in its wrapper."""
    import torch

    from export.wrappers import LogitsOnnxModel
    from training.students import StudentCfg, build_student

    torch.manual_seed(seed)
    student = build_student(StudentCfg(name, text.shape[1], dropout=0.0)).eval()
    return LogitsOnnxModel(student, text, "fixed").eval()


def graph_facts(
    wrapper: LogitsOnnxModel, image: torch.Tensor, result: ExportResult, ort: OrtBackend
) -> dict:
    """Static facts of one exported graph, from its eager twin and one onnxruntime run."""
    import torch

    from export.builders import MODEL_FILE

    with torch.no_grad():
        ref = wrapper.model(image, wrapper.text).numpy()
    out = ort({io_names.IMAGE: image.numpy()}, OUTPUTS)[io_names.LOGITS]
    diff = float(np.abs(ref - out).max()) if ref.shape == out.shape else float("inf")
    if not diff <= 1e-3 + 1e-3 * float(np.abs(ref).max()):
        log.warning(
            "eager twin and onnxruntime disagree (max|diff| %.3g, shapes %s vs %s): the "
            "FLOP and parameter counts may not describe the timed graph",
            diff,
            ref.shape,
            out.shape,
        )
    m = result.manifest
    return {
        "gflop": round(count_gflop(wrapper, image), 3),
        "params": sum(p.numel() for p in wrapper.model.parameters()),
        "output_stride": m.preprocess.feature_stride,
        "logits_shape": list(out.shape),
        "onnx_mb": round(os.path.getsize(result.output / MODEL_FILE) / 2**20, 2),
        "export_s": round(result.seconds, 1),
        "export_parity_max_abs_diff": m.parity["max_abs_diff"],
        "max_abs_logit_diff_eager_vs_ort": diff,
        "max_abs_logit": float(np.abs(ref).max()),
    }


def prepare(args: argparse.Namespace, names: list[str], tmp: str, threads: int):
    """Export every graph, open its session, record its facts; -> (sessions, facts, random)."""
    from export.builders import MODEL_FILE
    from export.onnx_export import parity_image

    sessions, facts, random, text = {}, {}, True, None
    for name in names:
        result = export_graph(args, name, os.path.join(tmp, name))
        m = result.manifest
        random = random and m.weights.random
        if name == MASKCLIP:
            wrapper = training_free_eager(m, args.pretrained)
            text = wrapper.text
        else:
            wrapper = student_eager(name, text)
        image = parity_image(args.image_size, m.preprocess.mean, m.preprocess.std)
        sessions[name] = OrtBackend(str(result.output / MODEL_FILE), providers=CPU, threads=threads)
        facts[name] = {
            "method": m.method,
            **graph_facts(wrapper, image, result, sessions[name]),
            "feeds": {io_names.IMAGE: image.numpy()},
        }
        log.info(
            "%s: %.1f GFLOP, %.1f M params, logits %s",
            name,
            facts[name]["gflop"],
            facts[name]["params"] / 1e6,
            facts[name]["logits_shape"],
        )
        del wrapper
        gc.collect()
    return sessions, facts, random


def summarize(name: str, ms: list[float], base: list[float], facts: dict) -> dict:
    """One result row; ``base`` is MaskCLIP's times from the same rounds. ``ratio_vs_maskclip`` is
    the ratio of the rounded medians; ``ratio_paired_median`` the median of per-round ratios."""
    q = np.percentile(ms, [10, 50, 90])
    median, base_median = round(float(q[1]), 3), round(float(np.median(base)), 3)
    paired = np.median(np.asarray(base) / np.asarray(ms))
    return {
        "model": name,
        "method": facts["method"],
        "runs": len(ms),
        "median_ms": median,
        "ratio_vs_maskclip": round(base_median / median, 3),
        "ratio_paired_median": round(float(paired), 3),
        "p10_ms": round(float(q[0]), 3),
        "p90_ms": round(float(q[2]), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
        **{k: v for k, v in facts.items() if k not in ("method", "feeds")},
    }


def run_benchmark(args: argparse.Namespace, threads: int) -> dict:
    """Validate, export, time every graph interleaved; returns the report (without the command)."""
    import torch

    names = [MASKCLIP, *select_students(args.students)]
    check_size(args.image_size)
    with tempfile.TemporaryDirectory(prefix="ovss-bench-") as tmp:
        sessions, facts, random = prepare(args, names, tmp, threads)
    if random:
        log.warning("weights are RANDOM: timings and FLOPs hold, the outputs are meaningless")
    impls = {n: (lambda s=sessions[n], f=facts[n]["feeds"]: s(f, OUTPUTS)) for n in names}
    load_start = os.getloadavg()
    log.info("load average before timing %s; %d thread(s)", load_start, threads)
    times = time_interleaved(impls, args.warmup, args.runs)
    rows = [summarize(n, times[n], times[MASKCLIP], facts[n]) for n in names]
    for r in rows:
        log.info(
            "%-20s %9.1f ms  x%.3f vs maskclip", r["model"], r["median_ms"], r["ratio_vs_maskclip"]
        )
    return {
        "results": rows,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "classes": args.classes,
        "num_classes": rows[0]["logits_shape"][1],
        "templates": args.templates,
        "weights": "random" if random else args.pretrained,
        "weights_random": random,
        "export_atol": args.atol,
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": threads,
        "providers": CPU,
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "torch_version": torch.__version__,
        "onnxruntime_version": require_ort().__version__,
        "loadavg_before_timing": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def write_plot(report: dict, path: Path) -> str | None:
    """Horizontal bars of the median latency (p10-p90 whiskers), each annotated with its ratio to
    MaskCLIP; None without matplotlib."""
    if find_spec("matplotlib") is None:
        log.info("matplotlib is not installed: no plot written (the JSON has every number)")
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = report["results"]
    med = [r["median_ms"] for r in rows]
    err = [
        [m - r["p10_ms"] for m, r in zip(med, rows)],
        [r["p90_ms"] - m for m, r in zip(med, rows)],
    ]
    fig, ax = plt.subplots(figsize=(7.5, 0.6 * len(rows) + 1.6))
    colors = ["tab:gray" if r["model"] == MASKCLIP else "tab:blue" for r in rows]
    ax.barh([r["model"] for r in rows], med, xerr=err, color=colors, capsize=3)
    for y, r in enumerate(rows):
        ax.annotate(
            f"{r['median_ms']:.4g} ms ({r['ratio_vs_maskclip']:.2f}x)",
            (r["p90_ms"], y),
            va="center",
            xytext=(6, 0),
            textcoords="offset points",
        )
    ax.invert_yaxis()
    ax.set_xlim(0, 1.4 * max(r["p90_ms"] for r in rows))
    ax.set(
        xlabel="median ms, whiskers p10-p90; (r x) = MaskCLIP median / model median",
        title=f"{report['backbone']} MaskCLIP vs MaskCLIP+ students, {report['image_size']} px, "
        f"C={report['num_classes']}\nonnxruntime CPU, {report['threads']} thread(s), "
        f"{report['weights']} weights, {report['runs']} interleaved runs",
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return str(path)


def _add_plot(report: dict, args: argparse.Namespace) -> None:
    report["plot"] = write_plot(report, Path(args.plot)) if args.plot else None


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.students", parse_args, run_benchmark, argv, finish=_add_plot)


if __name__ == "__main__":
    sys.exit(main())
