"""The fast label-map path compiled with numba (optional ``fast`` extra): the cell algorithm of
``runtime.label_map`` in loops, with pruning the numpy version cannot afford.

Per cell (two adjacent feature rows x two adjacent feature columns), where every class's value is
bilinear: a cell whose four feature corners have the same clear winner is that class everywhere
(a class beaten at all four corners of a rectangle by a margin is beaten inside it: the
difference of two bilinear functions is bilinear). Elsewhere the candidates are the classes whose
largest corner score reaches ``L`` (the largest smallest-corner score) and that no corner winner
dominates; a quadtree over the cell's pixels repeats both tests on ever smaller tiles and
evaluates the survivors per pixel on small ones. Every value that decides a label is the
reference's float64 expression, so the labels are the reference's. ``NUMBA_AVAILABLE`` says
whether it can be used.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec

import numpy as np

NUMBA_AVAILABLE = find_spec("numba") is not None
log = logging.getLogger(__name__)
PROBABILITY = 1  # score kind codes: 0 softmax, 1 probability
_CAND_TOL = 1e-9
_RELEVANT = 40.0
_TINY = math.exp(-_RELEVANT)  # upper bound on a softmax term more than 40 below the top
_DECIDE_TOL = 1e-9
_STACK = 128  # quadtree stack entries (depth <= 40 tiles)
_LEAF = 16  # tiles of at most this many pixels are evaluated per pixel

_kernel = None
# their compiled forms, set by kernel()
_value = _refine = _undominated = _prepare = _dominated = _diff = _two = _cell_row = None


_init_lock = threading.Lock()  # the kernel's compile and the pool's start: once, on any thread


def kernel():
    """The compiled kernel (compiled, or loaded from numba's cache, on first use: the first
    compile on a machine takes seconds, so it is logged). Thread-safe: callers on several
    threads wait for one compile."""
    if _kernel is None:
        with _init_lock:
            if _kernel is None:
                _compile()
    return _kernel


def _compile() -> None:
    """Make the numba dispatchers (``kernel`` holds the lock); ``_kernel`` last."""
    global _kernel, _cell_row, _diff, _two, _dominated, _value, _refine, _undominated
    global _prepare
    import numba

    log.info("loading the compiled label-map kernel (the first run on a machine compiles it)")
    _value = numba.njit(inline="always")(_value_py)
    _undominated = numba.njit(nogil=True)(_undominated_py)
    _dominated = numba.njit(inline="always")(_dominated_py)
    _prepare = _cached_jit(numba, _prepare_py)
    _diff = numba.njit(inline="always")(_diff_py)
    _two = numba.njit(nogil=True)(_two_py)
    _refine = numba.njit(nogil=True)(_refine_py)
    _cell_row = numba.njit(nogil=True)(_cell_row_py)
    # Serial and without the GIL: ``run`` splits the cell rows over threads (numba's own
    # parallel loops leaked memory on every call, ~6 kB with numba 0.68).
    _kernel = _cached_jit(numba, _cells)  # last: a kernel set means all of them are


def _cached_jit(numba, fn):
    """``numba.njit(nogil=True)`` with numba's on-disk cache, or without it where no cache
    folder is writable (a read-only install with no user cache directory)."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as e:  # "cannot cache function ...: no locator available"
        log.info("numba cannot cache %s (%s): compiling it in every process", fn.__name__, e)
        return numba.njit(nogil=True)(fn)


def _cells(
    s, top, sure, r0, r1, step, ys, yn, ya, yb, xs, xn, xa, xb, kind, scale, thds, fillv,
    want_scores, labels, scores, counts,
):  # fmt: skip
    """Fill cell rows range(r0, r1, step) of ``labels`` (uint8 or int32 [H, W]) and, with
    ``want_scores``, ``scores`` (float32 [H, W]).

    s: float64 [h, w, C], classes last (a cell's classes are contiguous), finite.
    top, sure: per point, the first argmax and whether it wins by the margin (``_prepare``).
    ys, yn / xs, xn: int64 first output row / column and count per cell row / column.
    ya, yb / xa, xb: float64 weights on a cell's low / high feature cell per output row / column
    (``label_map._cell_axis``). kind: 0 softmax (of scale * v), 1 probability. thds, fillv:
    thresholds and their fill labels, applied in order. counts: int64 [h - 1, >= 256 and > C],
    zeros; gets per cell row the number of pixels of each label.
    """
    max_nx = max(1, xn.max())
    for r in range(r0, r1, step):
        _cell_row(r, s, top, sure, ys, yn, ya, yb, xs, xn, xa, xb, kind, scale, thds, fillv,
                  want_scores, labels, scores, counts, max_nx)  # fmt: skip


def _cell_row_py(
    r, s, top, sure, ys, yn, ya, yb, xs, xn, xa, xb, kind, scale, thds, fillv, want_scores,
    labels, scores, counts, max_nx,
):  # fmt: skip
    """Cell row r of ``_cells``."""
    h, w, c_n = s.shape
    n_f = len(thds)
    cmx, cmn = np.empty(c_n), np.empty(c_n)
    cand = np.empty(c_n, np.int64)
    tile, wins = np.empty((c_n, 4)), np.empty(4, np.int64)
    cols = np.empty((2, c_n, max_nx))
    stack, pool = np.empty((_STACK, 7), np.int64), np.empty(_STACK * c_n, np.int64)
    y0, ny = ys[r], yn[r]
    for q in range(w - 1):
        x0, nx = xs[q], xn[q]
        if ny == 0 or nx == 0:
            continue
        w0 = top[r, q]
        if n_f == 0 and not want_scores and sure[r, q] and sure[r, q + 1] and sure[r + 1, q]:
            if sure[r + 1, q + 1] and top[r, q + 1] == w0 and top[r + 1, q] == w0:
                if top[r + 1, q + 1] == w0:  # one class wins all four corners: all of it
                    labels[y0 : y0 + ny, x0 : x0 + nx] = w0
                    counts[r, w0] += ny * nx
                    continue
        low, high, big = -np.inf, -np.inf, 0.0
        for c in range(c_n):
            a, b, d, e = s[r, q, c], s[r, q + 1, c], s[r + 1, q, c], s[r + 1, q + 1, c]
            mx, mn = max(max(a, b), max(d, e)), min(min(a, b), min(d, e))
            cmx[c], cmn[c] = mx, mn
            low, high = max(low, mn), max(high, mx)
            big = max(big, max(abs(mx), abs(mn)))
        tol = _CAND_TOL * (1.0 + big)
        wins[0], wins[1], wins[2], wins[3] = w0, top[r, q + 1], top[r + 1, q], top[r + 1, q + 1]
        k_n = 0
        for c in range(c_n):  # bound test, then dominance by the corner winners
            if cmx[c] >= low - tol and not _dominated(s, r, q, c, wins, tol):
                cand[k_n] = c
                k_n += 1
        failed, undecided = -1, False
        if n_f > 0:
            if kind == PROBABILITY:
                p_lo, p_hi = low, high
            else:
                d_hi, d_lo = 0.0, 0.0
                for c in range(c_n):  # terms below e^-40 bounded, not computed
                    u = scale * (cmx[c] - low)
                    d_hi += math.exp(u) if u > -_RELEVANT else _TINY
                    v = scale * (cmn[c] - high)
                    if v > -_RELEVANT:  # dropping a term keeps a lower bound
                        d_lo += math.exp(v)
                p_lo, p_hi = 1.0 / d_hi, (1.0 if d_lo <= 1.0 else 1.0 / d_lo)
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
                    stack, pool, tile, cols, wins, labels, counts[r])  # fmt: skip
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


def _prepare_py(s32, st, best, second, top, y0, y1):
    """Point rows [y0, y1) of s32 [C, h, w] (the graph's scores, read in memory order): copy
    them classes-last into st float64 [h, w, C], and per point keep the best and second-best
    value and the first argmax (top int64 [h, w]). Returns max |value| seen. A cell whose four
    corners have the same clear winner is that class everywhere (``_undominated``)."""
    c_n, h, w = s32.shape
    big = 0.0
    for y in range(y0, y1):
        for x in range(w):
            best[y, x], second[y, x], top[y, x] = -np.inf, -np.inf, 0
        for c in range(c_n):
            for x in range(w):
                v = np.float64(s32[c, y, x])
                st[y, x, c] = v
                big = max(big, abs(v))
                if v > best[y, x]:
                    second[y, x], best[y, x], top[y, x] = best[y, x], v, c
                elif v > second[y, x]:
                    second[y, x] = v
    return big


def _value_py(s, c, r, q, va, vb, wa, wb):
    """The reference's float64 value of class c at a pixel of cell (r, q) with row weights
    (va, vb) and column weights (wa, wb): columns first, then rows, as ``label_map._exact``."""
    top = s[r, q, c] * wa + s[r, q + 1, c] * wb
    bot = s[r + 1, q, c] * wa + s[r + 1, q + 1, c] * wb
    return top * va + bot * vb


def _dominated_py(s, r, q, c, wins, tol):
    """Whether one of the cell's corner winners ``wins`` (int64 [4]) beats class c by ``tol``
    at all four feature corners of cell (r, q), so everywhere in it (see ``_undominated``)."""
    a, b, d, e = s[r, q, c], s[r, q + 1, c], s[r + 1, q, c], s[r + 1, q + 1, c]
    for j in range(4):
        w = wins[j]
        if w != c and s[r, q, w] - a >= tol and s[r, q + 1, w] - b >= tol:
            if s[r + 1, q, w] - d >= tol and s[r + 1, q + 1, w] - e >= tol:
                return True
    return False


def _undominated_py(classes, n, values, tol, out, winners):
    """Keep (in order, into ``out``; returns how many) the ``classes[:n]`` that no corner winner
    dominates. ``values`` float64 [>= C, 4]: each class's value at a tile's four corners (rows
    indexed by class for the cell, by list position for ``_refine``: ``classes`` then holds
    positions). A class whose value is below another's by ``tol`` at all four corners is below
    it everywhere on the tile (their difference is bilinear, so the interior is a convex
    combination of the corners); in particular one class winning all four corners by ``tol``
    wins the whole tile. The winners checked are each corner's first maximum (written to
    ``winners``, int64 [4] scratch)."""
    for i in range(4):
        best, wk = -np.inf, -1
        for k in range(n):
            v = values[classes[k], i]
            if wk < 0 or v > best:
                best, wk = v, classes[k]
        winners[i] = wk
    m = 0
    for k in range(n):
        c = classes[k]
        beaten = False
        for j in range(4):
            w = winners[j]
            if w != c:
                beaten = True
                for i in range(4):
                    if values[w, i] - values[c, i] < tol:
                        beaten = False
                        break
                if beaten:
                    break
        if not beaten:
            out[m] = c
            m += 1
    return m


def _refine_py(
    s, r, q, ya, yb, xa, xb, y1, y2, x1, x2, cand, k_n, stack, pool, tile, cols, wins, labels,
    counts,
):  # fmt: skip
    """Argmax over ``cand[:k_n]`` for the pixels [y1..y2] x [x1..x2] of cell (r, q).

    A quadtree over the pixel block: a bilinear function's extremes over a rectangle are at its
    corners, so on each tile the classes whose largest corner value is below the largest
    smallest-corner value cannot win anywhere in it; a tile left with one class is filled,
    a tile of <= _LEAF pixels is evaluated per pixel. Depth first, with each tile's surviving list
    stored after its parent's in ``pool`` (int64 [>= depth * C]); ``stack`` int64 [>= 4 * depth, 7];
    ``tile`` float64 [C, 4] scratch; ``counts`` int64 [> C] gets the pixels per label. The
    candidates of a tile are also pruned by corner dominance (``_undominated``). ``cols``
    float64 [2, >= k_n, >= x2 - x1 + 1] scratch gets each candidate's column-interpolated top
    and bottom rows (the reference's first pass), so a pixel costs two products and a sum;
    the lists hold positions in ``cand``.
    """
    for k in range(k_n):
        c = cand[k]
        s00, s01, s10, s11 = s[r, q, c], s[r, q + 1, c], s[r + 1, q, c], s[r + 1, q + 1, c]
        for x in range(x1, x2 + 1):
            cols[0, k, x - x1] = s00 * xa[x] + s01 * xb[x]
            cols[1, k, x - x1] = s10 * xa[x] + s11 * xb[x]
        pool[k] = k
    stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = y1, y2, x1, x2
    stack[0, 4], stack[0, 5], stack[0, 6] = 0, k_n, k_n
    n = 1
    while n > 0:
        n -= 1
        ty1, ty2, tx1, tx2 = stack[n, 0], stack[n, 1], stack[n, 2], stack[n, 3]
        off, cnt, base = stack[n, 4], stack[n, 5], stack[n, 6]
        tol = _CAND_TOL
        if cnt > 1 and (ty2 - ty1 + 1) * (tx2 - tx1 + 1) <= _LEAF:
            prev, run = -1, 0  # counted per run of one label (no read-modify-write per pixel)
            for y in range(ty1, ty2 + 1):
                for x in range(tx1, tx2 + 1):
                    best, bk = -np.inf, -1
                    for k in range(cnt):
                        p = pool[off + k]
                        v = cols[0, p, x - x1] * ya[y] + cols[1, p, x - x1] * yb[y]
                        if bk < 0 or v > best:
                            best, bk = v, k
                    lab = cand[pool[off + bk]]
                    labels[y, x] = lab
                    if lab != prev:
                        if run:
                            counts[prev] += run
                        prev, run = lab, 0
                    run += 1
            counts[prev] += run
            continue
        if cnt > 1:  # prune on this tile's corners
            low, big = -np.inf, 0.0
            for k in range(cnt):
                p, j1, j2 = pool[off + k], tx1 - x1, tx2 - x1
                a = cols[0, p, j1] * ya[ty1] + cols[1, p, j1] * yb[ty1]
                b = cols[0, p, j2] * ya[ty1] + cols[1, p, j2] * yb[ty1]
                d = cols[0, p, j1] * ya[ty2] + cols[1, p, j1] * yb[ty2]
                e = cols[0, p, j2] * ya[ty2] + cols[1, p, j2] * yb[ty2]
                tile[k, 0], tile[k, 1], tile[k, 2], tile[k, 3] = a, b, d, e
                low = max(low, min(min(a, b), min(d, e)))
                big = max(big, max(max(abs(a), abs(b)), max(abs(d), abs(e))))
            tol = _CAND_TOL * (1.0 + big)
            m = 0
            for k in range(cnt):  # list positions that pass the bound test
                if max(max(tile[k, 0], tile[k, 1]), max(tile[k, 2], tile[k, 3])) >= low - tol:
                    pool[base + m] = k
                    m += 1
            m = _undominated(pool[base : base + m], m, tile, tol, pool[base : base + m], wins)
            for k in range(m):  # tile positions -> cand positions (in place: base + k <= k)
                pool[base + k] = pool[off + pool[base + k]]
            off, cnt = base, m
        if cnt == 1:
            lab = cand[pool[off]]
            labels[ty1 : ty2 + 1, tx1 : tx2 + 1] = lab
            counts[lab] += (ty2 - ty1 + 1) * (tx2 - tx1 + 1)
            continue
        if cnt == 2:  # one boundary: row by row, it crosses each row at most once
            pa, pb = pool[off], pool[off + 1]
            _two(cols, pa, pb, cand[pa], cand[pb], ya, yb, ty1, ty2, tx1, tx2, x1, tol, labels,
                 counts)  # fmt: skip
            continue
        ym, xm = (ty1 + ty2) // 2, (tx1 + tx2) // 2
        for cy1, cy2 in ((ty1, ym), (ym + 1, ty2)):
            for cx1, cx2 in ((tx1, xm), (xm + 1, tx2)):
                if cy1 > cy2 or cx1 > cx2:
                    continue
                stack[n, 0], stack[n, 1], stack[n, 2], stack[n, 3] = cy1, cy2, cx1, cx2
                stack[n, 4], stack[n, 5], stack[n, 6] = off, cnt, off + cnt
                n += 1


def _two_py(cols, pa, pb, la, lb, ya, yb, ty1, ty2, tx1, tx2, x0, tol, labels, counts):
    """Labels of tile [ty1..ty2] x [tx1..tx2] with two candidates, at ``cols`` positions pa, pb
    (classes la < lb, so la wins ties); ``x0``: the cell's first column (``cols`` offset).

    Along a row the exact difference d = v_a - v_b is monotone in x (affine in the column
    weight), so the label changes at most once. Ends agreeing by ``tol`` (far above float64
    rounding) decide the whole row; otherwise bisection on the computed values finds a change,
    and pixels are evaluated outward from it until |d| >= 2 tol, past which the side is fixed.
    Every decision compares the reference's two float64 values, so the labels are its labels.
    """
    for y in range(ty1, ty2 + 1):
        va, vb = ya[y], yb[y]
        dl = _diff(cols, pa, pb, tx1 - x0, va, vb)
        dr = _diff(cols, pa, pb, tx2 - x0, va, vb)
        if (dl >= 0) == (dr >= 0) and min(abs(dl), abs(dr)) >= tol:
            lab = la if dl >= 0 else lb
            labels[y, tx1 : tx2 + 1] = lab
            counts[lab] += tx2 - tx1 + 1
            continue
        if (dl >= 0) == (dr >= 0):  # same side, an end within the margin: every pixel
            for x in range(tx1, tx2 + 1):
                lab = la if _diff(cols, pa, pb, x - x0, va, vb) >= 0 else lb
                labels[y, x] = lab
                counts[lab] += 1
            continue
        left = dl >= 0
        lo, hi = tx1, tx2  # computed signs differ at lo and hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if (_diff(cols, pa, pb, mid - x0, va, vb) >= 0) == left:
                lo = mid
            else:
                hi = mid
        x = lo  # leftwards from lo, pixel by pixel until the margin, then one fill
        while x >= tx1:
            d = _diff(cols, pa, pb, x - x0, va, vb)
            lab = la if d >= 0 else lb
            labels[y, x] = lab
            counts[lab] += 1
            x -= 1
            if abs(d) >= 2.0 * tol:
                break
        if x >= tx1:
            lab = la if left else lb
            labels[y, tx1 : x + 1] = lab
            counts[lab] += x + 1 - tx1
        x = hi  # rightwards from hi likewise
        while x <= tx2:
            d = _diff(cols, pa, pb, x - x0, va, vb)
            lab = la if d >= 0 else lb
            labels[y, x] = lab
            counts[lab] += 1
            x += 1
            if abs(d) >= 2.0 * tol:
                break
        if x <= tx2:
            lab = lb if left else la
            labels[y, x : tx2 + 1] = lab
            counts[lab] += tx2 + 1 - x


def _diff_py(cols, pa, pb, j, va, vb):
    """v_a - v_b at column j of the cell and row weights (va, vb), each value computed as the
    reference does; its sign is the reference's comparison (float subtraction keeps it)."""
    return (cols[0, pa, j] * va + cols[1, pa, j] * vb) - (cols[0, pb, j] * va + cols[1, pb, j] * vb)


_WORKERS = max(1, min(4, len(os.sched_getaffinity(0))))  # threads over the cell rows
_executor: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool there."""
    global _executor
    _executor = None


os.register_at_fork(after_in_child=_forget_pool)


def _pool() -> ThreadPoolExecutor:
    """The worker threads ``run`` shares between its callers (one pool, made on first use)."""
    global _executor
    if _executor is None:
        with _init_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(_WORKERS - 1, thread_name_prefix="ovss-labels")
    return _executor


_scratch = threading.local()  # per thread: the classes-last copy, reused from call to call


def _buffers(s: np.ndarray):
    """Per-thread buffers kept between calls (a fresh multi-MB array every frame costs more in
    page faults, glibc returning it to the OS, than the work): st float64 [h, w, C], best and
    second float64 [h, w], top int64 [h, w]."""
    c_n, h, w = s.shape
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None or bufs[0].shape != (h, w, c_n):
        bufs = _scratch.bufs = (
            np.empty((h, w, c_n)),
            np.empty((h, w)),
            np.empty((h, w)),
            np.empty((h, w), np.int64),
        )
    return bufs


def _split(work, n: int) -> list:
    """``work(i, n)`` for i in range(n): i > 0 on the pool, i = 0 on this thread (awake, its
    caches warm); returns the results in order."""
    if n == 1:
        return [work(0, 1)]
    others = [_pool().submit(work, i, n) for i in range(1, n)]
    first = work(0, n)
    return [first] + [f.result() for f in others]


def labels_dtype(num_classes: int):
    """uint8 for at most 255 classes (255 is ``UNKNOWN``; a quarter of int32's bytes to write),
    else int32."""
    return np.uint8 if num_classes <= 255 else np.int32


def warm() -> None:
    """Compile (or load) the kernel now and run it once on a tiny input, so that the first real
    frame does not pay for it. A no-op without numba."""
    if NUMBA_AVAILABLE and _kernel is None:
        from runtime.label_map import label_map

        label_map(np.zeros((2, 2, 2), np.float32), (3, 3))


def run(s: np.ndarray, ay, ax, rule, fills, with_scores: bool):
    """(labels int32 [H, W], scores float32 [H, W] or None, counts int64 [max(C, 256)] pixels
    per label) for ``label_map``: ``s`` float [C, h, w], finite, h, w >= 2; ``ay`` / ``ax``:
    ``label_map._CellAxis``."""
    out_hw = (len(ay.cell), len(ax.cell))
    labels = np.empty(out_hw, dtype=labels_dtype(s.shape[0]))
    scores = np.empty(out_hw if with_scores else (1, 1), dtype=np.float32)
    thds = np.array([t for t, _ in fills], dtype=np.float64)
    fillv = np.array([f for _, f in fills], dtype=np.int64)
    code = PROBABILITY if rule[0] == "probability" else 0
    counts = np.zeros((s.shape[1] - 1, max(s.shape[0], 256)), dtype=np.int64)
    if s.dtype != np.float32:  # float32 (what graphs give) as it is; anything else in float64
        s = np.ascontiguousarray(s, dtype=np.float64)
    s = np.ascontiguousarray(s)
    kernel()
    st, best, second, top = _buffers(s)
    h = s.shape[1]
    n = _WORKERS if h >= 2 * _WORKERS else 1
    bigs = _split(lambda i, k: _prepare(s, st, best, second, top, h * i // k, h * (i + 1) // k), n)
    sure = best - second >= _CAND_TOL * (1.0 + max(bigs))

    def rows(first: int, step: int) -> None:  # interleaved cell rows: balanced, disjoint writes
        _kernel(st, top, sure, first, h - 1, step, ay.start, ay.count, ay.a, ay.b, ax.start,
                ax.count, ax.a, ax.b, code, rule[1], thds, fillv, with_scores, labels, scores,
                counts)  # fmt: skip

    _split(rows, n)
    return labels, (scores if with_scores else None), counts.sum(axis=0)
