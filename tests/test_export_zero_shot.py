"""ZegCLIP / CLIP-RC export: PyTorch vs onnxruntime parity on mask logits and labels, the folded
graph against the training model, the seen bias, and the runtime running the folder unchanged.

Random text towers embed every class alike, so parity tests feed well-separated random unit text
embeddings; the graph under test is the same.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.onnx_export import ExportError, parity_image, run_export
from export.parity import ort_outputs
from runtime import io_names
from training.clip_loader import load_clip
from training.maskclip import IMAGENET_MEAN, IMAGENET_STD
from training.methods import METHODS
from training.models import build_model
from training.zegclip import ZegClipCfg, bias_vector, seen_scores, zero_shot_labels

# Every registered zero-shot method's export wrapper (the registry's ``wrapper``).
WRAPPERS = {n: s.load("wrapper") for n, s in METHODS.items() if s.kind == "zero_shot"}
MASK_ATOL, AGREEMENT = 1e-3, 0.999
# Random heads often put one class on top everywhere; these seeds give more than one label on
# the parity images, so the label check is not vacuous (asserted in _fresh_parity).
SEEDS = {
    ("zegclip", "ovss-tiny-vit"): 0,
    ("cliprc", "ovss-tiny-vit"): 1,
    ("zegclip", "ViT-B-16"): 0,
    ("cliprc", "ViT-B-16"): 0,
}


def _model(method, backbone, size, classes, seed=0):
    clip = load_clip(backbone, "none", seed)
    torch.manual_seed(seed)
    model = build_model(method, clip, ZegClipCfg(image_size=size)).eval()
    dim = clip.model.visual.proj.shape[1]
    text = F.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(3)), dim=1)
    bias = bias_vector(classes, list(range(classes // 2)), 0.1)
    return model, text, bias


def _export(method, backbone, size, classes=6, output="mask_logits", vocab_mode="fixed"):
    model, text, bias = _model(method, backbone, size, classes, SEEDS[method, backbone])
    bias = bias if vocab_mode == "fixed" else torch.zeros_like(bias)
    wrapper = WRAPPERS[method](model, text, bias, vocab_mode, output=output).eval()
    dummy = {io_names.IMAGE: parity_image(size, IMAGENET_MEAN, IMAGENET_STD, seed=0)}
    axes = {}
    if vocab_mode == "input":
        dummy[io_names.TEXT_EMBEDDINGS] = text
        axes = {io_names.TEXT_EMBEDDINGS: {0: "num_classes"}, io_names.LOGITS: {1: "num_classes"}}
    result = run_export(
        model=wrapper,
        dummy_inputs=dummy,
        output_names=[io_names.LOGITS, io_names.LABELS],
        dynamic_axes=axes,
        opset=17,
        simplify=True,
        atol=MASK_ATOL,
        min_label_agreement=AGREEMENT,
    )
    return model, wrapper, text, bias, result


def _fresh_parity(model, wrapper, text, bias, result, size, seed=11):
    """On an unseen input: ORT mask logits vs the *training* model's, and labels vs official
    post-processing computed here (upsample, sigmoid, minus bias, argmax)."""
    image = parity_image(size, IMAGENET_MEAN, IMAGENET_STD, seed=seed)
    with torch.no_grad():
        ref = model(image, text)
        up = F.interpolate(ref, size=(size, size), mode="bilinear", align_corners=False)
        labels = zero_shot_labels(up, bias)
    got = ort_outputs(
        result.model.SerializeToString(),
        {io_names.IMAGE: image.numpy()},
        [io_names.LOGITS, io_names.LABELS],
    )
    diff = float(np.abs(got[io_names.LOGITS] - ref.numpy()).max())
    agree = float((got[io_names.LABELS] == labels.numpy()).mean())
    assert diff <= MASK_ATOL, f"max |mask-logit diff| {diff}"
    assert agree >= AGREEMENT, f"label agreement {agree}"
    assert len(np.unique(labels.numpy())) > 1, "degenerate test: one label everywhere"
    return diff, agree


@pytest.mark.parametrize("method", sorted(WRAPPERS))
def test_tiny_parity(method):
    model, wrapper, text, bias, result = _export(method, "ovss-tiny-vit", 64)
    _fresh_parity(model, wrapper, text, bias, result, 64)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(WRAPPERS))
def test_vitb16_512_parity(method):
    model, wrapper, text, bias, result = _export(method, "ViT-B-16", 512, classes=8)
    diff, agree = _fresh_parity(model, wrapper, text, bias, result, 512)
    print(f"{method} ViT-B/16@512: max|mask-logit diff| {diff:.3g}, labels {agree:.5f}")


@pytest.mark.parametrize("method", sorted(WRAPPERS))
def test_folded_wrapper_equals_model(method):
    """The export graph folds text into q_proj (and CLIP-RC fuses regions before the product):
    same scores as sigmoid(model) - bias."""
    model, text, bias = _model(method, "ovss-tiny-vit", 64, 5)
    image = parity_image(64, IMAGENET_MEAN, IMAGENET_STD, seed=2)
    with torch.no_grad():
        scores, labels = WRAPPERS[method](model, text, bias, "fixed")(image)
        want = seen_scores(model(image, text), bias)
        scores_in, _ = WRAPPERS[method](model, text, torch.zeros(5), "input")(image, text)
        unbiased = seen_scores(model(image, text), torch.zeros(5))
    torch.testing.assert_close(scores, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores_in, unbiased, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="fixed"):
        WRAPPERS[method](model, text, bias, "input")
    assert labels.shape == (1, 64, 64) and labels.dtype == torch.int64


def test_zero_shot_labels_resolve_saturation():
    """Logits 30 and 20 both give sigmoid 1.0 in float32; the larger must still win."""
    logits = torch.tensor([20.0, 30.0, -5.0, 25.0])[None, :, None, None].expand(1, 4, 2, 2)
    assert (torch.sigmoid(logits[:, 0]) == torch.sigmoid(logits[:, 1])).all()  # the trap
    assert (zero_shot_labels(logits, None) == 1).all()
    assert (zero_shot_labels(logits, torch.tensor([0.0, 0.1, 0.0, 0.1])) == 0).all()
    assert (zero_shot_labels(logits, torch.tensor([0.1, 0.0, 0.1, 0.1])) == 1).all()
    rand = torch.randn(2, 6, 5, 5)
    bias = torch.tensor([0.1, 0.1, 0.0, 0.0, 0.1, 0.0])
    torch.testing.assert_close(zero_shot_labels(rand, bias), seen_scores(rand, bias).argmax(1))


def test_seen_bias_moves_labels():
    model, text, _ = _model("zegclip", "ovss-tiny-vit", 64, 4)
    image = parity_image(64, IMAGENET_MEAN, IMAGENET_STD, seed=4)
    with torch.no_grad():
        zegclip = WRAPPERS["zegclip"]
        _, free = zegclip(model, text, torch.zeros(4), "fixed")(image)
        _, biased = zegclip(model, text, torch.tensor([0.0, 2.0, 2.0, 2.0]), "fixed")(image)
    assert (biased == 0).all() and not (free == 0).all()


def test_vocab_input_parity():
    model, wrapper, text, bias, result = _export(
        "zegclip", "ovss-tiny-vit", 64, output="scores", vocab_mode="input"
    )
    other = F.normalize(
        torch.randn(9, text.shape[1], generator=torch.Generator().manual_seed(8)), dim=1
    )
    image = parity_image(64, IMAGENET_MEAN, IMAGENET_STD, seed=5)
    with torch.no_grad():
        want, _ = wrapper(image, other)
    got = ort_outputs(
        result.model.SerializeToString(),
        {io_names.IMAGE: image.numpy(), io_names.TEXT_EMBEDDINGS: other.numpy()},
        [io_names.LOGITS],
    )
    assert got[io_names.LOGITS].shape == (1, 9, 4, 4)
    np.testing.assert_allclose(got[io_names.LOGITS], want.numpy(), atol=1e-5)


@pytest.fixture(scope="module")
def zeg_folder(tmp_path_factory):
    from export.build import main

    out = tmp_path_factory.mktemp("zeg_folder")
    rc = main(
        [
            "--method",
            "zegclip",
            "--backbone",
            "ovss-tiny-vit",
            "--classes",
            "cat,dog,car,tree",
            "--image-size",
            "64",
            "--seen",
            "cat,dog",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    return out


def test_cli_folder_and_runtime(zeg_folder):
    from runtime.segmenter import Segmenter

    manifest = json.loads((zeg_folder / "manifest.json").read_text())
    assert manifest["method"] == "zegclip" and manifest["weights"]["random"] is True
    np.testing.assert_allclose(manifest["method_cfg"]["seen_bias"], [0.1, 0.1, 0.0, 0.0], atol=1e-7)
    image = (np.random.default_rng(0).random((90, 130, 3)) * 255).astype(np.uint8)
    for mode in ("whole", "slide"):
        seg = Segmenter(zeg_folder, mode=mode)
        res = seg(image)
        assert res.labels.shape == (90, 130) and res.labels.max() < 4
        seg.close()


def test_cliprc_rejects_other_size(monkeypatch):
    """A CLIP-RC model built for 64 px (its region mask) cannot be exported at 128 px."""
    from export import builders
    from export.config import ExportCfg

    base = dict(method="cliprc", backbone="ovss-tiny-vit", output="/nonexistent/x", classes="a,b")
    trained = builders._load_zero_shot(ExportCfg.create(**base, image_size=64))
    monkeypatch.setattr(builders, "_load_zero_shot", lambda _cfg: trained)
    with pytest.raises(ExportError, match="region mask"):
        builders.build_cliprc(ExportCfg.create(**base, image_size=128))


def test_seen_names_must_be_in_vocabulary(tmp_path):
    from export.build import main

    rc = main(
        [
            "--method",
            "zegclip",
            "--backbone",
            "ovss-tiny-vit",
            "--classes",
            "cat,dog",
            "--image-size",
            "64",
            "--seen",
            "cat,horse",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and not (tmp_path / "o").exists()


def test_keep_outputs_prunes_labels_exactly():
    """The deployed graph drops the label branch (onnxruntime would run it on every call) and
    gives bit-identical scores."""
    from export.onnx_export import keep_outputs

    _, _, text, _, result = _export("zegclip", "ovss-tiny-vit", 64, output="scores")
    pruned = keep_outputs(result.model, [io_names.LOGITS])
    assert [o.name for o in pruned.graph.output] == [io_names.LOGITS]
    assert len(pruned.graph.node) < len(result.model.graph.node)
    assert not any(n.op_type == "ArgMax" for n in pruned.graph.node)
    feeds = {io_names.IMAGE: parity_image(64, IMAGENET_MEAN, IMAGENET_STD, seed=9).numpy()}
    full = ort_outputs(result.model.SerializeToString(), feeds, [io_names.LOGITS])
    got = ort_outputs(pruned.SerializeToString(), feeds, [io_names.LOGITS])
    np.testing.assert_array_equal(got[io_names.LOGITS], full[io_names.LOGITS])


def test_seen_bias_without_seen_classes_is_refused(tmp_path):
    from export import builders
    from export.config import ExportCfg
    from runtime.errors import ConfigError

    cfg = ExportCfg.create(
        method="zegclip",
        backbone="ovss-tiny-vit",
        output=str(tmp_path / "o"),
        classes="a,b",
        image_size=64,
        templates="single",
        seen_bias=0.1,
    )
    with pytest.raises(ConfigError, match="applies to no class"):
        builders.build_zegclip(cfg)
    assert not (tmp_path / "o").exists()
