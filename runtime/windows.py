"""Sliding-window plan shared by the runtime and the PyTorch model (pure Python).

Windows are aligned to the feature grid: the image is padded (bottom/right) to a multiple of the
feature stride and to at least one window, so every window's logits land on whole cells of one
feature-resolution canvas, where overlaps are averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowPlan:
    """Attributes:
    padded_hw: (Hp, Wp) padded image size, multiples of ``stride_px`` and >= window.
    window: window side S in pixels (the model's fixed input size, square).
    feature_stride: pixels per feature cell p.
    boxes: (y, x) top-left corners in pixels; multiples of p.
    """

    padded_hw: tuple[int, int]
    window: int
    feature_stride: int
    boxes: tuple[tuple[int, int], ...]

    @property
    def feature_hw(self) -> tuple[int, int]:
        """Canvas size in feature cells: (Hp / p, Wp / p)."""
        p = self.feature_stride
        return self.padded_hw[0] // p, self.padded_hw[1] // p


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def plan_windows(hw: tuple[int, int], window: int, stride: int, feature_stride: int) -> WindowPlan:
    """Plan square windows of side ``window`` over an image of size ``hw``.

    Args:
        hw: (H, W) of the (already rescaled) image, pixels.
        window: model input side S; must be a multiple of ``feature_stride``.
        stride: step between windows in pixels, rounded down to a multiple of ``feature_stride``.
        feature_stride: pixels per feature cell.
    """
    p = feature_stride
    if window % p:
        raise ValueError(f"window {window} is not a multiple of the feature stride {p}")
    stride = max(p, min(window, stride) // p * p)
    hp = max(window, -(-hw[0] // p) * p)
    wp = max(window, -(-hw[1] // p) * p)
    boxes = tuple((y, x) for y in _starts(hp, window, stride) for x in _starts(wp, window, stride))
    return WindowPlan(padded_hw=(hp, wp), window=window, feature_stride=p, boxes=boxes)


def default_stride(window: int, feature_stride: int) -> int:
    """Two-thirds of the window, on the feature grid (e.g. 448 -> 288 for p=16)."""
    return max(feature_stride, (2 * window // 3) // feature_stride * feature_stride)


def stitch(plan: WindowPlan, padded, run: Callable, zeros: Callable):
    """Run every window of a padded input and average overlaps on a feature-resolution canvas.

    Works on numpy arrays and torch tensors alike (slicing, ``+=`` and division only).

    Args:
        plan: the window plan.
        padded: [1, 3, Hp, Wp] normalised input padded to ``plan.padded_hw``.
        run: window [1, 3, S, S] -> scores [C, S/p, S/p].
        zeros: shape tuple -> zero-filled float array of the same library.
    Returns:
        [C, Hp/p, Wp/p] averaged scores.
    """
    p, s = plan.feature_stride, plan.window
    canvas, count = None, zeros(plan.feature_hw)
    for y, x in plan.boxes:
        out = run(padded[:, :, y : y + s, x : x + s])
        if canvas is None:
            canvas = zeros((out.shape[0],) + plan.feature_hw)
        cy, cx, h, w = y // p, x // p, out.shape[1], out.shape[2]
        canvas[:, cy : cy + h, cx : cx + w] += out
        count[cy : cy + h, cx : cx + w] += 1
    return canvas / count
