"""Training targets for the zero-shot settings, as the official segmentor builds them.

Inductive: seen classes are renumbered to their index in the seen list (the text classifier is cut
to the seen classes), unseen pixels become 255 (negatives for every seen class in the loss).
Self-training: unseen-class pixels take the argmax over unseen classes of the detached sigmoid
masks of the same forward pass, no threshold; seen and ignored pixels keep their labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from training.data.config import IGNORE


def seen_only(label: torch.Tensor, seen: Sequence[int]) -> torch.Tensor:
    """label int64 [B,H,W] (dataset ids, 255) -> seen-list ids, unseen and 255 -> 255."""
    lut = torch.full((256,), IGNORE, dtype=label.dtype, device=label.device)
    lut[torch.as_tensor(list(seen), dtype=torch.long, device=label.device)] = torch.arange(
        len(seen), dtype=label.dtype, device=label.device
    )
    return lut[label]


def pseudo_label(
    label: torch.Tensor, logits: torch.Tensor, seen: Sequence[int], unseen: Sequence[int]
) -> torch.Tensor:
    """Fill unseen-class pixels of ``label`` [B,H,W] from mask logits [B,C,h,w] (all classes).

    Returns a new int64 [B,H,W]: seen ids and 255 unchanged; each unseen pixel gets the unseen
    class with the highest sigmoid score at that pixel (seen channels set to -1, as official).
    """
    if not len(unseen):
        return label
    probs = F.interpolate(
        logits.detach(), size=label.shape[-2:], mode="bilinear", align_corners=False
    ).sigmoid()
    if len(seen):
        probs[:, list(seen)] = -1.0
    pseudo = probs.argmax(dim=1)
    is_unseen = torch.zeros(256, dtype=torch.bool, device=label.device)
    is_unseen[torch.as_tensor(list(unseen), dtype=torch.long, device=label.device)] = True
    return torch.where(is_unseen[label], pseudo, label)
