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
        templates: prompt template set; None = the method's own (MaskCLIP ``maskclip85``,
            ZegCLIP / CLIP-RC ``zegclip``).
        image_size: fixed square input side, pixels; None = the method's default (MaskCLIP 448,
            ZegCLIP / CLIP-RC the checkpoint's training size, 512 for ViT-B/16).
        checkpoint: ZegCLIP / CLIP-RC weights (our training checkpoint or an official release), or
            our MaskCLIP+ training checkpoint.
        seen: classes seen in training (names, comma-separated) that get ``seen_bias`` subtracted;
            None = from our checkpoint by name (official checkpoints carry no names: pass it).
        seen_bias: None = the model's 0.1 for inductive models or whenever ``seen`` is given,
            else 0 (transductive models).
        text_embeddings: an .npy [C,D] classifier to use as it is (e.g. the official float16).
        num_tokens: VPT prompts when building without a checkpoint (random head).
        student: MaskCLIP+ target network (a ``training.students.STUDENTS`` name); read from the
            checkpoint when one is given.
        vocab_mode: ``fixed`` (classifier baked in) or ``input`` (classifier is a graph input).
        text_encoder: also write CLIP's text tower (``text_encoder.onnx``) and BPE vocabulary so
            the device can encode new class names without torch; needs ``vocab_mode='input'``.
        atol, min_label_agreement: parity gates between PyTorch and onnxruntime.
    """

    method: str
    backbone: str
    output: str
    classes: str
    pretrained: str = "none"
    fallback_random: bool = False
    seed: int = 0
    templates: str | None = None
    image_size: int | None = None
    vocab_mode: str = "fixed"
    text_encoder: bool = False
    opset: int = 17
    simplify: bool = True
    atol: float = 1e-4
    min_label_agreement: float = 0.999
    cache_dir: str | None = None
    checkpoint: str | None = None
    seen: str | None = None
    seen_bias: float | None = None
    text_embeddings: str | None = None
    num_tokens: int = 10
    student: str | None = None
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
