"""Runtime: parity with the PyTorch model, slide mode, input policy and bad-input errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from runtime.errors import InvalidImageError, ModelFolderError, UnknownNameError, VocabularyError
from runtime.image import as_rgb_uint8, load_image
from runtime.manifest import load_manifest
from runtime.postprocess import bilinear_matrix, upsample_argmax
from runtime.preprocess import normalize
from runtime.segmenter import Segmenter
from runtime.windows import plan_windows
from training.clip_loader import load_clip
from training.maskclip import MaskClipCfg, build_maskclip_model
from training.slide import slide_logits
from training.text_classifier import build_text_classifier


def _torch_model(folder):
    m = load_manifest(folder)
    clip = load_clip(m.backbone, "none", 0)
    keep = {k: v for k, v in m.method_cfg.items() if k in MaskClipCfg.__dataclass_fields__}
    keep["mean"], keep["std"] = tuple(keep["mean"]), tuple(keep["std"])
    model = build_maskclip_model(clip, MaskClipCfg(**keep))
    text = build_text_classifier(clip, m.classes, m.method_cfg["templates"])
    return m, model, text


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR))


def test_whole_mode_matches_pytorch(tiny_vit_folder):
    m, model, text = _torch_model(tiny_vit_folder)
    img = _image(224, 224)
    with Segmenter(tiny_vit_folder) as seg:
        res = seg(img)
    x = torch.from_numpy(normalize(img, m.preprocess))
    with torch.no_grad():
        want = model(x, text)[0].numpy()
    np.testing.assert_allclose(res.logits, want, atol=1e-4, rtol=0)
    assert res.mode == "whole" and res.windows == 1 and res.labels.shape == (224, 224)
    assert res.labels.dtype == np.uint8 and res.labels.max() < len(m.classes)  # <= 255 classes
    assert res.providers == ("CPUExecutionProvider",)
    assert set(res.timings_ms) == {"preprocess", "inference", "postprocess"}


def test_slide_mode_matches_pytorch_slide(tiny_vit_folder):
    m, model, text = _torch_model(tiny_vit_folder)
    img = _image(300, 410, seed=1)
    with Segmenter(tiny_vit_folder, stride=160) as seg:
        res = seg(img)
    x = torch.from_numpy(normalize(img, m.preprocess))
    want = slide_logits(model, x, text, 224, 16, stride=160).numpy()
    plan = plan_windows((300, 410), 224, 160, 16, "flush")
    assert res.mode == "slide" and res.windows == len(plan.boxes) == 6
    np.testing.assert_allclose(res.logits, want, atol=1e-4, rtol=0)
    assert res.labels.shape == (300, 410)
    np.testing.assert_array_equal(res.labels, upsample_argmax(want, (300, 410), plan.padded_hw))


def test_short_side_rescale_keeps_output_size(tiny_vit_folder):
    with Segmenter(tiny_vit_folder, short_side=224) as seg:
        res = seg(_image(120, 300))
    assert res.labels.shape == (120, 300) and res.mode == "slide"


def test_bilinear_matrix_matches_torch():
    x = torch.randn(1, 3, 7, 9)
    want = torch.nn.functional.interpolate(x, size=(30, 41), mode="bilinear", align_corners=False)
    a_h, a_w = bilinear_matrix(30, 7), bilinear_matrix(41, 9)
    got = np.einsum("rh,chw,sw->crs", a_h, x[0].numpy(), a_w)
    np.testing.assert_allclose(got, want[0].numpy(), atol=1e-5)
    labels = upsample_argmax(x[0].numpy(), (30, 41))
    agree = (labels == want[0].argmax(0).numpy()).mean()
    assert agree > 0.999


def test_window_plan_covers_image():
    plan = plan_windows((300, 410), 224, 150, 16, "grid")
    assert plan.padded_hw == (304, 416)
    cover = np.zeros(plan.padded_hw, bool)
    for y, x in plan.boxes:
        assert y % 16 == 0 and x % 16 == 0
        cover[y : y + 224, x : x + 224] = True
    assert cover.all()
    assert plan_windows((100, 100), 224, 150, 16, "grid").boxes == ((0, 0),)


# --- input policy ---------------------------------------------------------------------------


def test_grayscale_and_rgba_policy(tiny_vit_folder):
    rgb = _image(224, 224)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(as_rgb_uint8(gray), np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(as_rgb_uint8(gray[:, :, None]), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.concatenate([rgb, np.full((224, 224, 1), 7, np.uint8)], axis=2)
    with Segmenter(tiny_vit_folder) as seg:
        np.testing.assert_array_equal(seg(rgba).labels, seg(rgb).labels)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((2, 224, 224, 3), np.uint8), "rank 4"),
        (np.zeros((224, 224, 3), np.float32), "dtype must be uint8"),
        (np.zeros((224, 224, 2), np.uint8), "1, 3 or 4 channels"),
        (np.zeros((0, 224, 3), np.uint8), "empty side"),
        ([[0, 1], [2, 3]], "numpy array"),
    ],
)
def test_bad_images_are_rejected(tiny_vit_folder, bad, match):
    with Segmenter(tiny_vit_folder) as seg, pytest.raises(InvalidImageError, match=match):
        seg(bad)


def test_corrupt_and_missing_image_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(InvalidImageError, match="cannot decode"):
        load_image(bad)
    with pytest.raises(InvalidImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")


# --- model folder errors -------------------------------------------------------------------


def _copy(folder, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(folder, dst)
    return dst


def test_missing_folder_and_manifest(tmp_path, tiny_vit_folder):
    with pytest.raises(ModelFolderError, match="does not exist"):
        Segmenter(tmp_path / "absent")
    dst = _copy(tiny_vit_folder, tmp_path)
    (dst / "manifest.json").unlink()
    with pytest.raises(ModelFolderError, match="manifest.json' is missing"):
        Segmenter(dst)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda t: "{not json", "not valid JSON"),
        (
            lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "classes"}),
            "'classes'",
        ),
        (lambda t: t.replace('"vocab_mode": "fixed"', '"vocab_mode": "dynamic"'), "vocab_mode"),
        (lambda t: t.replace('"format_version": 1', '"format_version": 99'), "format_version 99"),
    ],
)
def test_corrupt_manifest(tmp_path, tiny_vit_folder, mutate, match):
    dst = _copy(tiny_vit_folder, tmp_path)
    path = dst / "manifest.json"
    path.write_text(mutate(path.read_text()))
    with pytest.raises(ModelFolderError, match=match):
        Segmenter(dst)


def test_corrupt_or_missing_model_file(tmp_path, tiny_vit_folder):
    dst = _copy(tiny_vit_folder, tmp_path)
    data = (dst / "model.onnx").read_bytes()
    (dst / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match="sha256"):
        Segmenter(dst)
    with pytest.raises(ModelFolderError, match="onnxruntime cannot load"):
        Segmenter(dst, verify=False)
    (dst / "model.onnx").unlink()
    with pytest.raises(ModelFolderError, match="is missing"):
        Segmenter(dst)


def test_unknown_backend_and_mode(tiny_vit_folder):
    with pytest.raises(UnknownNameError, match="unknown backend"):
        Segmenter(tiny_vit_folder, backend="tensorflow")
    with pytest.raises(ValueError, match="mode"):
        Segmenter(tiny_vit_folder, mode="tiles")


# --- vocabulary as input -------------------------------------------------------------------


def test_input_vocab_matches_fixed_export(tiny_vit_folder, tiny_vit_input_folder):
    img = _image(224, 224, seed=3)
    with Segmenter(tiny_vit_folder) as fixed, Segmenter(tiny_vit_input_folder) as dyn:
        np.testing.assert_allclose(dyn(img).logits, fixed(img).logits, atol=1e-5)


def test_set_vocabulary(tiny_vit_folder, tiny_vit_input_folder):
    m, _, _ = _torch_model(tiny_vit_input_folder)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2, 64)).astype(np.float32)
    with Segmenter(tiny_vit_input_folder) as seg:
        seg.set_vocabulary(["road", "sky"], emb)
        res = seg(_image(224, 224))
        assert res.classes == ("road", "sky") and res.logits.shape == (2, 14, 14)
        with pytest.raises(VocabularyError, match=r"float \[3, 64\]"):
            seg.set_vocabulary(["a", "b", "c"], emb)
        with pytest.raises(VocabularyError, match="duplicate"):
            seg.set_vocabulary(["a", "A"], emb)
        with pytest.raises(VocabularyError, match="empty"):
            seg.set_vocabulary([], emb[:0])
        with pytest.raises(VocabularyError, match="all-zero"):
            seg.set_vocabulary(["a", "b"], np.zeros((2, 64), np.float32))
    with (
        Segmenter(tiny_vit_folder) as seg,
        pytest.raises(VocabularyError, match="fixed vocabulary"),
    ):
        seg.set_vocabulary(["a", "b"], emb)


def test_resnet_folder_runs(tiny_rn_folder):
    with Segmenter(tiny_rn_folder) as seg:
        res = seg(_image(224, 224))
    assert res.logits.shape == (4, 7, 7) and res.labels.shape == (224, 224)


def test_camvid_frame(tiny_vit_folder, camvid):
    frame = sorted((camvid / "test").glob("*.png"))[0]
    img = load_image(frame)
    assert img.shape == (360, 480, 3)
    with Segmenter(tiny_vit_folder) as seg:
        res = seg(img)
    assert res.labels.shape == (360, 480) and res.mode == "slide" and res.windows >= 2


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path):
    from runtime.fsutil import atomic_write, atomic_write_text

    target = atomic_write_text(tmp_path / "a.json", "old")
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)

    def fail(tmp):
        open(tmp, "w").write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_model_that_does_not_match_its_manifest(tmp_path, tiny_vit_folder, tiny_vit_input_folder):
    from runtime.fsutil import sha256_file

    dst = _copy(tiny_vit_folder, tmp_path)
    shutil.copy(tiny_vit_input_folder / "model.onnx", dst / "model.onnx")
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["model_sha256"] = sha256_file(dst / "model.onnx")
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="do not match the manifest"):
        Segmenter(dst)


def test_overlay_and_legend():
    from runtime.postprocess import legend, overlay, palette

    img = np.zeros((40, 300, 3), np.uint8)
    labels = np.zeros((40, 300), np.int32)
    labels[:, 150:] = 1
    colours = palette(3)
    assert len({tuple(c) for c in colours}) == 3
    shown = overlay(img, labels, colours, alpha=1.0)
    np.testing.assert_array_equal(shown[0, 0], colours[0])
    np.testing.assert_array_equal(shown[0, 299], colours[1])
    out = legend(shown, ["road", "sky"], colours[:2])
    assert out.shape[1:] == (300, 3) and out.shape[0] > 40
    np.testing.assert_array_equal(out[:40], shown)


def test_stitch_averages_overlaps():
    from runtime.windows import stitch

    plan = plan_windows((64, 96), 64, 32, 16, "grid")  # windows at x = 0 and 32 (cells 0-3 and 2-5)
    assert plan.boxes == ((0, 0), (0, 32))
    calls = []

    def run(window):
        calls.append(window.shape)
        return np.full((2, 4, 4), float(len(calls)), np.float32)  # 1.0 then 2.0

    out = stitch(plan, np.zeros((1, 3, 64, 96), np.float32), run, np.zeros)
    assert calls == [(1, 3, 64, 64)] * 2 and out.shape == (2, 4, 6)
    np.testing.assert_array_equal(out[0, 0], [1, 1, 1.5, 1.5, 2, 2])
