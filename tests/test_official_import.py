"""Importing the released ZegCLIP / CLIP-RC checkpoints (mmcv runner files, official key names).

The official state dicts are generated here from the official module layout (key lists of the
research notes, section 1), not from our model, at the tiny ``ovss-tiny-vit`` sizes. The reference
forwards re-implement the official code paths (notes 2.1/2.2 and 3) with plain tensor ops on that
state dict, so a mismatch in key mapping, token order or any quirk shows up as a numeric error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from runtime.errors import CheckpointError
from training.loading import load_trained

CFG = json.loads(
    (
        Path(__file__).resolve().parents[1] / "training" / "model_configs" / "ovss-tiny-vit.json"
    ).read_text()
)
VIS_W = CFG["vision_cfg"]["width"]
VIS_LAYERS = CFG["vision_cfg"]["layers"]
VIS_HEADS = VIS_W // CFG["vision_cfg"]["head_width"]
PATCH = CFG["vision_cfg"]["patch_size"]
EMBED = CFG["embed_dim"]
TXT_W, TXT_LAYERS = CFG["text_cfg"]["width"], CFG["text_cfg"]["layers"]
VOCAB, CTX = CFG["text_cfg"]["vocab_size"], CFG["text_cfg"]["context_length"]
DEC_LAYERS, DEC_HEADS = 3, 8  # official ATMSingleHeadSeg: 3 layers, 8 heads, FFN 4*dim
NUM_TOKENS = 3
NUM_REGIONS, REGION_SIDE = 16, 4


# ---------------------------------------------------------------- official key layout (shapes)


def _clip_block(prefix: str, w: int) -> dict:
    """CLIP ResidualAttentionBlock: nn.MultiheadAttention + c_fc/c_proj MLP (12 tensors)."""
    return {
        f"{prefix}.attn.in_proj_weight": (3 * w, w),
        f"{prefix}.attn.in_proj_bias": (3 * w,),
        f"{prefix}.attn.out_proj.weight": (w, w),
        f"{prefix}.attn.out_proj.bias": (w,),
        f"{prefix}.ln_1.weight": (w,),
        f"{prefix}.ln_1.bias": (w,),
        f"{prefix}.mlp.c_fc.weight": (4 * w, w),
        f"{prefix}.mlp.c_fc.bias": (4 * w,),
        f"{prefix}.mlp.c_proj.weight": (w, 4 * w),
        f"{prefix}.mlp.c_proj.bias": (w,),
        f"{prefix}.ln_2.weight": (w,),
        f"{prefix}.ln_2.bias": (w,),
    }


def _tpn_layer(prefix: str, d: int) -> dict:
    """TPN_DecoderLayer (an nn.TransformerDecoderLayer): 22 tensors; self_attn, norm1 unused."""
    keys = {
        f"{prefix}.self_attn.in_proj_weight": (3 * d, d),
        f"{prefix}.self_attn.in_proj_bias": (3 * d,),
        f"{prefix}.self_attn.out_proj.weight": (d, d),
        f"{prefix}.self_attn.out_proj.bias": (d,),
        f"{prefix}.linear1.weight": (4 * d, d),
        f"{prefix}.linear1.bias": (4 * d,),
        f"{prefix}.linear2.weight": (d, 4 * d),
        f"{prefix}.linear2.bias": (d,),
    }
    for lin in ("q", "k", "v", "proj"):
        keys[f"{prefix}.multihead_attn.{lin}.weight"] = (d, d)
        keys[f"{prefix}.multihead_attn.{lin}.bias"] = (d,)
    for norm in ("norm1", "norm2", "norm3"):
        keys[f"{prefix}.{norm}.weight"] = (d,)
        keys[f"{prefix}.{norm}.bias"] = (d,)
    return keys


def official_shapes(
    method: str,
    *,
    w=VIS_W,
    layers=VIS_LAYERS,
    patch=PATCH,
    grid=4,
    embed=EMBED,
    tokens=NUM_TOKENS,
    txt_w=TXT_W,
    txt_layers=TXT_LAYERS,
    vocab=VOCAB,
    ctx=CTX,
    dec_layers=DEC_LAYERS,
    num_classes=15,
) -> dict:
    """Key -> shape of an official ZegCLIP / CLIP-RC segmentor state dict (notes section 1)."""
    s = {
        "backbone.class_embedding": (w,),
        "backbone.positional_embedding": (1 + grid * grid, w),
        "backbone.proj": (w, embed),
        "backbone.prompt_embeddings": (1, tokens, w),
        "backbone.deep_prompt_embeddings": (layers - 1, tokens, w),
        "backbone.conv1.weight": (w, 3, patch, patch),
        "backbone.ln_pre.weight": (w,),
        "backbone.ln_pre.bias": (w,),
        "backbone.ln_post.weight": (w,),
        "backbone.ln_post.bias": (w,),
        "backbone.prompt_proj.weight": (w, w),
        "backbone.prompt_proj.bias": (w,),
        "backbone.prompt_norm.weight": (w,),
        "backbone.prompt_norm.bias": (w,),
    }
    for i in range(layers):
        s.update(_clip_block(f"backbone.transformer.resblocks.{i}", w))
    s.update(
        {
            "text_encoder.token_embedding.weight": (vocab, txt_w),
            "text_encoder.positional_embedding": (ctx, txt_w),
            "text_encoder.ln_final.weight": (txt_w,),
            "text_encoder.ln_final.bias": (txt_w,),
            "text_encoder.text_projection": (txt_w, embed),
        }
    )
    for i in range(txt_layers):
        s.update(_clip_block(f"text_encoder.transformer.resblocks.{i}", txt_w))
    d = embed
    s.update({"decode_head.q_proj.weight": (d, 2 * d), "decode_head.q_proj.bias": (d,)})
    if method == "zegclip":
        for i in range(dec_layers):
            s.update(_tpn_layer(f"decode_head.decoder_1.layers.{i}", d))
        s["decode_head.loss_decode.criterion.empty_weight"] = (num_classes + 1,)
        return s
    s["backbone.region_level_bridge"] = (NUM_REGIONS, w)
    s.update({"decode_head.lateral_proj.weight": (d, 3 * d), "decode_head.lateral_proj.bias": (d,)})
    for i in range(dec_layers):
        s.update(_tpn_layer(f"decode_head.decoder_q.layers.{i}", d))
        s.update(_tpn_layer(f"decode_head.decoder_v.layers.{i}", d))
    rec = "decode_head.recovery_decoder"
    s.update(_tpn_layer(f"{rec}.decouple_q.0", d))
    s.update(_tpn_layer(f"{rec}.decouple_v.0", d))
    s.update(
        {
            f"{rec}.linear_q_in.weight": (d, d),
            f"{rec}.linear_q_in.bias": (d,),
            f"{rec}.linear_k_in.weight": (d, d),
            f"{rec}.linear_k_in.bias": (d,),
            f"{rec}.linear_q_out.weight": (2 * d, d),
            f"{rec}.linear_q_out.bias": (2 * d,),
            f"{rec}.linear_k_out.weight": (d, d),
            f"{rec}.linear_k_out.bias": (d,),
        }
    )
    return s


def test_key_layout_matches_released_checkpoint_counts():
    """At ViT-B/16 VOC sizes the generated layouts have the released 376 / 496 tensors."""
    vitb = dict(w=768, layers=12, grid=32, embed=512, tokens=10, txt_w=512, txt_layers=12)
    zeg, rc = official_shapes("zegclip", **vitb), official_shapes("cliprc", **vitb)
    assert len(zeg) == 376 and len(rc) == 496
    assert zeg["backbone.positional_embedding"] == (1025, 768)
    assert rc["decode_head.lateral_proj.weight"] == (512, 1536)
    assert sum(k.startswith("decode_head.") for k in rc) == 188


def _value(key: str, shape: tuple, g: torch.Generator) -> torch.Tensor:
    """Random, well-scaled weights: LN gains near 1, small biases, matrices ~1/sqrt(fan_in)."""
    x = torch.randn(shape, generator=g)
    leaf = key.rsplit(".", 1)[-1]
    if key.endswith("empty_weight"):
        return torch.cat([torch.ones(shape[0] - 1), torch.tensor([0.1])])
    if len(shape) == 1 and leaf == "weight":
        return 1.0 + 0.2 * x
    if len(shape) == 1:
        return 0.2 * x
    if key.endswith("conv1.weight"):
        return x / math.sqrt(3 * PATCH * PATCH)
    if key.endswith("token_embedding.weight"):
        return 0.02 * x
    if len(shape) == 2 and (leaf == "weight" or key.endswith(("proj", "text_projection"))):
        fan_in = shape[1] if leaf == "weight" else shape[0]
        return x / math.sqrt(fan_in)
    return 0.5 * x  # embeddings, prompts, positions, region tokens


def official_state_dict(method: str, grid: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: _value(k, shape, g) for k, shape in official_shapes(method, grid=grid).items()}


def _save_mmcv(path: Path, sd: dict) -> Path:
    torch.save({"meta": {}, "state_dict": sd, "optimizer": {}}, path)
    return path


@pytest.fixture(scope="module")
def zeg_file(tmp_path_factory):
    sd = official_state_dict("zegclip", grid=4)
    return _save_mmcv(tmp_path_factory.mktemp("official") / "zegclip_voc.pth", sd), sd


@pytest.fixture(scope="module")
def rc_file(tmp_path_factory):
    sd = official_state_dict("cliprc", grid=8, seed=1)  # 128 px: 8x8 grid, 2x2 patches per region
    return _save_mmcv(tmp_path_factory.mktemp("official") / "cliprc_voc.pth", sd), sd


@pytest.fixture(scope="module")
def zeg_trained(zeg_file):
    return load_trained(zeg_file[0], backbone="ovss-tiny-vit")


@pytest.fixture(scope="module")
def rc_trained(rc_file):
    return load_trained(rc_file[0], backbone="ovss-tiny-vit")


# ---------------------------------------------------------------- loading

TEXT_MAP = {  # official text_encoder.* -> open_clip top-level keys
    "text_encoder.token_embedding.weight": "token_embedding.weight",
    "text_encoder.positional_embedding": "positional_embedding",
    "text_encoder.transformer.resblocks.1.attn.in_proj_weight": (
        "transformer.resblocks.1.attn.in_proj_weight"
    ),
    "text_encoder.transformer.resblocks.0.mlp.c_proj.bias": (
        "transformer.resblocks.0.mlp.c_proj.bias"
    ),
    "text_encoder.ln_final.weight": "ln_final.weight",
    "text_encoder.text_projection": "text_projection",
}


@pytest.mark.parametrize("which", ["zegclip", "cliprc"])
def test_official_file_loads_every_tensor(which, zeg_file, rc_file, zeg_trained, rc_trained):
    path, sd = zeg_file if which == "zegclip" else rc_file
    trained = zeg_trained if which == "zegclip" else rc_trained
    assert trained.method == which
    assert trained.model_cfg.num_tokens == NUM_TOKENS
    assert trained.model_cfg.image_size == (4 if which == "zegclip" else 8) * PATCH
    model_sd = trained.model.state_dict()
    unused = [
        k
        for k in sd
        if k.startswith("text_encoder.")
        or ".self_attn." in k
        or ".norm1." in k
        or "loss_decode" in k
    ]
    used = sorted(set(sd) - set(unused))
    assert sorted(model_sd) == used  # every official tensor that runs has exactly one home
    for k in used:
        assert torch.equal(model_sd[k], sd[k]), k
    clip_sd = trained.clip.model.state_dict()
    for official, ours in TEXT_MAP.items():
        assert torch.equal(clip_sd[ours], sd[official]), official
    # the visual tower is shared with the CLIP model, so it holds the file's backbone weights too
    assert torch.equal(
        clip_sd["visual.transformer.resblocks.1.mlp.c_fc.weight"],
        sd["backbone.transformer.resblocks.1.mlp.c_fc.weight"],
    )
    assert not trained.clip.random
    # OpenAI CLIP text encoder: QuickGELU (open_clip's plain ViT-B-16 config would build nn.GELU)
    from training.vpt import QuickGELU

    assert all(isinstance(b.mlp.gelu, QuickGELU) for b in trained.clip.model.transformer.resblocks)


def test_missing_key_is_listed(tmp_path, zeg_file):
    sd = dict(zeg_file[1])
    del sd["backbone.prompt_norm.weight"]
    with pytest.raises(CheckpointError, match=r"missing.*backbone\.prompt_norm\.weight"):
        load_trained(_save_mmcv(tmp_path / "m.pth", sd), backbone="ovss-tiny-vit")


def test_missing_text_key_is_listed(tmp_path, zeg_file):
    sd = dict(zeg_file[1])
    del sd["text_encoder.ln_final.bias"]
    with pytest.raises(CheckpointError, match=r"missing.*ln_final\.bias"):
        load_trained(_save_mmcv(tmp_path / "t.pth", sd), backbone="ovss-tiny-vit")


def test_extra_key_is_listed_as_unexpected(tmp_path, rc_file):
    sd = dict(rc_file[1])
    sd["decode_head.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected.*decode_head\.extra_head\.weight"):
        load_trained(_save_mmcv(tmp_path / "u.pth", sd), backbone="ovss-tiny-vit")


def test_wrong_shape_is_reported(tmp_path, zeg_file):
    sd = dict(zeg_file[1])
    sd["decode_head.q_proj.bias"] = torch.zeros(EMBED + 1)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*q_proj\.bias"):
        load_trained(_save_mmcv(tmp_path / "s.pth", sd), backbone="ovss-tiny-vit")


def test_zegclip_file_as_cliprc_is_refused(zeg_file):
    with pytest.raises(CheckpointError, match=r"zegclip.*cliprc"):
        load_trained(zeg_file[0], method="cliprc", backbone="ovss-tiny-vit")


def test_cliprc_file_as_zegclip_is_refused(rc_file):
    with pytest.raises(CheckpointError, match=r"cliprc.*zegclip"):
        load_trained(rc_file[0], method="zegclip", backbone="ovss-tiny-vit")


# ---------------------------------------------------------------- reference forwards (notes 2, 3)


def _lin(x, sd, key):
    return x @ sd[key + ".weight"].T + sd[key + ".bias"]


def _ln(x, sd, key, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[key + ".weight"] + sd[key + ".bias"]


def _l2(x, dim=-1):
    return x / x.norm(dim=dim, keepdim=True)


def _heads(x, n):
    b, t, d = x.shape
    return x.reshape(b, t, n, d // n).permute(0, 2, 1, 3)


def _clip_block_ref(x, sd, p, mask):
    """x + MHA(ln_1 x) (nn.MultiheadAttention, additive float mask);
    x + c_proj(QuickGELU(c_fc(ln_2 x)))."""
    h = _ln(x, sd, p + ".ln_1")
    qkv = h @ sd[p + ".attn.in_proj_weight"].T + sd[p + ".attn.in_proj_bias"]
    q, k, v = (_heads(t, VIS_HEADS) for t in qkv.chunk(3, dim=-1))
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    out = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).flatten(2)
    x = x + _lin(out, sd, p + ".attn.out_proj")
    h = _lin(_ln(x, sd, p + ".ln_2"), sd, p + ".mlp.c_fc")
    return x + _lin(h * torch.sigmoid(1.702 * h), sd, p + ".mlp.c_proj")


def _embed_ref(sd, image, with_regions):
    """conv1, CLS = class_embedding, pos with class_embedding added again to its CLS row
    (bilinear pos resize to the input grid), [RLB appended], ln_pre, prompts after CLS."""
    x = F.conv2d(image, sd["backbone.conv1.weight"], stride=PATCH)
    b, c, h, w = x.shape
    x = x.reshape(b, c, -1).permute(0, 2, 1)
    ce = sd["backbone.class_embedding"]
    x = torch.cat([ce + torch.zeros(b, 1, c, dtype=x.dtype), x], 1)
    pos = sd["backbone.positional_embedding"]
    g = int(round(math.sqrt(pos.shape[0] - 1)))
    spatial = F.interpolate(
        pos[1:].reshape(1, g, g, c).permute(0, 3, 1, 2),
        size=(h, w),
        mode="bilinear",
        align_corners=False,
    )
    spatial = spatial.reshape(1, c, h * w).permute(0, 2, 1)
    pos = torch.cat([(pos[0] + ce).reshape(1, 1, c), spatial], 1)
    x = x + pos
    if with_regions:
        x = torch.cat([x, sd["backbone.region_level_bridge"].expand(b, -1, -1)], 1)
    x = _ln(x, sd, "backbone.ln_pre")
    prompts = _lin(sd["backbone.prompt_embeddings"], sd, "backbone.prompt_proj").expand(b, -1, -1)
    return torch.cat([x[:, :1], prompts, x[:, 1:]], 1), (h, w)


def _deep_ref(sd, x, mask):
    """Block 0 on the shallow prompts; before blocks 1.. the prompt slots are replaced."""
    t = sd["backbone.prompt_embeddings"].shape[1]
    for i in range(VIS_LAYERS):
        if i > 0:
            deep = _lin(sd["backbone.deep_prompt_embeddings"][i - 1], sd, "backbone.prompt_proj")
            x = torch.cat([x[:, :1], deep.expand(x.shape[0], -1, -1), x[:, 1 + t :]], 1)
        x = _clip_block_ref(x, sd, f"backbone.transformer.resblocks.{i}", mask)
    return x


def _attention_ref(sd, p, xq, xkv, heads=DEC_HEADS):
    """Official ``Attention``: -> (proj output, pre-softmax logits summed over heads / heads)."""
    q, k, v = (
        _heads(_lin(t, sd, f"{p}.{n}"), heads) for n, t in (("q", xq), ("k", xkv), ("v", xkv))
    )
    attn = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(xq.shape)
    return _lin(out, sd, p + ".proj"), attn.sum(1) / heads


def _tpn_ref(sd, p, tgt, memory):
    """Cross-attention only, post-norm (norm2, FFN with ReLU, norm3)."""
    out, logits = _attention_ref(sd, p + ".multihead_attn", tgt, memory)
    tgt = _ln(tgt + out, sd, p + ".norm2")
    ffn = _lin(torch.relu(_lin(tgt, sd, p + ".linear1")), sd, p + ".linear2")
    return _ln(tgt + ffn, sd, p + ".norm3"), logits


def zegclip_reference(sd, image, text):
    """ZegCLIP eval forward -> last decoder layer's head-mean mask logits [B,C,h,w]."""
    x, (h, w) = _embed_ref(sd, image, with_regions=False)
    x = _deep_ref(sd, x, None)
    x = _ln(x, sd, "backbone.prompt_norm", eps=1e-6)
    x = _ln(x, sd, "backbone.ln_post") @ sd["backbone.proj"]
    cls = _l2(x[:, 0])
    vis = _l2(x[:, -(h * w) :])  # [B,hw,D]
    b = image.shape[0]
    q = text.expand(b, -1, -1)
    q1 = torch.einsum("bd,bcd->bcd", cls, q)
    q = _lin(torch.cat([q1, q], -1), sd, "decode_head.q_proj")
    for i in range(DEC_LAYERS):
        q, logits = _tpn_ref(sd, f"decode_head.decoder_1.layers.{i}", q, vis)
    return logits.transpose(-1, -2).transpose(1, 2).reshape(b, -1, h, w)


def region_mask_ref(t, g):
    """gen_attention_mask of CLIP-RC (notes 3.1), with -inf."""
    n = 1 + t + g * g + NUM_REGIONS
    m = torch.zeros(n, n)
    m[:, -NUM_REGIONS:] = float("-inf")
    m[-NUM_REGIONS:, :] = float("-inf")
    stride = g // REGION_SIDE
    for i in range(REGION_SIDE):
        for j in range(REGION_SIDE):
            tmp = torch.zeros(g, g)
            tmp[i * stride : (i + 1) * stride, j * stride : (j + 1) * stride] = 1
            idx = tmp.flatten().nonzero().flatten() + t + 1
            m[-NUM_REGIONS + i * REGION_SIDE + j, idx] = 0
            m[idx, -NUM_REGIONS + i * REGION_SIDE + j] = 0
    for r in range(NUM_REGIONS):
        m[-NUM_REGIONS + r, -NUM_REGIONS + r] = 0
    return m


def cliprc_reference(sd, image, text):
    """CLIP-RC eval forward -> region-group mean of q3 @ lat3^T, [B,C,h,w]."""
    t = sd["backbone.prompt_embeddings"].shape[1]
    x, (h, w) = _embed_ref(sd, image, with_regions=True)
    x = _deep_ref(sd, x, region_mask_ref(t, h).to(x.dtype))
    x = torch.cat(
        [_ln(x[:, :-NUM_REGIONS], sd, "backbone.prompt_norm", eps=1e-6), x[:, -NUM_REGIONS:]], 1
    )  # region tokens skip prompt_norm
    x = _ln(x, sd, "backbone.ln_post") @ sd["backbone.proj"]
    b, d = x.shape[0], x.shape[-1]
    cls = _l2(x[:, 0])
    lateral = _l2(x[:, 1 + t : -NUM_REGIONS])  # [B,hw,D]
    rlb = _l2(x[:, -NUM_REGIONS:]).reshape(b, REGION_SIDE, REGION_SIDE, d).permute(0, 3, 1, 2)
    # combine_token
    rlb_seq = rlb.reshape(b, d, -1).transpose(1, 2)
    txt = text.expand(b, -1, -1)
    cls_hw = cls.unsqueeze(1).expand(-1, NUM_REGIONS, -1)
    rlb_text = torch.einsum("bld,bcd->blcd", rlb_seq + cls_hw, txt).reshape(b, -1, d)
    text_hw = txt.unsqueeze(1).expand(-1, NUM_REGIONS, -1, -1).reshape(b, -1, d)
    q = _lin(torch.cat([rlb_text, text_hw], -1), sd, "decode_head.q_proj")
    rlb_up = F.interpolate(rlb, size=(h, w), mode="bilinear", align_corners=False)
    rlb_up = rlb_up.reshape(b, d, h * w).transpose(1, 2)
    cls_rep = cls.unsqueeze(1).expand(b, h * w, -1)
    lat = _lin(torch.cat([rlb_up, cls_rep, lateral], -1), sd, "decode_head.lateral_proj")
    for i in range(DEC_LAYERS):
        q, lat = (
            _tpn_ref(sd, f"decode_head.decoder_q.layers.{i}", q, lat)[0],
            _tpn_ref(sd, f"decode_head.decoder_v.layers.{i}", lat, q)[0],
        )
    attn = (q @ lat.transpose(-2, -1)).transpose(-1, -2)  # [B,hw,16C]
    attn = attn.transpose(1, 2).reshape(b, -1, h, w)
    c = text.shape[0]
    fused = attn[:, :c].clone()
    for i in range(1, NUM_REGIONS):
        fused += attn[:, i * c : (i + 1) * c]
    return fused / NUM_REGIONS


def _inputs(size: int, classes: int = 5, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 3, size, size, generator=g)
    text = F.normalize(torch.randn(classes, EMBED, generator=g), dim=-1)
    return image, text


def _forward_as(model, dtype, image, text):
    """Our model's eval forward in ``dtype`` (the shared fixture model is put back to float32)."""
    model = model.to(dtype).eval()
    try:
        return model(image.to(dtype), text.to(dtype))
    finally:
        model.float()


@pytest.mark.parametrize("size", [64, 96])  # 96: position grid 4 -> 6, bilinear in the forward
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@torch.no_grad()
def test_zegclip_matches_official_reference(zeg_file, zeg_trained, size, dtype):
    sd = {k: v.to(dtype) for k, v in zeg_file[1].items()}
    image, text = _inputs(size)
    want = zegclip_reference(sd, image.to(dtype), text.to(dtype))
    got = _forward_as(zeg_trained.model, dtype, image, text)
    assert got.shape == (2, 5, size // PATCH, size // PATCH)
    assert want.abs().max() > 1e-2  # a real signal, not a vanishing one
    tol = 1e-5 if dtype == torch.float32 else 1e-10  # float64 exposes even eps-level quirks
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@torch.no_grad()
def test_cliprc_matches_official_reference(rc_file, rc_trained, dtype):
    sd = {k: v.to(dtype) for k, v in rc_file[1].items()}
    image, text = _inputs(8 * PATCH)
    want = cliprc_reference(sd, image.to(dtype), text.to(dtype))
    got = _forward_as(rc_trained.model, dtype, image, text)
    assert got.shape == (2, 5, 8, 8)
    assert want.abs().max() > 1e-2
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    scale = max(1.0, float(want.abs().max()))  # plain dot products: logits of tens
    torch.testing.assert_close(got, want, atol=tol * scale, rtol=tol)


def test_region_mask_reference_sanity():
    """Guard on the reference itself: patches see only their own region token."""
    t = NUM_TOKENS
    mask = region_mask_ref(t, 8)
    assert torch.isinf(mask).sum() > 0 and (mask == 0).sum() > 0
    # a patch in region (0,0) may attend to region token 0 only
    first_patch = 1 + t
    assert mask[first_patch, -NUM_REGIONS] == 0 and torch.isinf(mask[first_patch, -NUM_REGIONS + 1])
