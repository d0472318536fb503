"""Configs of the training-free "last-block surgery" methods (SCLIP, ClearCLIP, NACLIP, ...).

One factory, so each method module states only its published defaults; the model lives in
``training.surgery`` and the exporter is the shared ``export.builders:build_training_free``.
"""

from __future__ import annotations

import dataclasses

from training.methods.spec import option, templates_option

# OpenAI CLIP's normalisation on 0..255 (the configs of SCLIP, ClearCLIP and NACLIP).
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)
ATTENTIONS = ("value", "csa", "qq", "kk")


def surgery_config(
    name: str,
    doc: str,
    *,
    attention: str,
    residual: bool,
    ffn: bool,
    image_size: int,
    slide_stride: int,
    short_side: int,
    logit_scale: float,
    templates: str = "imagenet80",
    gaussian_std: float = 0.0,
    prob_thd: float = 0.0,
    pamr: bool = False,
    pamr_steps: int = 10,
    pamr_dilations: tuple[int, ...] = (8, 16),
    module: str = __name__,
) -> type:
    """A flat frozen config dataclass named ``name`` whose defaults are the arguments.

    Fields (each a ``python -m export.build`` flag): attention (``value`` = identity, MaskCLIP;
    ``csa`` = softmax(qq^T s) + softmax(kk^T s), SCLIP; ``qq`` ClearCLIP; ``kk`` NACLIP), residual
    and ffn of the last block, gaussian_std (NACLIP's neighbourhood bias in patches; 0 = none),
    image_size (the square window), slide_stride and short_side (the method's slide inference),
    logit_scale (multiplies the cosine logits: softmax of the output is the method's
    probability), prob_thd (background probability threshold, recorded for the runtime),
    templates, pamr / pamr_steps / pamr_dilations (PAMR refinement in the graph), mean, std.
    """
    fields = [
        (
            "image_size",
            int,
            option(image_size, "square window side in pixels (multiple of the patch size)"),
        ),
        ("templates", str, templates_option(templates, "prompt template set")),
        ("attention", str, option(attention, "last-block attention", choices=ATTENTIONS)),
        ("residual", bool, option(residual, "keep the last block's residual")),
        ("ffn", bool, option(ffn, "keep the last block's FFN")),
        (
            "gaussian_std",
            float,
            option(gaussian_std, "Gaussian neighbourhood bias std in patches (0: none)"),
        ),
        (
            "logit_scale",
            float,
            option(logit_scale, "scale on the cosine logits (softmax temperature)"),
        ),
        ("slide_stride", int, option(slide_stride, "slide inference step in pixels")),
        ("short_side", int, option(short_side, "resize images to this short side first (0: no)")),
        ("prob_thd", float, option(prob_thd, "background probability threshold (0: off)")),
        ("pamr", bool, option(pamr, "PAMR refinement in the graph (output at input resolution)")),
        ("pamr_steps", int, option(pamr_steps, "PAMR iterations")),
        ("pamr_dilations", tuple[int, ...], option(pamr_dilations, "PAMR dilations")),
        ("mean", tuple[float, float, float], option(CLIP_MEAN, "input mean, RGB on 0..255")),
        ("std", tuple[float, float, float], option(CLIP_STD, "input std, RGB on 0..255")),
    ]
    cls = dataclasses.make_dataclass(
        name,
        fields,
        frozen=True,
        namespace={"__doc__": doc, "__post_init__": _check, "__module__": module},
    )
    return cls


def _check(cfg) -> None:
    if cfg.attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {cfg.attention!r}")
    for name in ("image_size", "slide_stride", "pamr_steps"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.short_side < 0 or cfg.gaussian_std < 0 or cfg.logit_scale <= 0:
        raise ValueError("short_side and gaussian_std must be >= 0 and logit_scale > 0")
    if not 0.0 <= cfg.prob_thd < 1.0:
        raise ValueError(f"prob_thd must be in [0, 1), got {cfg.prob_thd}")
    if not cfg.pamr_dilations or min(cfg.pamr_dilations) <= 0:
        raise ValueError(f"pamr_dilations must be positive, got {cfg.pamr_dilations}")
    if cfg.gaussian_std > 0 and cfg.attention != "kk":
        raise ValueError(
            f"gaussian_std is NACLIP's bias on k-k attention: it needs --attention kk, "
            f"got {cfg.attention}"
        )
    if min(cfg.std) <= 0:
        raise ValueError(f"std must be positive, got {cfg.std}")
