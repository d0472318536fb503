"""ZegCLIP's non-mutually-exclusive loss (sigmoid focal + dice per class mask) and CLIP-RC's L1
recovery loss.

Targets follow the official ``SegLossPlus.prepare_targets``: one binary mask per class; pixels
labelled 255 are negatives for every class (the official code does not exclude them). The focal
term covers all B*C (image, class) masks, classes absent from the image included; the dice term
only the pairs present in the labels. Both are divided by ``num_masks``, the number of present
pairs (averaged over processes under DDP, at least 1). Mask logits are upsampled bilinearly to
the label size first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from training.data.config import IGNORE


@dataclass(frozen=True)
class LossWeights:
    """Official weights: focal 100 / dice 1 (ZegCLIP VOC and COCO, CLIP-RC VOC; ZegCLIP VOC
    self-training uses focal 20; CLIP-RC COCO 200 / 3); recovery 2.0 for CLIP-RC VOC, 50 for
    CLIP-RC COCO, 0 for ZegCLIP."""

    focal: float = 100.0
    dice: float = 1.0
    recovery: float = 0.0


@dataclass(frozen=True)
class LossTerms:
    """Weighted loss terms (scalars) and their sum ``total``."""

    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    recovery: torch.Tensor

    def parts(self) -> dict[str, torch.Tensor]:
        return {"focal": self.focal, "dice": self.dice, "recovery": self.recovery}


def one_hot_targets(label: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """label int64 [B,H,W] (0..C-1, 255) -> (targets float [B,C,H,W] in {0,1}, num_masks scalar)."""
    valid = label != IGNORE
    if bool(((label < 0) | (label >= num_classes))[valid].any()):
        bad = torch.unique(label[valid & ((label < 0) | (label >= num_classes))]).tolist()
        raise ValueError(f"labels {bad} outside 0..{num_classes - 1} (and 255 = ignore)")
    safe = torch.where(valid, label, torch.zeros_like(label))
    targets = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    targets = targets * valid[:, None].float()
    num_masks = (targets.flatten(2).amax(-1) > 0).sum().float()
    return targets, num_masks


def _global_num_masks(num_masks: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        num_masks = num_masks.clone()
        dist.all_reduce(num_masks)
        num_masks = num_masks / dist.get_world_size()
    return num_masks.clamp(min=1.0)


def sigmoid_focal(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """[M,P] logits and {0,1} targets -> sum over masks of the per-mask mean focal loss."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * ce * (1 - p_t) ** gamma).mean(1).sum()


def dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[M,P] -> sum over masks of 1 - (2|p.t| + 1) / (|p| + |t| + 1), p = sigmoid(logits).

    Call it with the present masks only, as the official loss does."""
    prob = logits.sigmoid()
    num = 2 * (prob * targets).sum(-1)
    den = prob.sum(-1) + targets.sum(-1)
    return (1 - (num + 1) / (den + 1)).sum()


def mask_loss(
    mask_logits: torch.Tensor,
    label: torch.Tensor,
    weights: LossWeights,
    recovery: torch.Tensor | None = None,
) -> LossTerms:
    """Focal + dice (+ recovery) for mask logits [B,C,h,w] against labels int64 [B,H,W].

    ``recovery`` is CLIP-RC's unweighted L1 term (scalar) or None.
    """
    targets, num_masks = one_hot_targets(label, mask_logits.shape[1])
    logits = F.interpolate(
        mask_logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False
    )
    logits, targets = logits.flatten(2).flatten(0, 1), targets.flatten(2).flatten(0, 1)
    present = targets.amax(-1) > 0
    n = _global_num_masks(num_masks)
    focal = weights.focal * sigmoid_focal(logits, targets) / n
    dice_term = weights.dice * dice(logits[present], targets[present]) / n
    rec = (weights.recovery * recovery) if recovery is not None else focal.new_zeros(())
    return LossTerms(focal + dice_term + rec, focal, dice_term, rec)


def recovery_l1(
    pred_q: torch.Tensor, target_q: torch.Tensor, pred_v: torch.Tensor, target_v: torch.Tensor
) -> torch.Tensor:
    """CLIP-RC recovery: mean L1 of reconstructed queries and visual tokens vs detached targets."""
    return F.l1_loss(pred_q, target_q.detach()) + F.l1_loss(pred_v, target_v.detach())
