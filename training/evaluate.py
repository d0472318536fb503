"""``python -m training.evaluate``: mIoU(seen), mIoU(unseen), hIoU, pAcc and per-class IoU of a
ZegCLIP / CLIP-RC / MaskCLIP+ checkpoint, with the official inference of each.

The image is resized so its short side equals the training crop (512). Each method's
``eval_mode`` (``training.methods``) picks the inference. ``slide``, ZegCLIP / CLIP-RC (official
``slide_inference``): crops of 512 at the config's ``slide_stride`` (426 at crop 512, scaled with
the crop) each give sigmoid(mask logits upsampled to the crop) - bias (0.1 on seen classes for
inductive models); overlapping crops are averaged. ``whole``, MaskCLIP+ (official
``mode='whole'``): the student sees the whole resized image; its logits are upsampled to it and
soft-maxed. The scores are resized bilinearly to the label's size and
arg-maxed. Under torchrun each rank takes a shard of the images and the confusion matrices are
summed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.cli import ArgumentParser, cli_main, setup_logging
from runtime.cli_checks import (
    MAX_IMAGE_SIDE,
    check_input_file,
    check_outputs,
    int_range,
    label_arg,
    nonneg_count,
    nonneg_float,
)
from runtime.windows import window_starts  # noqa: F401  (mmseg's grid; re-exported)
from training.methods import get_method, trainable
from training.methods.spec import TEMPLATE_NAMES
from training.methods.zegclip import ZegClipCfg, slide_step

if TYPE_CHECKING:  # torch is imported only once the arguments are parsed
    import torch

    from training.distributed import DistInfo
    from training.loading import Trained
    from training.metrics import SegMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalCfg:
    """One evaluation job (dataset fields as in ``TrainCfg``)."""

    checkpoint: str
    dataset: str
    json: str
    root: str = ""
    images: str = ""
    masks: str = ""
    classes: str = ""
    ignore_label: int = 255
    unseen: str | None = None
    method: str | None = None
    backbone: str = "ViT-B-16"
    seen_bias: float | None = None
    stride: int | None = None
    templates: str | None = None
    text_embeddings: str | None = None
    device: str = "auto"
    limit: int = 0


def slide_scores(
    model, image: torch.Tensor, text: torch.Tensor, bias: torch.Tensor, crop: int, stride: int
) -> torch.Tensor:
    """image [1,3,H,W] -> averaged official scores [1,C,H,W] (sigmoid - bias per crop)."""
    import torch

    with torch.no_grad():
        return _slide_scores(model, image, text, bias, crop, stride)


def _slide_scores(model, image, text, bias, crop: int, stride: int):
    import torch.nn.functional as F

    from training.zegclip import seen_scores

    _, _, h, w = image.shape
    out = image.new_zeros(1, text.shape[0], h, w)
    count = image.new_zeros(1, 1, h, w)
    for y in window_starts(h, crop, stride):
        for x in window_starts(w, crop, stride):
            tile = image[:, :, y : y + crop, x : x + crop]
            logits = F.interpolate(
                model(tile, text), size=(crop, crop), mode="bilinear", align_corners=False
            )  # the head's fixed img_size
            logits = F.interpolate(
                logits, size=tile.shape[-2:], mode="bilinear", align_corners=False
            )
            out[:, :, y : y + tile.shape[2], x : x + tile.shape[3]] += seen_scores(logits, bias)
            count[:, :, y : y + tile.shape[2], x : x + tile.shape[3]] += 1
    return out / count


def whole_scores(model, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """image [1,3,H,W] -> class probabilities [1,C,H,W] of a whole-image forward (MaskCLIP+)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        logits = F.interpolate(
            model(image, text), size=image.shape[-2:], mode="bilinear", align_corners=False
        )
        return logits.softmax(dim=1)


def slide_stride(trained: Trained) -> int:
    """The method's slide step at this model's crop (``training.methods.zegclip.slide_step``:
    the config's ``slide_stride``, else the official 426/512 of the crop). Methods without one
    (``eval_mode`` whole: unused) get the same ratio."""
    cfg = trained.model_cfg
    if not hasattr(cfg, "slide_stride"):
        cfg = ZegClipCfg(image_size=trained.crop_size)
    return slide_step(dataclasses.replace(cfg, image_size=trained.crop_size))


def evaluate_model(
    trained: Trained,
    dataset,
    text: torch.Tensor,
    bias: torch.Tensor,
    info: DistInfo,
    stride: int,
    limit: int = 0,
) -> SegMetrics:
    """Confusion over this rank's shard, summed across ranks, summarised on the dataset's split.
    The method's ``eval_mode`` picks whole-image or sliding-window inference."""
    import torch.nn.functional as F
    from tqdm import tqdm

    from training.metrics import ConfusionMatrix, summarize

    crop = trained.crop_size
    whole = get_method(trained.method).eval_mode == "whole"
    model = trained.model.to(info.device).eval()
    text, bias = text.to(info.device), bias.to(info.device)
    conf = ConfusionMatrix(len(dataset.classes), device=info.device)
    n = min(len(dataset), limit) if limit else len(dataset)
    shard = range(info.rank, n, info.world_size)
    for i in tqdm(shard, disable=not info.is_main, desc="evaluate"):
        sample = dataset[i]
        image = sample.image[None].to(info.device)
        if whole:
            scores = whole_scores(model, image, text)
        else:
            scores = slide_scores(model, image, text, bias, crop, stride)
        scores = F.interpolate(
            scores, size=sample.label.shape, mode="bilinear", align_corners=False
        )
        conf.update(scores.argmax(dim=1)[0], sample.label.to(info.device))
    conf.all_reduce()
    return summarize(conf.matrix.cpu(), dataset.classes, dataset.unseen)


def evaluate_checkpoint(cfg: EvalCfg, info: DistInfo | None = None) -> SegMetrics:
    """Load, evaluate on the val split, write ``cfg.json`` and a Markdown table (rank 0)."""
    from runtime.fsutil import atomic_write_text
    from training.data import build_dataset
    from training.distributed import init_distributed
    from training.loading import class_text, load_trained
    from training.maskclip_plus import text_classes
    from training.train_config import data_cfg_of
    from training.zegclip import bias_vector

    info = info or init_distributed(cfg.device)
    trained = load_trained(cfg.checkpoint, cfg.method, cfg.backbone, cfg.seen_bias)
    crop = trained.crop_size
    dataset = build_dataset(data_cfg_of(cfg, crop), "val", train=False)
    if cfg.unseen is None and trained.classes == dataset.classes and trained.seen != dataset.seen:
        # Same vocabulary as training and no --unseen: evaluate on the split the model trained on.
        held = [c for i, c in enumerate(trained.classes) if i not in set(trained.seen)]
        cfg = dataclasses.replace(cfg, unseen=",".join(held))
        dataset = build_dataset(data_cfg_of(cfg, crop), "val", train=False)
    text = class_text(
        trained,
        text_classes(dataset.classes, trained.background),
        cfg.templates or _templates(trained),
        cfg.text_embeddings,
    )
    bias = bias_vector(
        len(dataset.classes),
        dataset.seen,
        trained.model_cfg.seen_bias if trained.inductive else 0.0,
    )
    stride = cfg.stride or slide_stride(trained)
    metrics = evaluate_model(trained, dataset, text, bias, info, stride, cfg.limit)
    if info.is_main:
        payload = {
            "checkpoint": cfg.checkpoint,
            "method": trained.method,
            "random_weights": bool(trained.clip.random),
            "images": min(len(dataset), cfg.limit or len(dataset)),
            "crop": crop,
            "stride": stride,
            "seen_bias": float(bias.max()),
            **metrics.to_dict(),
        }
        out = Path(cfg.json)
        atomic_write_text(out, json.dumps(payload, indent=2))
        atomic_write_text(out.with_suffix(".md"), metrics.to_markdown())
        log.info(
            "mIoU(S) %s mIoU(U) %s hIoU %s pAcc %.2f -> %s",
            _fmt(metrics.miou_seen),
            _fmt(metrics.miou_unseen),
            _fmt(metrics.hiou),
            metrics.pacc,
            out,
        )
    return metrics


def _templates(trained: Trained) -> str:
    """The run's own template set, else the method's default."""
    return trained.templates or get_method(trained.method).defaults().templates


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def parse_args(argv=None) -> EvalCfg:
    p = ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="our checkpoint or an official .pth")
    p.add_argument("--dataset", required=True)
    p.add_argument("--json", required=True, help="metrics JSON (a .md table is written beside it)")
    for name, kind in (
        ("root", str),
        ("images", str),
        ("masks", str),
        ("classes", str),
        ("ignore_label", label_arg),
        ("unseen", str),
        ("method", str),
        ("backbone", str),
        ("seen_bias", nonneg_float),
        ("stride", int_range(1, MAX_IMAGE_SIDE)),
        ("templates", str),
        ("text_embeddings", str),
        ("device", str),
        ("limit", nonneg_count),
    ):
        default = EvalCfg.__dataclass_fields__[name].default
        extra = {"method": {"choices": trainable()}, "templates": {"choices": TEMPLATE_NAMES}}
        extra = extra.get(name, {})
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=default, **extra)
    return EvalCfg(**vars(p.parse_args(argv)))


def check_paths(cfg: EvalCfg) -> None:
    """Before the checkpoint is loaded: ``--json`` and the .md table beside it can be written as
    files, and ``--checkpoint`` / ``--text-embeddings`` are existing files (one line, exit 2)."""
    out = Path(cfg.json)
    check_outputs(files=[(out, "--json"), (out.with_suffix(".md"), "the .md table")])
    check_input_file(cfg.checkpoint, "--checkpoint")
    check_input_file(cfg.text_embeddings, "--text-embeddings")


@cli_main
def main(argv=None) -> int:
    cfg = parse_args(argv)
    setup_logging()
    check_paths(cfg)
    from training.distributed import cleanup

    try:
        evaluate_checkpoint(cfg)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
