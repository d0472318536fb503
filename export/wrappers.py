"""Export-only wrappers: fixed graph I/O around the training models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskClipOnnxModel(nn.Module):
    """Used only for ONNX export: MaskCLIP with refinement fused, and a label map output.

    The text classifier is a constant (``vocab_mode='fixed'``) or the second graph input.
    forward(image [1,3,S,S][, text [C,D]]) -> (logits [1,C,S/p,S/p], labels int64 [1,S,S]).
    """

    def __init__(self, model: nn.Module, text: torch.Tensor, vocab_mode: str):
        super().__init__()
        self.model, self.vocab_mode = model, vocab_mode
        self.register_buffer("text", text.float().contiguous(), persistent=False)

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None):
        logits = self.model(image, self.text if text is None else text)
        up = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return logits, up.argmax(dim=1)
