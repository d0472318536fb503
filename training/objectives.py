"""ZegCLIP / CLIP-RC's training objective: one micro-batch -> weighted mask-loss terms.

Inductive phase: the text classifier is cut to the seen classes and unseen pixels become
negatives (``seen_only``). Self-training phase: unseen pixels take the model's own arg-max over
unseen classes (``pseudo_label``). Without unseen classes the labels are used as they are.
"""

from __future__ import annotations

from torch import nn

from training.labels import pseudo_label, seen_only
from training.losses import LossTerms, LossWeights, mask_loss
from training.train_config import TrainCfg
from training.trainer import Loop, autocast


def weights_of(cfg: TrainCfg, phase: str) -> LossWeights:
    focal = cfg.st_focal_weight if phase == "st" else cfg.focal_weight
    return LossWeights(focal, cfg.dice_weight, cfg.recovery_weight)


def zero_shot_step(loop: Loop, fwd: nn.Module, batch, phase: str) -> LossTerms:
    """Forward + loss for one micro-batch (backward is the caller's)."""
    dev = loop.info.device
    image, label = batch.image.to(dev, non_blocking=True), batch.label.to(dev, non_blocking=True)
    inductive = phase == "inductive" and len(loop.unseen) > 0
    text = loop.text[list(loop.seen)] if inductive else loop.text
    with autocast(loop):
        logits, recovery = fwd(image, text.to(dev))
    logits = logits.float()
    if inductive:
        target = seen_only(label, loop.seen)
    elif phase == "st":
        target = pseudo_label(label, logits.detach(), loop.seen, loop.unseen)
    else:
        target = label
    rec = recovery.float() if recovery is not None else None
    return mask_loss(logits, target, weights_of(loop.cfg, phase), rec)
