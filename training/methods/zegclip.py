"""ZegCLIP (Zhou et al., CVPR 2023): deep prompt tuning, relationship descriptor, cross-attention
decoder. Model: ``training.zegclip``; CLIP-RC shares this config (it is built on ZegCLIP's code)."""

from __future__ import annotations

from dataclasses import dataclass

from training.methods import MethodSpec, Published, option, register
from training.methods.spec import templates_option

SETTINGS = ("inductive", "transductive")
# The official slide_inference step at the official 512 crop.
OFFICIAL_STRIDE, OFFICIAL_CROP = 426, 512


def slide_step(cfg) -> int:
    """The slide step of a ZegCLIP / CLIP-RC config: ``slide_stride``, or the official 426 / 512
    ratio of its ``image_size`` (426 at 512, 53 at 64)."""
    if cfg.slide_stride:
        return cfg.slide_stride
    return max(1, round(cfg.image_size * OFFICIAL_STRIDE / OFFICIAL_CROP))


@dataclass(frozen=True)
class ZegClipCfg:
    """ZegCLIP (and CLIP-RC) model switches; defaults are the official VOC config.

    Attributes:
        image_size: training crop / export side (official 512; CLIP-RC must use its grid size).
        num_tokens: VPT prompt tokens per layer (10 VOC, 100 COCO and cross-dataset configs).
        total_d_layer: layers with deep prompts; None = every block after the first (11 for ViT-B).
        decoder_layers, decoder_heads: TPN decoder depth and heads.
        seen_bias: subtracted from seen-class probabilities at inference (0.1 inductive, 0 ST).
        templates: prompt template set for new vocabularies (VOC's single "a photo of a {}").
        slide_stride: slide inference step (crop = image_size), pixels; None = the official
            426 / 512 of ``image_size`` (``slide_step``).
    """

    image_size: int = option(512, "square input side (default: the checkpoint's crop)")
    num_tokens: int = option(10, "VPT prompt tokens per layer (random head only)")
    total_d_layer: int | None = option(None, "layers with deep prompts (random head only)")
    decoder_layers: int = option(3, "decoder layers (random head only)")
    decoder_heads: int = option(8, "decoder heads (random head only)")
    seen_bias: float = option(
        0.1, "subtracted from seen-class scores (default: 0.1 inductive, 0 transductive)"
    )
    templates: str = templates_option("zegclip", "prompt template set (default: the checkpoint's)")
    slide_stride: int | None = option(
        None, "slide inference step in pixels (default: 426/512 of the input side)"
    )


SPEC = register(
    MethodSpec(
        name="zegclip",
        summary="ZegCLIP: deep prompt tuning + relationship descriptor + cross-attention decoder",
        config=ZegClipCfg,
        kind="zero_shot",
        exporter="export.builders:build_zegclip",
        model_builder="training.models:build_zegclip",
        wrapper="export.wrappers:ZegClipOnnxModel",
        settings=SETTINGS,
        accepts=("checkpoint", "seen", "text_embeddings"),
        train_loop="training.train:zero_shot_loop",
        eval_mode="slide",
        score="probability",
        published=(
            Published("VOC (15/5) hIoU", 84.3, note="inductive"),
            Published("VOC (15/5) hIoU", 91.1, note="transductive"),
            Published("COCO-Stuff (156/15) hIoU", 40.8, note="inductive"),
        ),
    )
)
