"""Training-free dense CLIP by last-block surgery (SCLIP, ClearCLIP, NACLIP; MaskCLIP's value path
is ``attention='value'``).

Blocks 0..L-2 of an open_clip VisionTransformer run unchanged over [CLS, patches]; the last block
becomes, per head (scale s = head_dim ** -0.5, q/k/v from ``in_proj`` on ``ln_1(x)``):

    value: a = v                                   (MaskCLIP)
    csa:   a = (softmax(q q^T s) + softmax(k k^T s)) v   (SCLIP)
    qq:    a = softmax(q q^T s) v                  (ClearCLIP)
    kk:    a = softmax(k k^T s + G) v              (NACLIP; G = Gaussian neighbourhood bias)

then ``o = out_proj(a)``, ``x = x + o`` (residual) or ``x = o``, ``x = x + mlp(ln_2(x))`` (FFN)
when kept, and ``feat = ln_post(x) @ proj`` on the patch tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.clip_loader import LoadedClip
from training.maskclip import tokens_before_last_block
from training.pamr import Pamr
from training.refine import classify


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1 + g*g, D] CLIP positional embedding -> [1, 1 + gh*gw, D] as SCLIP / ClearCLIP / NACLIP
    resize it: bicubic with ``scale_factor=(gh + 0.1) / g`` (not ``size=``: the sampling
    positions follow the given factor), align_corners=False, CLS row kept."""
    cls, patches = pos[:1], pos[1:]
    g = int(round(patches.shape[0] ** 0.5))
    if (g, g) != tuple(grid):
        patches = patches.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(
            patches,
            scale_factor=((grid[0] + 0.1) / g, (grid[1] + 0.1) / g),
            mode="bicubic",
            align_corners=False,
            recompute_scale_factor=False,
        )
        if tuple(patches.shape[-2:]) != tuple(grid):
            raise ValueError(
                f"positional embedding resized to {tuple(patches.shape[-2:])}, expected {grid}"
            )
        patches = patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    return torch.cat([cls, patches])[None]


def gaussian_bias(grid: tuple[int, int], std: float) -> torch.Tensor:
    """NACLIP's neighbourhood bias over [CLS, patches]: [1+gh*gw, 1+gh*gw] float32.

    Patch i gets ``exp(-|p_i - p_j|^2 / (2 std^2))`` towards patch j (positions in patch units,
    peak 1 on itself); the CLS row and column get 0.
    """
    gh, gw = grid
    ys, xs = torch.meshgrid(
        torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij"
    )
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=1)
    dist2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    bias = torch.zeros(gh * gw + 1, gh * gw + 1, dtype=torch.float64)
    bias[1:, 1:] = torch.exp(-dist2 / (2.0 * std * std))
    return bias.float()


def surgery_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """One head-batched attention of the kinds above: q, k, v [B, H, N, hd] -> [B, H, N, hd]."""
    if kind == "value":
        return v
    scale = q.shape[-1] ** -0.5
    if kind == "csa":
        w = (q @ q.transpose(-1, -2) * scale).softmax(-1) + (
            k @ k.transpose(-1, -2) * scale
        ).softmax(-1)
    elif kind == "qq":
        w = (q @ q.transpose(-1, -2) * scale).softmax(-1)
    elif kind == "kk":
        logits = k @ k.transpose(-1, -2) * scale
        w = (logits if bias is None else logits + bias).softmax(-1)
    else:
        raise ValueError(f"unknown attention kind {kind!r}")
    return w @ v


class SurgeryViT(nn.Module):
    """Dense features from an open_clip VisionTransformer with a modified last block.

    forward: image [B,3,S,S] (normalised) -> feat [B,D,S/p,S/p].
    """

    def __init__(
        self,
        visual: nn.Module,
        image_size: int,
        attention: str,
        residual: bool,
        ffn: bool,
        gaussian_std: float = 0.0,
    ):
        super().__init__()
        self.visual, self.attention, self.residual, self.ffn = visual, attention, residual, ffn
        self.patch = visual.conv1.kernel_size[0]
        if image_size % self.patch:
            raise ValueError(
                f"image_size {image_size} is not a multiple of the patch size {self.patch}"
            )
        self.grid = (image_size // self.patch,) * 2
        with torch.no_grad():
            pos = interpolate_pos_embed(visual.positional_embedding.detach(), self.grid)
        self.register_buffer("pos_embed", pos, persistent=False)
        bias = gaussian_bias(self.grid, gaussian_std) if gaussian_std > 0 else None
        self.register_buffer("attn_bias", bias, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = tokens_before_last_block(v, image, self.pos_embed)
        x = self._last_block(v.transformer.resblocks[-1], x)
        feat = v.ln_post(x[:, 1:]) @ v.proj  # [B, N, D]
        return feat.transpose(1, 2).reshape(x.shape[0], -1, *self.grid)

    def _last_block(self, last: nn.Module, x: torch.Tensor) -> torch.Tensor:
        attn = last.attn
        bsz, n, width = x.shape
        heads = attn.num_heads
        qkv = F.linear(last.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, val = qkv.reshape(bsz, n, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        a = surgery_attention(q, k, val, self.attention, self.attn_bias)
        o = last.ls_1(attn.out_proj(a.transpose(1, 2).reshape(bsz, n, width)))
        x = x + o if self.residual else o
        if self.ffn:
            x = x + last.ls_2(last.mlp(last.ln_2(x)))
        return x


class SurgerySeg(nn.Module):
    """Training-free segmenter: image + text classifier -> scaled cosine logits.

    forward(image [B,3,S,S] normalised, text [C,D] unit rows) -> [B,C,S/p,S/p]
    (``logit_scale`` x cosine in [-1, 1]; softmax over C gives the method's probability), or
    [B,C,S,S] after PAMR (bilinear upsampling to the input, then refinement on the image).
    """

    def __init__(self, visual: nn.Module, cfg):
        super().__init__()
        self.cfg = cfg
        self.dense = SurgeryViT(
            visual, cfg.image_size, cfg.attention, cfg.residual, cfg.ffn, cfg.gaussian_std
        )
        self.pamr = Pamr(cfg.pamr_steps, cfg.pamr_dilations) if cfg.pamr else None
        self.feature_stride = 1 if cfg.pamr else self.dense.patch

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        logits = classify(self.dense(image), text) * self.cfg.logit_scale
        if self.pamr is None:
            return logits
        up = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return self.pamr(image, up)


def build_surgery_model(clip: LoadedClip, cfg) -> SurgerySeg:
    """A training-free segmenter over ``clip``'s ViT (modules shared, not copied), eval mode."""
    if clip.kind != "vit":
        raise ValueError(
            f"last-block surgery needs a ViT backbone, got {clip.backbone} ({clip.kind})"
        )
    return SurgerySeg(clip.model.visual, cfg).eval()


__all__ = [
    "SurgerySeg",
    "SurgeryViT",
    "build_surgery_model",
    "gaussian_bias",
    "interpolate_pos_embed",
    "surgery_attention",
]
