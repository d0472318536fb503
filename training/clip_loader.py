"""Load an open_clip model from a pretrained tag, a local checkpoint, or random init.

Registers the package's tiny test configs (``ovss-tiny-vit``, ``ovss-tiny-rn``) with open_clip on
import, so every CLI and test can name them like any other backbone.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from torch import nn

from runtime.errors import CheckpointError, UnknownNameError

log = logging.getLogger(__name__)

open_clip.add_model_config(Path(__file__).parent / "model_configs")

RANDOM = ("none", "random", "")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class LoadedClip:
    """An open_clip CLIP model in eval mode, its tokenizer and where its weights came from.

    Attributes:
        weights_sha256: sha256 over the state dict (sorted names, raw tensor bytes): the same
            weights give the same hash whatever file format they came from.
        random: True when the weights are random-init (segmentations are meaningless).
    """

    model: nn.Module
    tokenizer: Any
    backbone: str
    source: str
    weights_sha256: str
    random: bool

    @property
    def kind(self) -> str:
        """'vit' or 'resnet', from the visual tower's type."""
        return visual_kind(self.model.visual)


def visual_kind(visual: nn.Module) -> str:
    """'vit' for open_clip VisionTransformer, 'resnet' for ModifiedResNet; else UnknownNameError."""
    if isinstance(visual, open_clip.transformer.VisionTransformer):
        return "vit"
    if isinstance(visual, open_clip.modified_resnet.ModifiedResNet):
        return "resnet"
    raise UnknownNameError(
        f"unsupported visual tower {type(visual).__name__}: need a ViT or ModifiedResNet"
    )


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over ``model.state_dict()`` in sorted key order (names and raw bytes)."""
    return tensors_sha256(model.state_dict())


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over a {name: tensor} dict in sorted key order (names and raw bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _check_backbone(backbone: str) -> None:
    if backbone not in open_clip.list_models():
        vit_rn = [
            m for m in open_clip.list_models() if m.startswith(("ViT-B", "ViT-L", "RN", "ovss"))
        ]
        raise UnknownNameError(f"unknown backbone {backbone!r}; e.g. {sorted(vit_rn)[:12]}")


def _is_path(pretrained: str) -> bool:
    return (
        Path(pretrained).exists() or "/" in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)
    )


def _load_file(model: nn.Module, path: str) -> None:
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        result = open_clip.load_checkpoint(model, path, strict=False, weights_only=True)
    except Exception as e:  # torch/safetensors raise many types for unreadable or unsafe files
        raise CheckpointError(
            f"cannot load checkpoint {path!r}: {type(e).__name__}: {e}"[:800]
        ) from e
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path!r} does not fit this backbone: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )


def load_clip(backbone: str, pretrained: str = "none", seed: int = 0) -> LoadedClip:
    """Create an open_clip model.

    Args:
        backbone: open_clip model name (``ViT-B-16``, ``RN50``, ``ovss-tiny-vit``, ...).
        pretrained: ``none`` (random init from ``seed``), an open_clip pretrained tag
            (``openai``, ``laion2b_s34b_b88k``, ...), or a checkpoint path (safetensors, or a torch
            file read with ``weights_only=True``; a ``state_dict`` wrapper and ``module.``
            prefixes are
            accepted).
        seed: torch seed for random init.
    Raises:
        UnknownNameError: unknown backbone or pretrained tag.
        CheckpointError: missing/unreadable checkpoint, wrong keys, or weights not obtainable.
    """
    _check_backbone(backbone)
    torch.manual_seed(seed)
    if pretrained in RANDOM:
        model, source = (
            open_clip.create_model(backbone, pretrained=None),
            f"random-init (seed {seed})",
        )
    elif _is_path(pretrained):
        model = open_clip.create_model(backbone, pretrained=None)
        _load_file(model, pretrained)
        source = f"file:{Path(pretrained).resolve()}"
    else:
        model, source = _create_pretrained(backbone, pretrained), f"open_clip:{pretrained}"
    model.eval()
    random = pretrained in RANDOM
    if random:
        log.warning("%s has RANDOM weights: its segmentations are meaningless", backbone)
    return LoadedClip(
        model, open_clip.get_tokenizer(backbone), backbone, source, state_dict_sha256(model), random
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if huggingface_hub is not in offline mode and its endpoint accepts a TCP connection."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable():
    """Run in huggingface_hub's offline mode when its endpoint cannot be reached.

    Offline mode still serves weights from the local cache but fails at once instead of retrying
    for ~45 s per missing file.
    """
    from huggingface_hub import constants

    if hub_reachable():
        yield
        return
    log.info("model hub unreachable: looking in the local cache only")
    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _create_pretrained(backbone: str, tag: str) -> nn.Module:
    tags = open_clip.list_pretrained_tags_by_model(backbone)
    if tag not in tags:
        raise UnknownNameError(f"no pretrained tag {tag!r} for {backbone}; known: {tags}")
    quick_gelu = bool(open_clip.get_pretrained_cfg(backbone, tag).get("quick_gelu", False))
    try:
        with offline_unless_reachable():
            return open_clip.create_model(backbone, pretrained=tag, force_quick_gelu=quick_gelu)
    except Exception as e:  # hub errors come in many types; say what failed and why
        raise CheckpointError(
            f"cannot obtain pretrained weights {backbone}/{tag} (offline, or not cached?): "
            f"{type(e).__name__}: {e}"[:800]
        ) from e
