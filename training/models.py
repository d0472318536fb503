"""The one registry from trainable method name to model class, and the official freezing rule."""

from __future__ import annotations

from torch import nn

from runtime.errors import UnknownNameError
from training.clip_loader import LoadedClip
from training.cliprc import ClipRc
from training.zegclip import ZegClip, ZegClipCfg

MODELS = {
    "zegclip": ZegClip,
    "cliprc": ClipRc,
}


def text_dim(clip: LoadedClip) -> int:
    """Width D of the joint embedding (512 for ViT-B/16, 1024 for RN50), ViT or ResNet."""
    return int(clip.model.visual.output_dim)


def build_model(method: str, clip: LoadedClip, cfg: ZegClipCfg) -> nn.Module:
    """``method``'s model over ``clip``'s visual tower (its modules are shared, not copied).

    Freezing follows the official ``exclude_key='prompt'``: in the backbone only parameters whose
    name contains "prompt" train (so CLIP-RC's region tokens stay frozen); the head trains fully.
    """
    if method not in MODELS:
        raise UnknownNameError(f"unknown method {method!r}; trainable methods: {sorted(MODELS)}")
    if clip.kind != "vit":
        raise UnknownNameError(f"{method} needs a ViT backbone, got {clip.backbone} ({clip.kind})")
    model = MODELS[method](clip.model.visual, cfg, text_dim(clip))
    for name, p in model.backbone.named_parameters():
        p.requires_grad_("prompt" in name)
    return model


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that train."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def build_zegclip(clip: LoadedClip, cfg: ZegClipCfg) -> nn.Module:
    """ZegCLIP over ``clip`` (the registry's ``model_builder(clip, method_cfg)`` form)."""
    return build_model("zegclip", clip, cfg)


def build_cliprc(clip: LoadedClip, cfg: ZegClipCfg) -> nn.Module:
    """CLIP-RC over ``clip`` (the registry's ``model_builder(clip, method_cfg)`` form)."""
    return build_model("cliprc", clip, cfg)
