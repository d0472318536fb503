"""The mmseg 0.x segmentation transforms on numpy arrays, driven by an explicit random generator.

Training (ZegCLIP / CLIP-RC / MaskCLIP+ configs): Resize(img_scale, ratio_range, keep_ratio) ->
RandomCrop(crop_size, cat_max_ratio) -> RandomFlip(0.5) -> PhotoMetricDistortion -> Normalize ->
Pad(crop_size, image 0, label 255). Test: Resize(img_scale, keep_ratio) -> Normalize.
Images are RGB uint8 HWC throughout (mmseg works on BGR and converts in Normalize; the HSV ops
are the same either way). Images resize bilinearly, labels by nearest neighbour (cv2, as mmcv).
Every random draw comes from the ``np.random.Generator`` passed in, so a seed fixes the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from training.data.config import IGNORE, DataCfg

BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18
CROP_TRIES = 10


class Augmented(NamedTuple):
    """An image and its label after a transform.

    Attributes:
        image: HWC, uint8 [0,255] RGB before ``normalize``, float32 after.
        label: HW uint8, class ids and 255 = ignore.
    """

    image: np.ndarray
    label: np.ndarray


class Size(NamedTuple):
    height: int
    width: int


class Box(NamedTuple):
    """A crop window: rows ``y1:y2``, columns ``x1:x2``."""

    y1: int
    y2: int
    x1: int
    x2: int


def rescale_size(height: int, width: int, scale: Sequence[int]) -> Size:
    """mmcv ``rescale_size``: keep the aspect ratio, long edge <= max(scale), short <= min(scale).

    The factor is ``min(max(scale) / long, min(scale) / short)``; sides round half up.
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return Size(int(height * factor + 0.5), int(width * factor + 0.5))


def rescale(array: np.ndarray, scale: Sequence[int], nearest: bool = False) -> np.ndarray:
    """Keep-ratio resize of an HWC image (bilinear) or an HW label map (``nearest=True``)."""
    size = rescale_size(array.shape[0], array.shape[1], scale)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array, (size.width, size.height), interpolation=interp)


def random_scale(
    rng: np.random.Generator, img_scale: Sequence[int], ratio_range: Sequence[float]
) -> tuple[int, int]:
    """mmseg ``Resize.random_sample_ratio``: ``img_scale`` times a uniform ratio, truncated."""
    low, high = ratio_range
    ratio = rng.random() * (high - low) + low
    return int(img_scale[0] * ratio), int(img_scale[1] * ratio)


def crop_box(rng: np.random.Generator, height: int, width: int, crop: int) -> Box:
    """A uniformly placed ``crop`` x ``crop`` window (clipped to the image when it is smaller)."""
    y1 = int(rng.integers(0, max(height - crop, 0) + 1))
    x1 = int(rng.integers(0, max(width - crop, 0) + 1))
    return Box(y1, y1 + crop, x1, x1 + crop)


def _dominated(label: np.ndarray, cat_max_ratio: float) -> bool:
    counts = np.bincount(label.ravel(), minlength=IGNORE + 1)[:IGNORE]
    counts = counts[counts > 0]
    return not (len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio)


def random_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    crop: int,
    cat_max_ratio: float = 1.0,
) -> Augmented:
    """mmseg ``RandomCrop``: retry up to 10 times while one class dominates the crop.

    A crop is accepted when it holds at least two classes and the largest covers less than
    ``cat_max_ratio`` of its non-ignored pixels; after 10 rejections a fresh, unchecked window
    is used (as mmseg does).
    """
    box = crop_box(rng, *label.shape, crop)
    if cat_max_ratio < 1.0:
        for _ in range(CROP_TRIES):
            if not _dominated(label[box.y1 : box.y2, box.x1 : box.x2], cat_max_ratio):
                break
            box = crop_box(rng, *label.shape, crop)
    return Augmented(
        image[box.y1 : box.y2, box.x1 : box.x2], label[box.y1 : box.y2, box.x1 : box.x2]
    )


def random_flip(
    rng: np.random.Generator, image: np.ndarray, label: np.ndarray, prob: float = 0.5
) -> Augmented:
    """Horizontal flip of image and label together, with probability ``prob``."""
    if rng.random() < prob:
        return Augmented(image[:, ::-1], label[:, ::-1])
    return Augmented(image, label)


def _convert(array: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(array.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion`` on an RGB uint8 HWC image; returns a new uint8 image.

    Brightness (+-32), then contrast (x0.5-1.5) either here or last (coin flip), saturation
    (x0.5-1.5), hue (+-18 of OpenCV's 180); each applied with probability 0.5.
    """
    image = np.ascontiguousarray(image)
    if rng.integers(2):
        image = _convert(image, beta=rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    contrast_first = rng.integers(2) == 1
    if contrast_first and rng.integers(2):
        image = _convert(image, alpha=rng.uniform(*CONTRAST_RANGE))
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=rng.uniform(*SATURATION_RANGE))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        shift = int(rng.integers(-HUE_DELTA, HUE_DELTA))  # numpy randint: high exclusive, as mmseg
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + shift) % 180
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and rng.integers(2):
        image = _convert(image, alpha=rng.uniform(*CONTRAST_RANGE))
    return image


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(image - mean) / std`` per RGB channel; uint8 HWC in, float32 HWC out."""
    mean32 = np.asarray(mean, dtype=np.float32)
    inv_std = (1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32)
    return (image.astype(np.float32) - mean32) * inv_std


def pad_to(image: np.ndarray, label: np.ndarray, size: int) -> Augmented:
    """Pad bottom and right up to ``size`` x ``size``: image with 0, label with 255."""
    pad_h, pad_w = size - image.shape[0], size - image.shape[1]
    assert pad_h >= 0 and pad_w >= 0, f"image {image.shape[:2]} larger than the pad size {size}"
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0)
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE)
    return Augmented(image, label)


def eval_size(height: int, width: int, short: int) -> Size:
    """The official test resize (mmseg 0.24 ``Resize(keep_ratio, min_size=512)``): the short side
    becomes exactly ``short``, the long side scales with it (no cap from the 2048 long edge)."""
    factor = short / min(height, width)
    return Size(int(height * factor + 0.5), int(width * factor + 0.5))


def eval_image(image: np.ndarray, cfg: DataCfg) -> np.ndarray:
    """Test pipeline: short side resized to ``min(cfg.img_scale)`` (512), then normalise.

    Args:
        image: HWC uint8 [0,255] RGB.
    Returns:
        float32 HWC, normalised with ``cfg.mean``/``cfg.std``.
    """
    size = eval_size(image.shape[0], image.shape[1], min(cfg.img_scale))
    resized = cv2.resize(image, (size.width, size.height), interpolation=cv2.INTER_LINEAR)
    return normalize(resized, cfg.mean, cfg.std)


def train_pair(
    image: np.ndarray, label: np.ndarray, cfg: DataCfg, rng: np.random.Generator
) -> Augmented:
    """Training pipeline: random rescale, cat-balanced crop, flip, photometric, normalise, pad.

    Args:
        image: HWC uint8 [0,255] RGB.
        label: HW uint8 (class ids, 255 = ignore), same height and width as ``image``.
        rng: the only source of randomness.
    Returns:
        image float32 [crop, crop, 3] normalised (padding 0);
        label uint8 [crop, crop] (padding 255).
    """
    assert image.shape[:2] == label.shape, f"image {image.shape} and label {label.shape} differ"
    scale = random_scale(rng, cfg.img_scale, cfg.ratio_range)
    image, label = rescale(image, scale), rescale(label, scale, nearest=True)
    image, label = random_crop(rng, image, label, cfg.crop_size, cfg.cat_max_ratio)
    image, label = random_flip(rng, image, label)
    if cfg.photometric:
        image = photometric_distortion(rng, image)
    return pad_to(normalize(image, cfg.mean, cfg.std), np.ascontiguousarray(label), cfg.crop_size)
