"""Flat export configuration shared by every method's builder."""

from __future__ import annotations

from dataclasses import dataclass

VOCAB_MODES = ("fixed", "input")


@dataclass(frozen=True)
class ExportCfg:
    """One export job. MaskCLIP-specific switches sit flat beside the general ones.

    Attributes:
        method, backbone: registry method name and open_clip backbone name.
        output: deployable folder to write.
        classes: vocabulary spec (built-in name, text file, or "a,b,c").
        pretrained: ``none`` (random), an open_clip tag, or a checkpoint path.
        fallback_random: if the weights cannot be obtained, continue with random ones (loudly).
        image_size: fixed square input side, pixels.
        vocab_mode: ``fixed`` (classifier baked in) or ``input`` (classifier is a graph input).
        atol, min_label_agreement: parity gates between PyTorch and onnxruntime.
    """

    method: str
    backbone: str
    output: str
    classes: str
    pretrained: str = "none"
    fallback_random: bool = False
    seed: int = 0
    templates: str = "maskclip85"
    image_size: int = 448
    vocab_mode: str = "fixed"
    opset: int = 17
    simplify: bool = True
    atol: float = 1e-4
    min_label_agreement: float = 0.999
    cache_dir: str | None = None
    residual: bool = True
    ffn: bool = True
    numerics: str = "official"
    key_smoothing: bool = True
    ks_thresh: float = 1.0
    ks_norm: str = "spatial"
    prompt_denoising: bool = True
    pd_thresh: float = 0.5

    def __post_init__(self):
        if self.vocab_mode not in VOCAB_MODES:
            raise ValueError(f"vocab_mode must be one of {VOCAB_MODES}, got {self.vocab_mode!r}")
        if self.opset < 17:
            raise ValueError(f"opset must be >= 17 (LayerNormalization), got {self.opset}")
