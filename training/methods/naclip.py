"""NACLIP (Hajimiri et al., WACV 2025, sinahmr/NACLIP): k-k attention plus a Gaussian
neighbourhood bias (std 5 patches, baked as a constant) in CLIP's last block, residual and FFN
removed. Training-free."""

from __future__ import annotations

from training.methods import MethodSpec, Published, register
from training.methods.surgery import surgery_config

NaClipCfg = surgery_config(
    "NaClipCfg",
    __doc__,
    attention="kk",
    residual=False,
    ffn=False,
    gaussian_std=5.0,
    image_size=224,
    slide_stride=112,
    short_side=336,
    logit_scale=40.0,
    pamr=True,
    module=__name__,
)

SPEC = register(
    MethodSpec(
        name="naclip",
        summary="NACLIP: training-free, k-k attention + Gaussian neighbourhood, no residual/FFN",
        config=NaClipCfg,
        kind="training_free",
        smoke_options=(("image_size", 64), ("slide_stride", 32)),
        exporter="export.builders:build_training_free",
        model_builder="training.surgery:build_surgery_model",
        wrapper="export.wrappers:LogitsOnnxModel",
        eval_mode="slide",
        published=(
            Published("VOC20", 83.03, note="PAMR on"),
            Published("VOC21", 64.07, note="PAMR on"),
            Published("Context59", 38.35, note="PAMR on"),
            Published("Context60", 34.99, note="PAMR on"),
            Published("COCO-Object", 36.19, note="PAMR on"),
            Published("COCO-Stuff164k", 25.69, note="PAMR on"),
            Published("Cityscapes", 38.27, note="PAMR on"),
            Published("ADE20K", 19.05, note="PAMR on"),
        ),
    )
)
