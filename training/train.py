"""``python -m training.train``: train ZegCLIP or CLIP-RC (inductive or transductive) or a
MaskCLIP+ student (annotation-free or zero-shot): the trainable methods of ``training.methods``.
Training-free methods (MaskCLIP, SCLIP, ...) have nothing to train: export them directly.

Single process: ``python -m training.train --method zegclip --backbone ViT-B-16 --pretrained
openai --dataset voc --root data/VOCdevkit/VOC2012 --work-dir work/zegclip_voc``.
MaskCLIP+: ``--method maskclip_plus --student deeplabv2_r101 --setting zero_shot`` (--backbone and
--pretrained name the CLIP of the MaskCLIP teacher and of the text classifier).
Several GPUs (or CPU processes, gloo): ``torchrun --nproc_per_node 2 -m training.train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.cli import ArgumentParser, cli_main, setup_logging
from runtime.cli_checks import check_input_file, check_outputs, float_range, int_range
from training.methods import METHODS, get_method, trainable
from training.train_config import (
    ALL_SETTINGS,
    AMP_MODES,
    NUMERIC_BOUNDS,
    OPTIMIZERS,
    SETTINGS,
    TrainCfg,
)

if TYPE_CHECKING:  # torch and the models are imported only once the arguments are parsed
    import torch

    from training.clip_loader import LoadedClip
    from training.distributed import DistInfo
    from training.students import StudentCfg
    from training.trainer import Loop, TrainResult

log = logging.getLogger(__name__)


def _amp(cfg: TrainCfg, device: torch.device):
    import torch

    on = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if not on:
        return None, torch.amp.GradScaler("cpu", enabled=False)
    if device.type == "cuda":
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.bfloat16, torch.amp.GradScaler("cpu", enabled=False)


def _clip(cfg: TrainCfg) -> LoadedClip:
    from training.clip_loader import load_clip

    clip = load_clip(cfg.backbone, cfg.pretrained, cfg.seed)
    if clip.random:
        log.warning(
            "RANDOM CLIP WEIGHTS (--pretrained %s): losses are real, masks meaningless",
            cfg.pretrained,
        )
    return clip


def _text(cfg: TrainCfg, clip: LoadedClip, classes: tuple[str, ...]) -> torch.Tensor:
    from training.loading import load_text_file
    from training.models import text_dim
    from training.text_classifier import build_text_classifier

    if cfg.text_embeddings:
        return load_text_file(cfg.text_embeddings, len(classes), text_dim(clip))
    return build_text_classifier(clip, classes, cfg.templates)


def _optimizer(cfg: TrainCfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (ZegCLIP / CLIP-RC: mmcv's custom_keys give every trainable parameter lr*lr_mult and
    the same decay) or SGD with momentum (MaskCLIP+, mmseg's default for DeepLab)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr * cfg.lr_mult
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def _log_params(cfg: TrainCfg, model: torch.nn.Module) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    log.info(
        "%s: %d trainable tensors (%.2f M values) of %d",
        cfg.method,
        len(params),
        sum(p.numel() for p in params) / 1e6,
        len(list(model.parameters())),
    )


def zero_shot_loop(cfg: TrainCfg, info: DistInfo) -> Loop:
    """Methods of kind ``zero_shot`` (ZegCLIP / CLIP-RC): VPT model over CLIP, seen-only then
    (transductive) self-training."""
    from training.clip_loader import state_dict_sha256
    from training.data import build_dataset
    from training.loading import load_weights, model_cfg_of
    from training.models import build_model
    from training.objectives import zero_shot_step
    from training.train_config import data_cfg_of
    from training.trainer import Loop

    clip = _clip(cfg)
    dataset = build_dataset(data_cfg_of(cfg, cfg.crop_size), "train", train=True)
    mcfg = model_cfg_of(cfg)
    model = build_model(cfg.method, clip, mcfg)
    # Before encoding: an official file brings its own text tower (and the text-classifier cache
    # is keyed by the weights hash, so take it again).
    if cfg.init_from and load_weights(model, clip.model, cfg.init_from, cfg.method):
        clip = dataclasses.replace(clip, weights_sha256=state_dict_sha256(clip.model))
    if cfg.init_from:
        log.info("initialised from %s", cfg.init_from)
    text = _text(cfg, clip, dataset.classes)
    model.to(info.device)
    _log_params(cfg, model)
    amp_dtype, scaler = _amp(cfg, info.device)
    return Loop(
        cfg,
        model,
        dataset,
        text.to(info.device),
        dataset.seen,
        dataset.unseen,
        dataset.classes,
        info,
        _optimizer(cfg, model),
        scaler,
        amp_dtype,
        zero_shot_step,
        model_cfg=mcfg,
    )


def maskclip_plus_loop(cfg: TrainCfg, info: DistInfo) -> Loop:
    """MaskCLIP+: a student net with the CLIP text classifier, labelled by a frozen MaskCLIP."""
    import torch

    from runtime.errors import ConfigError
    from training.data import build_dataset
    from training.loading import load_student_weights
    from training.maskclip_plus import build_teacher, pseudo_step, text_classes
    from training.models import text_dim
    from training.students import build_student
    from training.train_config import data_cfg_of
    from training.trainer import Loop

    if cfg.background and cfg.setting == "annotation_free":
        raise ConfigError(
            "--background learns from labelled background pixels, which "
            "annotation-free training does not use: use --setting zero_shot"
        )
    if cfg.batch_size < 2:
        raise ConfigError(
            "MaskCLIP+ students need --batch-size >= 2 per process (batch norm on "
            "the image-pooling branch)"
        )
    clip = _clip(cfg)
    dataset = build_dataset(data_cfg_of(cfg, cfg.crop_size), "train", train=True)
    text = _text(cfg, clip, text_classes(dataset.classes, cfg.background))
    teacher = build_teacher(clip.model.visual, cfg).to(info.device)
    scfg = student_cfg_of(cfg, text_dim(clip))
    student = build_student(scfg)
    if cfg.init_from:
        load_student_weights(student, cfg.init_from)
        log.info("initialised from %s", cfg.init_from)
    if info.world_size > 1 and info.device.type == "cuda":
        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)  # official SyncBN
    student.to(info.device)
    _log_params(cfg, student)
    amp_dtype, scaler = _amp(cfg, info.device)
    return Loop(
        cfg,
        student,
        dataset,
        text.to(info.device),
        dataset.seen,
        dataset.unseen,
        dataset.classes,
        info,
        _optimizer(cfg, student),
        scaler,
        amp_dtype,
        pseudo_step,
        first_phase="teacher",
        restart_at_st=False,
        teacher=teacher,
        model_cfg=scfg,
    )


def student_cfg_of(cfg: TrainCfg, embed_dim: int) -> StudentCfg:
    """The student of a MaskCLIP+ training config (dropout 0 as the official heads)."""
    from training.students import StudentCfg

    return StudentCfg(
        cfg.student,
        embed_dim,
        background=cfg.background,
        weights=cfg.student_weights,
        output_stride=cfg.output_stride,
        dropout=0.0,
    )


class _Loops(Mapping):
    """``LOOPS[method](cfg, info) -> Loop``: each trainable method's ``train_loop`` (registry)."""

    def __getitem__(self, name: str) -> Callable[[TrainCfg, DistInfo], Loop]:
        spec = get_method(name)
        if not spec.trainable:
            raise KeyError(name)
        return spec.load("train_loop")

    def __iter__(self):
        return iter(trainable())

    def __len__(self) -> int:
        return len(trainable())


LOOPS = _Loops()


def build_loop(cfg: TrainCfg, info: DistInfo) -> Loop:
    """The method's model, data, text classifier and optimizer; resumed if asked."""
    import torch

    from training.trainer import resume

    torch.manual_seed(cfg.seed)
    loop = LOOPS[cfg.method](cfg, info)
    if cfg.resume:
        resume(loop, Path(cfg.work_dir) / "latest.pt" if cfg.resume == "auto" else cfg.resume)
    return loop


def run(cfg: TrainCfg) -> TrainResult:
    """Train (and optionally evaluate) under the current process group, if any."""
    from training.distributed import barrier, init_distributed
    from training.models import trainable_names
    from training.train_config import resolve_defaults
    from training.trainer import train_loop

    cfg = resolve_defaults(cfg)
    info = init_distributed(cfg.device)
    loop = build_loop(cfg, info)  # bad data or weights fail before the work dir is made
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    log.info("trainable: %s", ", ".join(trainable_names(loop.model)[:6]) + " ...")
    result = train_loop(loop)
    if cfg.eval_after:
        barrier()  # rank 0 writes the checkpoint the other ranks are about to read
        from training.evaluate import EvalCfg, evaluate_checkpoint

        evaluate_checkpoint(
            EvalCfg(
                checkpoint=str(result.checkpoint),
                json=str(Path(cfg.work_dir) / "eval.json"),
                **{
                    f: getattr(cfg, f)
                    for f in (
                        "dataset",
                        "root",
                        "images",
                        "masks",
                        "classes",
                        "ignore_label",
                        "unseen",
                    )
                },
                device=cfg.device,
            ),
            info,
        )
    return result


def trainable_method(text: str) -> str:
    """argparse type of ``--method``: a registered method with a training loop; a training-free
    one (or an unknown name) is one clear error line."""
    names = trainable()
    spec = METHODS.get(text)
    if spec is not None and not spec.trainable:
        raise argparse.ArgumentTypeError(
            f"{text} is {spec.kind.replace('_', '-')}: it has no training loop (trainable "
            f"methods: {', '.join(names)}); export it directly with python -m export.build "
            f"--method {text}"
        )
    if spec is None:
        close = difflib.get_close_matches(text, names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise argparse.ArgumentTypeError(
            f"unknown method {text!r}{hint} (trainable methods: {', '.join(names)})"
        )
    return text


def number_type(name: str, integer: bool):
    """argparse type of numeric TrainCfg field ``name``: bounded by ``NUMERIC_BOUNDS``."""
    lo, hi, lo_open = NUMERIC_BOUNDS[name]
    if integer:
        return int_range(int(lo) + int(lo_open), None if hi is None else int(hi))
    return float_range(lo, hi, lo_open=lo_open)


def _settings_help() -> str:
    return "; ".join(f"{name}: {' | '.join(s)} (default {s[0]})" for name, s in SETTINGS.items())


def parse_args(argv: list[str] | None = None) -> TrainCfg:
    p = ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--method",
        required=True,
        type=trainable_method,
        metavar="{" + ",".join(trainable()) + "}",
        help="a trainable method of the registry (training.methods)",
    )
    p.add_argument("--setting", choices=ALL_SETTINGS, help=_settings_help())
    p.add_argument("--amp", default="auto", choices=AMP_MODES)
    p.add_argument(
        "--optimizer", choices=OPTIMIZERS, help="default: adamw (ZegCLIP, CLIP-RC), sgd (MaskCLIP+)"
    )
    p.add_argument(
        "--templates",
        help="prompt template set (training.text_classifier."
        "TEMPLATE_SETS); default: the method's ("
        + ", ".join(f"{n} {METHODS[n].defaults().templates}" for n in trainable())
        + ")",
    )
    p.add_argument(
        "--student",
        help="target network of a student method (MaskCLIP+): a key of training.students.STUDENTS",
    )
    p.add_argument(
        "--background",
        action="store_true",
        help="MaskCLIP+: class 0 is 'background', scored by a learned embedding",
    )
    p.add_argument("--eval-after", action="store_true", help="evaluate the final checkpoint on val")
    skip = {
        "method",
        "setting",
        "amp",
        "optimizer",
        "templates",
        "student",
        "background",
        "eval_after",
    }
    for f in dataclasses.fields(TrainCfg):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).split(" ")[0]
        kind = number_type(f.name, kind == "int") if kind in ("int", "float") else str
        required = f.default is dataclasses.MISSING
        p.add_argument(flag, type=kind, required=required, default=None if required else f.default)
    args = p.parse_args(argv)
    # The student and template names live in torch modules: checked once parsing is done, so
    # --help and argument errors stay fast.
    from training.students import STUDENTS
    from training.text_classifier import TEMPLATE_SETS

    for flag, value, names in (
        ("--student", args.student, STUDENTS),
        ("--templates", args.templates, TEMPLATE_SETS),
    ):
        if value is not None and value not in names:
            p.error(
                f"argument {flag}: invalid choice: {value!r} (choose from "
                f"{', '.join(sorted(names))})"
            )
    return TrainCfg(**vars(args))


def check_paths(cfg: TrainCfg) -> None:
    """Before any model or data is loaded: ``--work-dir`` can be written as a folder, and
    ``--init-from``, ``--resume`` (unless ``auto``) and ``--text-embeddings`` are existing
    files (OutputPathError / ConfigError, one line, exit 2)."""
    check_outputs(dirs=[(cfg.work_dir, "--work-dir")])
    check_input_file(cfg.init_from, "--init-from")
    check_input_file(None if cfg.resume == "auto" else cfg.resume, "--resume")
    check_input_file(cfg.text_embeddings, "--text-embeddings")


@cli_main
def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    setup_logging()
    check_paths(cfg)
    from training.distributed import cleanup

    try:
        result = run(cfg)
    finally:
        cleanup()
    log.info(
        "done: %d iterations in %.1f s, checkpoint %s",
        len(result.records),
        result.seconds,
        result.checkpoint,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
