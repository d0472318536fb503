"""Last-block surgery (SCLIP / ClearCLIP / NACLIP) against references written the way the official
code computes it (sequence-first tensors, bmm over batch*heads, NACLIP's bias built by a 'same'
convolution of one-hot maps), and PAMR against a per-pixel numpy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.clip_loader import load_clip
from training.methods import METHODS
from training.pamr import Pamr
from training.surgery import SurgeryViT, gaussian_bias


def _official_window_bias(grid, std):
    """NACLIP's construction: a (2h-1)x(2w-1) Gaussian window convolved ('same') with one-hot
    maps of every patch; CLS row and column zero."""
    h, w = grid
    ys = torch.arange(-(h - 1), h, dtype=torch.float64)
    xs = torch.arange(-(w - 1), w, dtype=torch.float64)
    win = torch.exp(-(ys[:, None] ** 2 + xs[None] ** 2) / (2 * std**2))
    onehot = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    omega = F.conv2d(onehot, win[None, None], padding="same").reshape(h * w, h * w)
    out = torch.zeros(h * w + 1, h * w + 1, dtype=torch.float64)
    out[1:, 1:] = omega
    return out.float()


def _official_attn(block, x, kind, omega=None):
    """custom_attn of the official repositories: x [L, B, E] sequence-first."""
    attn = block.attn
    n, bsz, embed = x.shape
    heads = attn.num_heads
    hd = embed // heads
    scale = hd**-0.5
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.contiguous().view(-1, bsz * heads, hd).transpose(0, 1) for t in (q, k, v))
    if kind == "csa":
        w = F.softmax(torch.bmm(q, q.transpose(1, 2)) * scale, -1) + F.softmax(
            torch.bmm(k, k.transpose(1, 2)) * scale, -1
        )
    elif kind == "qq":
        w = F.softmax(torch.bmm(q, q.transpose(1, 2)) * scale, -1)
    else:
        w = torch.bmm(k, k.transpose(1, 2)) * scale + omega
        w = F.softmax(w, -1)
    out = torch.bmm(w, v).transpose(0, 1).contiguous().view(-1, bsz, embed)
    return attn.out_proj(out)


def _official_forward(visual, image, kind, residual, ffn, omega, pos):
    x = visual.conv1(image).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.reshape(1, 1, -1).expand(x.shape[0], -1, -1)
    x = visual.ln_pre(torch.cat([cls, x], 1) + pos)
    for blk in visual.transformer.resblocks[:-1]:
        x = blk(x)
    x = x.transpose(0, 1)
    last = visual.transformer.resblocks[-1]
    o = _official_attn(last, last.ln_1(x), kind, omega)
    x = x + o if residual else o
    if ffn:
        x = x + last.mlp(last.ln_2(x))
    x = visual.ln_post(x.transpose(0, 1))[:, 1:] @ visual.proj
    return x


@pytest.fixture(scope="module")
def tiny(one_thread):
    return load_clip("ovss-tiny-vit", "none", 0)


@pytest.mark.parametrize("method", ["sclip", "clearclip", "naclip"])
@pytest.mark.parametrize("size", [64, 96])
def test_last_block_matches_official_style_reference(tiny, method, size):
    cfg = METHODS[method].make_config(image_size=size)
    dense = SurgeryViT(
        tiny.model.visual, size, cfg.attention, cfg.residual, cfg.ffn, cfg.gaussian_std
    ).eval()
    grid = (size // dense.patch,) * 2
    omega = _official_window_bias(grid, cfg.gaussian_std) if cfg.gaussian_std else None
    image = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = dense(image)
        ref = _official_forward(
            tiny.model.visual, image, cfg.attention, cfg.residual, cfg.ffn, omega, dense.pos_embed
        )
    assert ours.shape == (2, ref.shape[-1], *grid)
    torch.testing.assert_close(ours.flatten(2).transpose(1, 2), ref, rtol=1e-5, atol=1e-5)


def test_kinds_really_differ(tiny):
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    feats = {}
    with torch.no_grad():
        for kind in ("value", "csa", "qq", "kk"):
            feats[kind] = SurgeryViT(tiny.model.visual, 64, kind, False, False)(image)
    kinds = sorted(feats)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1 :]:
            assert not torch.allclose(feats[a], feats[b], atol=1e-4), (a, b)


def test_gaussian_bias_matches_the_window_construction():
    ours = gaussian_bias((5, 7), 5.0)
    torch.testing.assert_close(ours, _official_window_bias((5, 7), 5.0), rtol=1e-6, atol=1e-7)
    assert ours[0].abs().sum() == 0 and ours[:, 0].abs().sum() == 0
    assert torch.allclose(ours[1:, 1:].diagonal(), torch.ones(35))
    # patch (0,0) -> (3,4): distance^2 25, std 5
    assert ours[1, 1 + 3 * 7 + 4].item() == pytest.approx(np.exp(-25 / 50), rel=1e-6)


def _pamr_reference(image, mask, steps, dilations):
    """Per-pixel loops over the published algorithm (numpy, float64)."""
    k, h, w = image.shape
    offs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    clamp = lambda v, n: min(max(v, 0), n - 1)  # noqa: E731 - replicate padding
    aff = np.zeros((len(offs) * len(dilations), h, w))
    for y in range(h):
        for x in range(w):
            taps = [
                (clamp(y + dy * d, h), clamp(x + dx * d, w))
                for d in dilations
                for dy, dx in [(0, 0)] + offs
            ]
            std = np.std(np.array([image[:, a, b] for a, b in taps]), axis=0, ddof=1)
            nbrs = [
                (clamp(y + dy * d, h), clamp(x + dx * d, w)) for d in dilations for dy, dx in offs
            ]
            a = np.array(
                [
                    (-np.abs(image[:, y, x] - image[:, p, q]) / (1e-8 + 0.1 * std)).mean()
                    for p, q in nbrs
                ]
            )
            e = np.exp(a - a.max())
            aff[:, y, x] = e / e.sum()
    for _ in range(steps):
        new = np.zeros_like(mask)
        for y in range(h):
            for x in range(w):
                nbrs = [
                    (clamp(y + dy * d, h), clamp(x + dx * d, w))
                    for d in dilations
                    for dy, dx in offs
                ]
                new[:, y, x] = sum(aff[i, y, x] * mask[:, p, q] for i, (p, q) in enumerate(nbrs))
        mask = new
    return mask


@pytest.mark.parametrize("dilations", [(1,), (1, 3)])
def test_pamr_matches_a_per_pixel_reference(dilations):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 9, 11))
    mask = rng.normal(size=(4, 9, 11))
    ours = Pamr(3, dilations)(torch.from_numpy(image)[None], torch.from_numpy(mask)[None])[0]
    np.testing.assert_allclose(
        ours.numpy(), _pamr_reference(image, mask, 3, dilations), rtol=1e-9, atol=1e-9
    )


def test_pamr_smooths_towards_image_edges():
    image = torch.zeros(1, 3, 12, 12)
    image[..., 6:] = 1.0  # two flat halves
    mask = torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    out = Pamr(10, (1, 2))(image, mask)
    left, right = out[..., :, :6], out[..., :, 6:]
    assert left.std(dim=(-1, -2)).max() < mask[..., :6].std(dim=(-1, -2)).min()
    assert right.std(dim=(-1, -2)).max() < mask[..., 6:].std(dim=(-1, -2)).min()


def test_pamr_rejects_bad_settings():
    with pytest.raises(ValueError, match="PAMR"):
        Pamr(0, (8,))
    with pytest.raises(ValueError, match="PAMR"):
        Pamr(3, ())


def _official_pos_encoding(pos, h, w, patch):
    """SCLIP / NACLIP ``interpolate_pos_encoding`` as written there: scale factors (w0 + 0.1) /
    sqrt(N) on a [1, D, sqrt(N), sqrt(N)] grid, bicubic, then back to tokens."""
    n = pos.shape[0] - 1
    side = int(n**0.5)
    w0, h0 = w // patch + 0.1, h // patch + 0.1
    grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(w0 / side, h0 / side), mode="bicubic")
    return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(-1, pos.shape[-1])])[None]


@pytest.mark.parametrize("size", [64, 96, 448])
def test_positional_embedding_follows_the_official_scale_factor(tiny, size):
    from training.maskclip import interpolate_pos_embed as size_resize
    from training.surgery import interpolate_pos_embed

    pos = tiny.model.visual.positional_embedding.detach()
    ours = interpolate_pos_embed(pos, (size // 16,) * 2)
    torch.testing.assert_close(ours, _official_pos_encoding(pos, size, size, 16), rtol=0, atol=0)
    # the +0.1 factor moves the bicubic sampling points: not the same as resizing to the size
    assert not torch.allclose(ours, size_resize(pos, (size // 16,) * 2), atol=1e-6)
