"""CLIP-RC (Zhang et al., CVPR 2024): region tokens, region alignment, recovery decoder (train
only). Model: ``training.cliprc``; the config is ZegCLIP's (same backbone, text, schedules)."""

from __future__ import annotations

from training.methods import MethodSpec, Published, register
from training.methods.zegclip import SETTINGS, ZegClipCfg

SPEC = register(
    MethodSpec(
        name="cliprc",
        summary="CLIP-RC: region bridge tokens, region alignment, dual cross-attention decoder",
        config=ZegClipCfg,
        kind="zero_shot",
        exporter="export.builders:build_cliprc",
        model_builder="training.models:build_cliprc",
        wrapper="export.wrappers:ClipRcOnnxModel",
        settings=SETTINGS,
        accepts=("checkpoint", "seen", "text_embeddings"),
        train_loop="training.train:zero_shot_loop",
        eval_mode="slide",
        score="probability",
        published=(
            Published("VOC (15/5) hIoU", 88.4, note="inductive"),
            Published("VOC (15/5) hIoU", 93.0, note="transductive"),
            Published("COCO-Stuff (156/15) hIoU", 41.2, note="inductive"),
        ),
    )
)
