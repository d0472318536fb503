"""Import the released ZegCLIP and CLIP-RC checkpoints (mmcv runner files) as they are.

The official state dict has three parts:
- ``backbone.*``: our ``backbone.*`` names one to one (open_clip ViT names plus the prompt keys
  and CLIP-RC's ``region_level_bridge``);
- ``decode_head.*``: our head names, minus modules the official code builds but never runs
  (dropped: every decoder layer's inherited ``self_attn.*`` and ``norm1.*``, and the loss's
  ``empty_weight`` buffer whose shape differs between inductive and self-training configs);
- ``text_encoder.*``: CLIP's text tower, mapped onto the open_clip model's top-level text keys
  (``token_embedding``, ``positional_embedding``, ``transformer.*``, ``ln_final``,
  ``text_projection``). The official code never runs it (it reads a float16 .npy instead); we use
  it to encode vocabularies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from runtime.errors import CheckpointError
from training.vpt import QuickGELU

UNUSED = (
    re.compile(r"^decode_head\..*\.(self_attn|norm1)\."),
    re.compile(r"^decode_head\.loss_decode\."),
)
TEXT_PREFIX = "text_encoder."


@dataclass(frozen=True)
class OfficialLayout:
    """What an official state dict says about the model that wrote it."""

    method: str
    num_tokens: int
    image_size: int
    decoder_layers: int


def unwrap(obj: dict) -> dict:
    """mmcv runner file {'meta','state_dict','optimizer'} (or a bare state dict) -> state dict."""
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict):
        raise CheckpointError(f"checkpoint 'state_dict' is a {type(sd).__name__}, not a dict")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def detect_method(sd: dict) -> str:
    """'cliprc' or 'zegclip' from the head's module names; CheckpointError otherwise."""
    if (
        any(k.startswith("decode_head.decoder_q.") for k in sd)
        or "backbone.region_level_bridge" in sd
    ):
        return "cliprc"
    if any(k.startswith("decode_head.decoder_1.") for k in sd):
        return "zegclip"
    raise CheckpointError(
        "not a ZegCLIP or CLIP-RC checkpoint: no decode_head.decoder_1 / decode_head.decoder_q keys"
    )


def official_layout(sd: dict) -> OfficialLayout:
    """Method, prompt count, input size (from the stored position grid) and decoder depth."""
    method = detect_method(sd)
    needed = (
        "backbone.positional_embedding",
        "backbone.conv1.weight",
        "backbone.prompt_embeddings",
    )
    if any(k not in sd for k in needed):
        raise CheckpointError(f"{method} checkpoint lacks {[k for k in needed if k not in sd]}")
    prefix = (
        "decode_head.decoder_q.layers." if method == "cliprc" else "decode_head.decoder_1.layers."
    )
    layers = {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)}
    pos, patch = sd["backbone.positional_embedding"], sd["backbone.conv1.weight"].shape[-1]
    grid = int(round(math.sqrt(pos.shape[0] - 1)))
    return OfficialLayout(
        method, int(sd["backbone.prompt_embeddings"].shape[1]), grid * patch, len(layers)
    )


def split_official(sd: dict) -> tuple[dict, dict, list[str]]:
    """-> (model state dict, open_clip text-tower state dict, dropped unused keys)."""
    model_sd, text_sd, dropped = {}, {}, []
    for key, value in sd.items():
        if any(p.match(key) for p in UNUSED):
            dropped.append(key)
        elif key.startswith(TEXT_PREFIX):
            text_sd[key[len(TEXT_PREFIX) :]] = value
        else:
            model_sd[key] = value
    return model_sd, text_sd, dropped


def _check(kind: str, target: nn.Module | dict, sd: dict) -> None:
    expected = dict(target.state_dict()) if isinstance(target, nn.Module) else target
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(
        k for k in set(sd) & set(expected) if tuple(sd[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:

        def show(keys):
            return f"{len(keys)} {keys[:8]}{' ...' if len(keys) > 8 else ''}"

        detail = [
            f"missing {show(missing)}" if missing else "",
            f"unexpected {show(unexpected)}" if unexpected else "",
            "shape mismatch "
            + ", ".join(
                f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes[:5]
            )
            if shapes
            else "",
        ]
        raise CheckpointError(f"{kind} keys do not fit: " + "; ".join(d for d in detail if d))


def text_tower_state(clip_model: nn.Module) -> dict:
    """The open_clip CLIP model's text-tower entries (what ``text_encoder.*`` maps onto)."""
    return {
        k: v
        for k, v in clip_model.state_dict().items()
        if not k.startswith("visual.") and k not in ("logit_scale", "logit_bias", "attn_mask")
    }


def load_official(
    model: nn.Module, clip_model: nn.Module | None, sd: dict, method: str
) -> list[str]:
    """Load an official state dict into ``model`` (and the text tower into ``clip_model``).

    Raises CheckpointError for a checkpoint of the other method, or listing missing, unexpected
    and mis-shaped keys. Returns the dropped (known unused) keys.
    """
    found = detect_method(sd)
    if found != method:
        raise CheckpointError(f"this is a {found} checkpoint, but --method is {method}")
    model_sd, text_sd, dropped = split_official(sd)
    _check(f"{method} model", model, model_sd)
    model.load_state_dict(model_sd, strict=True)
    if clip_model is not None and text_sd:
        _check("text encoder", text_tower_state(clip_model), text_sd)
        clip_model.load_state_dict(text_sd, strict=False)
        # The official text encoder is OpenAI CLIP's: QuickGELU, whatever open_clip built.
        for block in clip_model.transformer.resblocks:
            block.mlp.gelu = QuickGELU()
    return dropped
