"""Synthetic folder datasets for training tests: 64x64 images of four coloured quadrants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = "red,green,blue,yellow"
PALETTE = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], np.uint8)


def make_folder(root: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """``n`` images of four quadrants (a permutation of the 4 classes), colour = class + noise;
    ``root/img`` and ``root/ann`` (mode L PNG label maps)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "ann").mkdir(parents=True, exist_ok=True)
    h = size // 2
    for i in range(n):
        label = np.zeros((size, size), np.uint8)
        a, b, c, d = rng.permutation(4)
        label[:h, :h], label[:h, h:], label[h:, :h], label[h:, h:] = a, b, c, d
        image = PALETTE[label].astype(np.int16) + rng.integers(-20, 21, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "img" / f"s{i}.png")
        Image.fromarray(label).save(root / "ann" / f"s{i}.png")
    return root


def tiny_train_cfg(data: Path, work: Path, method: str, **overrides):
    """A TrainCfg for a CPU run on a ``make_folder`` dataset: the tiny ViT, crop 64, batch 2,
    no workers, no periodic logs or checkpoints; ``overrides`` on top."""
    from training.train_config import TrainCfg

    base = dict(
        method=method,
        backbone="ovss-tiny-vit",
        work_dir=str(work),
        dataset="folder",
        images=str(data / "img"),
        masks=str(data / "ann"),
        classes=CLASSES,
        crop_size=64,
        batch_size=2,
        num_workers=0,
        device="cpu",
        log_interval=10_000,
        ckpt_interval=10_000,
    )
    return TrainCfg(**{**base, **overrides})
