"""Every registered method gets the contract tests (``tests/method_contract.py``), and the
registry itself is consistent."""

from __future__ import annotations

import dataclasses

import pytest
from method_contract import MethodContract

from runtime.errors import UnknownNameError
from training.methods import METHODS, get_method


@pytest.fixture(scope="class", params=sorted(METHODS))
def method_name(request) -> str:
    return request.param


class TestEveryMethod(MethodContract):
    pass


@pytest.mark.parametrize("name", sorted(METHODS))
def test_spec_references_resolve_and_defaults_build(name):
    spec = METHODS[name]
    cfg = spec.defaults()
    assert (
        dataclasses.is_dataclass(cfg) and hasattr(cfg, "image_size") and hasattr(cfg, "templates")
    )
    for ref in ("exporter", "model_builder", "wrapper") + (
        ("train_loop",) if spec.trainable else ()
    ):
        assert callable(spec.load(ref)), ref
    assert set(dict(spec.smoke_options)) <= {f.name for f in spec.fields()}


def test_template_names_match_the_template_sets():
    from training.methods.spec import TEMPLATE_NAMES
    from training.text_classifier import TEMPLATE_SETS

    assert TEMPLATE_NAMES == tuple(sorted(TEMPLATE_SETS))
    for spec in METHODS.values():
        assert spec.defaults().templates in TEMPLATE_SETS
    with pytest.raises(ValueError, match="templates must be one of"):
        METHODS["maskclip"].make_config(templates="imagenet81")


def test_unknown_method_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="did you mean sclip"):
        get_method("sclipp")


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="ks_thresh"):
        METHODS["sclip"].make_config(ks_thresh=0.5)


def test_background_threshold_sends_unsure_pixels_to_class_0():
    import numpy as np

    from runtime.postprocess import upsample_argmax

    # left column: class 2 sure (p ~ 0.98); right column: class 1 at p = 0.5 (tie-free, unsure)
    logits = np.array([[[0.0, 0.0]], [[0.0, np.log(2.0)]], [[4.0, 0.0]]], dtype=np.float32)
    logits[1, 0, 1] = np.log(2.0)
    p_right = 2.0 / (1.0 + 2.0 + 1.0)
    plain = upsample_argmax(logits, (1, 2))
    assert plain.tolist() == [[2, 1]]
    assert upsample_argmax(logits, (1, 2), background_thd=p_right + 0.01).tolist() == [[2, 0]]
    assert upsample_argmax(logits, (1, 2), background_thd=p_right - 0.01).tolist() == [[2, 1]]
    assert upsample_argmax(logits, (1, 2), background_thd=0.99).tolist() == [[0, 0]]


def test_segmenter_applies_the_methods_background_threshold(tmp_path):

    from method_contract import export_method, smooth_image

    from runtime.segmenter import Segmenter

    folder = export_method("sclip", tmp_path / "bg", prob_thd=0.6)
    img = smooth_image((64, 64), seed=4)
    with Segmenter(folder, backend="onnxruntime", short_side=0) as seg:
        assert seg.background_thd == 0.6
        on = seg(img)
        seg.background_thd = 0.0
        off = seg(img)
    changed = on.labels != off.labels
    assert changed.any() and (on.labels[changed] == 0).all()


@pytest.mark.parametrize("name", sorted(n for n, s in METHODS.items() if s.kind == "training_free"))
def test_export_with_the_methods_own_templates(name, tmp_path):
    """The smoke exports use one template; here each training-free method's default set
    (imagenet80, maskclip85) is encoded, baked and recorded."""
    import numpy as np
    import onnx
    from method_contract import export_method

    from runtime.manifest import load_manifest
    from training.clip_loader import load_clip
    from training.text_classifier import TEMPLATE_SETS, encode_classes

    default = METHODS[name].defaults().templates
    folder = export_method(name, tmp_path / "m", templates=None)  # None: the method's default
    assert load_manifest(folder).method_cfg["templates"] == default
    baked = [
        onnx.numpy_helper.to_array(i)
        for i in onnx.load(str(folder / "model.onnx")).graph.initializer
        if i.name == "text_classifier"
    ][0]
    want = encode_classes(
        load_clip("ovss-tiny-vit", "none", 0), ("cat", "dog", "car", "tree"), TEMPLATE_SETS[default]
    ).numpy()
    np.testing.assert_allclose(baked.reshape(want.shape), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sclip", "clearclip", "naclip"])
def test_vit_b16_at_448_exports_with_parity(name, tmp_path):
    """Full size: ViT-B/16 (random weights) at 448 px, the size the README benchmarks."""
    from method_contract import export_method

    from runtime.manifest import load_manifest

    folder = export_method(name, tmp_path / "m", backbone="ViT-B-16", image_size=448)
    m = load_manifest(folder)
    assert m.preprocess.input_size == (448, 448) and m.backbone == "ViT-B-16"
    assert m.parity["max_abs_diff"] <= 1e-4 and m.parity["label_agreement"] >= 0.999


def test_student_names_match_the_students():
    from training.methods.maskclip_plus import STUDENT_NAMES
    from training.students import STUDENTS

    assert STUDENT_NAMES == tuple(STUDENTS)


def test_readme_quotes_every_published_figure_of_the_registry():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    missing = [
        (n, p.dataset, p.miou)
        for n, s in METHODS.items()
        for p in s.published
        if f"{p.miou:g}" not in readme
    ]
    assert not missing
