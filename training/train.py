"""``python -m training.train``: train ZegCLIP or CLIP-RC (inductive or transductive) or a
MaskCLIP+ student (annotation-free or zero-shot).

Single process: ``python -m training.train --method zegclip --backbone ViT-B-16 --pretrained
openai --dataset voc --root data/VOCdevkit/VOC2012 --work-dir work/zegclip_voc``.
MaskCLIP+: ``--method maskclip_plus --student deeplabv2_r101 --setting zero_shot`` (--backbone and
--pretrained name the CLIP of the MaskCLIP teacher and of the text classifier).
Several GPUs (or CPU processes, gloo): ``torchrun --nproc_per_node 2 -m training.train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch

from runtime.errors import ConfigError, OvssError
from training.clip_loader import LoadedClip, load_clip, state_dict_sha256
from training.data import build_dataset
from training.distributed import DistInfo, barrier, cleanup, init_distributed
from training.loading import load_student_weights, load_text_file, load_weights, model_cfg_of
from training.maskclip_plus import build_teacher, pseudo_step, text_classes
from training.models import build_model, text_dim, trainable_names
from training.objectives import zero_shot_step
from training.students import STUDENTS, StudentCfg, build_student
from training.text_classifier import TEMPLATE_SETS, build_text_classifier
from training.train_config import (ALL_SETTINGS, AMP_MODES, OPTIMIZERS, SETTINGS, TrainCfg,
                                   data_cfg_of, resolve_defaults)
from training.trainer import Loop, TrainResult, resume, train_loop

log = logging.getLogger(__name__)


def _amp(cfg: TrainCfg, device: torch.device):
    on = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if not on:
        return None, torch.amp.GradScaler("cpu", enabled=False)
    if device.type == "cuda":
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.bfloat16, torch.amp.GradScaler("cpu", enabled=False)


def _clip(cfg: TrainCfg) -> LoadedClip:
    clip = load_clip(cfg.backbone, cfg.pretrained, cfg.seed)
    if clip.random:
        log.warning("RANDOM CLIP WEIGHTS (--pretrained %s): losses are real, masks meaningless",
                    cfg.pretrained)
    return clip


def _text(cfg: TrainCfg, clip: LoadedClip, classes: tuple[str, ...]) -> torch.Tensor:
    if cfg.text_embeddings:
        return load_text_file(cfg.text_embeddings, len(classes), text_dim(clip))
    return build_text_classifier(clip, classes, cfg.templates)


def _optimizer(cfg: TrainCfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (ZegCLIP / CLIP-RC: mmcv's custom_keys give every trainable parameter lr*lr_mult and
    the same decay) or SGD with momentum (MaskCLIP+, mmseg's default for DeepLab)."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr * cfg.lr_mult
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def _log_params(cfg: TrainCfg, model: torch.nn.Module) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    log.info("%s: %d trainable tensors (%.2f M values) of %d", cfg.method, len(params),
             sum(p.numel() for p in params) / 1e6, len(list(model.parameters())))


def _zero_shot_loop(cfg: TrainCfg, info: DistInfo) -> Loop:
    """ZegCLIP / CLIP-RC: VPT model over CLIP, seen-only then (transductive) self-training."""
    clip = _clip(cfg)
    dataset = build_dataset(data_cfg_of(cfg, cfg.crop_size), "train", train=True)
    model = build_model(cfg.method, clip, model_cfg_of(cfg))
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
    return Loop(cfg, model, dataset, text.to(info.device), dataset.seen, dataset.unseen,
                dataset.classes, info, _optimizer(cfg, model), scaler, amp_dtype, zero_shot_step)


def _maskclip_plus_loop(cfg: TrainCfg, info: DistInfo) -> Loop:
    """MaskCLIP+: a student net with the CLIP text classifier, labelled by a frozen MaskCLIP."""
    if cfg.background and cfg.setting == "annotation_free":
        raise ConfigError("--background learns from labelled background pixels, which "
                          "annotation-free training does not use: use --setting zero_shot")
    if cfg.batch_size < 2:
        raise ConfigError("MaskCLIP+ students need --batch-size >= 2 per process (batch norm on "
                          "the image-pooling branch)")
    clip = _clip(cfg)
    dataset = build_dataset(data_cfg_of(cfg, cfg.crop_size), "train", train=True)
    text = _text(cfg, clip, text_classes(dataset.classes, cfg.background))
    teacher = build_teacher(clip.model.visual, cfg).to(info.device)
    student = build_student(student_cfg_of(cfg, text_dim(clip)))
    if cfg.init_from:
        load_student_weights(student, cfg.init_from)
        log.info("initialised from %s", cfg.init_from)
    if info.world_size > 1 and info.device.type == "cuda":
        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)  # official SyncBN
    student.to(info.device)
    _log_params(cfg, student)
    amp_dtype, scaler = _amp(cfg, info.device)
    return Loop(cfg, student, dataset, text.to(info.device), dataset.seen, dataset.unseen,
                dataset.classes, info, _optimizer(cfg, student), scaler, amp_dtype, pseudo_step,
                first_phase="teacher", restart_at_st=False, teacher=teacher)


def student_cfg_of(cfg: TrainCfg, embed_dim: int) -> StudentCfg:
    """The student of a MaskCLIP+ training config (dropout 0 as the official heads)."""
    return StudentCfg(cfg.student, embed_dim, background=cfg.background,
                      weights=cfg.student_weights, output_stride=cfg.output_stride, dropout=0.0)


LOOPS = {"zegclip": _zero_shot_loop, "cliprc": _zero_shot_loop, "maskclip_plus": _maskclip_plus_loop}


def build_loop(cfg: TrainCfg, info: DistInfo) -> Loop:
    """The method's model, data, text classifier and optimizer; resumed if asked."""
    torch.manual_seed(cfg.seed)
    loop = LOOPS[cfg.method](cfg, info)
    if cfg.resume:
        resume(loop, Path(cfg.work_dir) / "latest.pt" if cfg.resume == "auto" else cfg.resume)
    return loop


def run(cfg: TrainCfg) -> TrainResult:
    """Train (and optionally evaluate) under the current process group, if any."""
    cfg = resolve_defaults(cfg)
    info = init_distributed(cfg.device)
    Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
    loop = build_loop(cfg, info)
    log.info("trainable: %s", ", ".join(trainable_names(loop.model)[:6]) + " ...")
    result = train_loop(loop)
    if cfg.eval_after:
        barrier()  # rank 0 writes the checkpoint the other ranks are about to read
        from training.evaluate import EvalCfg, evaluate_checkpoint
        evaluate_checkpoint(EvalCfg(checkpoint=str(result.checkpoint),
                                    json=str(Path(cfg.work_dir) / "eval.json"),
                                    **{f: getattr(cfg, f) for f in ("dataset", "root", "images",
                                                                   "masks", "classes",
                                                                   "ignore_label", "unseen")},
                                    device=cfg.device), info)
    return result


def parse_args(argv: list[str] | None = None) -> TrainCfg:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=sorted(SETTINGS))
    p.add_argument("--setting", choices=ALL_SETTINGS,
                   help="zegclip/cliprc: inductive (default) | transductive; "
                        "maskclip_plus: annotation_free (default) | zero_shot")
    p.add_argument("--amp", default="auto", choices=AMP_MODES)
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: adamw (ZegCLIP, CLIP-RC), "
                   "sgd (MaskCLIP+)")
    p.add_argument("--templates", choices=sorted(TEMPLATE_SETS),
                   help="default: zegclip (ZegCLIP, CLIP-RC), maskclip85 (MaskCLIP+)")
    p.add_argument("--student", choices=sorted(STUDENTS), help="MaskCLIP+ target network")
    p.add_argument("--background", action="store_true",
                   help="MaskCLIP+: class 0 is 'background', scored by a learned embedding")
    p.add_argument("--eval-after", action="store_true", help="evaluate the final checkpoint on val")
    skip = {"method", "setting", "amp", "optimizer", "templates", "student", "background",
            "eval_after"}
    for f in dataclasses.fields(TrainCfg):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        required = f.default is dataclasses.MISSING
        p.add_argument(flag, type=kind, required=required,
                       default=None if required else f.default)
    return TrainCfg(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = run(parse_args(argv))
    except OvssError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    log.info("done: %d iterations in %.1f s, checkpoint %s", len(result.records), result.seconds,
             result.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
