"""Flat training configuration and the official per-(method, dataset) defaults.

Every field is one CLI flag of ``python -m training.train``. Fields left as None take the official
value for the method and dataset (``official_defaults``), so a bare command reproduces the
released configs: AdamW lr 2e-5 with lr multiplier 10 on the prompts and the head, weight decay
0.01, poly 0.9 to 1e-6 after a 1500-iteration linear warm-up, crop 512.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from runtime.errors import ConfigError
from training.data import DataCfg
from training.vocab import resolve_classes

SETTINGS = ("inductive", "transductive")
AMP_MODES = ("auto", "on", "off")


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
    setting: str = "inductive"
    st_start: int | None = None
    init_from: str | None = None
    max_iters: int | None = None
    batch_size: int | None = None
    accum: int = 1
    lr: float = 2e-5
    lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup_iters: int = 1500
    min_lr: float = 1e-6
    power: float = 0.9
    crop_size: int = 512
    num_tokens: int | None = None
    decoder_layers: int = 3
    decoder_heads: int | None = None
    seen_bias: float = 0.1
    focal_weight: float | None = None
    dice_weight: float | None = None
    recovery_weight: float | None = None
    st_focal_weight: float | None = None
    templates: str = "zegclip"
    text_embeddings: str | None = None
    amp: str = "auto"
    device: str = "auto"
    num_workers: int = 2
    log_interval: int = 10
    ckpt_interval: int = 2000
    resume: str | None = None
    eval_after: bool = False

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ConfigError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.accum < 1:
            raise ConfigError(f"accum must be >= 1, got {self.accum}")


def official_defaults(method: str, dataset: str) -> dict:
    """Official values for the None fields (METHODS.md A2/A3); custom datasets take VOC's.

    A transductive run is the official pair in one command: the inductive schedule cut at
    ``st_start`` (the official ST runs load iter_10000 / 20000 / 40000), then self-training on a
    fresh schedule for the remaining iterations.
    """
    coco = dataset == "coco_stuff"
    d = {"num_tokens": 100 if dataset in ("coco_stuff", "context59", "context60") else 10,
         "decoder_heads": 8, "focal_weight": 100.0, "dice_weight": 1.0, "recovery_weight": 0.0}
    if method == "zegclip":
        d.update(batch_size=4, max_iters=80000 if coco else 20000,
                 st_focal_weight=100.0 if coco else 20.0)  # ZegCLIP VOC ST config: mask_weight 20
    elif coco:  # cliprc
        d.update(batch_size=2, max_iters=80000, focal_weight=200.0, dice_weight=3.0,
                 recovery_weight=50.0, st_focal_weight=200.0)
    else:
        d.update(batch_size=8, max_iters=40000, recovery_weight=2.0, st_focal_weight=100.0)
    return d


def resolve_defaults(cfg: TrainCfg) -> TrainCfg:
    """``cfg`` with every None default replaced by the official value; st_start = half schedule."""
    d = official_defaults(cfg.method, cfg.dataset)
    filled = {k: v for k, v in d.items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **filled)
    if cfg.setting == "transductive" and cfg.st_start is None:
        cfg = dataclasses.replace(cfg, st_start=cfg.max_iters // 2)
    if cfg.setting == "inductive":
        cfg = dataclasses.replace(cfg, st_start=None)
    if cfg.st_start is not None and not 0 <= cfg.st_start < cfg.max_iters:
        raise ConfigError(f"st_start must be in [0, max_iters), got {cfg.st_start}")
    return cfg


def data_cfg_of(cfg, crop_size: int) -> DataCfg:
    """The dataset half of a training or evaluation config (fields ``dataset``, ``root``,
    ``images``, ``masks``, ``classes``, ``ignore_label``, ``unseen``); the test/train resize scale
    is (4*crop, crop) like the official (2048, 512)."""
    classes = resolve_classes(cfg.classes) if cfg.classes else ()
    unseen = None if cfg.unseen is None else tuple(
        n.strip() for n in cfg.unseen.split(",") if n.strip())
    return DataCfg(cfg.dataset, root=cfg.root, images=cfg.images, masks=cfg.masks, classes=classes,
                   ignore_label=cfg.ignore_label, unseen=unseen, crop_size=crop_size,
                   img_scale=(4 * crop_size, crop_size))
