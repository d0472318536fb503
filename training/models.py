"""Building the zero-shot models (ZegCLIP, CLIP-RC) over a CLIP ViT, and the official freezing
rule. Which builder a method uses is its registry entry's ``model_builder``."""

from __future__ import annotations

from torch import nn

from runtime.errors import UnknownNameError
from training.clip_loader import LoadedClip
from training.cliprc import ClipRc
from training.methods import get_method
from training.zegclip import ZegClip, ZegClipCfg


def text_dim(clip: LoadedClip) -> int:
    """Width D of the joint embedding (512 for ViT-B/16, 1024 for RN50), ViT or ResNet."""
    return int(clip.model.visual.output_dim)


def build_model(method: str, clip: LoadedClip, cfg: ZegClipCfg) -> nn.Module:
    """``method``'s model over ``clip`` (its registry ``model_builder``), for the zero-shot
    methods (ZegCLIP, CLIP-RC)."""
    spec = get_method(method)
    if spec.kind != "zero_shot":
        raise UnknownNameError(f"{method} is not a zero-shot method (it is {spec.kind})")
    return spec.load("model_builder")(clip, cfg)


def _frozen_as_official(model: nn.Module) -> nn.Module:
    """Official ``exclude_key='prompt'``: in the backbone only parameters whose name contains
    "prompt" train (so CLIP-RC's region tokens stay frozen); the head trains fully."""
    for name, p in model.backbone.named_parameters():
        p.requires_grad_("prompt" in name)
    return model


def _vit(clip: LoadedClip, method: str) -> nn.Module:
    if clip.kind != "vit":
        raise UnknownNameError(f"{method} needs a ViT backbone, got {clip.backbone} ({clip.kind})")
    return clip.model.visual


def build_zegclip(clip: LoadedClip, cfg: ZegClipCfg) -> nn.Module:
    """ZegCLIP over ``clip``'s visual tower (its modules are shared, not copied)."""
    return _frozen_as_official(ZegClip(_vit(clip, "zegclip"), cfg, text_dim(clip)))


def build_cliprc(clip: LoadedClip, cfg: ZegClipCfg) -> nn.Module:
    """CLIP-RC over ``clip``'s visual tower (its modules are shared, not copied)."""
    return _frozen_as_official(ClipRc(_vit(clip, "cliprc"), cfg, text_dim(clip)))


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that train."""
    return [n for n, p in model.named_parameters() if p.requires_grad]
