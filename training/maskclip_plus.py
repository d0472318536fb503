"""MaskCLIP+ training: a frozen MaskCLIP teacher labels the pixels a student segmentation net
learns.

What the official ``MaskClipPlusHead`` does (METHODS.md A1), and what we keep:
- The pixels to label are the *unlabelled* ones: annotation-free, every pixel that is not ignored
  (255: padding, and the dataset's own ignore such as VOC background); zero-shot, the pixels of
  unseen classes. Labelled seen pixels keep their ground truth and 255 stays 255.
- Phase "teacher" (official ``start_clip_guided``): MaskCLIP runs on the *same augmented crop*
  the student sees, scores only the candidate classes (all classes, or the unseen ones), with
  prompt denoising and key smoothing; its scores are resized bilinearly to the label size and the
  arg-max class is assigned. ``conf_thresh`` > 0 turns candidates whose best score is below it
  into 255 (the teacher's scores: key-smoothed probabilities by default, cosine logits with
  key smoothing off, as upstream) - only among the unlabelled pixels (the official code also
  drops labelled pixels,
  but no released config sets a threshold).
- Phase "st" (official ``start_self_train``): the student's own detached logits over the
  candidate classes label the same pixels. One schedule for both phases (no optimizer reset).
- Loss: cross-entropy of the student logits, resized bilinearly to the label size, averaged over
  *all* pixels with 255 contributing 0 (mmseg 0.x ``CrossEntropyLoss`` without
  ``avg_non_ignore``); an all-ignored crop gives 0, not NaN.
- Optional distillation: L1 between the student features and the teacher's unit-normalised dense
  features over non-ignored pixels, weight ``distill_weight``. The official head computes this term
  on a detached feature (no gradient reaches the student) and skips pseudo-labels when it is on;
  here it trains the student and adds to the pseudo-label loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import ConfigError
from training.data.config import IGNORE
from training.maskclip import MaskClip, MaskClipCfg
from training.train_config import TrainCfg
from training.trainer import Loop, autocast

BACKGROUND = "background"


@dataclass(frozen=True)
class PseudoTerms:
    """Weighted loss terms (scalars) of one micro-batch and their sum."""

    total: torch.Tensor
    ce: torch.Tensor
    distill: torch.Tensor

    def parts(self) -> dict[str, torch.Tensor]:
        return {"ce": self.ce, "distill": self.distill}


def teacher_cfg(cfg: TrainCfg) -> MaskClipCfg:
    """The MaskCLIP teacher of a (resolved) training config: official numerics at the crop size;
    a threshold of 0 switches key smoothing / prompt denoising off."""
    return MaskClipCfg(
        image_size=cfg.crop_size,
        key_smoothing=cfg.ks_thresh > 0,
        ks_thresh=cfg.ks_thresh or 1.0,
        prompt_denoising=cfg.pd_thresh > 0,
        pd_thresh=cfg.pd_thresh or 0.5,
    )


def build_teacher(visual: nn.Module, cfg: TrainCfg) -> MaskClip:
    """Frozen MaskCLIP over ``visual`` (modified in place to the official numerics), eval mode."""
    teacher = MaskClip(visual, teacher_cfg(cfg)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def text_classes(classes: Sequence[str], background: bool) -> tuple[str, ...]:
    """The classes the text classifier holds: all, or all but class 0 with a learned background."""
    if not background:
        return tuple(classes)
    if classes[0] != BACKGROUND:
        raise ConfigError(f"--background needs class 0 to be {BACKGROUND!r}, got {classes[0]!r}")
    return tuple(classes[1:])


def candidates(
    num_classes: int, setting: str, unseen: Sequence[int], background: bool
) -> list[int]:
    """Class ids pseudo-labels choose from: unseen ones (zero-shot) or all (annotation-free);
    never the learned background, which CLIP cannot score."""
    cats = list(unseen) if setting == "zero_shot" else list(range(num_classes))
    return [c for c in cats if not (background and c == 0)]


def unlabeled_mask(label: torch.Tensor, setting: str, unseen: Sequence[int]) -> torch.Tensor:
    """label int64 [B,H,W] -> bool [B,H,W]: the pixels pseudo-labels fill (see module docstring)."""
    if setting == "annotation_free":
        return label != IGNORE
    is_unseen = torch.zeros(256, dtype=torch.bool, device=label.device)
    if len(unseen):
        is_unseen[torch.as_tensor(list(unseen), device=label.device)] = True
    return is_unseen[label]


def fill_labels(
    label: torch.Tensor,
    scores: torch.Tensor,
    cats: Sequence[int],
    fill: torch.Tensor,
    conf_thresh: float = 0.0,
) -> torch.Tensor:
    """New int64 [B,H,W]: ``fill`` pixels take ``cats[argmax]`` of ``scores`` [B,K,h,w]
    (K = len(cats),
    resized bilinearly to the label size); those whose best score < ``conf_thresh`` become 255.
    Pixels outside ``fill`` keep their labels."""
    scores = F.interpolate(
        scores.float(), size=label.shape[-2:], mode="bilinear", align_corners=False
    )
    best, idx = scores.max(dim=1)
    pseudo = torch.as_tensor(list(cats), dtype=label.dtype, device=label.device)[idx]
    if conf_thresh > 0:
        pseudo = torch.where(best < conf_thresh, torch.full_like(pseudo, IGNORE), pseudo)
    return torch.where(fill, pseudo, label)


def text_rows(cats: Sequence[int], background: bool) -> list[int]:
    """Rows of the text classifier for class ids ``cats`` (shifted by one with a background)."""
    return [c - 1 for c in cats] if background else list(cats)


def pixel_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mmseg 0.x cross-entropy: logits [B,C,h,w] resized to target [B,H,W]; mean over all pixels."""
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, target, ignore_index=IGNORE, reduction="sum") / target.numel()


def distill_l1(feat: torch.Tensor, teacher_feat: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean |student - teacher| over the non-ignored cells at the student's feature resolution.

    feat [B,D,h,w]; teacher_feat [B,D,h',w'] (unit vectors, resized bilinearly to h,w); label
    [B,H,W] (nearest-resized to h,w). 0 when every cell is ignored.
    """
    target = F.interpolate(
        teacher_feat.float(), size=feat.shape[-2:], mode="bilinear", align_corners=False
    )
    keep = (
        F.interpolate(label[:, None].float(), size=feat.shape[-2:], mode="nearest")[:, 0] != IGNORE
    )
    diff = (feat.float() - target).abs().mean(dim=1)
    return (diff * keep).sum() / keep.sum().clamp(min=1) if bool(keep.any()) else diff.sum() * 0


def pseudo_step(loop: Loop, fwd: nn.Module, batch, phase: str) -> PseudoTerms:
    """One MaskCLIP+ micro-batch: student forward, pseudo-labels for this phase, CE (+ distill)."""
    cfg, dev = loop.cfg, loop.info.device
    image, label = batch.image.to(dev, non_blocking=True), batch.label.to(dev, non_blocking=True)
    text = loop.text.to(dev)
    with autocast(loop):
        logits, feat = fwd(image, text)
    logits = logits.float()
    cats = candidates(len(loop.classes), cfg.setting, loop.unseen, cfg.background)
    fill = unlabeled_mask(label, cfg.setting, loop.unseen)
    target = label
    if cats and bool(fill.any()):
        with torch.no_grad():
            if phase == "st":
                target = fill_labels(label, logits.detach()[:, cats], cats, fill)
            else:
                with autocast(loop):
                    scores = loop.teacher(image, text[text_rows(cats, cfg.background)])
                target = fill_labels(label, scores, cats, fill, cfg.conf_thresh)
    ce = pixel_ce(logits, target)
    distill = ce.new_zeros(())
    if cfg.distill_weight > 0:
        with torch.no_grad(), autocast(loop):
            teacher_feat, _ = loop.teacher.dense(image)
        teacher_feat = teacher_feat.float()
        teacher_feat = teacher_feat / teacher_feat.norm(dim=1, keepdim=True)
        distill = cfg.distill_weight * distill_l1(feat, teacher_feat, label)
    return PseudoTerms(ce + distill, ce, distill)
