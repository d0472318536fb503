"""The fast label-map path gives the reference's labels; threshold, scores and counts."""

from __future__ import annotations

import numpy as np
import pytest

import runtime.label_map as lm
from runtime.errors import ConfigError
from runtime.label_kernel import NUMBA_AVAILABLE
from runtime.label_map import UNKNOWN, label_map
from runtime.postprocess import bilinear_matrix

PATHS = [pytest.param(False, id="numpy")]
if NUMBA_AVAILABLE:
    PATHS.append(pytest.param(True, id="numba"))


@pytest.fixture(params=PATHS)
def fast_path(request, monkeypatch):
    monkeypatch.setattr(lm, "USE_NUMBA", request.param)
    return request.param


def _smooth(rng, c, h, w, scale):
    x = rng.normal(size=(c, h + 4, w + 4))
    k = np.array([1, 4, 6, 4, 1], float) / 16  # binomial blur: a spatially smooth field
    for axis in (1, 2):
        x = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, x)
    return (x * scale).astype(np.float32)


def _cases():
    rng = np.random.default_rng(0)
    yield "noise", rng.normal(size=(12, 7, 9)).astype(np.float32), (61, 83), None
    yield "smooth", _smooth(rng, 20, 14, 14, 30.0), (224, 224), None
    x = rng.normal(size=(6, 6, 8)).astype(np.float32) * 1e-3
    x[1], x[3] = x[0], x[2] + 1e-7  # an exact tie and a 1e-7 near-tie
    yield "ties", x, (50, 70), None
    yield "flat", np.zeros((4, 3, 3), np.float32), (20, 20), None  # every class ties
    yield "padded span", _smooth(rng, 9, 10, 12, 5.0), (150, 170), (160.5, 192.0)
    yield "downscale", rng.normal(size=(5, 20, 30)).astype(np.float32), (9, 13), None
    yield "one row", rng.normal(size=(5, 1, 9)).astype(np.float32), (7, 40), None
    big = rng.normal(size=(3, 6, 5)).astype(np.float32)
    big[2] = big[1] + 1e-6  # long boundaries between two classes inside large cells
    yield "large cells", big, (480, 400), None
    bad = rng.normal(size=(4, 5, 5)).astype(np.float32)
    bad[2, 1, 1] = np.nan
    yield "nan", bad, (30, 30), None


CASES = list(_cases())


@pytest.mark.parametrize("name,logits,out_hw,span", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("kind", ["softmax", "probability"])
def test_fast_labels_equal_exact(fast_path, name, logits, out_hw, span, kind):
    x = 1 / (1 + np.exp(-logits)) if kind == "probability" else logits
    for options in ({}, {"score_threshold": 0.3}, {"background_thd": 0.2, "score_threshold": 0.6}):
        want = label_map(x, out_hw, span, score_kind=kind, method="exact", **options)
        got = label_map(x, out_hw, span, score_kind=kind, **options)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.counts, want.counts)


def test_exact_path_matches_dense_bilinear():
    """The reference equals the separable matrix form of torch's bilinear (align_corners=False)."""
    x = np.random.default_rng(1).normal(size=(6, 5, 7)).astype(np.float32)
    up = np.einsum("rh,chw,sw->crs", bilinear_matrix(40, 5), x, bilinear_matrix(33, 7))
    got = label_map(x, (40, 33), method="exact").labels
    gap = np.sort(up, axis=0)[-1] - np.sort(up, axis=0)[-2]
    assert (got == up.argmax(0))[gap > 1e-4].all()


@pytest.mark.parametrize("kind", ["softmax", "probability"])
def test_threshold_marks_low_scores_unknown(fast_path, kind):
    rng = np.random.default_rng(2)
    x = _smooth(rng, 8, 9, 9, 4.0)
    x = 1 / (1 + np.exp(-x)) if kind == "probability" else x
    up = np.einsum(
        "rh,chw,sw->crs", bilinear_matrix(64, 9), x.astype(np.float64), bilinear_matrix(64, 9)
    )
    p = np.exp(up - up.max(0)).sum(0) ** -1 if kind == "softmax" else up.max(0)
    t = float(np.median(p))
    out = label_map(x, (64, 64), score_kind=kind, score_threshold=t, with_scores=True)
    clear = np.abs(p - t) > 1e-9
    np.testing.assert_array_equal((out.labels == UNKNOWN)[clear], (p < t)[clear])
    np.testing.assert_allclose(out.scores, p, atol=1e-6)
    plain = label_map(x, (64, 64), score_kind=kind).labels
    kept = out.labels != UNKNOWN
    np.testing.assert_array_equal(out.labels[kept], plain[kept])
    assert out.counts[UNKNOWN] == (~kept).sum() > 0


def test_scores_equal_exact_scores(fast_path):
    x = _smooth(np.random.default_rng(3), 30, 8, 10, 20.0)
    want = label_map(x, (70, 90), method="exact", with_scores=True)
    got = label_map(x, (70, 90), with_scores=True)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-7)
    assert got.scores.dtype == np.float32 and 0 < got.scores.min() <= got.scores.max() <= 1


def test_present_and_counts():
    x = np.zeros((3, 4, 4), np.float32)
    x[2] = 1.0
    out = label_map(x, (10, 12))
    assert out.present().tolist() == [2] and out.counts[2] == 120 and out.counts.sum() == 120


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(score_threshold=1.0), "score_threshold must be in"),
        (dict(background_thd=-0.1), "background_thd must be in"),
        (dict(score_kind="sigmoid"), "score kind"),
        (dict(method="quick"), "label method"),
    ],
)
def test_bad_options_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        label_map(np.zeros((2, 3, 3), np.float32), (5, 5), **kwargs)


def test_bad_shapes_and_too_many_classes_refused():
    with pytest.raises(ConfigError, match=r"\[C, h, w\]"):
        label_map(np.zeros((3, 3), np.float32), (5, 5))
    with pytest.raises(ConfigError, match="output size"):
        label_map(np.zeros((2, 3, 3), np.float32), (0, 5))
    with pytest.raises(ConfigError, match="at most 255 classes"):
        label_map(np.zeros((256, 2, 2), np.float32), (4, 4), score_threshold=0.5)
    big = label_map(np.zeros((300, 2, 2), np.float32), (4, 4))
    assert big.counts.shape == (300,) and big.labels.dtype == np.int32
    assert (
        label_map(np.zeros((255, 2, 2), np.float32), (4, 4), method="exact").labels.dtype
        == np.uint8
    )


def test_fast_equals_exact_on_camvid_frames(camvid, tiny_vit_folder):
    """Real frames through a (random) tiny ViT folder: the fast path labels = the exact ones."""
    from runtime.image import load_image
    from runtime.segmenter import Segmenter

    frames = sorted((camvid / "test").glob("*.png"))[:3]
    with (
        Segmenter(tiny_vit_folder, threads=1) as fast,
        Segmenter(tiny_vit_folder, threads=1, label_method="exact") as exact,
    ):
        for f in frames:
            image = load_image(f)
            for threshold in (0.0, 0.2):
                fast.score_threshold = exact.score_threshold = threshold
                a, b = fast(image), exact(image)
                np.testing.assert_array_equal(a.labels, b.labels)
                assert a.classes_present == b.classes_present and a.unknown == b.unknown


def test_score_scale_is_a_softmax_temperature(fast_path):
    x = _smooth(np.random.default_rng(4), 10, 8, 8, 0.05)  # cosine-like logits
    hot = label_map(x, (40, 40), score_scale=100.0, score_threshold=0.4, with_scores=True)
    ref = label_map(x.astype(np.float64) * 100.0, (40, 40), method="exact", with_scores=True)
    np.testing.assert_allclose(hot.scores, ref.scores, atol=1e-5)
    np.testing.assert_array_equal(hot.labels == UNKNOWN, ref.scores < 0.4)
    with pytest.raises(ConfigError, match="score scale"):
        label_map(x, (4, 4), score_scale=0.0)


def test_fast_path_works_in_a_forked_child():
    """The kernel's thread pool is not inherited by fork: a child starts its own (no hang)."""
    import multiprocessing as mp

    x = np.random.default_rng(6).normal(size=(6, 20, 20)).astype(np.float32)
    want = label_map(x, (300, 300)).labels  # the parent's pool now exists
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(label_map, (x, (300, 300))).get(timeout=60).labels
    np.testing.assert_array_equal(got, want)
