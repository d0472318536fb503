"""Build a trained model for inference: ZegCLIP / CLIP-RC from our checkpoint or an official one,
a MaskCLIP+ student from our checkpoint."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from runtime.errors import CheckpointError, OvssError, VocabularyError
from training.checkpoint import FORMAT, read_raw
from training.clip_loader import LoadedClip, load_clip, tensors_sha256
from training.methods import get_method
from training.models import build_model, text_dim
from training.official import load_official, official_layout, split_official, unwrap
from training.students import StudentCfg, build_student
from training.text_classifier import build_text_classifier
from training.train_config import TrainCfg, resolve_defaults
from training.zegclip import ZegClipCfg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    """A model ready for inference and what its checkpoint says.

    Attributes:
        classes, text: the training vocabulary and its [C,D] classifier (None for official
            checkpoints, which carry no class names).
        seen: training-seen class indices into ``classes`` (empty when unknown).
        inductive: True when the seen-class bias applies (our inductive runs; official: assumed).
        text_tower: False when the run's CLIP text weights could not be loaded here.
        model_cfg: ZegClipCfg (ZegCLIP, CLIP-RC) or StudentCfg (MaskCLIP+).
        crop_size: the training crop; evaluation resizes the short side to it.
        background: MaskCLIP+ student with a learned background embedding as class 0 (its
            ``text`` then holds classes[1:]).
        templates: the prompt template set the run encoded its classes with (None: unknown,
            e.g. official checkpoints); new vocabularies should use the same.
    """

    method: str
    model: nn.Module
    clip: LoadedClip
    model_cfg: ZegClipCfg | StudentCfg
    classes: tuple[str, ...] | None
    text: torch.Tensor | None
    seen: tuple[int, ...]
    inductive: bool
    source: str
    text_tower: bool = True
    crop_size: int = 512
    background: bool = False
    templates: str | None = None


def model_cfg_of(cfg: TrainCfg) -> ZegClipCfg:
    """The model switches of a (resolved) training config of a zero-shot method."""
    templates = {"templates": cfg.templates} if cfg.templates else {}
    return ZegClipCfg(
        image_size=cfg.crop_size,
        num_tokens=cfg.num_tokens,
        decoder_layers=cfg.decoder_layers,
        decoder_heads=cfg.decoder_heads,
        seen_bias=cfg.seen_bias,
        **templates,
    )


def stored_model_cfg(cls: type, stored: dict, source: str, **overrides):
    """``cls`` (a config dataclass) from a checkpoint's ``model_cfg`` dict: keys this version does
    not know are dropped with a warning, missing ones take their defaults, ``overrides`` win."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(stored) - names)
    if unknown:
        log.warning(
            "%s: model config keys %s are unknown to this version: ignored", source, unknown
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in names}
    try:
        return cls(**{**values, **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: its model config does not fit this version: {e}") from e


def load_trained(
    checkpoint: str | Path,
    method: str | None = None,
    backbone: str = "ViT-B-16",
    seen_bias: float | None = None,
) -> Trained:
    """Our training checkpoint (everything inside; any trainable method) or an official ZegCLIP /
    CLIP-RC mmcv file (``backbone`` needed).

    Raises CheckpointError for unreadable files, a checkpoint of another method than ``method``,
    or keys that do not fit (listing missing and unexpected ones).
    """
    raw = read_raw(checkpoint)
    if raw.get("format") == FORMAT:
        return _ours(raw, method, seen_bias, str(checkpoint))
    return _official(unwrap(raw), method, backbone, seen_bias, str(checkpoint))


def _ours(raw: dict, method: str | None, seen_bias: float | None, source: str) -> Trained:
    if method is not None and raw["method"] != method:
        raise CheckpointError(f"{source} is a {raw['method']} checkpoint, but --method is {method}")
    stored = raw.get("model_cfg")
    try:
        fields = {f.name for f in dataclasses.fields(TrainCfg)}
        cfg = TrainCfg(**{k: v for k, v in raw["cfg"].items() if k in fields})
        if stored is None:  # older checkpoints: the model switches come from the schedule defaults
            cfg = resolve_defaults(cfg)
    except TypeError as e:
        raise CheckpointError(
            f"{source}: its training config does not fit this version: {e}"
        ) from e
    spec = get_method(cfg.method)
    clip, text_tower = _run_clip(cfg)
    if spec.kind == "student":
        return _student(raw, cfg, clip, text_tower, source)
    if stored is not None:
        mcfg = stored_model_cfg(spec.config, stored, source)
    else:
        mcfg = model_cfg_of(cfg)
    if seen_bias is not None:
        mcfg = dataclasses.replace(mcfg, seen_bias=seen_bias)
    model = build_model(cfg.method, clip, mcfg)
    try:
        model.load_state_dict(raw["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{source}: state dict does not fit {cfg.method}: {e}") from e
    inductive = cfg.setting == "inductive" and bool(raw["unseen"])
    return Trained(
        cfg.method,
        model.eval(),
        clip,
        mcfg,
        tuple(raw["classes"]),
        raw.get("text"),
        tuple(raw["seen"]),
        inductive,
        source,
        text_tower,
        cfg.crop_size,
        templates=cfg.templates,
    )


def _run_clip(cfg: TrainCfg) -> tuple[LoadedClip, bool]:
    """The run's CLIP, or random weights of its architecture when they cannot be loaded here."""
    try:
        return load_clip(cfg.backbone, cfg.pretrained, cfg.seed), True
    except CheckpointError as e:
        # Trained weights are all in the checkpoint; only new vocabularies need the text tower.
        log.warning(
            "cannot load the run's CLIP weights %r (%s): the checkpoint's own vocabulary "
            "still works, new ones need --text-embeddings",
            cfg.pretrained,
            e,
        )
        return load_clip(cfg.backbone, "none", cfg.seed), False


def _student(raw: dict, cfg: TrainCfg, clip: LoadedClip, text_tower: bool, source: str) -> Trained:
    stored = raw.get("model_cfg")
    if stored is not None:  # the trained weights are all in the state dict: no backbone file
        scfg = stored_model_cfg(StudentCfg, stored, source, weights="none")
    else:
        scfg = StudentCfg(
            cfg.student,
            text_dim(clip),
            background=cfg.background,
            output_stride=cfg.output_stride,
            dropout=0.0,
        )
    model = build_student(scfg)
    _load_student_state(model, raw["state_dict"], source)
    return Trained(
        cfg.method,
        model.eval(),
        clip,
        scfg,
        tuple(raw["classes"]),
        raw.get("text"),
        tuple(raw["seen"]),
        False,
        source,
        text_tower,
        cfg.crop_size,
        scfg.background,
        cfg.templates,
    )


def _load_student_state(model: nn.Module, state: dict, source: str) -> None:
    # SyncBatchNorm and BatchNorm2d share parameter and buffer names: no renaming needed.
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: state dict does not fit the student: {e}") from e


def load_student_weights(student: nn.Module, path: str) -> None:
    """``--init-from`` for MaskCLIP+: the student weights of one of our checkpoints."""
    raw = read_raw(path)
    if raw.get("format") != FORMAT or _kind(raw.get("method")) != "student":
        raise CheckpointError(
            f"{path} is not a maskclip_plus training checkpoint (student backbone "
            "files go to --student-weights)"
        )
    _load_student_state(student, raw["state_dict"], path)


def _kind(method) -> str | None:
    """The registry kind of a checkpoint's method name (None when it is not registered)."""
    try:
        return get_method(str(method)).kind
    except OvssError:
        return None


def _official(
    sd: dict, method: str | None, backbone: str, seen_bias: float | None, source: str
) -> Trained:
    layout = official_layout(sd)
    method = method or layout.method
    clip = load_clip(backbone, "none")
    mcfg = ZegClipCfg(
        image_size=layout.image_size,
        num_tokens=layout.num_tokens,
        decoder_layers=layout.decoder_layers,
        seen_bias=0.1 if seen_bias is None else seen_bias,
    )
    if method != layout.method:
        raise CheckpointError(f"{source} is a {layout.method} checkpoint, but --method is {method}")
    model = build_model(method, clip, mcfg)
    dropped = load_official(model, clip.model, sd, method)
    log.info(
        "official %s checkpoint: %d tensors loaded, %d known-unused dropped",
        method,
        len(sd) - len(dropped),
        len(dropped),
    )
    clip = dataclasses.replace(clip, source=source, random=False, weights_sha256=tensors_sha256(sd))
    # Without text_encoder.* tensors the text tower stays random-init: it cannot encode classes.
    has_text = bool(split_official(sd)[1])
    return Trained(
        method,
        model.eval(),
        clip,
        mcfg,
        None,
        None,
        (),
        seen_bias != 0.0,
        source,
        text_tower=has_text,
        crop_size=layout.image_size,
    )


def load_weights(model: nn.Module, clip_model: nn.Module, path: str, method: str) -> bool:
    """Weights only (as the official ``--load-from``): our checkpoint or an official file into
    ``model`` (an official file's text tower into ``clip_model``). True when the text tower changed.
    """
    raw = read_raw(path)
    if raw.get("format") != FORMAT:
        load_official(model, clip_model, unwrap(raw), method)
        return True
    if raw["method"] != method:
        raise CheckpointError(f"{path} is a {raw['method']} checkpoint, but --method is {method}")
    try:
        model.load_state_dict(raw["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: state dict does not fit {method}: {e}") from e
    return False


def load_text_file(path: str, num_classes: int, dim: int) -> torch.Tensor:
    """A [C,D] classifier from .npy (official float16 files widened exactly, not renormalised)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise VocabularyError(f"cannot read text embeddings {path!r}: {e}") from e
    if arr.shape != (num_classes, dim):
        raise VocabularyError(
            f"{path} holds {arr.shape}, expected ({num_classes}, {dim}): one row per class"
        )
    return torch.from_numpy(arr.astype(np.float32))


def class_text(
    trained: Trained,
    classes: tuple[str, ...],
    templates: str = "zegclip",
    text_embeddings: str | None = None,
) -> torch.Tensor:
    """[C,D] float32 classifier for ``classes``: an .npy file (e.g. the official float16 ones,
    used as they are), the checkpoint's own when the vocabulary matches, or encoded now. For a
    student with a learned background, ``classes`` excludes the background."""
    if text_embeddings:
        return load_text_file(text_embeddings, len(classes), text_dim(trained.clip))
    own = trained.classes[1:] if (trained.background and trained.classes) else trained.classes
    if trained.text is not None and own == tuple(classes):
        return trained.text.float()
    if not trained.text_tower:
        raise VocabularyError(
            f"{trained.source} was trained on {trained.classes}; encoding another "
            "vocabulary needs the run's CLIP text weights (unavailable here) or "
            "--text-embeddings FILE.npy"
        )
    return build_text_classifier(trained.clip, classes, templates)
