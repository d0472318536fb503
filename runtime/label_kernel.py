"""The fast label-map path compiled with numba (optional ``fast`` extra): the cell algorithm of
``runtime.label_map`` in loops, plus a per-column pruning step the numpy version cannot afford.

Per cell (two adjacent feature rows x two adjacent feature columns): the candidates are the
classes whose largest corner score reaches ``L`` (the largest smallest-corner score); in each
output column of the cell the candidates' column-interpolated top and bottom rows are computed
with the reference expressions, pruned again in 1-D the same way (a value linear between top and
bottom cannot beat another class's smaller end unless its larger end does), and only the
survivors are evaluated per pixel. Every value that decides a label is the reference's float64
expression, so the labels are the reference's. ``NUMBA_AVAILABLE`` says whether it can be used.
"""

from __future__ import annotations

import math
from importlib.util import find_spec

import numpy as np

NUMBA_AVAILABLE = find_spec("numba") is not None
PROBABILITY = 1  # score kind codes: 0 softmax, 1 probability
_CAND_TOL = 1e-9
_RELEVANT = 40.0
_DECIDE_TOL = 1e-9
_STACK = 128  # quadtree stack entries (depth <= 40 tiles)

_kernel = None
prange = range  # numba.prange once the kernel is compiled
_value = _refine = None  # their compiled forms, set by kernel()


def kernel():
    """The compiled kernel (compiled, or loaded from numba's cache, on first use)."""
    global _kernel, prange, _value, _refine
    if _kernel is None:
        import numba

        prange = numba.prange  # resolved by numba when it compiles _cells
        _value = numba.njit(inline="always")(_value_py)
        _refine = numba.njit(nogil=True)(_refine_py)
        _kernel = numba.njit(cache=True, nogil=True, parallel=True)(_cells)
    return _kernel


def _cells(
    s, ys, yn, ya, yb, xs, xn, xa, xb, kind, scale, thds, fillv, want_scores, labels, scores, counts
):
    """Fill ``labels`` (int32 [H, W]) and, with ``want_scores``, ``scores`` (float32 [H, W]).

    s: float64 [C, h, w], finite; ys, yn / xs, xn: int64 first output row / column and count per
    cell row / column; ya, yb / xa, xb: float64 weights on a cell's low / high feature cell per
    output row / column (``label_map._cell_axis``); kind: 0 softmax (of scale * v), 1 probability;
    thds, fillv: thresholds and their fill labels, applied in order; counts: int64
    [h - 1, >= 256 and > C], zeros, gets per cell row the number of pixels of each label.
    """
    c_n, h, w = s.shape
    n_f = len(thds)
    for r in prange(h - 1):
        cmx, cmn = np.empty(c_n), np.empty(c_n)
        cand = np.empty(c_n, np.int64)
        tile_max = np.empty(c_n)
        stack, pool = np.empty((_STACK, 7), np.int64), np.empty(_STACK * c_n, np.int64)
        y0, ny = ys[r], yn[r]
        for q in range(w - 1):
            x0, nx = xs[q], xn[q]
            if ny == 0 or nx == 0:
                continue
            low, high, big = -np.inf, -np.inf, 0.0
            for c in range(c_n):
                a, b, d, e = s[c, r, q], s[c, r, q + 1], s[c, r + 1, q], s[c, r + 1, q + 1]
                mx, mn = max(max(a, b), max(d, e)), min(min(a, b), min(d, e))
                cmx[c], cmn[c] = mx, mn
                low, high = max(low, mn), max(high, mx)
                big = max(big, max(abs(mx), abs(mn)))
            tol = _CAND_TOL * (1.0 + big)
            k_n = 0
            for c in range(c_n):
                if cmx[c] >= low - tol:
                    cand[k_n] = c
                    k_n += 1
            failed, undecided = -1, False
            if n_f > 0:
                if kind == PROBABILITY:
                    p_lo, p_hi = low, high
                else:
                    d_hi, d_lo = 0.0, 0.0
                    for c in range(c_n):
                        d_hi += math.exp(scale * (cmx[c] - low))
                        d_lo += math.exp(scale * (cmn[c] - high))
                    p_lo, p_hi = 1.0 / d_hi, min(1.0, 1.0 / d_lo)
                for f in range(n_f):
                    if p_hi < thds[f] - _DECIDE_TOL:
                        failed = fillv[f]
                    elif p_lo < thds[f] + _DECIDE_TOL:
                        undecided = True
            need_p = undecided or want_scores
            if not need_p and (k_n == 1 or failed >= 0):
                lab = failed if failed >= 0 else cand[0]
                labels[y0 : y0 + ny, x0 : x0 + nx] = lab
                counts[r, lab] += ny * nx
                continue
            if not need_p:  # argmax only: refine the candidates on ever smaller tiles
                _refine(s, r, q, ya, yb, xa, xb, y0, y0 + ny - 1, x0, x0 + nx - 1, cand, k_n,
                        stack, pool, tile_max, labels, counts[r])  # fmt: skip
                continue
            if kind != PROBABILITY:  # a softmax sum needs every relevant class
                k_n = 0
                for c in range(c_n):
                    if cmx[c] >= low - _RELEVANT / scale:
                        cand[k_n] = c
                        k_n += 1
            for y in range(y0, y0 + ny):
                for x in range(x0, x0 + nx):
                    best, bk = -np.inf, -1
                    for k in range(k_n):
                        v = _value(s, cand[k], r, q, ya[y], yb[y], xa[x], xb[x])
                        if bk < 0 or v > best:
                            best, bk = v, k
                    p = best
                    if kind != PROBABILITY:
                        den = 0.0
                        for k in range(k_n):
                            v = _value(s, cand[k], r, q, ya[y], yb[y], xa[x], xb[x])
                            den += math.exp(scale * (v - best))
                        p = 1.0 / den
                    lab = cand[bk]
                    for f in range(n_f):
                        if p < thds[f]:
                            lab = fillv[f]
                    if want_scores:
                        scores[y, x] = p
                    labels[y, x] = lab
                    counts[r, lab] += 1


def _value_py(s, c, r, q, va, vb, wa, wb):
    """The reference's float64 value of class c at a pixel of cell (r, q) with row weights
    (va, vb) and column weights (wa, wb): columns first, then rows, as ``label_map._exact``."""
    top = s[c, r, q] * wa + s[c, r, q + 1] * wb
    bot = s[c, r + 1, q] * wa + s[c, r + 1, q + 1] * wb
    return top * va + bot * vb


def _refine_py(
    s, r, q, ya, yb, xa, xb, y1, y2, x1, x2, cand, k_n, stack, pool, tile_max, labels, counts
):
    """Argmax over ``cand[:k_n]`` for the pixels [y1..y2] x [x1..x2] of cell (r, q).

    A quadtree over the pixel block: a bilinear function's extremes over a rectangle are at its
    corners, so on each tile the classes whose largest corner value is below the largest
    smallest-corner value cannot win anywhere in it; a tile left with one class is filled,
    a tile of <= 4 pixels is evaluated per pixel. Depth first, with each tile's surviving list
    stored after its parent's in ``pool`` (int64 [>= depth * C]); ``stack`` int64 [>= 4 * depth, 7];
    ``tile_max`` float64 [C] scratch; ``counts`` int64 [> C] gets the pixels per label.
    """
    pool[:k_n] = cand[:k_n]
    stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = y1, y2, x1, x2
    stack[0, 4], stack[0, 5], stack[0, 6] = 0, k_n, k_n
    n = 1
    while n > 0:
        n -= 1
        ty1, ty2, tx1, tx2 = stack[n, 0], stack[n, 1], stack[n, 2], stack[n, 3]
        off, cnt, base = stack[n, 4], stack[n, 5], stack[n, 6]
        if cnt > 1 and (ty2 - ty1 + 1) * (tx2 - tx1 + 1) <= 4:
            for y in range(ty1, ty2 + 1):
                for x in range(tx1, tx2 + 1):
                    best, bk = -np.inf, -1
                    for k in range(cnt):
                        v = _value(s, pool[off + k], r, q, ya[y], yb[y], xa[x], xb[x])
                        if bk < 0 or v > best:
                            best, bk = v, k
                    labels[y, x] = pool[off + bk]
                    counts[pool[off + bk]] += 1
            continue
        if cnt > 1:  # prune on this tile's corners
            low, big = -np.inf, 0.0
            for k in range(cnt):
                c = pool[off + k]
                a = _value(s, c, r, q, ya[ty1], yb[ty1], xa[tx1], xb[tx1])
                b = _value(s, c, r, q, ya[ty1], yb[ty1], xa[tx2], xb[tx2])
                d = _value(s, c, r, q, ya[ty2], yb[ty2], xa[tx1], xb[tx1])
                e = _value(s, c, r, q, ya[ty2], yb[ty2], xa[tx2], xb[tx2])
                low = max(low, min(min(a, b), min(d, e)))
                big = max(big, max(max(abs(a), abs(b)), max(abs(d), abs(e))))
                tile_max[k] = max(max(a, b), max(d, e))
            tol = _CAND_TOL * (1.0 + big)
            m = 0
            for k in range(cnt):
                if tile_max[k] >= low - tol:
                    pool[base + m] = pool[off + k]
                    m += 1
            off, cnt = base, m
        if cnt == 1:
            labels[ty1 : ty2 + 1, tx1 : tx2 + 1] = pool[off]
            counts[pool[off]] += (ty2 - ty1 + 1) * (tx2 - tx1 + 1)
            continue
        ym, xm = (ty1 + ty2) // 2, (tx1 + tx2) // 2
        for cy1, cy2 in ((ty1, ym), (ym + 1, ty2)):
            for cx1, cx2 in ((tx1, xm), (xm + 1, tx2)):
                if cy1 > cy2 or cx1 > cx2:
                    continue
                stack[n, 0], stack[n, 1], stack[n, 2], stack[n, 3] = cy1, cy2, cx1, cx2
                stack[n, 4], stack[n, 5], stack[n, 6] = off, cnt, off + cnt
                n += 1


def run(s: np.ndarray, ay, ax, rule, fills, with_scores: bool):
    """(labels int32 [H, W], scores float32 [H, W] or None, counts int64 [max(C, 256)] pixels
    per label) for ``label_map`` (finite ``s``, h, w >= 2; ``ay`` / ``ax``: ``_CellAxis``)."""
    out_hw = (len(ay.cell), len(ax.cell))
    labels = np.empty(out_hw, dtype=np.int32)
    scores = np.empty(out_hw if with_scores else (1, 1), dtype=np.float32)
    thds = np.array([t for t, _ in fills], dtype=np.float64)
    fillv = np.array([f for _, f in fills], dtype=np.int64)
    code = PROBABILITY if rule[0] == "probability" else 0
    counts = np.zeros((s.shape[1] - 1, max(s.shape[0], 256)), dtype=np.int64)
    kernel()(s, ay.start, ay.count, ay.a, ay.b, ax.start, ax.count, ax.a, ax.b, code, rule[1],
             thds, fillv, with_scores, labels, scores, counts)  # fmt: skip
    return labels, (scores if with_scores else None), counts.sum(axis=0)
