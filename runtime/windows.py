"""Sliding-window plans shared by the runtime and the PyTorch models (pure Python).

Two plans (``EDGES``):

- ``flush`` (the default: what the official mmseg-based code of every method does,
  ``slide_inference``): windows at ``i * stride`` on the image itself, the last one flush with
  the edge (``window_starts``), any stride; each window's scores are upsampled to the window
  (bilinear, align_corners=False) and overlaps averaged at full resolution. An image smaller
  than the window in a dimension is padded (bottom / right, mean colour) up to it in that
  dimension, since the deployed graph has a fixed input size (the official code feeds the
  smaller crop).
- ``grid`` (faster): windows aligned to the feature grid (stride rounded down to a multiple of
  the feature stride), the image padded to a multiple of it, overlaps averaged on one
  feature-resolution canvas, which the fast label map then upsamples once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runtime.errors import ConfigError

EDGES = ("flush", "grid")
MAX_WINDOWS = 10_000  # one image: more is a tiny --stride on a huge image (hours of inference)


@dataclass(frozen=True)
class WindowPlan:
    """Attributes:
    padded_hw: (Hp, Wp) padded image size, >= window (``grid``: multiples of the feature stride;
        ``flush``: the image's own size where it is >= window).
    window: window side S in pixels (the model's fixed input size, square).
    feature_stride: pixels per feature cell p.
    boxes: (y, x) top-left corners in pixels (``grid``: multiples of p).
    edge: ``flush`` or ``grid`` (see the module docstring).
    """

    padded_hw: tuple[int, int]
    window: int
    feature_stride: int
    boxes: tuple[tuple[int, int], ...]
    edge: str = "flush"

    @property
    def feature_hw(self) -> tuple[int, int]:
        """Canvas size in feature cells: (Hp / p, Wp / p) (``grid`` plans)."""
        p = self.feature_stride
        return self.padded_hw[0] // p, self.padded_hw[1] // p


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """mmseg's ``slide_inference`` grid along one axis: ceil((size - crop) / stride) + 1
    windows at ``i * stride``, the last one moved back to end flush with the edge (all at 0 when
    size <= crop)."""
    n = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(n)]


def count_windows(size: int, window: int, stride: int) -> int:
    """Windows along one axis of ``size`` pixels (both plans): ceil((size - window) / stride) + 1,
    1 when size <= window."""
    return max(size - window + stride - 1, 0) // stride + 1


def _check_count(hw, hp: int, wp: int, window: int, stride: int, max_windows: int) -> None:
    """Refuse a plan of more than ``max_windows`` windows before listing them."""
    n = count_windows(hp, window, stride) * count_windows(wp, window, stride)
    if max_windows and n > max_windows:
        raise ConfigError(
            f"sliding windows: an image of {hw[1]}x{hw[0]} with window {window} and stride "
            f"{stride} needs {n:,} windows, over the limit of {max_windows:,}; use a larger "
            "--stride, a smaller --short-side or --mode whole"
        )


def plan_windows(
    hw: tuple[int, int],
    window: int,
    stride: int,
    feature_stride: int,
    edge: str = "flush",
    max_windows: int = MAX_WINDOWS,
) -> WindowPlan:
    """Plan square windows of side ``window`` over an image of size ``hw``.

    Args:
        hw: (H, W) of the (already rescaled) image, pixels.
        window: model input side S; must be a multiple of ``feature_stride``.
        stride: step between windows in pixels, in [1, S] (``grid``: rounded down to a multiple
            of ``feature_stride``).
        feature_stride: pixels per feature cell.
        edge: ``flush`` (official placement) or ``grid`` (see the module docstring).
        max_windows: refuse plans of more windows than this (0: no limit).
    Raises:
        ValueError: a window that is not a multiple of the feature stride, a stride < 1 or an
            unknown edge rule.
        ConfigError (a ValueError): more than ``max_windows`` windows.
    """
    p = feature_stride
    if window % p:
        raise ValueError(f"window {window} is not a multiple of the feature stride {p}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1 pixel, got {stride}")
    if edge == "flush":
        stride = min(window, stride)
        hp, wp = max(window, hw[0]), max(window, hw[1])
        _check_count(hw, hp, wp, window, stride, max_windows)
        ys, xs = window_starts(hp, window, stride), window_starts(wp, window, stride)
    elif edge == "grid":
        stride = max(p, min(window, stride) // p * p)
        hp = max(window, -(-hw[0] // p) * p)
        wp = max(window, -(-hw[1] // p) * p)
        _check_count(hw, hp, wp, window, stride, max_windows)
        ys, xs = _starts(hp, window, stride), _starts(wp, window, stride)
    else:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    boxes = tuple((y, x) for y in ys for x in xs)
    return WindowPlan(padded_hw=(hp, wp), window=window, feature_stride=p, boxes=boxes, edge=edge)


def default_stride(window: int, feature_stride: int) -> int:
    """Two-thirds of the window, on the feature grid (e.g. 448 -> 288 for p=16)."""
    return max(feature_stride, (2 * window // 3) // feature_stride * feature_stride)


def stitch(plan: WindowPlan, padded, run: Callable, zeros: Callable, upsample=None):
    """Run every window of a padded input and average the overlaps: on a feature-resolution
    canvas (``grid`` plans) or, each window's scores upsampled to the window first, at full
    resolution (``flush`` plans).

    Works on numpy arrays and torch tensors alike (slicing, ``+=`` and division only).

    Args:
        plan: the window plan.
        padded: [1, 3, Hp, Wp] normalised input padded to ``plan.padded_hw``.
        run: window [1, 3, S, S] -> scores [C, S/p, S/p].
        zeros: shape tuple -> zero-filled float array of the same library.
        upsample: (scores [C, h, w], (S, S)) -> [C, S, S] bilinear, align_corners=False; needed
            by ``flush`` plans.
    Returns:
        [C, Hp/p, Wp/p] (``grid``) or [C, Hp, Wp] (``flush``) averaged scores.
    """
    if plan.edge == "flush":
        return _stitch_full(plan, padded, run, zeros, upsample)
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


def _stitch_full(plan: WindowPlan, padded, run: Callable, zeros: Callable, upsample):
    """``stitch`` of a ``flush`` plan: full-resolution sum and count, as mmseg."""
    if upsample is None:
        raise ValueError("a flush window plan needs an upsample function")
    s = plan.window
    canvas, count = None, zeros(plan.padded_hw)
    for y, x in plan.boxes:
        out = upsample(run(padded[:, :, y : y + s, x : x + s]), (s, s))
        if canvas is None:
            canvas = zeros((out.shape[0],) + plan.padded_hw)
        canvas[:, y : y + s, x : x + s] += out
        count[y : y + s, x : x + s] += 1
    canvas /= count
    return canvas
