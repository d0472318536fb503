"""Resize and normalisation of RGB uint8 images into model inputs."""

from __future__ import annotations

import numpy as np

from runtime.manifest import PreprocessCfg


def resize_rgb(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (Pillow) of an HxWx3 uint8 image to ``size_hw`` = (H', W')."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def normalize(image: np.ndarray, cfg: PreprocessCfg) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 [1,3,H,W] with ``(x - mean) / std`` (0..255 scale)."""
    mean = np.asarray(cfg.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(cfg.std, dtype=np.float32)
    x = (image.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def short_side_size(hw: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(H, W) scaled, aspect kept, so that min(H, W) == short_side."""
    h, w = hw
    scale = short_side / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))
