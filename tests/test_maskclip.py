"""MaskCLIP dense paths against independent computations with open_clip's own modules."""

import pytest
import torch
import torch.nn.functional as F

from training.clip_loader import load_clip
from training.maskclip import MaskClipCfg, build_maskclip_model, interpolate_pos_embed


@pytest.fixture(scope="module")
def vit():
    return load_clip("ovss-tiny-vit")


def _tokens_before_last(visual, image, pos):
    x = visual.conv1(image).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(x.shape[0], 1, -1)
    x = visual.ln_pre(torch.cat([cls, x], 1) + pos)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    return x


@torch.no_grad()
def test_vit_value_path_equals_block_with_self_only_attention(vit):
    """With attention restricted to each token itself, open_clip's block output is exactly
    x + out_proj(v) followed by the FFN residual: the official MaskCLIP value path."""
    model = build_maskclip_model(
        vit, MaskClipCfg(image_size=224, key_smoothing=False, prompt_denoising=False)
    )
    visual = vit.model.visual
    image = torch.randn(2, 3, 224, 224)
    feat, key = model.dense(image)
    x = _tokens_before_last(visual, image, model.dense.pos_embed)
    n = x.shape[1]
    self_only = torch.full((n, n), float("-inf")).fill_diagonal_(0.0)
    y = visual.transformer.resblocks[-1](x, attn_mask=self_only)
    want = (visual.ln_post(y[:, 1:]) @ visual.proj).transpose(1, 2).reshape(2, -1, 14, 14)
    torch.testing.assert_close(feat, want, rtol=1e-5, atol=1e-5)
    assert key.shape == (2, 196, visual.transformer.width)


@torch.no_grad()
def test_vit_variant_without_residual_and_ffn(vit):
    model = build_maskclip_model(vit, MaskClipCfg(image_size=224, residual=False, ffn=False))
    visual = vit.model.visual
    image = torch.randn(1, 3, 224, 224)
    feat, _ = model.dense(image)
    x = _tokens_before_last(visual, image, model.dense.pos_embed)[:, 1:]
    last = visual.transformer.resblocks[-1]
    width = x.shape[-1]
    v = F.linear(
        last.ln_1(x), last.attn.in_proj_weight[2 * width :], last.attn.in_proj_bias[2 * width :]
    )
    want = visual.ln_post(last.attn.out_proj(v)) @ visual.proj
    torch.testing.assert_close(feat.flatten(2).transpose(1, 2), want, rtol=1e-5, atol=1e-5)


def test_official_numerics_switch():
    official = build_maskclip_model(load_clip("ovss-tiny-vit"), MaskClipCfg(image_size=224))
    clip = build_maskclip_model(
        load_clip("ovss-tiny-vit"), MaskClipCfg(image_size=224, numerics="clip")
    )
    eps = {m.eps for m in official.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-6}
    assert {m.eps for m in clip.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}
    gelus = [b.mlp.gelu for b in official.dense.visual.transformer.resblocks]
    assert all(type(g) is torch.nn.GELU and g.approximate == "none" for g in gelus)


def test_pos_embed_interpolation():
    pos = torch.randn(1 + 14 * 14, 8)
    same = interpolate_pos_embed(pos, (14, 14))
    torch.testing.assert_close(same[0], pos)
    big = interpolate_pos_embed(pos, (28, 28))
    assert big.shape == (1, 1 + 28 * 28, 8)
    torch.testing.assert_close(big[0, 0], pos[0])
    grid = pos[1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)
    torch.testing.assert_close(big[0, 1:], want.permute(0, 2, 3, 1).reshape(-1, 8))


@torch.no_grad()
def test_resnet_dense_path_uses_attnpool_projections():
    rn = load_clip("ovss-tiny-rn")
    model = build_maskclip_model(rn, MaskClipCfg(image_size=224))
    v = rn.model.visual
    image = torch.randn(1, 3, 224, 224)
    feat, key = model.dense(image)
    x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(image)))))
    tokens = x.flatten(2).transpose(1, 2)  # [1, 49, C]
    pool = v.attnpool
    want = pool.c_proj(pool.v_proj(tokens)).transpose(1, 2).reshape(1, -1, 7, 7)
    torch.testing.assert_close(feat, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(key, pool.k_proj(tokens), rtol=1e-5, atol=1e-5)
    assert model.feature_stride == 32


def test_image_size_must_fit_feature_grid(vit):
    with pytest.raises(ValueError, match="multiple of the feature stride"):
        build_maskclip_model(vit, MaskClipCfg(image_size=200))
    with pytest.raises(ValueError, match="numerics"):
        MaskClipCfg(numerics="fast")


@torch.no_grad()
def test_refinement_changes_output_as_configured(vit):
    text = F.normalize(torch.randn(5, 64), dim=1)
    image = torch.randn(1, 3, 224, 224)
    plain = build_maskclip_model(
        vit, MaskClipCfg(image_size=224, key_smoothing=False, prompt_denoising=False)
    )(image, text)
    assert plain.abs().max() <= 1.0 + 1e-5
    refined = build_maskclip_model(vit, MaskClipCfg(image_size=224))(image, text)
    assert refined.shape == plain.shape == (1, 5, 14, 14)
    assert not torch.allclose(plain, refined)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone,size,stride",
    [("ViT-B-32", 224, 32), ("ViT-L-14", 224, 14), ("RN101", 224, 32), ("RN50x16", 256, 32)],
)
@torch.no_grad()
def test_listed_backbones_build_and_run(backbone, size, stride):
    clip = load_clip(backbone)
    model = build_maskclip_model(clip, MaskClipCfg(image_size=size))
    text = F.normalize(torch.randn(3, clip.model.visual.output_dim), dim=1)
    out = model(torch.randn(1, 3, size, size), text)
    assert model.feature_stride == stride
    assert out.shape == (1, 3, size // stride, size // stride) and torch.isfinite(out).all()
