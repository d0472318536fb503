"""ZegCLIP: deep-VPT CLIP ViT, relationship descriptor, 3-layer cross-attention decoder whose
class masks are head-averaged pre-softmax attention logits.

Module and parameter names follow the official ``decode_head`` (``q_proj``,
``decoder_1.layers.N.{multihead_attn.{q,k,v,proj}, linear1, linear2, norm2, norm3}``) so the
official checkpoint maps by name (see ``training.official``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import ConfigError
from training.methods.zegclip import ZegClipCfg
from training.vpt import VPTViT

__all__ = ["ZegClipCfg", "ZegClip", "bias_vector", "seen_scores", "zero_shot_labels"]


class CrossAttention(nn.Module):
    """Official ``Attention``: separate q/k/v/proj Linears (qkv bias), attention dropout 0.1.

    forward(xq [B,Nq,D], xkv [B,Nk,D]) -> (out [B,Nq,D], logits [B,Nq,Nk] = pre-softmax scaled
    scores averaged over heads).
    """

    def __init__(self, dim: int, heads: int, attn_drop: float = 0.1):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(
                f"decoder heads ({heads}) must divide the decoder width ({dim}): e.g. "
                f"{', '.join(str(h) for h in range(1, min(dim, 16) + 1) if dim % h == 0)}"
            )
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def _logits(self, xq: torch.Tensor, xkv: torch.Tensor) -> torch.Tensor:
        q, k = self._split(self.q(xq)), self._split(self.k(xkv))
        return (q @ k.transpose(-2, -1)) * self.scale  # [B,h,Nq,Nk]

    def mean_logits(self, xq: torch.Tensor, xkv: torch.Tensor) -> torch.Tensor:
        """Only the head-averaged pre-softmax logits [B,Nq,Nk] (what the mask is made of)."""
        return self._logits(xq, xkv).mean(dim=1)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._logits(xq, xkv)
        attn = self.attn_drop(logits.softmax(dim=-1))
        out = (attn @ self._split(self.v(xkv))).transpose(1, 2).flatten(2)
        return self.proj(out), logits.mean(dim=1)


class TPNLayer(nn.Module):
    """Post-norm decoder layer, cross-attention only (the inherited self-attention is never called):
    tgt = norm2(tgt + drop(xattn)); tgt = norm3(tgt + drop(linear2(drop(relu(linear1(tgt))))))."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.multihead_attn = CrossAttention(dim, heads)
        self.linear1, self.linear2 = nn.Linear(dim, dim * 4), nn.Linear(dim * 4, dim)
        self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, logits = self.multihead_attn(tgt, memory)
        tgt = self.norm2(tgt + self.dropout2(out))
        tgt = self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))
        return tgt, logits


class TPNDecoder(nn.Module):
    """Stack of ``TPNLayer``; returns the last layer's attention logits [B,Nq,Nk].

    Only the last layer's map is used (the official head emits no auxiliary outputs), so that
    layer's FFN output never matters.
    """

    def __init__(self, dim: int, heads: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(TPNLayer(dim, heads) for _ in range(num_layers))

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            q = layer(q, memory)[0]
        # The last layer's value path and FFN cannot reach the output: skip them (same result).
        return self.layers[-1].multihead_attn.mean_logits(q, memory)


def relationship_queries(text: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """ZegCLIP relationship descriptor input: text [C,D], cls [B,D] -> [B,C,2D] = [t*cls, t]."""
    t = text[None].expand(cls.shape[0], -1, -1)
    return torch.cat([t * cls[:, None], t], dim=-1)


class ZegHead(nn.Module):
    """``ATMSingleHeadSeg`` with one stage and no input projection.

    forward(patches [B,D,h,w], cls [B,D], text [C,D]) -> mask logits [B,C,h,w].
    """

    def __init__(self, dim: int, heads: int, num_layers: int):
        super().__init__()
        self.q_proj = nn.Linear(dim * 2, dim)
        self.decoder_1 = TPNDecoder(dim, heads, num_layers)

    def forward(self, patches: torch.Tensor, cls: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        q = self.q_proj(relationship_queries(text, cls))
        memory = patches.flatten(2).transpose(1, 2)
        logits = self.decoder_1(q, memory)  # [B,C,h*w]
        return logits.reshape(*logits.shape[:2], *patches.shape[-2:])


class ZegClip(nn.Module):
    """ZegCLIP: image [B,3,S,S] (ImageNet-normalised) + text [C,D] unit rows -> mask logits
    [B,C,S/16,S/16] (pre-sigmoid). ``scores`` applies the official inference post-processing."""

    method = "zegclip"

    def __init__(self, visual: nn.Module, cfg: ZegClipCfg, dim: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = VPTViT(visual, cfg.image_size, cfg.num_tokens, cfg.total_d_layer)
        self.decode_head = ZegHead(dim, cfg.decoder_heads, cfg.decoder_layers)

    @property
    def feature_stride(self) -> int:
        return self.backbone.patch

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        patches, cls, _ = self.backbone(image)
        return self.decode_head(patches, cls, text.to(patches.dtype))

    def train_outputs(self, image: torch.Tensor, text: torch.Tensor):
        """Training forward: (mask logits, recovery term or None)."""
        return self(image, text), None


def seen_scores(mask_logits: torch.Tensor, seen_bias: torch.Tensor) -> torch.Tensor:
    """Official inference scores: sigmoid(mask logits [B,C,...]) - bias[C] (0.1 on seen classes)."""
    shape = (1, -1) + (1,) * (mask_logits.ndim - 2)
    return mask_logits.sigmoid() - seen_bias.reshape(shape).to(mask_logits.dtype)


def bias_vector(num_classes: int, seen: list[int] | tuple[int, ...], value: float) -> torch.Tensor:
    """[C] float: ``value`` at the seen class indices, 0 elsewhere."""
    bias = torch.zeros(num_classes)
    if len(seen):
        bias[torch.as_tensor(list(seen), dtype=torch.long)] = value
    return bias


def zero_shot_labels(logits: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """argmax_c sigmoid(logits_c) - bias_c over dim 1, computed without sigmoid saturation.

    In float32 sigmoid rounds to exactly 1.0 for logits above ~17, so a direct argmax turns
    clear winners into ties that different kernels break differently. Within classes that share a
    bias value sigmoid is monotonic, so each group's winner is taken in logit space and only the
    group winners are compared after the sigmoid (their biases differ, so saturation cannot tie
    them unless the biases themselves are equal). Equal scores resolve to the group with the
    smaller bias. logits [B,C,H,W], bias [C] or None -> int64 [B,H,W].
    """
    if bias is None:
        return logits.argmax(dim=1)
    values = sorted(set(bias.tolist()))
    best_label = best_score = None
    for value in values:
        idx = torch.nonzero(bias == value).flatten()
        top, arg = logits.index_select(1, idx.to(logits.device)).max(dim=1)
        label, score = idx.to(logits.device)[arg], top.sigmoid() - value
        if best_label is None:
            best_label, best_score = label, score
        else:
            better = score > best_score
            best_label = torch.where(better, label, best_label)
            best_score = torch.where(better, score, best_score)
    return best_label
