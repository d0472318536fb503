"""Resize and normalisation of RGB uint8 images into model inputs.

One resize rule for training, evaluation and deployment: OpenCV's ``cv2.resize(image, (W', H'),
interpolation=cv2.INTER_LINEAR)`` on uint8, byte for byte (the models are trained and evaluated
with it, and the C++ runtime calls ``cv::resize`` with the same flag). ``cv2`` is used when it is
installed; otherwise a numpy version of the same fixed-point arithmetic gives the same bytes:

- centres: source coordinate ``(i + 0.5) * scale - 0.5`` in double with ``scale = 1 / (out / in)``,
  rounded to float32; its floor is the first tap, the fraction ``f`` the second tap's weight;
- weights ``(1 - f, f)`` rounded half to even to 11-bit fixed point (``INTER_RESIZE_COEF_BITS``);
- horizontal pass into int32; at the borders the column is clamped and ``f`` set to 0;
- vertical pass on the two clamped rows with the unclamped weights, as OpenCV's uint8 kernel
  (scalar and SIMD alike) computes it: ``((w0 * (r0 >> 4)) >> 16) + ((w1 * (r1 >> 4)) >> 16)``,
  then ``(v + 2) >> 2``. Mathematically ``(v + (1 << 21)) >> 22``, but the intermediate
  truncations differ from it by one grey level on a few pixels, so they are reproduced.

OpenCV sends an exact 2x downscale through its INTER_AREA fast path, ``(a + b + c + d + 2) >> 2``,
which this arithmetic gives too (weights 1024, 1024). ``tests/test_resize.py`` checks both paths
against ``cv2`` itself.
"""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np

from runtime.manifest import PreprocessCfg

CV2_AVAILABLE = find_spec("cv2") is not None
COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
COEF_SCALE = 1 << COEF_BITS


def resize_rgb(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """OpenCV INTER_LINEAR resize (``cv2`` if installed, else the same bytes from numpy).

    Args:
        image (np.ndarray): HxWx3 uint8 [0,255] RGB (HxW and HxWxC uint8 work too); H, W >= 1.
        size_hw: (H', W'), both >= 1.
    Returns:
        uint8 H'xW'x3 (same layout as ``image``); ``image`` itself when the size already matches.
    """
    h, w = (int(v) for v in size_hw)
    assert image.dtype == np.uint8 and image.ndim in (2, 3), (
        f"resize needs HxW or HxWxC uint8, got {image.dtype} {image.shape}"
    )
    assert min(image.shape[:2]) >= 1 and h >= 1 and w >= 1, (
        f"resize sizes must be positive: {image.shape[:2]} -> {(h, w)}"
    )
    if image.shape[:2] == (h, w):
        return image
    if CV2_AVAILABLE:
        import cv2

        out = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_LINEAR)
        return out.reshape((h, w) + image.shape[2:])  # cv2 drops a trailing channel axis of 1
    return resize_linear_numpy(image, (h, w))


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps on one axis, before any clamping: first source index (int64)
    and the two int32 weights (2048 together, up to rounding) for each output index."""
    scale = 1.0 / (size_out / size_in)  # as OpenCV: 1 / inv_scale, which can differ from in/out
    centre = ((np.arange(size_out) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(centre)
    frac = centre - first  # float32, exact
    w0 = np.rint((np.float32(1) - frac) * np.float32(COEF_SCALE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(COEF_SCALE)).astype(np.int32)
    return first.astype(np.int64), w0, w1


def _column_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal taps: columns left of 0 or right of the last read only the edge column."""
    first, w0, w1 = _taps(size_in, size_out)
    edge = (first < 0) | (first >= size_in - 1)
    first = np.clip(first, 0, size_in - 1)
    return first, np.where(edge, COEF_SCALE, w0), np.where(edge, 0, w1)


def resize_linear_numpy(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(image, (W', H'), interpolation=cv2.INTER_LINEAR)`` in numpy (module docstring).

    Args:
        image (np.ndarray): HxW or HxWxC uint8, H, W >= 1.
        size_hw: (H', W'), both >= 1.
    Returns:
        uint8 H'xW' (xC), a new array.
    """
    h, w = size_hw
    src_h, src_w = image.shape[:2]
    c = image.size // (src_h * src_w)
    rows, v0, v1 = _taps(src_h, h)
    top, bottom = np.clip(rows, 0, src_h - 1), np.clip(rows + 1, 0, src_h - 1)
    needed = np.unique(np.concatenate([top, bottom]))  # only the source rows the output reads
    cols, h0, h1 = _column_taps(src_w, w)
    lanes = np.arange(c)
    left = (cols[:, None] * c + lanes).ravel()
    right = (np.minimum(cols + 1, src_w - 1)[:, None] * c + lanes).ravel()
    flat = image.reshape(src_h, src_w * c)[needed]
    horiz = np.take(flat, left, axis=1).astype(np.int32)
    horiz *= np.repeat(h0, c)
    horiz += np.take(flat, right, axis=1) * np.repeat(h1, c)
    horiz >>= 4
    out = (horiz[np.searchsorted(needed, top)] * v0[:, None]) >> 16
    out += (horiz[np.searchsorted(needed, bottom)] * v1[:, None]) >> 16
    out += 2
    out >>= 2
    return out.astype(np.uint8).reshape((h, w) + image.shape[2:])


def normalize(image: np.ndarray, cfg: PreprocessCfg) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 [1,3,H,W] with ``(x - mean) / std`` (0..255 scale)."""
    mean = np.asarray(cfg.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(cfg.std, dtype=np.float32)
    x = np.empty((1, 3) + image.shape[:2], dtype=np.float32)
    for c in range(3):  # per channel, written in place: same float32 ops, a third of the passes
        np.subtract(image[:, :, c], mean[c], out=x[0, c], dtype=np.float32)
        x[0, c] *= inv_std[c]
    return x


def short_side_size(hw: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(H, W) scaled, aspect kept, so that min(H, W) == short_side; sides round half up, as the
    evaluation's ``training.data.transforms.eval_size`` (mmseg: ``int(x + 0.5)``)."""
    h, w = hw
    scale = short_side / min(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
