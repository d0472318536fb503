"""SCLIP (Wang et al., ECCV 2024, wangf3014/SCLIP): correlative self-attention in CLIP's last block,
softmax(q q^T s) + softmax(k k^T s), with the block's residual and FFN kept. Training-free."""

from __future__ import annotations

from training.methods import MethodSpec, Published, register
from training.methods.surgery import surgery_config

SClipCfg = surgery_config(
    "SClipCfg",
    __doc__,
    attention="csa",
    residual=True,
    ffn=True,
    image_size=224,
    slide_stride=112,
    short_side=336,
    logit_scale=40.0,
    module=__name__,
)

SPEC = register(
    MethodSpec(
        name="sclip",
        summary="SCLIP: training-free, correlative self-attention in the last block",
        config=SClipCfg,
        kind="training_free",
        smoke_options=(("image_size", 64), ("slide_stride", 32)),
        exporter="export.builders:build_training_free",
        model_builder="training.surgery:build_surgery_model",
        wrapper="export.wrappers:LogitsOnnxModel",
        eval_mode="slide",
        published=(
            Published("VOC20", 81.54),
            Published("VOC21", 59.63),
            Published("Context59", 34.46),
            Published("Context60", 31.74),
            Published("COCO-Object", 33.52),
            Published("COCO-Stuff164k", 22.77),
            Published("Cityscapes", 32.34),
            Published("ADE20K", 16.45),
        ),
    )
)
