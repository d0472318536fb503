"""CLIP-RC: ZegCLIP's VPT backbone plus 16 region tokens, region alignment (16*C queries), a dual
cross-attention decoder, and a recovery decoder used only in training.

Names follow the official ``decode_head`` (``q_proj``, ``lateral_proj``,
``decoder_q.layers.N``, ``decoder_v.layers.N``, ``recovery_decoder.{decouple_q.0, decouple_v.0,
linear_q_in, linear_k_in, linear_q_out, linear_k_out}``) and ``backbone.region_level_bridge``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.losses import recovery_l1
from training.vpt import REGION_SIDE, VPTViT
from training.zegclip import TPNDecoder, ZegClipCfg

NUM_REGIONS = REGION_SIDE * REGION_SIDE


def combine_tokens(text: torch.Tensor, cls: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Region alignment queries: [(r_l + cls) * t_c, t_c] for every region l and class c.

    text [C,D], cls [B,D], regions [B,D,4,4] -> [B, 16*C, 2D], query index l*C + c.
    The sum r_l + cls of two unit vectors is not renormalised (official).
    """
    bsz, dim = cls.shape
    reg = regions.reshape(bsz, dim, -1).transpose(1, 2) + cls[:, None]  # [B,16,D]
    t = text[None].expand(bsz, -1, -1)  # [B,C,D]
    prod = (reg[:, :, None] * t[:, None]).reshape(bsz, -1, dim)
    t_rep = t[:, None].expand(-1, reg.shape[1], -1, -1).reshape(bsz, -1, dim)
    return torch.cat([prod, t_rep], dim=-1)


def fuse_regions(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B, 16*C, ...] region-major -> [B, C, ...], the mean over the 16 region groups."""
    shape = mask.shape
    return mask.reshape(shape[0], -1, num_classes, *shape[2:]).mean(dim=1)


def dual_step(layer_q: nn.Module, layer_v: nn.Module, q: torch.Tensor, lat: torch.Tensor):
    """Simultaneous update: both layers see the old q and lat (official tuple assignment)."""
    return layer_q(q, lat)[0], layer_v(lat, q)[0]


class RecoveryDecoder(nn.Module):
    """Train-only: reconstruct the pre-``q_proj`` queries (2D) and the patch tokens (D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.decouple_q = TPNDecoder(dim, heads, 1).layers
        self.decouple_v = TPNDecoder(dim, heads, 1).layers
        self.linear_q_in, self.linear_k_in = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.linear_q_out, self.linear_k_out = nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, lat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, lat = self.linear_q_in(q), self.linear_k_in(lat)
        for layer_q, layer_v in zip(self.decouple_q, self.decouple_v):
            q, lat = dual_step(layer_q, layer_v, q, lat)
        return self.linear_q_out(q), self.linear_k_out(lat)


class ClipRcHead(nn.Module):
    """forward(patches [B,D,h,w], cls [B,D], regions [B,D,4,4], text [C,D])
    -> (mask logits [B,C,h,w], recovery L1 (training) or None)."""

    def __init__(self, dim: int, heads: int, num_layers: int):
        super().__init__()
        self.q_proj = nn.Linear(2 * dim, dim)
        self.lateral_proj = nn.Linear(3 * dim, dim)
        self.decoder_q = TPNDecoder(dim, heads, num_layers)
        self.decoder_v = TPNDecoder(dim, heads, num_layers)
        for layer in self.decoder_v.layers:
            nn.init.zeros_(layer.linear2.weight)
            nn.init.zeros_(layer.linear2.bias)
        self.recovery_decoder = RecoveryDecoder(dim, heads)

    def forward(self, patches, cls, regions, text):
        bsz, dim, gh, gw = patches.shape
        lateral = patches.flatten(2).transpose(1, 2)  # [B,hw,D]
        q_ori = combine_tokens(text, cls, regions)
        q = self.q_proj(q_ori)
        reg_up = F.interpolate(regions, size=(gh, gw), mode="bilinear", align_corners=False)
        reg_up = reg_up.flatten(2).transpose(1, 2)
        cls_rep = cls[:, None].expand(-1, gh * gw, -1)
        lat = self.lateral_proj(torch.cat([reg_up, cls_rep, lateral], dim=-1))
        for layer_q, layer_v in zip(self.decoder_q.layers, self.decoder_v.layers):
            q, lat = dual_step(layer_q, layer_v, q, lat)
        mask = (q @ lat.transpose(1, 2)).reshape(bsz, -1, gh, gw)  # plain dot product
        mask = fuse_regions(mask, text.shape[0])
        recovery = None
        if self.training:
            rq, rv = self.recovery_decoder(q, lat)
            recovery = recovery_l1(rq, q_ori, rv, lateral)
        return mask, recovery


class ClipRc(nn.Module):
    """CLIP-RC: image [B,3,S,S] (S = the region mask's size) + text [C,D] -> mask logits
    [B,C,S/16,S/16] (pre-sigmoid)."""

    method = "cliprc"

    def __init__(self, visual: nn.Module, cfg: ZegClipCfg, dim: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = VPTViT(
            visual, cfg.image_size, cfg.num_tokens, cfg.total_d_layer, region_tokens=True
        )
        self.decode_head = ClipRcHead(dim, cfg.decoder_heads, cfg.decoder_layers)

    @property
    def feature_stride(self) -> int:
        return self.backbone.patch

    @property
    def fixed_size(self) -> int:
        """The only input side the model runs at (its region mask is built for one grid)."""
        return self.cfg.image_size

    def train_outputs(self, image: torch.Tensor, text: torch.Tensor):
        """(mask logits [B,C,h,w], recovery L1 scalar (training mode) or None)."""
        patches, cls, regions = self.backbone(image)
        return self.decode_head(patches, cls, regions, text.to(patches.dtype))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.train_outputs(image, text)[0]
