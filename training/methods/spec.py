"""What a registered method is: its config, its defaults and where its pieces live.

Torch-free: a spec names its builders as ``"module:attribute"`` strings that are imported only
when used, so ``--help`` and argument errors never pay for torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

KINDS = ("training_free", "zero_shot", "student")
# Names of training.text_classifier.TEMPLATE_SETS (kept here torch-free; a test checks they agree).
TEMPLATE_NAMES = ("imagenet80", "maskclip85", "single", "zegclip")
EVAL_MODES = ("whole", "slide")
# How a method's graph logits become scores (runtime.manifest.SCORE_KINDS; kept here torch-free
# and runtime-free): "softmax" over classes of scaled cosine logits, or "probability" (the logits
# are per-class sigmoid scores already).
SCORE_KINDS = ("softmax", "probability")
# Export inputs that only some methods take (``MethodSpec.accepts``).
EXPORT_INPUTS = ("checkpoint", "seen", "text_embeddings")


def option(default: Any, help: str, **kw) -> Any:  # noqa: A002 - mirrors argparse's name
    """A method config field with its one CLI help line (``export.build`` generates the flag);
    ``choices=`` restricts its values there and in ``make_config``."""
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def templates_option(default: str, help: str = "prompt template set") -> Any:
    """The ``templates`` field every method has: a ``TEMPLATE_SETS`` name."""
    return option(default, help, choices=TEMPLATE_NAMES)


@dataclass(frozen=True)
class Published:
    """One published result: dataset, metric value (mIoU %), backbone and note (where from)."""

    dataset: str
    miou: float
    backbone: str = "ViT-B/16"
    note: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """One method's home.

    Attributes:
        name: registry key and ``--method`` value.
        summary: one line for ``--help``.
        config: flat frozen dataclass holding every model/inference default of the method
            (input size, templates, slide stride, logit scale, seen bias, ...); each field
            becomes a ``python -m export.build`` flag.
        kind: ``training_free`` (a CLIP surgery, no weights of its own), ``zero_shot`` (a trained
            head over CLIP, ZegCLIP-style) or ``student`` (MaskCLIP+).
        exporter: ``"module:function"``; ``function(cfg: ExportCfg) -> ExportResult``.
        model_builder: ``"module:function"`` building the torch model: ``(clip, method_cfg)`` for
            training-free and zero-shot methods, ``(StudentCfg)`` for students.
        wrapper: ``"module:Class"`` of the ONNX wrapper (used only for export).
        settings: training settings, the first the default; empty = not trainable.
        train_loop: ``"module:function"`` making the training loop, or None.
        eval_mode: ``whole`` or ``slide`` (with the config's ``slide_crop`` / ``slide_stride``).
        published: the method's own published numbers (README table).
        accepts: the general export inputs the method takes besides image, vocabulary and CLIP
            weights: ``checkpoint``, ``seen``, ``text_embeddings`` (anything else given is refused,
            never ignored).
        smoke_options: options for the smallest export that exercises the method on the tiny
            test ViT (``ovss-tiny-vit``); the registry-wide tests export every method with them.
        score: how the exported logits become per-class scores: ``softmax`` (scaled cosine
            logits, softmax over classes) or ``probability`` (ZegCLIP-style sigmoid scores minus
            the seen bias: already per-class probabilities). Written to the manifest; the
            in-graph SCORES output follows it.
        score_rule: ``"module:function"`` (method options dict -> (score kind, softmax
            temperature)) where the options change it; None: (``score``, 1).
    """

    name: str
    summary: str
    config: type
    kind: str
    exporter: str
    model_builder: str
    wrapper: str
    settings: tuple[str, ...] = ()
    train_loop: str | None = None
    eval_mode: str = "whole"
    published: tuple[Published, ...] = ()
    accepts: tuple[str, ...] = ("text_embeddings",)
    smoke_options: tuple[tuple[str, Any], ...] = (("image_size", 64),)
    score: str = "softmax"
    score_rule: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.eval_mode not in EVAL_MODES:
            raise ValueError(f"{self.name}: eval_mode must be one of {EVAL_MODES}")
        if self.score not in SCORE_KINDS:
            raise ValueError(f"{self.name}: score must be one of {SCORE_KINDS}, got {self.score!r}")
        if not dataclasses.is_dataclass(self.config):
            raise TypeError(f"{self.name}: config must be a dataclass, got {self.config!r}")
        unknown = sorted(set(self.accepts) - set(EXPORT_INPUTS))
        if unknown:
            raise ValueError(f"{self.name}: accepts {unknown}, not among {EXPORT_INPUTS}")
        if bool(self.settings) != bool(self.train_loop):
            raise ValueError(f"{self.name}: settings and train_loop go together")

    def score_of(self, options: dict) -> tuple[str, float]:
        """(score kind, softmax temperature) of an export with these method options."""
        if self.score_rule is None:
            return self.score, 1.0
        kind, scale = self.load("score_rule")(options)
        if kind not in SCORE_KINDS or not scale > 0:
            raise ValueError(f"{self.name}: score rule gave ({kind!r}, {scale!r})")
        return kind, float(scale)

    @property
    def trainable(self) -> bool:
        return self.train_loop is not None

    def defaults(self) -> Any:
        """The config with every default (the method's own values)."""
        return self.config()

    def fields(self) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(self.config)

    def make_config(self, base: Any = None, **overrides) -> Any:
        """``base`` (default: the defaults) with ``overrides``; unknown names are an error."""
        names = {f.name for f in self.fields()}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"{self.name} has no option(s) {unknown}; its options: {sorted(names)}")
        for f in self.fields():
            choices = f.metadata.get("choices")
            if f.name in overrides and choices and overrides[f.name] not in choices:
                raise ValueError(
                    f"{f.name} must be one of {list(choices)}, got {overrides[f.name]!r}"
                )
        return dataclasses.replace(base if base is not None else self.defaults(), **overrides)

    def load(self, attribute: str) -> Any:
        """Import one of the ``"module:attribute"`` references (``exporter``, ``wrapper``, ...)."""
        ref = getattr(self, attribute)
        if not ref:
            raise AttributeError(f"{self.name} has no {attribute}")
        module, _, name = ref.partition(":")
        return getattr(importlib.import_module(module), name)
