"""Slide windows as the official code places them: the ``flush`` plan is mmseg's
``slide_inference`` grid, the runtime averages at full resolution, and its labels are
``training.evaluate``'s on a non-square image with several windows.

ZegCLIP / CLIP-RC folders carry the mask logits beside the scores (sigmoid(mask logits) - bias),
so the flush path upsamples them before the sigmoid, as the official code; folders exported
before that output existed upsample the scores (sigmoid first).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.label_map import label_map, upsample
from runtime.windows import plan_windows, stitch, window_starts
from tests.synthetic import CLASSES, make_folder, tiny_train_cfg

NEAR_TIE = 1e-5


@pytest.mark.parametrize(
    "size,crop,stride",
    [(683, 512, 426), (512, 512, 426), (1024, 512, 341), (700, 224, 112), (225, 224, 112),
     (1000, 448, 224), (97, 64, 53)],
)  # fmt: skip
def test_flush_plan_is_mmseg(size, crop, stride):
    """The plan's windows are ``window_starts``' (checked against a transcription of mmseg's
    loop in tests/test_training.py), on the image itself."""
    plan = plan_windows((crop, size), crop, stride, 16, "flush")
    assert plan.padded_hw == (crop, size)  # no padding: the image itself
    assert [x for _, x in plan.boxes] == window_starts(size, crop, stride)
    assert plan.boxes[-1][1] + crop == size  # the last window is flush with the edge


def test_flush_keeps_the_stride_grid_rounds_it():
    flush = plan_windows((512, 683), 512, 426, 16, "flush")
    grid = plan_windows((512, 683), 512, 426, 16, "grid")
    assert flush.boxes == ((0, 0), (0, 171)) and flush.padded_hw == (512, 683)
    assert grid.boxes == ((0, 0), (0, 176)) and grid.padded_hw == (512, 688)  # 426 -> 416, padded
    small = plan_windows((40, 700), 224, 112, 16, "flush")  # smaller than the window: padded
    assert small.padded_hw == (224, 700) and {y for y, _ in small.boxes} == {0}


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="edge"):
        plan_windows((64, 64), 64, 32, 16, "middle")
    with pytest.raises(ValueError, match="stride"):
        plan_windows((64, 64), 64, 0, 16, "flush")
    with pytest.raises(ValueError, match="upsample"):
        plan = plan_windows((64, 100), 64, 32, 16, "flush")
        stitch(plan, np.zeros((1, 3, 64, 100)), lambda w: np.zeros((2, 4, 4)), np.zeros)


def test_upsample_matches_torch():
    torch = pytest.importorskip("torch")
    s = np.random.default_rng(0).normal(size=(5, 4, 6)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(s)[None], size=(64, 96), mode="bilinear", align_corners=False
    )[0].numpy()
    np.testing.assert_allclose(upsample(s, (64, 96)), ref, rtol=0, atol=2e-6)


def test_full_resolution_average():
    """Two windows over 64 x 100: the seam region holds the mean of both upsampled windows."""
    plan = plan_windows((64, 100), 64, 53, 16, "flush")
    assert plan.boxes == ((0, 0), (0, 36))
    img = np.zeros((1, 3, 64, 100), np.float32)
    img[:, :, :, 36:] = 1.0  # the second window sees ones, the first mostly zeros
    out = {0: np.full((2, 4, 4), 1.0, np.float32), 36: np.full((2, 4, 4), 3.0, np.float32)}
    calls = []

    def run(w):
        calls.append(w.shape)
        return out[0] if w[0, 0, 0, 0] == 0 else out[36]

    canvas = stitch(plan, img, run, lambda shape: np.zeros(shape, np.float32), upsample)
    assert canvas.shape == (2, 64, 100) and calls == [(1, 3, 64, 64)] * 2
    np.testing.assert_allclose(canvas[:, :, :36], 1.0)
    np.testing.assert_allclose(canvas[:, :, 36:64], 2.0)
    np.testing.assert_allclose(canvas[:, :, 64:], 3.0)


@pytest.mark.parametrize("kind", ["softmax", "probability"])
def test_identity_label_map_is_exact(kind):
    """Scores already at the output size (a flush canvas without rescaling): the direct route
    equals the exact reference, thresholds and scores included."""
    s = np.random.default_rng(1).random((6, 37, 53)).astype(np.float32)
    kw = dict(score_kind=kind, score_scale=3.0, score_threshold=0.3, with_scores=True)
    fast, exact = label_map(s, (37, 53), **kw), label_map(s, (37, 53), method="exact", **kw)
    np.testing.assert_array_equal(fast.labels, exact.labels)
    np.testing.assert_array_equal(fast.counts, exact.counts)
    np.testing.assert_allclose(fast.scores, exact.scores, rtol=1e-6)
    assert (fast.labels == 255).any() and (fast.labels < 6).any()


# ---------------------------------------------------------------- end to end, tiny models


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("slide_data"), 4)


def _checkpoint_and_folder(method, data, root):
    from export.build import main as export_main
    from training.train import run

    # Inductive: a seen bias on red and green.
    ckpt = run(
        tiny_train_cfg(data, root / "w", method, max_iters=2, unseen="blue,yellow")
    ).checkpoint
    # Random text towers embed every class alike: well-separated random rows give several labels.
    rows = np.random.default_rng(3).normal(size=(4, 64)).astype(np.float32)
    np.save(root / "rows.npy", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    folder = root / "folder"
    argv = ["--method", method, "--checkpoint", str(ckpt), "--backbone", "ovss-tiny-vit"]
    argv += ["--classes", CLASSES, "--image-size", "64", "--output", str(folder)]
    argv += ["--text-embeddings", str(root / "rows.npy")]
    assert export_main(argv) == 0
    return ckpt, folder


@pytest.fixture(scope="module", params=["zegclip", "cliprc"])
def trained_folder(request, data, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"slide_{request.param}")
    ckpt, folder = _checkpoint_and_folder(request.param, data, root)
    return request.param, ckpt, folder


def _references(ckpt, folder, image):
    """(official scores [C,H,W] = training.evaluate.slide_scores, the same with the sigmoid
    before upsampling, slide stride), float32 torch -> numpy."""
    import torch
    import torch.nn.functional as F

    from runtime.manifest import load_manifest
    from runtime.preprocess import normalize
    from training.evaluate import slide_scores
    from training.loading import class_text, load_trained

    manifest = load_manifest(folder)
    trained = load_trained(ckpt)
    text = class_text(trained, manifest.classes, text_embeddings=str(folder.parent / "rows.npy"))
    bias = torch.tensor(manifest.method_cfg["seen_bias"], dtype=torch.float32)
    crop, stride = manifest.preprocess.input_size[0], manifest.method_cfg["slide_stride"]
    x = torch.from_numpy(normalize(image, manifest.preprocess))
    official = slide_scores(trained.model, x, text, bias, crop, stride)[0].numpy()
    h, w = image.shape[:2]
    out, count = torch.zeros((len(text), h, w)), torch.zeros((h, w))
    with torch.no_grad():
        for y in window_starts(h, crop, stride):
            for xs in window_starts(w, crop, stride):
                scores = trained.model(x[:, :, y : y + crop, xs : xs + crop], text).sigmoid()
                scores = scores - bias[None, :, None, None]
                up = F.interpolate(scores, size=(crop, crop), mode="bilinear", align_corners=False)
                out[:, y : y + crop, xs : xs + crop] += up[0]
                count[y : y + crop, xs : xs + crop] += 1
    return official, (out / count).numpy(), stride


def _mosaic(data_root) -> np.ndarray:
    """80 x 150 RGB of the training images (coloured quadrants), so several classes show."""
    from PIL import Image

    tiles = [np.asarray(Image.open(p)) for p in sorted((data_root / "img").glob("*.png"))]
    rows = [np.concatenate(tiles[i : i + 3], axis=1) for i in (0, 1)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:80, :150])


def _decided(scores):
    top2 = np.sort(scores, axis=0)[-2:]
    return top2[1] - top2[0] > NEAR_TIE


def test_runtime_slide_is_training_evaluate(trained_folder, data):
    """The folder has the mask logits: the runtime's averaged canvas is training.evaluate's
    (sigmoid after upsampling) at every pixel, and so are its labels but at near-ties."""
    from runtime.segmenter import Segmenter

    method, ckpt, folder = trained_folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["method_cfg"]["slide_edge"] == "flush"
    assert "mask_logits" in [o["name"] for o in manifest["outputs"]]
    image = _mosaic(data)  # 80 x 150: 2 rows x 3 columns of windows
    official, _, _ = _references(ckpt, folder, image)
    with Segmenter(folder, backend="onnxruntime", mode="slide", short_side=0) as seg:
        res = seg(image)
    assert res.windows == 6 and res.logits.shape == (4, 80, 150)
    np.testing.assert_allclose(res.logits, official, atol=2e-5)  # the averaged canvas itself
    decided = _decided(official)  # float32 sigmoid saturates: exact ties at 1.0
    np.testing.assert_array_equal(res.labels[decided], official.argmax(0)[decided])
    print(f"{method}: {1 - decided.mean():.2%} of pixels are official near-ties")
    assert decided.mean() > 0.5  # the comparison is not vacuous
    if method == "zegclip":  # the tiny random CLIP-RC head puts one class everywhere; its
        # geometry is checked by the canvas comparison above (every pixel, 2e-5)
        assert len(set(res.labels.ravel().tolist())) > 1  # not a one-class map


def test_folders_without_mask_logits_take_the_sigmoid_first(trained_folder, data):
    """Older ZegCLIP / CLIP-RC folders (scores only): official geometry, the scores upsampled
    (sigmoid before upsampling)."""
    from runtime.segmenter import Segmenter

    _, ckpt, folder = trained_folder
    image = _mosaic(data)
    _, scores_first, _ = _references(ckpt, folder, image)
    with Segmenter(folder, backend="onnxruntime", mode="slide", short_side=0) as seg:
        seg._mask_logits = False  # as a folder exported before the output existed
        res = seg(image)
    np.testing.assert_allclose(res.logits, scores_first, atol=2e-5)
    decided = _decided(scores_first)
    np.testing.assert_array_equal(res.labels[decided], scores_first.argmax(0)[decided])


def test_grid_plan_stays_available(trained_folder):
    """The grid plan (faster) runs the windows it plans and is what the old runtime gave."""
    from runtime.segmenter import Segmenter

    _, _, folder = trained_folder
    image = (np.random.default_rng(8).random((80, 150, 3)) * 255).astype(np.uint8)
    with Segmenter(folder, backend="onnxruntime", mode="slide", short_side=0,
                   slide_edge="grid") as seg:  # fmt: skip
        res = seg(image)
        plan = plan_windows(image.shape[:2], 64, seg.stride, 16, "grid")
    assert res.windows == len(plan.boxes) and res.logits.shape[1:] == plan.feature_hw


# ---------------------------------------------------------------- ViT-B/16 at 512


@pytest.mark.slow
@pytest.mark.parametrize("method", ["zegclip", "cliprc"])
def test_vitb16_slide_is_training_evaluate(method, tmp_path):
    """ViT-B/16 at 512 (random CLIP, random head), 512 x 683: the official windows x = 0, 171;
    the runtime's canvas and labels are training.evaluate's."""
    import torch
    from PIL import Image

    from export.builders import _load_zero_shot
    from export.config import ExportCfg
    from runtime.segmenter import Segmenter
    from training.methods import get_method

    rows = np.random.default_rng(3).normal(size=(4, 512)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    cfg = ExportCfg.create(
        method=method,
        backbone="ViT-B-16",
        output=str(tmp_path / "folder"),
        classes=CLASSES,
        image_size=512,
        seen="red,green",
        text_embeddings=str(tmp_path / "rows.npy"),
    )
    get_method(method).load("exporter")(cfg)
    trained = _load_zero_shot(cfg)  # the same seeded random model the export used
    low = (np.random.default_rng(5).random((8, 11, 3)) * 255).astype(np.uint8)
    image = np.asarray(Image.fromarray(low).resize((683, 512), Image.BICUBIC))  # smooth fields
    from runtime.manifest import load_manifest
    from runtime.preprocess import normalize
    from training.evaluate import slide_scores

    manifest = load_manifest(cfg.output)
    bias = torch.tensor(manifest.method_cfg["seen_bias"], dtype=torch.float32)
    text = torch.from_numpy(np.load(tmp_path / "rows.npy"))
    x = torch.from_numpy(normalize(image, manifest.preprocess))
    official = slide_scores(trained.model.eval(), x, text, bias, 512, 426)[0].numpy()
    with Segmenter(cfg.output, backend="onnxruntime", mode="slide", short_side=0) as seg:
        res = seg(image)
    assert res.windows == 2 and res.logits.shape == (4, 512, 683)
    np.testing.assert_allclose(res.logits, official, atol=1e-4)
    decided = _decided(official)
    np.testing.assert_array_equal(res.labels[decided], official.argmax(0)[decided])
    print(f"{method} ViT-B/16: {1 - decided.mean():.2%} of pixels are official near-ties")
    assert decided.mean() > 0.5
