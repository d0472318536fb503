"""The seen-class bias is never lost silently, and given text rows are used as they are.

- An official ZegCLIP / CLIP-RC checkpoint (faked at the tiny sizes, ``test_official_import``)
  carries no class names: a fixed-vocabulary export needs ``--seen`` or ``--seen-bias 0``.
- ``--vocab-mode input`` folders record the bias value; ``set_vocabulary`` / ``set_classes``
  take the seen classes (``seen=``) and the runtime subtracts it after the graph, so the result
  equals a fixed export with ``--seen``.
- ``--text-embeddings`` rows reach MaskCLIP's folder unchanged; ``set_vocabulary(...,
  normalize=False)`` feeds rows as given.
"""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import onnx
import pytest
from test_official_import import _save_mmcv, official_state_dict

from export.build import main
from runtime.errors import ConfigError, ModelFolderError, VocabularyError
from runtime.manifest import MANIFEST_FILE, load_manifest, manifest_from_dict
from runtime.segmenter import Segmenter

CLASSES = ("cat", "dog", "car", "tree")
SEEN = ("cat", "dog")


def _rows(seed: int = 3, dtype=np.float32) -> np.ndarray:
    """Well-separated unit rows (random text towers embed every class alike)."""
    rows = np.random.default_rng(seed).normal(size=(len(CLASSES), 64))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(dtype)


def _image(hw, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((*hw, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("official_seen")
    np.save(root / "rows.npy", _rows())
    return {
        "root": root,
        "rows": root / "rows.npy",
        "zegclip": _save_mmcv(root / "zegclip.pth", official_state_dict("zegclip", grid=4)),
        "cliprc": _save_mmcv(root / "cliprc.pth", official_state_dict("cliprc", grid=8, seed=1)),
    }


def _argv(files, method, out, *extra) -> list[str]:
    argv = ["--method", method, "--backbone", "ovss-tiny-vit", "--checkpoint", str(files[method])]
    argv += ["--classes", ",".join(CLASSES), "--text-embeddings", str(files["rows"])]
    return [*argv, "--output", str(out), *extra]


def _export(files, name, *extra, method="zegclip"):
    out = files["root"] / name
    assert main(_argv(files, method, out, *extra)) == 0
    return out


@pytest.fixture(scope="module")
def fixed_folder(files):
    return _export(files, "fixed", "--seen", ",".join(SEEN))


@pytest.fixture(scope="module")
def input_folder(files):
    """Input vocabulary without --seen; in-graph labels too (the bias must bypass them)."""
    return _export(
        files, "input", "--vocab-mode", "input", "--text-encoder", "--postprocess", "graph"
    )


# ---------------------------------------------------------------- export: --seen required


@pytest.mark.parametrize("method", ["zegclip", "cliprc"])
def test_official_fixed_export_without_seen_exits_2(files, method, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(_argv(files, method, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "official checkpoint" in err
    assert "--seen" in err and "--seen-bias 0" in err
    assert not (out / MANIFEST_FILE).exists()


def test_official_seen_bias_without_seen_still_names_the_flag(files, tmp_path, capsys):
    assert main(_argv(files, "zegclip", tmp_path / "o", "--seen-bias", "0.2")) == 2
    assert "--seen" in capsys.readouterr().err


def test_seen_bias_0_exports_transductive_on_purpose(files, caplog):
    with caplog.at_level(logging.WARNING):
        out = _export(files, "transductive", "--seen-bias", "0")
    assert not [r for r in caplog.records if "seen" in r.getMessage()]
    m = load_manifest(out)
    assert m.seen_bias == 0.0 and m.seen_classes == ()
    assert m.method_cfg["seen_bias"] == [0.0] * len(CLASSES)


def test_fixed_export_with_seen_records_the_split(fixed_folder):
    m = load_manifest(fixed_folder)
    assert m.seen_bias == pytest.approx(0.1) and m.seen_classes == SEEN
    np.testing.assert_allclose(m.method_cfg["seen_bias"], [0.1, 0.1, 0, 0], atol=1e-7)
    with Segmenter(fixed_folder, backend="onnxruntime") as seg:
        assert seg.seen_classes == SEEN


# ---------------------------------------------------------------- runtime: seen= for input folders


def test_input_export_records_the_bias_for_the_runtime(input_folder):
    m = load_manifest(input_folder)
    assert m.vocab_mode == "input" and m.seen_bias == pytest.approx(0.1)
    assert m.seen_classes == ()  # nothing named at export: the folder's own vocabulary is unbiased
    assert m.method_cfg["seen_bias"] == [0.0] * len(CLASSES)  # the graph carries none


@pytest.mark.parametrize("mode, hw", [("whole", (50, 70)), ("slide", (90, 130))])
def test_seen_at_set_vocabulary_equals_the_fixed_export(fixed_folder, input_folder, mode, hw):
    image = _image(hw)
    with Segmenter(fixed_folder, backend="onnxruntime", mode=mode) as seg:
        want = seg(image)
    with Segmenter(input_folder, backend="onnxruntime", mode=mode) as seg:
        free = seg(image)
        seg.set_vocabulary(CLASSES, _rows(), seen=list(SEEN), normalize=False)
        assert seg.seen_classes == SEEN
        got = seg(image)
        again = seg(_image(hw, seed=1))  # every later frame keeps it
        seg.set_vocabulary(CLASSES, _rows(), normalize=False)  # and a new vocabulary drops it
        unbiased = seg(_image(hw, seed=1))
    assert got.postprocess == "host"
    np.testing.assert_allclose(got.logits, want.logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got.labels, want.labels)
    bias = np.array([0.1, 0.1, 0.0, 0.0], dtype=np.float32)[:, None, None]
    np.testing.assert_allclose(
        free.logits - got.logits, np.broadcast_to(bias, got.logits.shape), atol=1e-6
    )
    np.testing.assert_allclose(unbiased.logits - again.logits, free.logits - got.logits, atol=1e-6)
    assert not np.array_equal(free.labels, got.labels)  # the bias moves labels here


def test_seen_bypasses_the_in_graph_labels(input_folder):
    size = load_manifest(input_folder).postprocess.output_hw
    with Segmenter(input_folder, backend="onnxruntime", mode="whole") as seg:
        assert seg(_image(size)).postprocess == "graph"
        seg.set_vocabulary(CLASSES, _rows(), seen=["cat"])
        res = seg(_image(size))
    assert res.postprocess == "host" and res.logits is not None


def test_seen_at_set_classes(input_folder):
    image = _image((50, 70), seed=2)
    names = ["tree", "cat", "bus"]
    with Segmenter(input_folder, backend="onnxruntime", mode="whole") as seg:
        seg.set_classes(names)
        free = seg(image).logits
        seg.set_classes(names, seen=["cat", "bus"])
        assert seg.seen_classes == ("cat", "bus") and seg.classes == tuple(names)
        got = seg(image).logits
    np.testing.assert_allclose(
        free - got, np.zeros_like(got) + [[[0.0]], [[0.1]], [[0.1]]], atol=1e-6
    )


def test_export_seen_applies_to_the_input_folders_own_vocabulary(files):
    out = _export(files, "input_seen", "--vocab-mode", "input", "--seen", "dog")
    assert load_manifest(out).seen_classes == ("dog",)
    image = _image((50, 70), seed=3)
    with Segmenter(out, backend="onnxruntime") as seg:
        assert seg.seen_classes == ("dog",)
        got = seg(image).logits
        seg.set_vocabulary(CLASSES, np.load(out / "text_embeddings.npy"))
        free = seg(image).logits
    np.testing.assert_allclose(
        free - got, np.zeros_like(got) + [[[0]], [[0.1]], [[0]], [[0]]], atol=1e-6
    )


@pytest.mark.parametrize(
    "seen, match", [(["horse"], r"\['horse'\] are not in"), ("cat", "one string")]
)
def test_bad_seen_names(input_folder, seen, match):
    with Segmenter(input_folder, backend="onnxruntime") as seg:
        with pytest.raises(ConfigError, match=match):
            seg.set_vocabulary(CLASSES, _rows(), seen=seen)
        with pytest.raises(ConfigError, match=match):  # refused before anything is encoded
            seg.set_classes(["cat", "dog"], seen=seen)
        assert seg.classes == CLASSES and seg.seen_classes == ()  # unchanged


def test_seen_on_a_method_without_a_seen_bias(tiny_vit_input_folder):
    with Segmenter(tiny_vit_input_folder, backend="onnxruntime") as seg:
        rows = seg._text
        with pytest.raises(ConfigError, match="maskclip has no seen-class bias"):
            seg.set_vocabulary(seg.classes, rows, seen=[seg.classes[0]])
        seg.set_vocabulary(seg.classes, rows, seen=[])  # no seen class: fine


def test_older_folder_without_the_fields_loads(input_folder, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(input_folder, old)
    d = json.loads((old / MANIFEST_FILE).read_text())
    del d["seen_bias"], d["seen_classes"]
    (old / MANIFEST_FILE).write_text(json.dumps(d))
    with Segmenter(old, backend="onnxruntime") as seg:
        assert seg(_image((50, 70))).labels.shape == (50, 70)
        with pytest.raises(ConfigError, match="exported without a seen-class bias"):
            seg.set_vocabulary(CLASSES, _rows(), seen=["cat"])


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"seen_bias": -0.1}, "seen_bias must be"),
        ({"seen_bias": math.nan}, "seen_bias must be"),
        ({"seen_bias": True}, "seen_bias must be"),
        ({"seen_bias": "0.1"}, "seen_bias must be"),
        ({"seen_classes": "cat"}, "seen_classes must be a list"),
        ({"seen_classes": ["horse"]}, "distinct names"),
        ({"seen_classes": ["cat", "cat"]}, "distinct names"),
        ({"seen_classes": ["cat"], "seen_bias": 0}, "seen_bias is 0"),
        ({"seen_bias": 0.1, "score": "softmax"}, "needs score 'probability'"),
    ],
)
def test_manifest_seen_fields_are_validated(fixed_folder, edit, match):
    d = json.loads((fixed_folder / MANIFEST_FILE).read_text())
    with pytest.raises(ModelFolderError, match=match):
        manifest_from_dict({**d, "seen_classes": [], **edit})


# ---------------------------------------------------------------- given text rows, as they are


def _maskclip(tmp_path, name, *extra):
    out = tmp_path / name
    argv = ["--method", "maskclip", "--backbone", "ovss-tiny-vit", "--classes", ",".join(CLASSES)]
    argv += ["--image-size", "64", "--templates", "single", "--output", str(out), *extra]
    assert main(argv) == 0
    return out


def _baked(folder) -> np.ndarray:
    inits = onnx.load(str(folder / "model.onnx")).graph.initializer
    (baked,) = [onnx.numpy_helper.to_array(i) for i in inits if i.name == "text_classifier"]
    return baked.reshape(len(CLASSES), -1)


@pytest.fixture(scope="module")
def given_rows(tmp_path_factory):
    """float16 rows, not unit length, in a non-trivial order (as the official files)."""
    root = tmp_path_factory.mktemp("maskclip_rows")
    rows = (_rows(seed=5) * np.array([[0.5], [2.0], [1.3], [0.8]])).astype(np.float16)
    np.save(root / "rows.npy", rows)
    return root / "rows.npy", rows


def test_maskclip_text_embeddings_reach_the_folder_unchanged(given_rows, tmp_path):
    path, rows = given_rows
    given = _maskclip(tmp_path, "given", "--text-embeddings", str(path))
    default = _maskclip(tmp_path, "default")
    np.testing.assert_array_equal(_baked(given), rows.astype(np.float32))  # exact, in order
    assert not np.allclose(_baked(default), _baked(given))
    inp = _maskclip(tmp_path, "input", "--text-embeddings", str(path), "--vocab-mode", "input")
    stored = np.load(inp / "text_embeddings.npy")
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, rows.astype(np.float32))
    image = _image((64, 64), seed=4)
    with (
        Segmenter(given, backend="onnxruntime") as a,
        Segmenter(default, backend="onnxruntime") as b,
    ):
        labels_given, labels_default = a(image).labels, b(image).labels
    assert not np.array_equal(labels_given, labels_default)  # the rows are what classifies
    assert len(np.unique(labels_given)) > 1


@pytest.fixture(scope="module")
def linear_input_folder(tmp_path_factory):
    """MaskCLIP without refinement: its logits are linear in the text rows."""
    root = tmp_path_factory.mktemp("linear")
    return _maskclip(
        root, "m", "--vocab-mode", "input", "--no-key-smoothing", "--no-prompt-denoising"
    )


def test_set_vocabulary_normalize_false_uses_rows_as_given(linear_input_folder, given_rows):
    rows = given_rows[1]
    image = _image((50, 70), seed=6)
    with Segmenter(linear_input_folder, backend="onnxruntime", mode="whole") as seg:
        seg.set_vocabulary(CLASSES, rows)  # default: renormalised
        unit = seg._text.copy()
        unit_logits = seg(image).logits
        seg.set_vocabulary(CLASSES, rows, normalize=False)
        assert seg._text.dtype == np.float32
        np.testing.assert_array_equal(seg._text, rows.astype(np.float32))
        raw_logits = seg(image).logits
        for bad in (np.full_like(rows, np.nan), rows[:, :10], rows.astype(np.int32)):
            with pytest.raises(VocabularyError):
                seg.set_vocabulary(CLASSES, bad, normalize=False)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    scale = np.linalg.norm(rows.astype(np.float64), axis=1)[:, None, None]
    np.testing.assert_allclose(raw_logits, unit_logits * scale, rtol=1e-4, atol=1e-6)
