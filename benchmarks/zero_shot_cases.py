"""The cases of ``python -m benchmarks.zero_shot`` (see there): export, parity and interleaved
timing per (method, part, C). Imports torch; the CLI module imports it only after parsing."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import tempfile
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.latency import cpu_model, time_interleaved
from benchmarks.zero_shot import PARTS, zero_shot_methods
from export.onnx_export import OnnxExport, keep_outputs, parity_image, run_export
from runtime import io_names
from runtime.backends.ort import OrtBackend, require_ort
from runtime.errors import UnknownNameError
from runtime.fsutil import atomic_write
from training.clip_loader import load_clip
from training.maskclip import IMAGENET_MEAN, IMAGENET_STD
from training.methods import get_method
from training.models import build_model, text_dim
from training.zegclip import bias_vector

log = logging.getLogger(__name__)
# Exported with LABELS (parity-checked), timed as deployed: LOGITS = sigmoid - bias scores only.
EXPORT_OUTPUTS = [io_names.LOGITS, io_names.LABELS]
OUTPUTS = [io_names.LOGITS]
CPU = ["CPUExecutionProvider"]
SEEN_SHARE, SEEN_BIAS = 0.75, 0.1


class DecoderOnly(nn.Module):
    """Used only for benchmarking: an export wrapper after its backbone (``wrapper.decode``).

    forward(*backbone outputs) -> (scores [1,C,h,w], labels int64 [1,S,S]); ZegCLIP takes
    (patches [1,D,h,w], cls [1,D]), CLIP-RC also regions [1,D,4,4].
    """

    def __init__(self, wrapper: nn.Module):
        super().__init__()
        self.wrapper = wrapper

    def forward(self, *feats: torch.Tensor):
        return self.wrapper.decode(*feats)


def decoder_feeds(wrapper: nn.Module, feats: tuple) -> dict[str, torch.Tensor]:
    """The backbone outputs named by the wrapper's ``decode`` parameters (ZegCLIP: patches, cls;
    CLIP-RC: patches, cls, regions); trailing outputs a method does not produce (None, ZegCLIP's
    regions) are left out, so the feeds stay positional for ``DecoderOnly``."""
    params = list(inspect.signature(wrapper.decode).parameters)
    if len(params) < len(feats):
        raise TypeError(
            f"{type(wrapper).__name__}.decode takes fewer inputs than the backbone's "
            f"{len(feats)} outputs"
        )
    feeds = {}
    for name, f in zip(params, feats):
        if f is None:
            break
        feeds[name] = f
    return feeds


def text_and_bias(num_classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random unit text rows [C,D] and the seen bias [C] (0.1 on the first 3/4 of the classes)."""
    g = torch.Generator().manual_seed(seed + num_classes)
    text = F.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
    seen = list(range(int(SEEN_SHARE * num_classes)))
    return text, bias_vector(num_classes, seen, SEEN_BIAS)


def build_wrappers(method: str, args: argparse.Namespace) -> tuple[dict[int, nn.Module], bool]:
    """{C: export wrapper} over one random-init ``method`` model; and whether weights are random."""
    spec = get_method(method)
    clip = load_clip(args.backbone, "none", args.seed)
    torch.manual_seed(args.seed)
    model = build_model(method, clip, spec.make_config(image_size=args.image_size)).eval()
    wrapper_cls = spec.load("wrapper")
    wrappers = {}
    for c in args.classes:
        text, bias = text_and_bias(c, text_dim(clip), args.seed)
        wrappers[c] = wrapper_cls(model, text, bias, vocab_mode="fixed").eval()
    return wrappers, clip.random


def export_part(
    module: nn.Module, dummy: dict[str, torch.Tensor], atol: float, image_size: int
) -> OnnxExport:
    """``run_export`` with the exporter's defaults: opset 17, simplified, parity-gated."""
    return run_export(
        model=module,
        dummy_inputs=dummy,
        output_names=EXPORT_OUTPUTS,
        dynamic_axes={},
        opset=17,
        simplify=True,
        atol=atol,
        min_label_agreement=0.999,
        label_size=(image_size, image_size),
    )


def make_impls(
    module: nn.Module, feeds: dict[str, torch.Tensor], path: str, threads: int
) -> dict[str, Callable[[], object]]:
    """{impl: zero-argument callable running one batch-1 forward of the deployed output}."""
    tensors, arrays = tuple(feeds.values()), {k: v.numpy() for k, v in feeds.items()}
    ort = OrtBackend(path, providers=CPU, threads=threads)

    def pytorch():
        with torch.no_grad():
            return module(*tensors)

    return {"pytorch": pytorch, "onnxruntime": lambda: ort(arrays, OUTPUTS)}


def parity_summary(export: OnnxExport) -> dict:
    p = export.parity
    return {
        "max_abs_diff": p.max_abs_diff,
        "atol": p.atol,
        "rtol": p.rtol,
        "passed": p.passed,
        "label_agreement": p.label_agreement,
        "decided_label_agreement": p.decided_agreement,
        "tie_fraction": p.tie_fraction,
        "simplified": export.simplified,
        "onnx_nodes": export.nodes_final,
    }


def time_case(key: dict, module: nn.Module, feeds: dict[str, torch.Tensor], args, threads: int):
    """Export ``module`` on ``feeds``, time both impls interleaved; -> (rows, case summary)."""
    t0 = time.perf_counter()
    export = export_part(module, feeds, args.atol, args.image_size)
    export_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="ovss-bench-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(keep_outputs(export.model, OUTPUTS), path)  # the deployed graph
        load = os.getloadavg()[0]
        wrapper = module.wrapper if isinstance(module, DecoderOnly) else module
        wrapper.output = "deployed"  # PyTorch computes what the deployed graph does
        try:
            impls = make_impls(module, dict(feeds), path, threads)
            times = time_interleaved(impls, args.warmup, args.runs)
        finally:
            wrapper.output = "scores"
    rows = [
        {
            **key,
            "impl": impl,
            "runs": len(ms),
            "median_ms": round(float(np.median(ms)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3),
        }
        for impl, ms in times.items()
    ]
    med = {r["impl"]: r["median_ms"] for r in rows}
    paired = np.median(np.array(times["pytorch"]) / np.array(times["onnxruntime"]))
    case = {
        **key,
        "ratio_pytorch_over_onnxruntime": round(med["pytorch"] / med["onnxruntime"], 3),
        "ratio_paired_median": round(float(paired), 3),
        "parity": parity_summary(export),
        "export_s": round(export_s, 1),
        "loadavg_1m_before_timing": round(load, 2),
    }
    log.info(
        "%s %s C=%d: pytorch %.1f ms, onnxruntime %.1f ms, ratio %.3f (parity %.3g)",
        key["method"],
        key["part"],
        key["num_classes"],
        med["pytorch"],
        med["onnxruntime"],
        case["ratio_pytorch_over_onnxruntime"],
        export.parity.max_abs_diff,
    )
    return rows, case


def method_cases(method: str, args, threads: int, image: torch.Tensor):
    """Rows and cases of every (part, C) of one method; and whether its weights are random."""
    wrappers, random = build_wrappers(method, args)
    first = next(iter(wrappers.values()))
    with torch.no_grad():
        feats = first.backbone(image)  # the backbone is shared by every C
    feats = decoder_feeds(first, feats)
    rows, cases = [], []
    for c, wrapper in wrappers.items():
        for part in args.parts:
            key = {"method": method, "part": part, "num_classes": c}
            if part == "full":
                module, feeds = wrapper, {io_names.IMAGE: image}
            else:
                module = DecoderOnly(wrapper).eval()
                feeds = feats
            r, case = time_case(key, module, feeds, args, threads)
            rows += r
            cases.append(case)
    return rows, cases, random


def run_benchmark(args: argparse.Namespace, threads: int) -> dict:
    """Every (method, C, part) case in turn; returns the report (without the command)."""
    known = zero_shot_methods()
    unknown = [m for m in args.methods if m not in known]
    if unknown:
        raise UnknownNameError(f"unknown method(s) {unknown}; zero-shot methods: {known}")
    load_start = os.getloadavg()
    log.info(
        "load average at start %s on %d cpu(s); weights are RANDOM (timings only)",
        load_start,
        os.cpu_count(),
    )
    image = parity_image(args.image_size, IMAGENET_MEAN, IMAGENET_STD, args.seed)
    rows, cases, random = [], [], True
    for method in args.methods:
        r, c, rnd = method_cases(method, args, threads, image)
        rows, cases, random = rows + r, cases + c, random and rnd
    return {
        "results": rows,
        "cases": cases,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "weights_random": random,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "torch_version": torch.__version__,
        "onnxruntime_version": require_ort().__version__,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def write_plot(report: dict, path: Path) -> str | None:
    """Median latency vs C: a panel per part, a line per (method, impl); None without matplotlib."""
    if find_spec("matplotlib") is None:
        log.info("matplotlib is not installed: no plot written (the JSON has every number)")
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    parts = sorted({r["part"] for r in report["results"]}, key=PARTS.index)
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4), squeeze=False)
    for ax, part in zip(axes[0], parts):
        lines = sorted({(r["method"], r["impl"]) for r in report["results"] if r["part"] == part})
        for method, impl in lines:
            pts = sorted(
                (r["num_classes"], r["median_ms"])
                for r in report["results"]
                if (r["part"], r["method"], r["impl"]) == (part, method, impl)
            )
            ax.plot(
                *zip(*pts),
                marker="o",
                linestyle="-" if impl == "pytorch" else "--",
                label=f"{method} {impl}",
            )
        ax.set(
            title=f"{part}: {report['backbone']} {report['image_size']} px, "
            f"{report['threads']} thread(s)",
            xlabel="classes C",
            ylabel="median ms",
            xscale="log",
            yscale="log",
        )
        ax.set_xticks(sorted({r["num_classes"] for r in report["results"]}))
        ax.set_xticklabels([str(c) for c in ax.get_xticks()])
        ax.minorticks_off()
        # Label the y axis at the measured medians' decade steps (1-2-5), readable within a decade.
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return str(path)


def add_plot(report: dict, args: argparse.Namespace) -> None:
    """The report's PNG beside its --json (None without one)."""
    report["plot"] = write_plot(report, Path(args.json).with_suffix(".png")) if args.json else None
