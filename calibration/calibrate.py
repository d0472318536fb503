"""``python -m calibration.calibrate``: add an FP16 or INT8 graph to a deployable folder.

    python -m calibration.calibrate --model DIR --precision int8 --images FRAMES_DIR|VIDEO \
        [--num 256] [--method entropy|percentile|minmax] [--eval-images DIR --eval-num 32] \
        [--labels GT_DIR --ignore-label 11] [--exclude NODE,...] [--sensitivity 4]

Writes ``DIR/model.fp16.onnx`` or ``DIR/model.int8.onnx``, records it (file, sha256, settings,
accuracy) under ``variants`` in ``DIR/manifest.json``, and its accuracy against FP32 on held-out
frames in ``DIR/precision_report.json``. Held-out frames are ``--eval-images``, or the frames of
``--images`` after the calibration ones. Nothing in the folder changes unless every step succeeds.
The runtime then selects it: ``python -m runtime.infer --model DIR --precision int8 ...``.

Output: the report's tables (units in the headers), logs and progress bars go to stderr; stdout
carries one JSON line (``| jq .`` parses it): variant, precision, the percentages (``*_pct``,
0..100, null where not measured, e.g. decided agreement when no cell is decided), seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from calibration.data import calibration_batch, iter_frames
from calibration.report import (
    PCT_FIELDS,
    AccuracyReport,
    compare_variant,
    finite_or_none,
    to_table,
)
from export.folder_write import REPORT_FILE, FolderWrite, named_files
from export.trtexec import folder_commands
from runtime import io_names
from runtime.backends.ort import OrtBackend
from runtime.cli import (
    ArgumentParser,
    add_verbose_arg,
    cli_main,
    setup_logging,
)
from runtime.cli_checks import check_outputs, int_range, label_arg, threads_arg
from runtime.errors import CalibrationError, ModelFolderError
from runtime.folder_files import model_file, pinned_folder, text_embeddings
from runtime.fsutil import atomic_write, atomic_write_text, sha256_file
from runtime.manifest import PRECISIONS, Manifest, Variant, load_manifest

log = logging.getLogger(__name__)
METHODS = ("entropy", "percentile", "minmax")
# Where INT8 Q/DQ go: "outputs" = inputs and outputs of the quantized GEMMs/convs (onnxruntime CPU
# fuses them into integer kernels: ~1.9x faster than FP32 for MaskCLIP ViT-B/16 at 448);
# "inputs" = inputs only (TensorRT's recommended placement; no speed-up on onnxruntime CPU).
LAYOUTS = ("outputs", "inputs")


@dataclass(frozen=True)
class CalibrateCfg:
    """One calibration job (each field is one CLI flag)."""

    model: str
    precision: str
    images: str | None = None
    num: int = 256
    method: str = "entropy"
    eval_images: str | None = None
    eval_num: int = 32
    labels: str | None = None
    ignore_label: int | None = None
    exclude: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    layout: str = "outputs"
    attention_int8: bool = False
    per_channel: bool = True
    sensitivity: int = 4
    cache_dir: str | None = None
    threads: int | None = None


@dataclass(frozen=True)
class CalibrateResult:
    """What a job wrote: the variant graph, its manifest entry, its accuracy and (INT8) the
    per-layer sensitivity rows, worst first."""

    path: Path
    variant: Variant
    report: AccuracyReport
    sensitivity: tuple
    seconds: float


def _check(cfg: CalibrateCfg) -> None:
    if cfg.precision not in PRECISIONS[1:]:
        raise CalibrationError(
            f"unknown precision {cfg.precision!r}: choose one of {PRECISIONS[1:]}"
        )
    if cfg.method not in METHODS:
        raise CalibrationError(
            f"unknown calibration method {cfg.method!r}: choose one of {METHODS}"
        )
    if cfg.layout not in LAYOUTS:
        raise CalibrationError(f"unknown Q/DQ layout {cfg.layout!r}: choose one of {LAYOUTS}")
    if not cfg.images:
        raise CalibrationError("--images is required (calibration and held-out frames)")
    if cfg.num < 1 or cfg.eval_num < 1:
        raise CalibrationError("--num and --eval-num must be >= 1")
    if (
        cfg.precision == "int8"
        and cfg.eval_images
        and Path(cfg.eval_images).resolve() == Path(cfg.images).resolve()
    ):
        raise CalibrationError(
            "--eval-images is the calibration source: held-out frames must "
            "differ (leave --eval-images out to use the frames after --num)"
        )


def fp32_graph(folder: Path, manifest: Manifest) -> Path:
    """The folder's FP32 graph: confined to the folder, verified against the manifest's hash
    (``runtime.folder_files.model_file``; a missing file is a CalibrationError)."""
    if not (folder / manifest.model_file).exists():
        raise CalibrationError(
            f"{folder} has no FP32 graph ({manifest.model_file} is missing): "
            "export the folder again"
        )
    try:
        return model_file(folder, manifest, "fp32")
    except ModelFolderError as e:
        raise CalibrationError(str(e)) from e


def text_feeds(folder: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """{TEXT_EMBEDDINGS: [C,D]} from an input-vocabulary folder's file (confined, hashed,
    float [C, D], finite: ``runtime.folder_files.text_embeddings``); {} for fixed ones."""
    if manifest.vocab_mode != "input":
        return {}
    dim = manifest.input(io_names.TEXT_EMBEDDINGS).shape[-1]
    emb = text_embeddings(folder, manifest, dim)
    return {io_names.TEXT_EMBEDDINGS: emb.astype(np.float32)}


def _runner(path: Path, threads: int | None, quantized: bool = False):
    backend = OrtBackend(
        path, providers=["CPUExecutionProvider"], threads=threads, quantized=quantized
    )
    return lambda feeds: backend(feeds, [io_names.LOGITS])[io_names.LOGITS]


def build_variant(
    cfg: CalibrateCfg,
    proto: onnx.ModelProto,
    manifest: Manifest,
    text: dict[str, np.ndarray],
    workdir: Path | None = None,
) -> tuple[onnx.ModelProto, dict, list]:
    """(variant graph, its settings, the calibration feeds) for ``cfg.precision``; INT8's temp
    graphs go under ``workdir`` (the folder's staging generation; None: the system's temp)."""
    if cfg.precision == "fp16":
        from calibration.fp16 import to_fp16

        return to_fp16(proto), {"kept_fp32": "head, LayerNormalization, Softmax, L2 norms"}, []
    from calibration.int8 import Int8Cfg, check_qdq_rules, quantize_int8

    batch = calibration_batch(
        cfg.images,
        manifest.preprocess,
        cfg.num,
        cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None,
    )
    feeds = [{io_names.IMAGE: t[None], **text} for t in batch.tensors]
    icfg = Int8Cfg(
        method=cfg.method,
        per_channel=cfg.per_channel,
        exclude_nodes=cfg.exclude,
        exclude_op_types=cfg.exclude_op_types,
        keep_attention=not cfg.attention_int8,
        quantize_outputs=cfg.layout == "outputs",
    )
    result = quantize_int8(proto, feeds, icfg, workdir=workdir)
    problems = check_qdq_rules(
        result.model, keep_attention=icfg.keep_attention, per_channel=icfg.per_channel
    )
    if problems:
        raise CalibrationError("the INT8 graph breaks the Q/DQ rules: " + "; ".join(problems[:5]))
    settings = {
        "method": cfg.method,
        "num": len(feeds),
        "images": str(cfg.images),
        "calibration_frames": [batch.names[0], batch.names[-1]],
        "per_channel": cfg.per_channel,
        "attention_int8": cfg.attention_int8,
        "layout": cfg.layout,
        "quantized_nodes": len(result.quantized_nodes),
        "excluded_nodes": {k: len(v) for k, v in result.excluded_nodes.items()},
        "user_exclude": list(cfg.exclude),
        "exclude_op_types": list(cfg.exclude_op_types),
        "seconds": round(result.seconds, 1),
    }
    return result.model, settings, feeds


def held_out(cfg: CalibrateCfg):
    """(name, rgb) frames for the accuracy report, disjoint from the calibration frames."""
    if cfg.eval_images:
        return iter_frames(cfg.eval_images, limit=cfg.eval_num)
    skip = cfg.num if cfg.precision == "int8" else 0
    frames = itertools.islice(iter_frames(cfg.images), skip, skip + cfg.eval_num)
    return frames


def _check_input_format(folder: Path, manifest: Manifest) -> None:
    if manifest.preprocess.input_format != "float32-nchw":
        raise CalibrationError(
            f"{str(folder)!r} takes {manifest.preprocess.input_format} input: calibrate the "
            "float32-nchw export of the same model, then re-export with --input-format"
        )


def calibrate(cfg: CalibrateCfg) -> CalibrateResult:
    """Build, check and measure the variant; then move it into the folder and record it."""
    t0 = time.perf_counter()
    _check(cfg)
    folder = Path(cfg.model)
    _check_input_format(folder, load_manifest(folder))  # before anything is written
    name = f"model.{cfg.precision}.onnx"
    # The variant, the new report and manifest are staged in a new generation of the folder
    # (export.folder_write) that the folder switches to in one rename when all of it is done.
    # The folder is locked from here: the manifest read under the lock is the one extended.
    with FolderWrite(folder) as stage:
        files = pinned_folder(folder)
        manifest = load_manifest(files)
        _check_input_format(folder, manifest)
        src = fp32_graph(files, manifest)
        text = text_feeds(files, manifest)
        log.info("building the %s variant of %s", cfg.precision, src)
        proto, settings, feeds = build_variant(
            cfg, onnx.load(str(src)), manifest, text, workdir=stage.stage
        )
        path = atomic_write(stage.path(name), lambda tmp: onnx.save(proto, tmp))
        report = compare_variant(
            cfg.precision,
            _runner(src, cfg.threads),
            _runner(path, cfg.threads, quantized=cfg.precision == "int8"),
            held_out(cfg),
            manifest,
            text,
            Path(cfg.labels) if cfg.labels else None,
            cfg.ignore_label,
        )
        rows = ()
        if cfg.precision == "int8" and cfg.sensitivity > 0:
            from calibration.sensitivity import sensitivity

            log.info(
                "per-layer sensitivity on %d calibration frame(s)", min(cfg.sensitivity, len(feeds))
            )
            rows = tuple(
                sensitivity(
                    onnx.load(str(src)), proto, feeds[: cfg.sensitivity], workdir=stage.stage
                )
            )
        variant = Variant(name, sha256_file(path), settings, report.to_json())
        _record(stage, folder, manifest, cfg.precision, variant, report, rows)
    return CalibrateResult(folder / name, variant, report, rows, time.perf_counter() - t0)


def _record(
    stage: FolderWrite,
    folder: Path,
    manifest: Manifest,
    precision: str,
    variant: Variant,
    report: AccuracyReport,
    rows,
) -> None:
    """Stage the report, carry the folder's other files into the new generation, and commit
    it with the manifest that records ``variant``."""
    new = dataclasses.replace(manifest, variants={**manifest.variants, precision: variant})
    new = dataclasses.replace(new, build_commands=folder_commands(new))
    path = folder / REPORT_FILE
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        log.warning("%s is unreadable: starting it afresh", path)
        old = {}
    entry = {
        **report.to_json(),
        "settings": variant.settings,
        "sensitivity": [
            {k: finite_or_none(v) for k, v in dataclasses.asdict(r).items()} for r in rows[:30]
        ],
    }
    text = json.dumps({**old, precision: entry}, indent=2, allow_nan=False)
    atomic_write_text(stage.path(REPORT_FILE), text + "\n")
    stage.carry(sorted(named_files(json.loads(manifest.to_json())) - {variant.file}))
    stage.commit(new, engines_stale=False)


def summary(result: CalibrateResult) -> dict:
    """The JSON line ``main`` prints on stdout: percentages under ``*_pct`` (0..100, None where
    not measured)."""
    pct = {f"{k}_pct": v for k, v in result.report.to_json().items() if k in PCT_FIELDS}
    return {
        "variant": str(result.path),
        "precision": result.report.precision,
        "images": result.report.images,
        **pct,
        "seconds": round(result.seconds, 1),
    }


def parse_args(argv: list[str] | None = None) -> CalibrateCfg:
    """The job of the command line; numbers out of range are one argparse error line (exit 2):
    ``--num`` / ``--eval-num`` 1..100000, ``--sensitivity`` 0..10000, ``--threads`` 1..256,
    ``--ignore-label`` 0..65535."""
    p = ArgumentParser(
        prog="python -m calibration.calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="deployable folder (export.build output)")
    p.add_argument("--precision", required=True, help="fp16 | int8")
    p.add_argument("--images", help="calibration frames: a folder of images or a video file")
    p.add_argument("--num", type=int_range(1, 100_000), default=256, help="calibration frames")
    p.add_argument("--method", default="entropy", help="entropy | percentile | minmax (INT8)")
    p.add_argument(
        "--eval-images", help="held-out frames (default: --images after the first --num)"
    )
    p.add_argument(
        "--eval-num", type=int_range(1, 100_000), default=32, help="held-out frames to compare on"
    )
    p.add_argument("--labels", help="ground-truth label PNGs named like the held-out frames (mIoU)")
    p.add_argument("--ignore-label", type=label_arg, help="raw label value to ignore (CamVid: 11)")
    p.add_argument(
        "--exclude", default="", help="node names kept float (from the sensitivity report)"
    )
    p.add_argument("--exclude-op-types", default="", help="op types kept float, e.g. Gemm")
    p.add_argument(
        "--layout",
        default="outputs",
        choices=LAYOUTS,
        help="INT8 Q/DQ placement: outputs (also on GEMM outputs: fused integer kernels "
        "on onnxruntime CPU, default) | inputs (TensorRT's recommended placement)",
    )
    p.add_argument(
        "--attention-int8",
        action="store_true",
        help="also quantise the attention-score MatMuls (default: kept float)",
    )
    p.add_argument("--no-per-channel", dest="per_channel", action="store_false")
    p.add_argument(
        "--sensitivity",
        type=int_range(0, 10_000),
        default=4,
        help="frames for the per-layer sensitivity report (INT8; 0 = skip)",
    )
    p.add_argument("--cache-dir", help="where calibration tensors are cached (npz)")
    p.add_argument("--threads", type=threads_arg, help="onnxruntime intra-op threads (1..256)")
    add_verbose_arg(p)
    a = vars(p.parse_args(argv))
    setup_logging(a.pop("verbose"))
    for key in ("exclude", "exclude_op_types"):
        a[key] = tuple(x.strip() for x in a[key].split(",") if x.strip())
    return CalibrateCfg(**a)


@cli_main
def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    # Before any frame is decoded: the folder (where the variant and report go) and the cache
    # can be written (OutputPathError: one line, exit 2).
    check_outputs(dirs=[(cfg.model, "--model"), (cfg.cache_dir, "--cache-dir")])
    result = calibrate(cfg)
    # Tables for people on stderr; stdout carries only the JSON line (``| jq .`` parses it).
    print(to_table([result.report]), file=sys.stderr)
    if result.sensitivity:
        from calibration.sensitivity import to_table as sens_table

        print("\nmost sensitive quantised layers (lowest SQNR first):", file=sys.stderr)
        print(sens_table(list(result.sensitivity), top=15), file=sys.stderr)
    print(json.dumps(summary(result), allow_nan=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
