"""Batch-1 latency: PyTorch eager against the exported ONNX on onnxruntime, same weights and input.

    python -m benchmarks.latency --method maskclip --backbone ViT-B-16 --image-size 448 \
        --runs 10 --json benchmarks/results/maskclip_vitb16_448.json

The model is exported with the real builder into a temporary folder, so the timed graph is the one
users deploy. Warm-up rounds run first, then ``--runs`` interleaved rounds (pytorch, onnxruntime,
pytorch, ...), each impl on the same number of threads. Prints one JSON line; exits 2 on bad input.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.machine import check_report_paths, cpu_model, publish
from export.config import ExportCfg
from export.registry import BUILDERS
from runtime import io_names
from runtime.backends.ort import OrtBackend, require_ort
from runtime.cli import ArgumentParser, run_main, setup_logging
from runtime.cli_checks import count_arg, image_side, nonneg_count, threads_arg
from runtime.errors import UnknownNameError
from runtime.manifest import Manifest
from training.methods import METHODS, get_method
from training.methods.spec import TEMPLATE_NAMES

if TYPE_CHECKING:  # torch and the exporter are imported after the arguments are parsed
    import torch

    from export.builders import ExportResult

log = logging.getLogger(__name__)
OUTPUTS = [io_names.LOGITS]  # what the deployed graph computes (its label branch is pruned)
CPU = ["CPUExecutionProvider"]  # the eager model runs on the CPU, so onnxruntime does too
# Optional onnxruntime variants: (graph optimisation level, intra-op threads; None = --threads).
VARIANTS = {
    "ort-basic": ("ORT_ENABLE_BASIC", None),
    "ort-extended": ("ORT_ENABLE_EXTENDED", None),
    "ort-1thread": ("ORT_ENABLE_ALL", 1),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted(BUILDERS))
    p.add_argument("--backbone", required=True, help="open_clip name: ViT-B-16, RN50, ...")
    p.add_argument("--pretrained", default="none", help="none | open_clip tag | checkpoint path")
    p.add_argument("--classes", default="voc", help="vocabulary spec, as for export.build")
    p.add_argument(
        "--templates",
        default="single",
        choices=TEMPLATE_NAMES,
        help="prompt set; latency does not depend on it (the classifier is a constant)",
    )
    p.add_argument("--image-size", type=image_side, default=448, help="square input side, px")
    p.add_argument("--runs", type=count_arg, default=10, help="timed interleaved rounds")
    p.add_argument("--warmup", type=nonneg_count, default=2, help="untimed rounds first")
    p.add_argument(
        "--threads", type=threads_arg, help="torch and onnxruntime threads (default: all cores)"
    )
    p.add_argument(
        "--variants",
        nargs="*",
        default=[],
        choices=sorted(VARIANTS),
        help="extra onnxruntime sessions timed in the same loop",
    )
    p.add_argument("--json", help="also write the report here (atomically)")
    return p.parse_args(argv)


def export_model(args: argparse.Namespace, folder: str) -> ExportResult:
    """Export with the registry's builder (parity-gated, simplified) into ``folder``."""
    cfg = ExportCfg.create(
        method=args.method,
        backbone=args.backbone,
        output=folder,
        classes=args.classes,
        pretrained=args.pretrained,
        templates=args.templates,
        image_size=args.image_size,
    )
    return BUILDERS[args.method](cfg)


def training_free_eager(m: Manifest, pretrained: str) -> torch.nn.Module:
    """The export wrapper over a fresh model of a training-free method (MaskCLIP, SCLIP, ...)
    configured as exported: the method's ``model_builder`` and ``wrapper`` from the registry,
    its config from the manifest. (image) -> (logits, labels).

    Raises RuntimeError if the reloaded weights differ from the exported ones (sha256).
    """
    from training.clip_loader import load_clip
    from training.text_classifier import build_text_classifier

    spec = get_method(m.method)
    clip = load_clip(m.backbone, pretrained)
    if clip.weights_sha256 != m.weights.sha256:
        raise RuntimeError(
            f"eager weights {clip.weights_sha256[:12]} differ from the exported "
            f"{m.weights.sha256[:12]}"
        )
    names = {f.name for f in spec.fields()}
    # JSON gives lists where the config holds tuples (mean, std, dilations)
    values = {
        k: tuple(v) if isinstance(v, list) else v for k, v in m.method_cfg.items() if k in names
    }
    cfg = spec.make_config(**values)
    text = build_text_classifier(clip, m.classes, cfg.templates)  # cache hit
    model = spec.load("model_builder")(clip, cfg)
    return spec.load("wrapper")(model, text, m.vocab_mode).eval()


class _Eager(Mapping):
    """``EAGER[method](manifest, pretrained)``: the eager twin of an export, for every registered
    method of kind ``training_free`` (the trained kinds need their checkpoint)."""

    def __getitem__(self, name: str) -> Callable[[Manifest, str], torch.nn.Module]:
        spec = METHODS.get(name)
        if spec is None or spec.kind != "training_free":
            raise KeyError(name)
        return training_free_eager

    def __iter__(self):
        return iter(sorted(n for n, s in METHODS.items() if s.kind == "training_free"))

    def __len__(self) -> int:
        return sum(s.kind == "training_free" for s in METHODS.values())


EAGER = _Eager()


def ort_variant(path: str, name: str, threads: int) -> OrtBackend:
    """An onnxruntime backend: the project's options with the variant's optimisation/threads."""
    level, n = VARIANTS[name]
    return OrtBackend(path, providers=CPU, threads=n or threads, optimization=level)


def make_impls(
    model: torch.nn.Module, image: torch.Tensor, path: str, threads: int, variants: list[str]
) -> dict[str, Callable[[], object]]:
    """{impl name: zero-argument callable running one batch-1 forward of the deployed output}.

    PyTorch runs the wrapped model's logits only, as the deployed graph does (no label map)."""
    import torch

    feeds = {io_names.IMAGE: image.numpy()}
    ort = OrtBackend(path, providers=CPU, threads=threads)

    def pytorch():
        with torch.no_grad():
            return (model.model(image, model.text),)

    impls = {"pytorch": pytorch, "onnxruntime": lambda: ort(feeds, OUTPUTS)}
    for name in variants:
        impls[name] = functools.partial(ort_variant(path, name, threads), feeds, OUTPUTS)
    return impls


def max_logit_diff(impls: dict[str, Callable[[], object]]) -> float:
    """max |logits| difference between one pytorch and one onnxruntime run on the timed input."""
    ref = impls["pytorch"]()[0].numpy()
    return float(np.abs(ref - impls["onnxruntime"]()[io_names.LOGITS]).max())


def count_gflop(model: torch.nn.Module, image: torch.Tensor) -> float:
    """GFLOP (1e9 FLOP, a multiply-add = 2) of one forward, counted by FlopCounterMode.

    FlopCounterMode sees neither nn.MultiheadAttention's fast path nor the fused CPU attention
    kernel, so both are off while counting (ViT-B/16 at 448: 156 GFLOP, not 94).
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as fc:
            model(image)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return fc.get_total_flops() / 1e9


def time_interleaved(
    impls: dict[str, Callable[[], object]], warmup: int, runs: int
) -> dict[str, list[float]]:
    """Wall-clock milliseconds per impl: ``warmup`` untimed rounds, then ``runs`` timed rounds."""
    from tqdm import tqdm

    log.info("warm-up: %d round(s) of %s", warmup, ", ".join(impls))
    for _ in range(warmup):
        for fn in impls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in tqdm(range(runs), desc="timing", unit="round"):
        for name, fn in impls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def summarize(name: str, ms: list[float], image_size: int, gflop: float) -> dict:
    """One result row: median/p90 in ms and achieved GFLOP/s at the median."""
    median, p90 = float(np.median(ms)), float(np.percentile(ms, 90))
    return {
        "impl": name,
        "image_size": image_size,
        "median_ms": round(median, 3),
        "p90_ms": round(p90, 3),
        "gflops_per_s": round(gflop / (median / 1e3), 2),
        "runs": len(ms),
    }


def run_benchmark(args: argparse.Namespace, threads: int) -> dict:
    """Export, build the eager twin, count FLOPs and time every impl; returns the report."""
    import torch

    from export.builders import MODEL_FILE
    from export.onnx_export import parity_image

    if args.method not in EAGER:
        raise UnknownNameError(f"no eager model for method {args.method!r} in benchmarks.latency")
    with tempfile.TemporaryDirectory(prefix="ovss-bench-") as tmp:
        result = export_model(args, tmp)
        m = result.manifest
        if m.weights.random:
            log.warning("weights are RANDOM: timings and FLOPs hold, the outputs are meaningless")
        model = EAGER[args.method](m, args.pretrained)
        image = parity_image(args.image_size, m.preprocess.mean, m.preprocess.std)
        impls = make_impls(model, image, str(result.output / MODEL_FILE), threads, args.variants)
        diff = max_logit_diff(impls)
        log.info("pytorch vs onnxruntime on the timed input: max|logit diff| %.3g", diff)
        gflop = count_gflop(model, image)
        log.info("one forward: %.2f GFLOP; %d thread(s)", gflop, threads)
        times = time_interleaved(impls, args.warmup, args.runs)
    rows = [summarize(name, ms, args.image_size, gflop) for name, ms in times.items()]
    median = {r["impl"]: r["median_ms"] for r in rows}
    ratio = median["pytorch"] / median["onnxruntime"]
    return {
        "results": rows,
        "ratio_pytorch_over_onnxruntime": round(ratio, 3),
        "backbone": m.backbone,
        "method": m.method,
        "weights_random": m.weights.random,
        "gflop": round(gflop, 3),
        "threads": threads,
        "cpu": cpu_model(),
        "torch_version": torch.__version__,
        "onnxruntime_version": require_ort().__version__,
        "max_abs_logit_diff": diff,
    }


def bench_main(
    prog: str,
    parse: Callable,
    bench: Callable,
    argv: list[str] | None,
    finish: Callable[[dict, argparse.Namespace], None] | None = None,
) -> int:
    """Shared CLI body of the torch benchmarks: the CLI layer's error policy and logging
    (``runtime.cli``), thread count, ``finish(report, args)`` hook, then ``publish`` (the command
    recorded in the report, atomic --json, one JSON line)."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def body(_argv) -> int:
        args = parse(argv)
        setup_logging()
        check_report_paths(args)
        threads = args.threads or len(os.sched_getaffinity(0))
        import torch  # after parsing: --help and argument errors never pay for it

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            report = bench(args, threads)
        finally:
            torch.set_num_threads(previous)
        if finish is not None:
            finish(report, args)
        publish(report, prog, argv, args.json)
        return 0

    return run_main(body, argv)


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.latency", parse_args, run_benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
