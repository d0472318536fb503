"""MaskCLIP's test-time refinement, as the official code computes it, in export-friendly ops.

Shapes: logits [B, C, h, w]; key [B, h*w, Dk]. Boolean index writes of the original become
``torch.where`` so the graph exports to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 100.0  # the official code's fixed softmax temperature inside refinement
REMOVED = -100.0  # logit given to classes removed by prompt denoising


def classify(feat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine logits: unit-normalised dense features against the text classifier (no logit scale).

    Args:
        feat: [B, D, h, w] dense features.
        text: [C, D] L2-normalised text embeddings.
    Returns:
        [B, C, h, w] in [-1, 1].
    """
    b, d, h, w = feat.shape
    feat = feat / feat.norm(dim=1, keepdim=True)
    return torch.matmul(text, feat.reshape(b, d, h * w)).reshape(b, text.shape[0], h, w)


def prompt_denoise(logits: torch.Tensor, thresh: float) -> torch.Tensor:
    """Classes whose best pixel has softmax(100·logits) confidence < ``thresh`` get logit -100."""
    prob = F.softmax(logits * TEMPERATURE, dim=1)
    keep = prob.flatten(2).amax(dim=-1) >= thresh  # [B, C]
    return torch.where(keep[:, :, None, None], logits, torch.full_like(logits, REMOVED))


def key_smooth(
    logits: torch.Tensor, key: torch.Tensor, thresh: float, norm: str = "spatial"
) -> torch.Tensor:
    """Key smoothing: positions whose max probability < ``thresh`` take ``W @ p``, W = k̂ k̂ᵀ.

    Args:
        logits: [B, C, h, w].
        key: [B, h*w, Dk] keys of the last block (after out_proj for ViT).
        thresh: confidence threshold (official 1.0; see the note below).
        norm: ``spatial`` normalises k over the position axis, as the official code does
            (``F.normalize`` default dim=1 on [B, HW, Dk]); ``token`` normalises each key vector.
    Note:
        ``thresh >= 1`` smooths every position. A softmax never reaches 1 in exact arithmetic, but
        in float32 confident pixels saturate to exactly 1.0 in one backend and 0.99999994 in
        another, so the official ``p < 1.0`` test would pick different pixels in PyTorch, ONNX
        Runtime and TensorRT (seen: 4.2 max logit difference). Below 1 the official test is used.
    Returns:
        [B, C, h, w]: softmax(100·logits) where not selected, W @ p where selected. W is not
        row-normalised, so smoothed scores are unbounded (they reach 1e3 on ResNet features).
    """
    b, c, h, w = logits.shape
    prob = F.softmax(logits * TEMPERATURE, dim=1).reshape(b, c, h * w).transpose(1, 2)
    k = F.normalize(key, p=2.0, dim=1 if norm == "spatial" else 2)
    # (k kᵀ) p computed as k (kᵀ p): same product, O(HW·Dk·C) instead of O(HW²·Dk).
    smoothed = torch.matmul(k, torch.matmul(k.transpose(1, 2), prob))
    if thresh >= 1.0:
        out = smoothed
    else:
        out = torch.where(prob.amax(dim=-1, keepdim=True) < thresh, smoothed, prob)
    return out.transpose(1, 2).reshape(b, c, h, w)
