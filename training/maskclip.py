"""MaskCLIP: dense CLIP features from the last block's value path, text classification, refinement.

ViT path (official MaskCLIP): y = ln_1(x); v = out_proj(v_proj(y)); v = v + x (residual);
v = v + mlp(ln_2(v)) (FFN); feat = ln_post(v) @ proj. Keys k = out_proj(k_proj(y)) feed key
smoothing.
The value path is token-wise, so the CLS token is dropped before the last block.
ResNet path: feat = c_proj(v_proj(x)), k = k_proj(x), attnpool projections applied as 1x1 convs,
no attnpool positional embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.clip_loader import LoadedClip, visual_kind
from training.methods.maskclip import IMAGENET_MEAN, IMAGENET_STD, KS_NORMS, NUMERICS, MaskClipCfg
from training.refine import classify, key_smooth, prompt_denoise

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KS_NORMS",
    "NUMERICS",
    "MaskClipCfg",
    "MaskClip",
    "build_maskclip_model",
]


def apply_official_numerics(visual: nn.Module) -> None:
    """Exact GELU and LayerNorm eps 1e-6 throughout a ViT visual tower (in place)."""
    for block in visual.transformer.resblocks:
        block.mlp.gelu = nn.GELU()
    for module in visual.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-6


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1 + g*g, D] CLIP positional embedding -> [1, 1 + gh*gw, D], bicubic, CLS row kept."""
    cls, patches = pos[:1], pos[1:]
    g = int(round(patches.shape[0] ** 0.5))
    if (g, g) != tuple(grid):
        patches = patches.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
        patches = patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    return torch.cat([cls, patches])[None]


def tokens_before_last_block(
    visual: nn.Module, image: torch.Tensor, pos_embed: torch.Tensor
) -> torch.Tensor:
    """The unchanged part of a dense CLIP ViT: patch embedding, [CLS] + ``pos_embed`` [1,1+N,W],
    ``ln_pre`` and blocks 0..L-2. image [B,3,S,S] -> tokens [B,1+N,W] (batch first, CLS first)."""
    x = visual.conv1(image).flatten(2).transpose(1, 2)  # [B, N, width]
    cls = visual.class_embedding.reshape(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + pos_embed)
    batch_first = getattr(visual.transformer, "batch_first", True)
    x = x if batch_first else x.transpose(0, 1)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


class DenseViT(nn.Module):
    """Dense features from an open_clip VisionTransformer at a fixed input size.

    forward: image [B,3,S,S] -> (feat [B,D,S/p,S/p], key [B,(S/p)^2,width]).
    """

    def __init__(self, visual: nn.Module, cfg: MaskClipCfg):
        super().__init__()
        self.visual, self.cfg = visual, cfg
        self.patch = visual.conv1.kernel_size[0]
        self.grid = (cfg.image_size // self.patch,) * 2
        with torch.no_grad():
            pos = interpolate_pos_embed(visual.positional_embedding.detach(), self.grid)
        self.register_buffer("pos_embed", pos, persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = tokens_before_last_block(self.visual, image, self.pos_embed)[:, 1:]
        return self._value_path(self.visual.transformer.resblocks[-1], x)

    def _value_path(self, last: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn, width = last.attn, x.shape[-1]
        y = last.ln_1(x)
        w, b = attn.in_proj_weight, attn.in_proj_bias
        v = last.ls_1(attn.out_proj(F.linear(y, w[2 * width :], b[2 * width :])))
        if self.cfg.residual:
            v = v + x
        if self.cfg.ffn:
            v = v + last.ls_2(last.mlp(last.ln_2(v)))
        feat = self.visual.ln_post(v) @ self.visual.proj  # [B, N, D]
        key = attn.out_proj(F.linear(y, w[width : 2 * width], b[width : 2 * width]))
        bsz, gh, gw = x.shape[0], self.grid[0], self.grid[1]
        return feat.transpose(1, 2).reshape(bsz, -1, gh, gw), key


def _conv1x1(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


class DenseResNet(nn.Module):
    """Dense features from an open_clip ModifiedResNet: attnpool v/c (and k) as 1x1 convs.

    forward: image [B,3,S,S] -> (feat [B,D,S/32,S/32], key [B,(S/32)^2,width*32]).
    """

    def __init__(self, visual: nn.Module, cfg: MaskClipCfg):
        super().__init__()
        self.visual, self.cfg = visual, cfg

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.visual
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(image)))))
        pool = v.attnpool
        feat = _conv1x1(_conv1x1(x, pool.v_proj), pool.c_proj)
        key = _conv1x1(x, pool.k_proj).flatten(2).transpose(1, 2)
        return feat, key


class MaskClip(nn.Module):
    """MaskCLIP with refinement: image + text classifier -> per-class scores at feature resolution.

    forward(image [B,3,S,S] normalised, text [C,D] unit rows) -> [B,C,S/p,S/p]: cosine logits,
    -100 for denoised classes, or probabilities when key smoothing is on.
    """

    def __init__(self, visual: nn.Module, cfg: MaskClipCfg):
        super().__init__()
        self.cfg, self.kind = cfg, visual_kind(visual)
        if self.kind == "vit":
            if cfg.numerics == "official":
                apply_official_numerics(visual)
            self.dense, self.feature_stride = DenseViT(visual, cfg), visual.conv1.kernel_size[0]
        else:
            self.dense, self.feature_stride = DenseResNet(visual, cfg), 32
        if cfg.image_size % self.feature_stride:
            raise ValueError(
                f"image_size {cfg.image_size} is not a multiple of the feature stride "
                f"{self.feature_stride}"
            )

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        feat, key = self.dense(image)
        logits = classify(feat, text)
        if self.cfg.prompt_denoising:
            logits = prompt_denoise(logits, self.cfg.pd_thresh)
        if self.cfg.key_smoothing:
            logits = key_smooth(logits, key, self.cfg.ks_thresh, self.cfg.ks_norm)
        return logits


def build_maskclip_model(clip: LoadedClip, cfg: MaskClipCfg) -> MaskClip:
    """MaskCLIP over ``clip``'s visual tower (changed in place for ``numerics='official'``)."""
    return MaskClip(clip.model.visual, cfg).eval()
