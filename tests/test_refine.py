"""Key smoothing and prompt denoising pinned against slow, direct references (METHODS.md A1)."""

import math

import numpy as np
import pytest
import torch

from training.refine import classify, key_smooth, prompt_denoise


def softmax100(logits_c):
    """softmax(100 * x) over a list of per-class values, float64."""
    m = max(logits_c)
    e = [math.exp(100.0 * (v - m)) for v in logits_c]
    s = sum(e)
    return [v / s for v in e]


def ref_prompt_denoise(logits, thresh):
    """Per class: max over every pixel of softmax(100 logits); below thresh -> all logits -100."""
    b, c, h, w = logits.shape
    out = logits.copy()
    for n in range(b):
        best = [0.0] * c
        for y in range(h):
            for x in range(w):
                p = softmax100([logits[n, k, y, x] for k in range(c)])
                best = [max(a, q) for a, q in zip(best, p)]
        for k in range(c):
            if best[k] < thresh:
                out[n, k] = -100.0
    return out


def ref_key_smooth(logits, key, thresh, spatial=True):
    """p = softmax(100 logits) [HW,C]; k normalised over positions (official) or per token;
    W[i,j] = sum_d k[i,d] k[j,d]; positions with max_c p < thresh take sum_j W[i,j] p[j]."""
    b, c, h, w = logits.shape
    out = np.zeros_like(logits)
    for n in range(b):
        hw, dk = key.shape[1], key.shape[2]
        p = [softmax100([logits[n, k, i // w, i % w] for k in range(c)]) for i in range(hw)]
        kn = key[n].copy()
        if spatial:
            for d in range(dk):
                kn[:, d] /= math.sqrt(sum(kn[i, d] ** 2 for i in range(hw)))
        else:
            for i in range(hw):
                kn[i] /= math.sqrt(sum(v * v for v in kn[i]))
        for i in range(hw):
            row = p[i]
            if max(row) < thresh:
                wts = [sum(kn[i, d] * kn[j, d] for d in range(dk)) for j in range(hw)]
                row = [sum(wts[j] * p[j][k] for j in range(hw)) for k in range(c)]
            for k in range(c):
                out[n, k, i // w, i % w] = row[k]
    return out


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    logits = torch.rand(2, 5, 3, 4, generator=g, dtype=torch.float64) * 0.1 - 0.05
    logits[:, 1] += 0.04  # one class clearly strong somewhere, others weak
    key = torch.randn(2, 12, 6, generator=g, dtype=torch.float64)
    return logits, key


@pytest.mark.parametrize("thresh", [0.5, 0.9, 0.95])
def test_prompt_denoise_matches_reference(case, thresh):
    logits, _ = case
    got = prompt_denoise(logits, thresh).numpy()
    want = ref_prompt_denoise(logits.numpy(), thresh)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    removed = (want == -100.0).all(axis=(2, 3))
    assert removed.any() and not removed.all(), "case must exercise both kept and removed classes"


@pytest.mark.parametrize("spatial", [True, False])
@pytest.mark.parametrize("thresh", [1.0, 0.6])
def test_key_smooth_matches_reference(case, spatial, thresh):
    logits, key = case
    got = key_smooth(logits, key, thresh, "spatial" if spatial else "token").numpy()
    want = ref_key_smooth(logits.numpy(), key.numpy(), thresh, spatial)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_key_smooth_threshold_selects_positions(case):
    logits, key = case
    prob = torch.softmax(100 * logits, dim=1)
    out = key_smooth(logits, key, 0.6)
    untouched = prob.amax(dim=1) >= 0.6
    assert untouched.any() and (~untouched).any()
    torch.testing.assert_close(
        out.permute(0, 2, 3, 1)[untouched], prob.permute(0, 2, 3, 1)[untouched]
    )


def test_spatial_and_token_normalisation_differ(case):
    logits, key = case
    a, b = key_smooth(logits, key, 1.0, "spatial"), key_smooth(logits, key, 1.0, "token")
    assert (a - b).abs().max() > 1e-3


def test_classify_is_cosine_without_scale():
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 8, 2, 3, generator=g)
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    out = classify(feat, text)
    f = feat[0, :, 1, 2] / feat[0, :, 1, 2].norm()
    torch.testing.assert_close(out[0, :, 1, 2], text @ f)
    assert out.abs().max() <= 1.0 + 1e-6


def test_threshold_one_smooths_saturated_positions_too():
    """softmax(100 z) saturates to exactly 1.0 in float32 for confident pixels; thresh 1.0 still
    smooths them (exact-arithmetic meaning), so every backend selects the same positions."""
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0, 0, 0] = 1.0  # p = 1.0 exactly in float32 at this pixel
    key = torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(0))
    prob = torch.softmax(100 * logits, dim=1)
    assert prob[0, 0, 0, 0].item() == 1.0
    kn = torch.nn.functional.normalize(key, dim=1)
    want = (
        (kn @ kn.transpose(1, 2) @ prob.flatten(2).transpose(1, 2))
        .transpose(1, 2)
        .reshape(1, 3, 2, 2)
    )
    torch.testing.assert_close(key_smooth(logits, key, 1.0), want)
