"""Sliding-window inference for the PyTorch models, on the same window plan as the runtime."""

from __future__ import annotations

import torch

from runtime.windows import default_stride, plan_windows, stitch


@torch.no_grad()
def slide_logits(
    model: torch.nn.Module,
    image: torch.Tensor,
    text: torch.Tensor,
    window: int,
    feature_stride: int,
    stride: int | None = None,
    edge: str = "flush",
) -> torch.Tensor:
    """Scores for an image larger than the model input, averaged over overlapping windows.

    The normalised image is zero-padded (= mean colour) bottom/right to the plan's padded size;
    each window's scores are added into a canvas and divided by the overlap count: at full
    resolution after a bilinear upsample to the window (``flush``, the official placement) or
    at feature resolution (``grid``), as the runtime (``runtime.windows``).

    Args:
        model: callable (image [1,3,S,S], text [C,D]) -> [1,C,S/p,S/p].
        image: [1,3,H,W] normalised.
        text: [C,D] text classifier.
        window, feature_stride: S and p.
        stride: step in pixels (default: two thirds of S on the feature grid).
        edge: ``flush`` or ``grid`` window plan.
    Returns:
        [C, Hp, Wp] (``flush``) or [C, Hp/p, Wp/p] (``grid``) scores covering the padded image.
    """
    plan = plan_windows(
        tuple(image.shape[-2:]),
        window,
        stride or default_stride(window, feature_stride),
        feature_stride,
        edge,
    )
    padded = image.new_zeros((1, 3) + plan.padded_hw)
    padded[:, :, : image.shape[2], : image.shape[3]] = image
    return stitch(plan, padded, lambda w: model(w, text)[0], image.new_zeros, _upsample)


def _upsample(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, h, w] -> [C, *size], bilinear, align_corners=False."""
    up = torch.nn.functional.interpolate(
        scores[None], size=size, mode="bilinear", align_corners=False
    )
    return up[0]
