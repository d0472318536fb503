"""``python -m training.train``: train ZegCLIP or CLIP-RC (inductive or transductive).

Single process: ``python -m training.train --method zegclip --backbone ViT-B-16 --pretrained
openai --dataset voc --root data/VOCdevkit/VOC2012 --work-dir work/zegclip_voc``.
Several GPUs (or CPU processes, gloo): ``torchrun --nproc_per_node 2 -m training.train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch

from runtime.errors import OvssError
from training.clip_loader import load_clip, state_dict_sha256
from training.data import build_dataset
from training.distributed import DistInfo, barrier, cleanup, init_distributed
from training.loading import load_text_file, load_weights, model_cfg_of
from training.models import MODELS, build_model, text_dim, trainable_names
from training.text_classifier import TEMPLATE_SETS, build_text_classifier
from training.train_config import AMP_MODES, SETTINGS, TrainCfg, data_cfg_of, resolve_defaults
from training.trainer import Loop, TrainResult, resume, train_loop

log = logging.getLogger(__name__)


def _amp(cfg: TrainCfg, device: torch.device):
    on = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if not on:
        return None, torch.amp.GradScaler("cpu", enabled=False)
    if device.type == "cuda":
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.bfloat16, torch.amp.GradScaler("cpu", enabled=False)


def build_loop(cfg: TrainCfg, info: DistInfo) -> Loop:
    """Load CLIP, the dataset, the text classifier and the model; optimizer; resume if asked."""
    torch.manual_seed(cfg.seed)
    clip = load_clip(cfg.backbone, cfg.pretrained, cfg.seed)
    if clip.random:
        log.warning("RANDOM CLIP WEIGHTS (--pretrained %s): losses are real, masks meaningless",
                    cfg.pretrained)
    dataset = build_dataset(data_cfg_of(cfg, cfg.crop_size), "train", train=True)
    model = build_model(cfg.method, clip, model_cfg_of(cfg))
    # Before encoding: an official file brings its own text tower (and the text-classifier cache
    # is keyed by the weights hash, so take it again).
    if cfg.init_from and load_weights(model, clip.model, cfg.init_from, cfg.method):
        clip = dataclasses.replace(clip, weights_sha256=state_dict_sha256(clip.model))
    if cfg.init_from:
        log.info("initialised from %s", cfg.init_from)
    if cfg.text_embeddings:
        text = load_text_file(cfg.text_embeddings, len(dataset.classes), text_dim(clip))
    else:
        text = build_text_classifier(clip, dataset.classes, cfg.templates)
    model.to(info.device)
    params = [p for p in model.parameters() if p.requires_grad]
    log.info("%s: %d trainable tensors (%.2f M values) of %d", cfg.method, len(params),
             sum(p.numel() for p in params) / 1e6, len(list(model.parameters())))
    # mmcv's custom_keys give every trainable parameter (prompts, head) lr*10 and the same decay.
    optimizer = torch.optim.AdamW(params, lr=cfg.lr * cfg.lr_mult, weight_decay=cfg.weight_decay)
    amp_dtype, scaler = _amp(cfg, info.device)
    loop = Loop(cfg, model, dataset, text.to(info.device), dataset.seen, dataset.unseen,
                dataset.classes, info, optimizer, scaler, amp_dtype)
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
    p.add_argument("--method", required=True, choices=sorted(MODELS))
    p.add_argument("--setting", default="inductive", choices=SETTINGS)
    p.add_argument("--amp", default="auto", choices=AMP_MODES)
    p.add_argument("--templates", default="zegclip", choices=sorted(TEMPLATE_SETS))
    p.add_argument("--eval-after", action="store_true", help="evaluate the final checkpoint on val")
    skip = {"method", "setting", "amp", "templates", "eval_after"}
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
