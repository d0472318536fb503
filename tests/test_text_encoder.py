"""On-device vocabulary change: the exported text tower, the runtime encoder, set_classes, errors.

Random CLIP weights embed different names almost alike, so label comparisons count only pixels
whose top-2 margin exceeds the logit tolerance, and assert that these are most of the image.
"""

import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from conftest import export_folder
from PIL import Image

from export import build, builders
from export.config import ExportCfg
from export.onnx_export import ExportError
from export.parity import ort_outputs
from runtime import io_names
from runtime.errors import ModelFolderError, VocabularyError
from runtime.fsutil import sha256_file
from runtime.manifest import MANIFEST_FILE, METADATA_KEY, load_manifest, manifest_from_dict
from runtime.postprocess import bilinear_matrix
from runtime.segmenter import Segmenter
from runtime.text_encoder import TextEncoder
from training.clip_loader import load_clip
from training.text_classifier import TEMPLATE_SETS, encode_classes

A = "cat,dog,car,tree"
B = ("sky", "road", "person", "bicycle", "building")
RTOL = 1e-5


@pytest.fixture(scope="module")
def te_folder(tmp_path_factory, one_thread):
    return export_folder(tmp_path_factory, "tiny_vit_text", vocab_mode="input", text_encoder=True)


@pytest.fixture(scope="module")
def clip():
    return load_clip("ovss-tiny-vit", "none", 0)


def _image(seed=0, size=224):
    low = np.random.default_rng(seed).integers(0, 256, size=(15, 15, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.BILINEAR))


def _copy(folder, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_folder_and_manifest_entry(te_folder):
    m = load_manifest(te_folder)
    te = m.text_encoder
    assert te is not None and m.vocab_mode == "input"
    assert te.templates == TEMPLATE_SETS["single"]
    assert te.context_length == 77 and te.embed_dim == 64
    assert te.sha256 == sha256_file(te_folder / te.file)
    assert te.vocab_sha256 == sha256_file(te_folder / te.vocab_file)
    proto = onnx.load(str(te_folder / te.file))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == [io_names.TEXT_TOKENS]
    assert [o.name for o in proto.graph.output] == [io_names.TEXT_FEATURES]
    meta = {p.key: p.value for p in onnx.load(str(te_folder / m.model_file)).metadata_props}
    assert json.loads(meta[METADATA_KEY])["text_encoder"]["sha256"] == te.sha256
    assert not list(te_folder.glob(".*.tmp"))


def test_text_onnx_matches_torch(te_folder, clip):
    te = load_manifest(te_folder).text_encoder
    model = (te_folder / te.file).read_bytes()
    for texts in (
        ["a photo of a cat."],
        ["x", "there is a road in the scene.", "Fish &amp; chips", "long " * 100, "東京 🙂"],
    ):
        tokens = clip.tokenizer(texts)
        got = ort_outputs(model, {io_names.TEXT_TOKENS: tokens.numpy()}, [io_names.TEXT_FEATURES])
        with torch.no_grad():
            want = clip.model.encode_text(tokens).numpy()
        np.testing.assert_allclose(got[io_names.TEXT_FEATURES], want, atol=1e-5, rtol=0)


def test_runtime_encoder_equals_encode_classes(te_folder, clip):
    info = load_manifest(te_folder).text_encoder
    classes = ("cat", "traffic light", "potted plant")
    for name in ("single", "maskclip85"):
        temps = TEMPLATE_SETS[name]
        with TextEncoder(te_folder, dataclasses.replace(info, templates=temps), batch=50) as enc:
            got = enc.encode(classes)
        want = encode_classes(clip, classes, temps).numpy()
        assert got.dtype == np.float32 and got.shape == (3, 64)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _labels_agree_where_decided(got, want, atol, min_share):
    """Logits allclose; labels equal wherever the reference's upsampled top-2 margin exceeds
    twice the logit tolerance, and such pixels are at least ``min_share`` of the image."""
    np.testing.assert_allclose(got.logits, want.logits, atol=atol, rtol=RTOL)
    (h, w), (_, fh, fw) = want.labels.shape, want.logits.shape
    up = np.einsum("rh,chw,sw->crs", bilinear_matrix(h, fh), want.logits, bilinear_matrix(w, fw))
    top = np.sort(up, axis=0)
    decided = top[-1] - top[-2] > 2 * (atol + RTOL * np.abs(up).max())
    assert decided.mean() >= min_share, f"only {decided.mean():.2f} of pixels are decided"
    np.testing.assert_array_equal(got.labels[decided], want.labels[decided])


# Key-smoothed MaskCLIP scores reach the hundreds (float32 error ~1e-5); ZegCLIP's mask logits stay
# small and, with a random head, close together, so they get a tighter bound.
@pytest.mark.parametrize(
    "method,templates,atol,min_share",
    [("maskclip", "maskclip85", 1e-4, 0.9), ("zegclip", "zegclip", 2e-6, 0.8)],
)
def test_set_classes_matches_reexport(
    tmp_path_factory, one_thread, method, templates, atol, min_share
):
    build_fn = getattr(builders, f"build_{method}")
    kw = dict(method=method, backbone="ovss-tiny-vit", image_size=224, templates=templates)
    device = tmp_path_factory.mktemp(f"{method}_device")
    fresh = tmp_path_factory.mktemp(f"{method}_fresh")
    build_fn(
        ExportCfg.create(output=str(device), classes=A, vocab_mode="input", text_encoder=True, **kw)
    )
    build_fn(ExportCfg.create(output=str(fresh), classes=",".join(B), **kw))
    img = _image()
    with Segmenter(device) as seg, Segmenter(fresh) as ref:
        seg.set_classes(list(B))
        assert seg.classes == B
        got, want = seg(img), ref(img)
    assert got.classes == want.classes == B
    _labels_agree_where_decided(got, want, atol, min_share)
    assert len(np.unique(want.labels)) > 1


def test_set_classes_roundtrip_gives_exported_embeddings(te_folder):
    with Segmenter(te_folder) as seg:
        shipped = seg._text.copy()
        seg.set_classes(A.split(","))
        np.testing.assert_allclose(seg._text, shipped, atol=1e-5, rtol=0)
        seg.set_classes([" Sky", "road"])
        assert seg.classes == ("Sky", "road") and seg._text.shape == (2, 64)


def test_set_classes_on_fixed_folder(tiny_vit_folder):
    with Segmenter(tiny_vit_folder) as seg:
        with pytest.raises(VocabularyError, match="fixed vocabulary"):
            seg.set_classes(["road"])


def test_set_classes_without_text_encoder(tiny_vit_input_folder):
    with Segmenter(tiny_vit_input_folder) as seg:
        with pytest.raises(ModelFolderError, match="no text encoder"):
            seg.set_classes(["road"])


@pytest.mark.parametrize(
    "names,match",
    [
        ([], "empty"),
        (["road", "Road "], "duplicate"),
        (["road", " "], "blank"),
        ("road", "not one string"),
    ],
)
def test_set_classes_bad_names(te_folder, names, match):
    with Segmenter(te_folder) as seg:
        with pytest.raises(VocabularyError, match=match):
            seg.set_classes(names)
        assert seg.classes == tuple(A.split(","))


def test_corrupt_text_encoder_is_refused(te_folder, tmp_path):
    folder = _copy(te_folder, tmp_path)
    path = folder / load_manifest(folder).text_encoder.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with Segmenter(folder) as seg:  # the image model still loads; set_classes refuses
        with pytest.raises(ModelFolderError, match="sha256"):
            seg.set_classes(["road"])


def test_missing_vocab_file(te_folder, tmp_path):
    folder = _copy(te_folder, tmp_path)
    (folder / load_manifest(folder).text_encoder.vocab_file).unlink()
    with Segmenter(folder) as seg, pytest.raises(ModelFolderError, match="missing"):
        seg.set_classes(["road"])


def test_manifest_validation(te_folder):
    d = json.loads((te_folder / MANIFEST_FILE).read_text())
    old = {k: v for k, v in d.items() if k != "text_encoder"}
    assert manifest_from_dict(old).text_encoder is None  # manifests from before still load
    for change, match in [
        ({"templates": ["no placeholder"]}, "template"),
        ({"templates": []}, "non-empty"),
        ({"embed_dim": 32}, "embed_dim"),
        ({"sha256": 5}, "text_encoder.sha256"),
    ]:
        bad = {**d, "text_encoder": {**d["text_encoder"], **change}}
        with pytest.raises(ModelFolderError, match=match):
            manifest_from_dict(bad)
    with pytest.raises(ModelFolderError, match="vocab_mode"):
        manifest_from_dict({**d, "vocab_mode": "fixed"})


def test_text_encoder_needs_vocab_mode_input(tmp_path, capsys):
    out = tmp_path / "m"
    rc = build.main(
        [
            "--method",
            "maskclip",
            "--backbone",
            "ovss-tiny-vit",
            "--classes",
            "a,b",
            "--image-size",
            "224",
            "--templates",
            "single",
            "--output",
            str(out),
            "--text-encoder",
        ]
    )
    assert rc == 2 and "--vocab-mode input" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_text_encoder_needs_the_text_tower(tmp_path, monkeypatch, one_thread):
    load = builders._load_zero_shot
    monkeypatch.setattr(
        builders, "_load_zero_shot", lambda cfg: dataclasses.replace(load(cfg), text_tower=False)
    )
    out, emb = tmp_path / "z", tmp_path / "emb.npy"
    np.save(emb, np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32))
    # With its text tower missing, such a model can still be exported with given embeddings...
    cfg = ExportCfg.create(
        method="zegclip",
        backbone="ovss-tiny-vit",
        output=str(out),
        classes="a,b",
        image_size=224,
        vocab_mode="input",
        text_embeddings=str(emb),
        text_encoder=True,
    )
    with pytest.raises(ExportError, match="text tower"):  # ...but not with a text encoder
        builders.build_zegclip(cfg)
    assert not (out / MANIFEST_FILE).exists() and not (out / "text_encoder.onnx").exists()


@pytest.mark.parametrize("with_text", [True, False])
def test_official_checkpoint_text_tower(tmp_path, one_thread, with_text):
    """An official file's text_encoder.* (OpenAI CLIP, QuickGELU) is what gets exported; a file
    without them leaves the random init in place, which --text-encoder refuses."""
    from test_official_import import _save_mmcv, official_state_dict

    sd = official_state_dict("zegclip", grid=4)
    if not with_text:
        sd = {k: v for k, v in sd.items() if not k.startswith("text_encoder.")}
    ckpt = _save_mmcv(tmp_path / "zegclip_voc.pth", sd)
    out = tmp_path / "z"
    cfg = ExportCfg.create(
        method="zegclip",
        backbone="ovss-tiny-vit",
        output=str(out),
        classes="road,car",
        checkpoint=str(ckpt),
        vocab_mode="input",
        text_encoder=True,
    )
    if not with_text:
        with pytest.raises(
            VocabularyError, match="CLIP text weights"
        ):  # cannot even encode classes
            builders.build_zegclip(cfg)
        emb = tmp_path / "emb.npy"
        np.save(emb, np.eye(2, 64, dtype=np.float32))
        with pytest.raises(
            ExportError, match="text tower"
        ):  # embeddings given, but no tower to ship
            builders.build_zegclip(dataclasses.replace(cfg, text_embeddings=str(emb)))
        assert not (out / MANIFEST_FILE).exists()
        return
    builders.build_zegclip(cfg)
    trained = builders._load_zero_shot(cfg)
    want = encode_classes(trained.clip, ("road", "car"), TEMPLATE_SETS["zegclip"]).numpy()
    with Segmenter(out) as seg:
        np.testing.assert_allclose(seg._text, want, atol=1e-5, rtol=0)  # shipped embeddings
        seg.set_classes(["car", "road"])
        np.testing.assert_allclose(seg._text, want[::-1], atol=1e-5, rtol=0)
