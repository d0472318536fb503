"""Label maps from feature-resolution scores: bilinear upsampling + argmax, open-set threshold and
the confidence map, with an exact reference path and a fast path that gives the same labels.

The reference (``method="exact"``) upsamples every class to every output pixel in float64 with
explicit two-tap products, in this order (the C++ runtime computes the same expressions)::

    cols[c, i, x] = s[c, i, j0(x)] * u0(x) + s[c, i, j1(x)] * u1(x)
    v[c, y, x]    = cols[c, i0(y), x] * w0(y) + cols[c, i1(y), x] * w1(y)

(``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)`` sampling; where both
taps hit the same cell their weights are merged into the first). Its cost grows with
classes x output pixels.

The fast path (``method="fast"``) works per *cell*: the output pixels between two adjacent feature
rows and two adjacent feature columns. A pixel's value is a convex combination of the cell's four
corner values, so class ``c`` can only win there if its largest corner value reaches
``L = max_c' (smallest corner value of c')``. Cells with one such candidate are filled whole; in
the others only the candidates are evaluated, per pixel, with the reference's own float64
expressions, so the labels equal the reference's bit for bit (the candidate test keeps a 1e-9
relative margin, far above float64 rounding).

Scores and thresholds: ``p_top`` is the top class's probability after the method's
normalisation (``score_kind``): ``softmax`` -> ``1 / sum_c exp(k (v_c - v_top))`` over the
upsampled values (``k = score_scale``, e.g. CLIP's 100 for raw cosine logits), ``probability``
(the graph already outputs per-class probabilities, e.g. ZegCLIP's sigmoid scores) -> ``v_top``
(clipped to [0, 1] in the score map). The fast path decides whole cells from bounds on ``p_top``
and computes it per pixel only where the bounds straddle a threshold (or a score map is asked
for), summing over the classes within 40 / k of ``L`` (the others add < e^-40 each: relative
error < C * 4.3e-18, so a threshold decision can differ from the reference only where
``|p_top - T| < 1e-12``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from runtime import label_kernel
from runtime.errors import ConfigError

UNKNOWN = 255  # label of pixels whose top score is below the score threshold
SCORE_KINDS = ("softmax", "probability")
METHODS = ("fast", "exact")
_PAD = -1e300  # score of the padding class in candidate lists: never wins, exp() -> 0
_CAND_TOL = 1e-9  # candidate margin, relative to the cell's largest |corner score|
_RELEVANT = 40.0  # classes this far below L are left out of softmax sums
_DECIDE_TOL = 1e-9  # margin on cell-level threshold decisions
_CHUNK = 1 << 22  # float64 values per per-pixel evaluation chunk (32 MB)
USE_NUMBA = True  # the compiled fast path where numba is installed (the ``fast`` extra)


@dataclass(frozen=True)
class LabelMap:
    """Attributes:
    labels: [H, W] class indices in [0, C), or ``UNKNOWN`` (255) below the threshold; uint8
        for at most 255 classes, else int32.
    scores: float32 [H, W] top-class probability (see ``score_kind``), or None if not asked.
    counts: int64 [max(C, 256)] number of pixels of each label value.
    """

    labels: np.ndarray
    scores: np.ndarray | None
    counts: np.ndarray

    def present(self) -> np.ndarray:
        """int64 [n]: the label values that occur, ascending (``UNKNOWN`` included)."""
        return np.flatnonzero(self.counts)


@dataclass(frozen=True, eq=False)  # hashed by identity: taps() caches them
class _Taps:
    """Two-tap bilinear sampling of ``in_len`` cells onto ``out_len`` outputs (align_corners=False).

    i0, i1: int64 [out_len] source cells (i1 = i0 where both clamp to the same cell);
    w0, w1: float64 [out_len] their weights (w1 = 0 when i0 == i1, merged into w0).
    """

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray


@functools.lru_cache(maxsize=32)  # a camera's frames share their sizes; arrays are read-only
def taps(out_len: int, in_len: int, span: float | None = None) -> _Taps:
    """Bilinear taps for the first ``out_len`` samples of a ``span``-long output grid (default
    ``out_len``) over ``in_len`` input cells; the nonzeros of ``postprocess.bilinear_matrix``."""
    span = out_len if span is None else span
    src = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / span) - 0.5
    src = np.clip(src, 0.0, in_len - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_len - 1)
    frac = src - i0
    same = i0 == i1
    w0 = np.where(same, (1.0 - frac) + frac, 1.0 - frac)
    w1 = np.where(same, 0.0, frac)
    for a in (i0, i1, w0, w1):
        a.setflags(write=False)
    return _Taps(i0, i1, w0, w1)


def upsample(s: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """float32 [C, h, w] -> float32 [C, H, W], bilinear (align_corners=False, as
    ``torch.nn.functional.interpolate``): columns then rows, with ``taps``' weights in float32.
    Used for full-resolution window averaging (``runtime.windows``, ``flush`` plans)."""
    s = np.asarray(s, dtype=np.float32)
    ty, tx = taps(int(out_hw[0]), s.shape[1]), taps(int(out_hw[1]), s.shape[2])
    f32 = np.float32
    cols = s[:, :, tx.i0] * tx.w0.astype(f32) + s[:, :, tx.i1] * tx.w1.astype(f32)
    w0, w1 = ty.w0.astype(f32)[:, None], ty.w1.astype(f32)[:, None]
    return cols[:, ty.i0, :] * w0 + cols[:, ty.i1, :] * w1


def _is_identity(t: _Taps, in_len: int) -> bool:
    """Whether the taps sample every input cell exactly once, at weight 1 (out = in)."""
    return len(t.i0) == in_len and bool((t.w1 == 0).all() and (t.i0 == np.arange(in_len)).all())


def _direct(s, rule, fills, with_scores):
    """``_exact`` for identity taps (scores already at the output size): the reference's values
    are the scores themselves (x * 1.0 + y * 0.0 == x for finite x), so no upsampling."""
    return _blocks(lambda rows: s[:, rows], s.shape[1:], rule, fills, with_scores)


def _check(logits: np.ndarray, out_hw, score_kind: str, method: str, thresholds, scale) -> None:
    if not isinstance(logits, np.ndarray) or logits.ndim != 3 or 0 in logits.shape:
        shape = getattr(logits, "shape", None)
        raise ConfigError(f"logits must be a non-empty float array [C, h, w], got shape {shape}")
    if len(out_hw) != 2 or min(out_hw) < 1:
        raise ConfigError(f"output size must be two positive ints, got {tuple(out_hw)}")
    if score_kind not in SCORE_KINDS:
        raise ConfigError(f"score kind must be one of {SCORE_KINDS}, got {score_kind!r}")
    if not (np.isfinite(scale) and scale > 0):
        raise ConfigError(f"score scale must be a positive number, got {scale}")
    if method not in METHODS:
        raise ConfigError(f"label method must be one of {METHODS}, got {method!r}")
    for name, t in thresholds.items():
        if not 0.0 <= t < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {t}")
    if thresholds["score_threshold"] > 0 and logits.shape[0] > UNKNOWN:
        raise ConfigError(
            f"a score threshold labels unknown pixels {UNKNOWN}: at most {UNKNOWN} classes, "
            f"got {logits.shape[0]}"
        )


def label_map(
    logits: np.ndarray,
    out_hw: tuple[int, int],
    span_hw: tuple[float, float] | None = None,
    *,
    score_kind: str = "softmax",
    score_scale: float = 1.0,
    score_threshold: float = 0.0,
    background_thd: float = 0.0,
    with_scores: bool = False,
    method: str = "fast",
) -> LabelMap:
    """Labels (and optionally the confidence map) of bilinearly upsampled scores.

    Args:
        logits (np.ndarray): float [C, h, w] per-class scores at feature resolution.
        out_hw: (H, W) output size, pixels.
        span_hw: (Hp, Wp) size the logits span when they cover a padded image (default out_hw).
        score_kind: ``softmax`` (logits; p = softmax over classes) or ``probability`` (values
            are already per-class probabilities; p = the top value).
        score_scale: k > 0, softmax temperature: p = softmax(k * v) (``softmax`` kind only).
        score_threshold: in [0, 1): pixels with p_top below it get ``UNKNOWN`` (255); 0 = off.
            Needs C <= 255.
        background_thd: in [0, 1): pixels with p_top below it get class 0 (SCLIP / ClearCLIP /
            NACLIP ``prob_thd``); applied before ``score_threshold``. 0 = off.
        with_scores: also return p_top per pixel (float32 [H, W]).
        method: ``fast`` (same labels, cost not growing with C x H x W) or ``exact``.
    Returns:
        LabelMap with labels [H, W] (uint8 for C <= 255, else int32).
    Raises:
        ConfigError: bad shapes, kinds or thresholds.
    """
    thresholds = {"background_thd": background_thd, "score_threshold": score_threshold}
    _check(logits, out_hw, score_kind, method, thresholds, score_scale)
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    span_hw = out_hw if span_hw is None else span_hw
    c_n, h, w = logits.shape
    ty, tx = taps(out_hw[0], h, span_hw[0]), taps(out_hw[1], w, span_hw[1])
    fills = [(t, f) for t, f in ((background_thd, 0), (score_threshold, UNKNOWN)) if t > 0]
    rule = (score_kind, float(score_scale))
    fast = method == "fast" and min(h, w) > 1 and bool(np.isfinite(logits).all())
    if fast and _is_identity(ty, h) and _is_identity(tx, w):  # already at the output size
        labels, scores = _direct(logits, rule, fills, with_scores)
        counts = []
    elif fast and USE_NUMBA and label_kernel.NUMBA_AVAILABLE:  # it takes the float32 as it is
        ay, ax = _cell_axis(ty, h), _cell_axis(tx, w)
        labels, scores, *counts = label_kernel.run(logits, ay, ax, rule, fills, with_scores)
    else:
        s = np.ascontiguousarray(logits, dtype=np.float64)
        run = _fast if fast else _exact
        labels, scores, *counts = run(s, ty, tx, rule, fills, with_scores)
    if scores is not None and score_kind == "probability":
        np.clip(scores, 0.0, 1.0, out=scores)
    if not counts:  # the compiled kernel counts as it fills; numpy counts afterwards
        counts = [np.bincount(labels.ravel(), minlength=max(c_n, 256))]
        labels = labels.astype(label_kernel.labels_dtype(c_n), copy=False)
    return LabelMap(labels, scores, counts[0])


def _top_probability(v: np.ndarray, vmax: np.ndarray, rule) -> np.ndarray:
    """p_top from values v [K, ...] (classes first) and their max [...]; rule = (kind, k)."""
    if rule[0] == "probability":
        return vmax
    return 1.0 / np.exp(rule[1] * (v - vmax)).sum(axis=0)


def _apply_fills(labels: np.ndarray, p: np.ndarray, fills) -> None:
    for t, fill in fills:
        labels[p < t] = fill


def _exact(s, ty: _Taps, tx: _Taps, rule, fills, with_scores):
    """The reference: every class at every pixel, float64, in row blocks."""
    cols = s[:, :, tx.i0] * tx.w0 + s[:, :, tx.i1] * tx.w1  # [C, h, W]

    def values(rows: slice) -> np.ndarray:
        w0, w1 = ty.w0[rows, None], ty.w1[rows, None]
        return cols[:, ty.i0[rows], :] * w0 + cols[:, ty.i1[rows], :] * w1

    return _blocks(values, (len(ty.i0), len(tx.i0)), rule, fills, with_scores)


def _blocks(values, out_hw, rule, fills, with_scores, block_rows: int = 64):
    """Labels (int32 [H, W]) and scores (float32 or None) from ``values(rows)`` -> [C, rows, W]
    per block of ``block_rows`` output rows: first argmax, then p_top in float64 where
    thresholds or scores need it."""
    labels = np.empty(out_hw, dtype=np.int32)
    scores = np.empty(out_hw, dtype=np.float32) if with_scores else None
    for r0 in range(0, out_hw[0], block_rows):
        rows = slice(r0, r0 + block_rows)
        v = values(rows)
        top = v.argmax(axis=0).astype(np.int32)  # float32 and float64 order alike
        if fills or with_scores:
            v = v.astype(np.float64, copy=False)
            p = _top_probability(v, v.max(axis=0), rule)
            _apply_fills(top, p, fills)
            if scores is not None:
                scores[rows] = p
        labels[rows] = top
    return labels, scores


@dataclass(frozen=True)
class _CellAxis:
    """One axis split into cells (pairs of adjacent feature cells).

    cell: int64 [out_len] cell index of each output sample (in [0, in_len - 2]);
    a, b: float64 [out_len] weights on the cell's low and high feature cell, bit-equivalent to the
        reference taps (a sample whose taps both hit the high cell gets a = 0, b = w0);
    start, count: int64 [in_len - 1] first output sample and number of samples of each cell.
    """

    cell: np.ndarray
    a: np.ndarray
    b: np.ndarray
    start: np.ndarray
    count: np.ndarray


@functools.lru_cache(maxsize=32)
def _cell_axis(t: _Taps, in_len: int) -> _CellAxis:
    cell = np.minimum(t.i0, in_len - 2)
    high = t.i0 > cell  # both taps on cell + 1 (the clamped far edge)
    a = np.where(high, 0.0, t.w0)
    b = np.where(high, t.w0, t.w1)
    count = np.bincount(cell, minlength=in_len - 1)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return _CellAxis(cell, a, b, start, count)


def _corner_bounds(s: np.ndarray):
    """Per cell and class: (max, min) over the cell's 4 corners, float64 [C, h-1, w-1] each."""
    corners = (s[:, :-1, :-1], s[:, :-1, 1:], s[:, 1:, :-1], s[:, 1:, 1:])
    return np.maximum.reduce(corners), np.minimum.reduce(corners)


def _cell_decisions(cmax, cmin, low, high, rule, fills):
    """Per cell, from bounds on p_top: (failed fill value or -1, undecided) for the thresholds.

    A cell passes a threshold when the lowest p_top it can hold is above it, fails when the
    highest is below; failures are applied in order, so the last failed fill wins.
    """
    kind, k = rule
    if kind == "probability":
        p_lo, p_hi = low, high  # v_top lies in [L, U]
    else:  # p_top = 1 / sum exp(k (v_c - v_top)), v_c in [cmin, cmax], v_top in [L, U]
        with np.errstate(divide="ignore", over="ignore"):  # sums may under/overflow: bounds
            p_lo = 1.0 / np.exp(k * (cmax - low)).sum(axis=0)
            p_hi = np.minimum(1.0, 1.0 / np.exp(k * (cmin - high)).sum(axis=0))
    failed = np.full(low.shape, -1, dtype=np.int32)
    undecided = np.zeros(low.shape, dtype=bool)
    for t, fill in fills:
        passes, fails = p_lo >= t + _DECIDE_TOL, p_hi < t - _DECIDE_TOL
        failed[fails] = fill
        undecided |= ~(passes | fails)
    return failed, undecided


def _fast(s, ty: _Taps, tx: _Taps, rule, fills, with_scores):
    """The vectorised numpy version of the fast path (without numba)."""
    c_n, h, w = s.shape
    ay, ax = _cell_axis(ty, h), _cell_axis(tx, w)
    cmax, cmin = _corner_bounds(s)
    low, high = cmin.max(axis=0), cmax.max(axis=0)  # L and U per cell
    scale = 1.0 + np.maximum(np.abs(cmax), np.abs(cmin)).max(axis=0)
    cand = cmax >= low - _CAND_TOL * scale  # [C, h-1, w-1], always holds the reference argmax
    first = cand.argmax(axis=0).astype(np.int32)
    many = cand.sum(axis=0) > 1
    failed, undecided = _cell_decisions(cmax, cmin, low, high, rule, fills)
    cell_labels = np.where(failed >= 0, failed, first)
    # Cells needing per-pixel work, and which classes to evaluate there: the candidates, or
    # every relevant class where a softmax probability is needed.
    # A cell that fails a threshold outright is one fill value (unless another threshold is
    # undecided there); one that passes needs no probability, only its argmax.
    need_p = undecided | with_scores
    sel = (many & (failed < 0)) | need_p
    classes = cand
    if rule[0] == "softmax":
        classes = np.where(need_p, cmax >= low - _RELEVANT / rule[1], cand)
    labels = np.repeat(np.repeat(cell_labels, ay.count, axis=0), ax.count, axis=1)
    scores = np.empty(labels.shape, dtype=np.float32) if with_scores else None
    if sel.any():
        _per_pixel(s, ay, ax, sel, classes & sel, rule, fills, labels, scores)
    return labels, scores


def _candidate_lists(classes: np.ndarray) -> np.ndarray:
    """int64 [K, h-1, w-1]: each cell's classes in ascending order, padded with C (the pad)."""
    c_n = classes.shape[0]
    k = int(classes.sum(axis=0).max())
    cc, rr, qq = np.nonzero(classes)
    pos = np.cumsum(classes, axis=0)[cc, rr, qq] - 1
    lists = np.full((k,) + classes.shape[1:], c_n, dtype=np.int64)
    lists[pos, rr, qq] = cc
    return lists


def _per_pixel(s, ay: _CellAxis, ax: _CellAxis, sel, classes, rule, fills, labels, scores):
    """Evaluate each selected cell's classes at its pixels with the reference expressions and
    write labels (and scores) there. Works on strip columns: (cell row r, output column x)."""
    c_n, h, w = s.shape
    lists = _candidate_lists(classes)
    padded = np.concatenate([s, np.full((1, h, w), _PAD)]).reshape(c_n + 1, h * w)
    strip_r, strip_x = np.nonzero(sel[:, ax.cell])  # strip columns to evaluate
    q = ax.cell[strip_x]
    rmax = int(ay.count.max())
    t = np.arange(rmax)[:, None]
    k_all = lists.shape[0]
    step = max(1, _CHUNK // (k_all * rmax))
    for n0 in range(0, len(strip_r), step):
        r, x, qn = strip_r[n0 : n0 + step], strip_x[n0 : n0 + step], q[n0 : n0 + step]
        cls = lists[:, r, qn]  # [K, N]
        base = cls * (h * w) + r * w
        top = padded.flat[base + qn] * ax.a[x] + padded.flat[base + qn + 1] * ax.b[x]
        bot = padded.flat[base + w + qn] * ax.a[x] + padded.flat[base + w + qn + 1] * ax.b[x]
        rows = ay.start[r] + t  # [R, N] output rows of each strip column
        valid = t < ay.count[r]
        rows = np.where(valid, rows, 0)
        v = top[:, None, :] * ay.a[rows] + bot[:, None, :] * ay.b[rows]  # [K, R, N]
        best = v.argmax(axis=0)
        got = np.take_along_axis(cls[:, None, :], best[None], axis=0)[0].astype(np.int32)
        if fills or scores is not None:
            vmax = np.take_along_axis(v, best[None], axis=0)[0]
            p = _top_probability(v, vmax, rule)
            _apply_fills(got, p, fills)
        flat = (rows * labels.shape[1] + x)[valid]
        labels.flat[flat] = got[valid]
        if scores is not None:
            scores.flat[flat] = p[valid]
