"""MaskCLIP (Zhou et al., ECCV 2022): dense features from CLIP's last block value path, with key
smoothing and prompt denoising fused into the graph. Model: ``training.maskclip``."""

from __future__ import annotations

from dataclasses import dataclass

from training.methods import MethodSpec, Published, option, register
from training.methods.spec import templates_option

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
NUMERICS = ("official", "clip")
KS_NORMS = ("spatial", "token")


@dataclass(frozen=True)
class MaskClipCfg:
    """MaskCLIP switches; defaults reproduce the official implementation.

    Attributes:
        image_size: fixed square input side (multiple of the feature stride).
        templates: prompt template set (``training.text_classifier.TEMPLATE_SETS``).
        residual, ffn: keep the last block's residual / FFN on the value path (official: both).
        numerics: ``official`` = exact GELU and LayerNorm eps 1e-6 in the visual tower (MaskCLIP's
            mmseg ViT); ``clip`` = the tower as open_clip built it (QuickGELU, eps 1e-5 for OpenAI).
        key_smoothing, ks_thresh, ks_norm: key smoothing, its threshold and k normalisation axis.
        prompt_denoising, pd_thresh: prompt denoising and its threshold.
        mean, std: input normalisation, RGB on 0..255 (ImageNet, as the official configs).
    """

    image_size: int = option(448, "square input side in pixels (multiple of the patch size)")
    templates: str = templates_option("maskclip85", "prompt template set")
    residual: bool = option(True, "keep the last block's residual on the value path")
    ffn: bool = option(True, "keep the last block's FFN on the value path")
    numerics: str = option(
        "official", "official (GELU, LN eps 1e-6) or clip (as open_clip)", choices=NUMERICS
    )
    key_smoothing: bool = option(True, "key smoothing (fused into the graph)")
    ks_thresh: float = option(1.0, "key smoothing confidence threshold")
    ks_norm: str = option("spatial", "key normalisation axis", choices=KS_NORMS)
    prompt_denoising: bool = option(True, "prompt denoising (fused into the graph)")
    pd_thresh: float = option(0.5, "prompt denoising threshold")
    mean: tuple[float, float, float] = option(IMAGENET_MEAN, "input mean, RGB on 0..255")
    std: tuple[float, float, float] = option(IMAGENET_STD, "input std, RGB on 0..255")

    def __post_init__(self):
        if self.numerics not in NUMERICS:
            raise ValueError(f"numerics must be one of {NUMERICS}, got {self.numerics!r}")
        if self.ks_norm not in KS_NORMS:
            raise ValueError(f"ks_norm must be one of {KS_NORMS}, got {self.ks_norm!r}")
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")


def score_rule(options: dict) -> tuple[str, float]:
    """MaskCLIP's probabilities: without key smoothing the graph outputs raw cosines, and
    MaskCLIP's own confidence is softmax(100 * cosine) (its refinement's temperature); with it
    the output is W @ softmax(100 * cosine) (W not normalised, so neither bounded nor summing to
    1), and the probabilities are the official pipeline's softmax over classes of it."""
    return ("softmax", 1.0) if options.get("key_smoothing", True) else ("softmax", 100.0)


SPEC = register(
    MethodSpec(
        name="maskclip",
        summary="MaskCLIP: training-free dense CLIP (value path, key smoothing, prompt denoising)",
        config=MaskClipCfg,
        kind="training_free",
        exporter="export.builders:build_training_free",
        model_builder="training.maskclip:build_maskclip_model",
        wrapper="export.wrappers:LogitsOnnxModel",
        score_rule="training.methods.maskclip:score_rule",
        published=(
            Published("VOC20", 49.5, note="annotation-free, KS/PD off (repo README)"),
            Published("Context59", 21.7, note="annotation-free"),
            Published("COCO-Stuff171", 12.5, note="annotation-free"),
        ),
    )
)
