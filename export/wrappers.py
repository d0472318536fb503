"""Export-only wrappers: fixed graph I/O around the training models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.zegclip import zero_shot_labels


class LogitsOnnxModel(nn.Module):
    """Used only for ONNX export: a model(image, text) -> per-class logits (MaskCLIP with its
    refinement fused, a MaskCLIP+ student with its text classifier) and a label map output.

    The text classifier is a constant (``vocab_mode='fixed'``) or the second graph input.
    forward(image [1,3,S,S][, text [C,D]]) -> (logits [1,C',S/p,S/p], labels int64 [1,S,S]);
    C' = C, or C + 1 for a student with a learned background (class 0).
    """

    def __init__(self, model: nn.Module, text: torch.Tensor, vocab_mode: str):
        super().__init__()
        self.model, self.vocab_mode = model, vocab_mode
        self.register_buffer("text", text.float().contiguous(), persistent=False)

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None):
        logits = self.model(image, self.text if text is None else text)
        up = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return logits, up.argmax(dim=1)


def _split_q_proj(q_proj: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q_proj([a, t]) = a @ w_a + (t @ w_t + b): returns (w_a [D,D], w_t [D,D], b [D])."""
    dim = q_proj.weight.shape[0]
    w = q_proj.weight.detach()
    return w[:, :dim].t().contiguous(), w[:, dim:].t().contiguous(), q_proj.bias.detach().clone()


class _QueryText(nn.Module):
    """The text half of the relationship descriptor, folded: q = (t * v) @ w_a + q_text, where
    q_text = t @ w_t + b is a constant [C,D] for a fixed vocabulary (else computed in-graph)."""

    def __init__(self, q_proj: nn.Linear, text: torch.Tensor, vocab_mode: str):
        super().__init__()
        w_a, w_t, b = _split_q_proj(q_proj)
        self.register_buffer("w_a", w_a, persistent=False)
        self.register_buffer("w_t", w_t, persistent=False)
        self.register_buffer("b", b, persistent=False)
        self.fixed = vocab_mode == "fixed"
        text = text.float().contiguous()
        self.register_buffer("text", text, persistent=False)
        self.register_buffer("q_text", text @ w_t + b, persistent=False)

    def forward(self, text: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (text [C,D], q_text [C,D])."""
        if text is None:
            return self.text, self.q_text
        return text, text @ self.w_t + self.b


def _check_bias(bias: torch.Tensor, vocab_mode: str) -> torch.Tensor | None:
    """The seen bias is per class of a fixed vocabulary; input vocabularies get none."""
    if vocab_mode == "input":
        if bool(bias.any()):
            raise ValueError("a seen-class bias needs vocab_mode='fixed'")
        return None
    return bias.float()


def _scores_and_labels(mask_logits: torch.Tensor, bias: torch.Tensor | None, size, output: str):
    """Official post-processing: labels = argmax(sigmoid(upsample(logits)) - bias), computed
    without sigmoid saturation (``zero_shot_labels``); the graph's
    per-class output is sigmoid(logits) - bias at feature resolution (``output='scores'``) or the
    raw mask logits (``output='mask_logits'``, for parity checks); ``output='deployed'`` returns
    the scores alone, as the deployed graph (label branch pruned) does; ``output='export'`` adds
    the mask logits as a third output (what ``export.build`` traces: the deployed graph keeps
    scores and mask logits, so the runtime's slide path can take the sigmoid after upsampling,
    as the official code)."""
    scores = mask_logits.sigmoid()
    if bias is not None:
        scores = scores - bias[None, :, None, None]
    first = mask_logits if output == "mask_logits" else scores
    if output == "deployed":  # what the deployed graph computes: no label map
        return (first,)
    up = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    if output == "export":
        return first, zero_shot_labels(up, bias), mask_logits
    return first, zero_shot_labels(up, bias)


class ZegClipOnnxModel(nn.Module):
    """Used only for ONNX export: ZegCLIP with the text classifier folded into the query
    projection and the seen-class bias as a constant.

    forward(image [1,3,S,S][, text [C,D]]) -> (scores [1,C,S/16,S/16] = sigmoid(mask logits) -
    bias, labels int64 [1,S,S]).
    """

    def __init__(
        self,
        model: nn.Module,
        text: torch.Tensor,
        bias: torch.Tensor,
        vocab_mode: str,
        output: str = "scores",
    ):
        super().__init__()
        self.backbone, self.decoder = model.backbone, model.decode_head.decoder_1
        self.query = _QueryText(model.decode_head.q_proj, text, vocab_mode)
        self.register_buffer("bias", _check_bias(bias, vocab_mode), persistent=False)
        self.output = output

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None):
        return self.decode(*self.backbone(image), text=text)

    def decode(
        self,
        patches: torch.Tensor,
        cls: torch.Tensor,
        regions=None,
        text: torch.Tensor | None = None,
    ):
        """Everything after the backbone: patches [1,D,h,w], cls [1,D] -> (scores, labels)."""
        text, q_text = self.query(text)
        q = (text[None] * cls[:, None]) @ self.query.w_a + q_text
        logits = self.decoder(q, patches.flatten(2).transpose(1, 2))
        logits = logits.reshape(*logits.shape[:2], *patches.shape[-2:])
        size = tuple(g * self.backbone.patch for g in patches.shape[-2:])
        return _scores_and_labels(logits, self.bias, size, self.output)


class ClipRcOnnxModel(nn.Module):
    """Used only for ONNX export: CLIP-RC inference (no recovery decoder) with the text half of
    ``q_proj`` folded, the region fusion done on the 16*C final queries before the mask product
    (mean_l(q_l . v) = (mean_l q_l) . v), the region mask baked as a constant, the seen bias
    constant.

    forward(image [1,3,S,S][, text [C,D]]) -> (scores [1,C,S/16,S/16], labels int64 [1,S,S]).
    """

    def __init__(
        self,
        model: nn.Module,
        text: torch.Tensor,
        bias: torch.Tensor,
        vocab_mode: str,
        output: str = "scores",
    ):
        super().__init__()
        head = model.decode_head
        self.backbone, self.lateral_proj = model.backbone, head.lateral_proj
        self.layers_q, self.layers_v = head.decoder_q.layers, head.decoder_v.layers
        self.query = _QueryText(head.q_proj, text, vocab_mode)
        self.register_buffer("bias", _check_bias(bias, vocab_mode), persistent=False)
        self.output = output

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None):
        return self.decode(*self.backbone(image), text=text)

    def decode(
        self,
        patches: torch.Tensor,
        cls: torch.Tensor,
        regions: torch.Tensor,
        text: torch.Tensor | None = None,
    ):
        """After the backbone: patches [1,D,h,w], cls [1,D], regions [1,D,4,4] -> (scores,
        labels)."""
        text, q_text = self.query(text)
        bsz, dim, gh, gw = patches.shape
        n_cls, n_reg = text.shape[0], regions.shape[2] * regions.shape[3]
        reg = regions.flatten(2).transpose(1, 2) + cls[:, None]  # [B,16,D]
        q = ((reg[:, :, None] * text[None, None]) @ self.query.w_a + q_text).reshape(bsz, -1, dim)
        reg_up = F.interpolate(regions, size=(gh, gw), mode="bilinear", align_corners=False)
        lat = self.lateral_proj(
            torch.cat(
                [
                    reg_up.flatten(2).transpose(1, 2),
                    cls[:, None].expand(-1, gh * gw, -1),
                    patches.flatten(2).transpose(1, 2),
                ],
                dim=-1,
            )
        )
        for layer_q, layer_v in zip(self.layers_q, self.layers_v):
            q, lat = layer_q(q, lat)[0], layer_v(lat, q)[0]
        q_mean = q.reshape(bsz, n_reg, n_cls, dim).mean(dim=1)
        logits = (q_mean @ lat.transpose(1, 2)).reshape(bsz, n_cls, gh, gw)
        size = (gh * self.backbone.patch, gw * self.backbone.patch)
        return _scores_and_labels(logits, self.bias, size, self.output)
