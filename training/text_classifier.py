"""Text classifiers: CLIP text embeddings of class names under a prompt ensemble, cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from tqdm import tqdm

from runtime.fsutil import atomic_save_npy
from runtime.vocab import validate_classes
from training.clip_loader import LoadedClip

log = logging.getLogger(__name__)

# MaskCLIP's 85: CLIP's 80 ImageNet templates plus five scene templates.
SCENE_TEMPLATES = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)
TEMPLATE_SETS = {
    "maskclip85": tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES) + SCENE_TEMPLATES,
    # CLIP's 80 ImageNet templates (SCLIP / ClearCLIP / NACLIP prompts/imagenet_template.py).
    "imagenet80": tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES),
    "single": ("a photo of a {}.",),
    # ZegCLIP / CLIP-RC VOC embeddings (get_embedding.ipynb): one template, no full stop.
    "zegclip": ("a photo of a {}",),
}


def default_cache_dir() -> Path:
    """``$OVSS_CACHE_DIR/text`` or ``~/.cache/ovss-edge/text``."""
    root = os.environ.get("OVSS_CACHE_DIR") or Path.home() / ".cache" / "ovss-edge"
    return Path(root) / "text"


def cache_key(weights_sha256: str, classes: tuple[str, ...], templates: tuple[str, ...]) -> str:
    """sha256 of (weights hash, classes, templates): the cache file's name."""
    blob = json.dumps([weights_sha256, list(classes), list(templates)]).encode()
    return hashlib.sha256(blob).hexdigest()


def _can_truncate(model: torch.nn.Module) -> bool:
    """True for CLIP text towers with a causal mask and EOT (argmax) pooling."""
    return (
        getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model, "attn_mask", None) is not None
        and isinstance(getattr(model, "positional_embedding", None), torch.Tensor)
    )


@contextmanager
def _context_length(model: torch.nn.Module, length: int):
    """Temporarily run the text tower on ``length`` positions instead of the full context.

    Exact for causal, EOT-pooled towers: the EOT token never attends to the padding after it, so
    dropping trailing padding changes nothing but the cost (prompts use ~10-20 of 77 positions).
    """
    pos, mask = model.positional_embedding, model.attn_mask
    model.positional_embedding = torch.nn.Parameter(pos[:length], requires_grad=False)
    model.attn_mask = mask[:length, :length]
    try:
        yield
    finally:
        model.positional_embedding, model.attn_mask = pos, mask


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on [N, L] tokens, truncated to the longest prompt where exact."""
    if not _can_truncate(model):
        return model.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1  # EOT has the largest id in CLIP's vocabulary
    with _context_length(model, length):
        return model.encode_text(tokens[:, :length])


@torch.no_grad()
def encode_classes(
    clip: LoadedClip, classes: tuple[str, ...], templates: tuple[str, ...], batch: int = 256
) -> torch.Tensor:
    """Prompt-ensemble embeddings: per class, normalise each template's embedding, mean,
    renormalise.

    Returns:
        torch.Tensor: float32 [C, D], unit rows.
    """
    rows = []
    per_batch = max(1, batch // len(templates))
    chunks = [classes[i : i + per_batch] for i in range(0, len(classes), per_batch)]
    for chunk in tqdm(chunks, desc="text classifier", unit="batch", disable=len(chunks) < 4):
        tokens = clip.tokenizer([t.format(c) for c in chunk for t in templates])
        emb = F.normalize(encode_tokens(clip.model, tokens).float(), dim=-1)
        emb = emb.view(len(chunk), len(templates), -1).mean(dim=1)
        rows.append(F.normalize(emb, dim=-1))
    return torch.cat(rows)


def build_text_classifier(
    clip: LoadedClip, classes, templates: str = "maskclip85", cache_dir: str | Path | None = None
) -> torch.Tensor:
    """Text classifier for ``classes``, read from or written to the cache.

    Args:
        clip: the loaded CLIP (its weights hash keys the cache).
        classes: class names (validated: non-empty, no blanks or duplicates).
        templates: a key of TEMPLATE_SETS (``maskclip85`` or ``single``).
        cache_dir: cache folder (default ``default_cache_dir()``); files are ``<key>.npy``.
    Returns:
        torch.Tensor: float32 [C, D], L2-normalised rows.
    """
    classes = validate_classes(classes)
    if templates not in TEMPLATE_SETS:
        raise ValueError(f"unknown template set {templates!r}; choose from {sorted(TEMPLATE_SETS)}")
    temps = TEMPLATE_SETS[templates]
    path = (
        Path(cache_dir or default_cache_dir())
        / f"{cache_key(clip.weights_sha256, classes, temps)}.npy"
    )
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape[0] == len(classes):
                log.info("text classifier from cache %s", path)
                return torch.from_numpy(cached)
        except (ValueError, OSError) as e:
            log.warning("ignoring unreadable cache file %s: %s", path, e)
    emb = encode_classes(clip, classes, temps)
    atomic_save_npy(path, emb.numpy())
    return emb
