"""ClearCLIP (Lan et al., ECCV 2024, mc-lan/ClearCLIP): q-q attention in CLIP's last block with the
residual and the FFN removed. Training-free."""

from __future__ import annotations

from training.methods import MethodSpec, register
from training.methods.surgery import surgery_config

ClearClipCfg = surgery_config(
    "ClearClipCfg",
    __doc__,
    attention="qq",
    residual=False,
    ffn=False,
    image_size=448,
    slide_stride=224,
    short_side=448,
    logit_scale=50.0,
    module=__name__,
)

SPEC = register(
    MethodSpec(
        name="clearclip",
        summary="ClearCLIP: training-free, q-q attention, no residual, no FFN in the last block",
        config=ClearClipCfg,
        kind="training_free",
        smoke_options=(("image_size", 64), ("slide_stride", 32)),
        exporter="export.builders:build_training_free",
        model_builder="training.surgery:build_surgery_model",
        wrapper="export.wrappers:LogitsOnnxModel",
        eval_mode="slide",
    )
)
