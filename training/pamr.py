"""PAMR (pixel-adaptive mask refinement, Araslanov & Roth 2020), as SCLIP / NACLIP use it.

For each dilation d the 8 neighbours at offsets d*(dy, dx) are compared with replicate padding.
Affinity: a = softmax_P(mean_channels(-|x - x_n| / (1e-8 + 0.1 * std))), where std is the
unbiased standard deviation of the 9 samples (centre included) of every dilation together, per
pixel and channel. Then ``steps`` times: mask = sum_P a * mask_n. Written with pads and slices
(no convolution kernels) so it exports to plain ONNX ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _neighbours(x: torch.Tensor, dilations: tuple[int, ...], centre: bool) -> torch.Tensor:
    """x [B,K,H,W] -> [B,K,P,H,W]: the values at each dilated offset (replicate padding);
    P = 8 per dilation, or 9 with the centre first when ``centre``."""
    h, w = x.shape[-2:]
    out = []
    for d in dilations:
        pad = F.pad(x, (d, d, d, d), mode="replicate")
        offsets = (((0, 0),) if centre else ()) + OFFSETS
        out += [
            pad[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w] for dy, dx in offsets
        ]
    return torch.stack(out, dim=2)


class Pamr(nn.Module):
    """forward(image [B,K,H,W], mask [B,C,h,w]) -> refined mask [B,C,H,W].

    ``mask`` is resized to the image first (bilinear, align_corners=True, as the original).
    """

    def __init__(self, steps: int = 10, dilations: tuple[int, ...] = (8, 16)):
        super().__init__()
        if steps <= 0 or not dilations or min(dilations) <= 0:
            raise ValueError(
                f"PAMR needs steps > 0 and positive dilations, got {steps}, {dilations}"
            )
        self.steps, self.dilations = steps, tuple(int(d) for d in dilations)

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """image [B,K,H,W] -> [B,1,P,H,W] weights summing to 1 over P (8 per dilation)."""
        std = _neighbours(image, self.dilations, centre=True).std(dim=2, keepdim=True)
        diff = (image[:, :, None] - _neighbours(image, self.dilations, centre=False)).abs()
        return (-diff / (1e-8 + 0.1 * std)).mean(dim=1, keepdim=True).softmax(dim=2)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if mask.shape[-2:] != image.shape[-2:]:
            mask = F.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=True)
        aff = self.affinity(image)
        for _ in range(self.steps):
            mask = (_neighbours(mask, self.dilations, centre=False) * aff).sum(dim=2)
        return mask
