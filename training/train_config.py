"""Flat training configuration and the official per-(method, dataset) defaults.

Every field is one CLI flag of ``python -m training.train``. Fields left as None take the official
value for the method, setting and dataset (``official_defaults``), so a bare command reproduces
the released configs. ZegCLIP / CLIP-RC: AdamW lr 2e-5 with lr multiplier 10 on the prompts and
the head, weight decay 0.01, poly 0.9 to 1e-6 after a 1500-iteration linear warm-up, crop 512.
MaskCLIP+: SGD lr 0.01 momentum 0.9 weight decay 5e-4, poly 0.9 to 1e-4, no warm-up, crop 512.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.errors import ConfigError
from training.methods import METHODS, get_method, trainable
from training.vocab import resolve_classes

if TYPE_CHECKING:
    from training.data import DataCfg

# Torch-free (``--help`` imports this module): the data config is imported where it is used.
# Settings per trainable method, the first the default (``MethodSpec.settings``).
SETTINGS = {name: METHODS[name].settings for name in trainable()}
ALL_SETTINGS = tuple(sorted({s for v in SETTINGS.values() for s in v}))
AMP_MODES = ("auto", "on", "off")
OPTIMIZERS = ("adamw", "sgd")
BIG = 10**9  # iteration counts
# (low, high, low excluded) of every numeric TrainCfg field (None: unbounded on that side). The
# CLI's argparse types come from here too (``training.train``), so a value out of range is one
# error line before any model is built, and the same value given through the API is a
# ConfigError; NaN and inf are always refused. A test checks every numeric field has an entry.
NUMERIC_BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    "seed": (0, 2**32 - 1, False),
    "ignore_label": (0, 65535, False),
    "st_start": (0, BIG, False),
    "max_iters": (1, BIG, False),
    "batch_size": (1, 4096, False),
    "accum": (1, 1024, False),
    "lr": (0.0, 10.0, True),
    "lr_mult": (0.0, 1e6, True),
    "weight_decay": (0.0, 10.0, False),
    "momentum": (0.0, 1.0, False),
    "warmup_iters": (0, BIG, False),
    "min_lr": (0.0, 10.0, False),
    "power": (0.0, 100.0, False),
    "crop_size": (1, 4096, False),
    "num_tokens": (1, 1024, False),
    "decoder_layers": (1, 64, False),
    "decoder_heads": (1, 256, False),
    "seen_bias": (0.0, None, False),
    "focal_weight": (0.0, None, False),
    "dice_weight": (0.0, None, False),
    "recovery_weight": (0.0, None, False),
    "st_focal_weight": (0.0, None, False),
    "output_stride": (1, 64, False),
    "conf_thresh": (0.0, 1.0, False),
    "ks_thresh": (None, None, False),
    "pd_thresh": (None, None, False),
    "distill_weight": (0.0, None, False),
    "num_workers": (0, 256, False),
    "log_interval": (1, BIG, False),
    "ckpt_interval": (1, BIG, False),
}


def bound_text(name: str) -> str:
    """``NUMERIC_BOUNDS[name]`` in words, e.g. "> 0 and <= 10"."""
    lo, hi, lo_open = NUMERIC_BOUNDS[name]
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"<= {hi:g}")
    return " and ".join(parts) or "finite"


def check_number(name: str, value, integer: bool) -> None:
    """``value`` of field ``name`` is an int (``integer``) or a finite number, within
    ``NUMERIC_BOUNDS``; ConfigError otherwise (bools, strings, NaN, inf refused)."""
    lo, hi, lo_open = NUMERIC_BOUNDS[name]
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        what = "an integer" if integer else "a finite number"
        raise ConfigError(f"{name} must be {what} {bound_text(name)}, got {value!r}")


def numeric_fields() -> dict[str, bool]:
    """{numeric TrainCfg field: whether it is an integer}."""
    out = {}
    for f in dataclasses.fields(TrainCfg):
        kind = str(f.type).split(" ")[0]
        if kind in ("int", "float"):
            out[f.name] = kind == "int"
    return out


@dataclass(frozen=True)
class TrainCfg:
    """One training run (see module docstring for the None defaults)."""

    method: str
    backbone: str
    work_dir: str
    dataset: str
    pretrained: str = "none"
    seed: int = 0
    root: str = ""
    images: str = ""
    masks: str = ""
    classes: str = ""
    ignore_label: int = 255
    unseen: str | None = None
    setting: str | None = None
    st_start: int | None = None
    init_from: str | None = None
    max_iters: int | None = None
    batch_size: int | None = None
    accum: int = 1
    optimizer: str | None = None
    lr: float | None = None
    lr_mult: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_iters: int | None = None
    min_lr: float | None = None
    power: float = 0.9
    crop_size: int | None = None
    num_tokens: int | None = None
    decoder_layers: int | None = None
    decoder_heads: int | None = None
    seen_bias: float | None = None
    focal_weight: float | None = None
    dice_weight: float | None = None
    recovery_weight: float | None = None
    st_focal_weight: float | None = None
    templates: str | None = None
    text_embeddings: str | None = None
    student: str | None = None
    student_weights: str = "none"
    output_stride: int | None = None
    background: bool = False
    conf_thresh: float = 0.0
    ks_thresh: float | None = None
    pd_thresh: float | None = None
    distill_weight: float = 0.0
    amp: str = "auto"
    device: str = "auto"
    num_workers: int = 2
    log_interval: int = 10
    ckpt_interval: int = 2000
    resume: str | None = None
    eval_after: bool = False

    def __post_init__(self):
        settings = settings_of(self.method)
        if self.setting is not None and self.setting not in settings:
            raise ConfigError(f"{self.method} settings are {settings}, got {self.setting!r}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if is_student(self.method) != (self.student is not None):
            students = sorted(n for n in trainable() if is_student(n))
            raise ConfigError(
                f"--student is required for {', '.join(students)} and only valid for it"
            )
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        for name, integer in numeric_fields().items():
            value = getattr(self, name)
            if value is not None:
                check_number(name, value, integer)


def settings_of(method: str) -> tuple[str, ...]:
    """The training settings of a trainable ``method`` (the registry's), the first the default;
    ConfigError for an unknown or training-free method."""
    spec = METHODS.get(method)
    if spec is None or not spec.trainable:
        what = "a training-free method" if spec is not None else "unknown"
        raise ConfigError(
            f"{method!r} is {what}: nothing to train (trainable methods: {', '.join(trainable())})"
        )
    return spec.settings


def is_student(method: str) -> bool:
    """True for a method that trains a student network on pseudo-labels (MaskCLIP+)."""
    return get_method(method).kind == "student"


def official_defaults(method: str, dataset: str, setting: str) -> dict:
    """Official values for the None fields (METHODS.md A1-A3); custom datasets take VOC's.

    A transductive ZegCLIP / CLIP-RC run is the official pair in one command: the inductive
    schedule cut at ``st_start`` (the official ST runs load iter_10000 / 20000 / 40000), then
    self-training on a fresh schedule for the remaining iterations. A zero-shot MaskCLIP+ run
    switches from teacher labels to self-training at the official iteration of one schedule.
    """
    if is_student(method):
        return _maskclip_plus_defaults(method, dataset, setting)
    coco = dataset == "coco_stuff"
    d = {
        **_method_defaults(method),
        "focal_weight": 100.0,
        "dice_weight": 1.0,
        "recovery_weight": 0.0,
        "optimizer": "adamw",
        "lr": 2e-5,
        "lr_mult": 10.0,
        "weight_decay": 0.01,
        "warmup_iters": 1500,
        "min_lr": 1e-6,
    }
    if dataset in ("coco_stuff", "context59", "context60"):
        d["num_tokens"] = 100  # the COCO and cross-dataset configs
    if method == "zegclip":
        d.update(
            batch_size=4,
            max_iters=80000 if coco else 20000,
            st_focal_weight=100.0 if coco else 20.0,
        )  # ZegCLIP VOC ST config: mask_weight 20
    elif coco:  # cliprc
        d.update(
            batch_size=2,
            max_iters=80000,
            focal_weight=200.0,
            dice_weight=3.0,
            recovery_weight=50.0,
            st_focal_weight=200.0,
        )
    else:
        d.update(batch_size=8, max_iters=40000, recovery_weight=2.0, st_focal_weight=100.0)
    return d


# TrainCfg fields whose defaults are the method config's (the config holds them once).
FROM_METHOD = {
    "crop_size": "image_size",
    "num_tokens": "num_tokens",
    "decoder_layers": "decoder_layers",
    "decoder_heads": "decoder_heads",
    "seen_bias": "seen_bias",
    "templates": "templates",
}


def _method_defaults(method: str) -> dict:
    """The TrainCfg defaults the method's config states (``FROM_METHOD``)."""
    cfg = get_method(method).defaults()
    return {k: getattr(cfg, v) for k, v in FROM_METHOD.items() if hasattr(cfg, v)}


def _maskclip_plus_defaults(method: str, dataset: str, setting: str) -> dict:
    """MaskCLIP+ (``configs/maskclip_plus``): SGD 0.01, wd 5e-4 (zero-shot Context: 0.004, 1e-4),
    poly to 1e-4, no warm-up, batch 4;
    annotation-free 2k / 4k / 8k iterations of teacher labels (VOC / Context / COCO-Stuff),
    zero-shot 20k / 40k / 80k with self-training from 2k / 4k / 8k. Teacher: MaskCLIP with key
    smoothing and prompt denoising on (the ``*_kspd_*`` anno-free configs)."""
    teacher = get_method("maskclip").defaults()
    context = dataset in ("context59", "context60")
    short = 8000 if dataset == "coco_stuff" else 4000 if context else 2000
    zero_shot = setting == "zero_shot"
    return {
        "optimizer": "sgd",
        "lr": 0.004 if (zero_shot and context) else 0.01,
        "lr_mult": 1.0,
        "weight_decay": 1e-4 if (zero_shot and context) else 5e-4,
        "warmup_iters": 0,
        "min_lr": 1e-4,
        "batch_size": 4,
        "max_iters": 10 * short if zero_shot else short,
        "st_start": short if zero_shot else None,
        **_method_defaults(method),
        # the teacher: MaskCLIP's own key smoothing and prompt denoising thresholds
        "ks_thresh": teacher.ks_thresh,
        "pd_thresh": teacher.pd_thresh,
    }


def resolve_defaults(cfg: TrainCfg) -> TrainCfg:
    """``cfg`` with every None default replaced by the official value; a transductive ZegCLIP /
    CLIP-RC run's st_start = half schedule."""
    if cfg.setting is None:
        cfg = dataclasses.replace(cfg, setting=settings_of(cfg.method)[0])
    d = official_defaults(cfg.method, cfg.dataset, cfg.setting)
    st_default = d.pop("st_start", None)
    filled = {k: v for k, v in d.items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **filled)
    if cfg.setting == "transductive" and cfg.st_start is None:
        cfg = dataclasses.replace(cfg, st_start=cfg.max_iters // 2)
    if is_student(cfg.method) and cfg.st_start is None and st_default is not None:
        cfg = dataclasses.replace(cfg, st_start=min(st_default, cfg.max_iters - 1))
    if cfg.setting == "inductive":
        cfg = dataclasses.replace(cfg, st_start=None)
    if cfg.st_start is not None and not 0 <= cfg.st_start < cfg.max_iters:
        raise ConfigError(f"st_start must be in [0, max_iters), got {cfg.st_start}")
    return cfg


def data_cfg_of(cfg, crop_size: int) -> DataCfg:
    """The dataset half of a training or evaluation config (fields ``dataset``, ``root``,
    ``images``, ``masks``, ``classes``, ``ignore_label``, ``unseen``); the test/train resize scale
    is (4*crop, crop) like the official (2048, 512)."""
    from training.data import DataCfg  # imports torch: not at module level

    classes = resolve_classes(cfg.classes) if cfg.classes else ()
    unseen = (
        None if cfg.unseen is None else tuple(n.strip() for n in cfg.unseen.split(",") if n.strip())
    )
    return DataCfg(
        cfg.dataset,
        root=cfg.root,
        images=cfg.images,
        masks=cfg.masks,
        classes=classes,
        ignore_label=cfg.ignore_label,
        unseen=unseen,
        crop_size=crop_size,
        img_scale=(4 * crop_size, crop_size),
    )
