"""Vocabularies, prompt templates and the text-classifier cache."""

import numpy as np
import pytest
import torch

from runtime.errors import VocabularyError
from training import text_classifier as tc
from training.clip_loader import load_clip
from training.vocab import resolve_classes


@pytest.mark.parametrize(
    "name,count",
    [
        ("voc", 20),
        ("context", 59),
        ("coco_stuff", 171),
        ("ade20k", 150),
        ("cityscapes", 19),
        ("camvid", 11),
    ],
)
def test_builtin_lists(name, count):
    classes = resolve_classes(name)
    assert len(classes) == count == len(set(classes))


def test_user_vocabularies(tmp_path):
    assert resolve_classes(" road, car ,person") == ("road", "car", "person")
    assert resolve_classes("traffic cone") == ("traffic cone",)
    f = tmp_path / "classes.txt"
    f.write_text("# my classes\nroad\n\n  fire hydrant \n")
    assert resolve_classes(str(f)) == ("road", "fire hydrant")


@pytest.mark.parametrize(
    "spec,match",
    [
        ("", "empty"),
        ("car,,road", "empty entry"),
        ("car,Car", "duplicate"),
        ("missing.txt", "does not exist"),
    ],
)
def test_bad_vocabularies(spec, match):
    with pytest.raises(VocabularyError, match=match):
        resolve_classes(spec)


def test_empty_file_vocabulary(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("# nothing\n\n")
    with pytest.raises(VocabularyError, match="empty"):
        resolve_classes(str(f))


def test_template_sets():
    t = tc.TEMPLATE_SETS["maskclip85"]
    assert len(t) == 85 == len(set(t))
    assert t[0] == "a bad photo of a {}." and t[-1] == "this is one {} in the scene."
    assert tc.TEMPLATE_SETS["single"] == ("a photo of a {}.",)


@pytest.fixture(scope="module")
def clip():
    return load_clip("ovss-tiny-vit")


def test_ensemble_is_normalise_mean_renormalise(clip, tmp_path):
    emb = tc.build_text_classifier(clip, ["cat", "road"], "maskclip85", cache_dir=tmp_path)
    assert emb.shape == (2, 64)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    with torch.no_grad():
        each = clip.model.encode_text(
            clip.tokenizer([t.format("road") for t in tc.TEMPLATE_SETS["maskclip85"]])
        )
    mean = torch.nn.functional.normalize(each, dim=-1).mean(0)
    torch.testing.assert_close(emb[1], mean / mean.norm(), rtol=1e-5, atol=1e-6)
    single = tc.build_text_classifier(clip, ["cat", "road"], "single", cache_dir=tmp_path)
    assert not torch.allclose(single, emb)


def test_cache_hit_and_key(clip, tmp_path, monkeypatch):
    first = tc.build_text_classifier(clip, ["cat", "dog"], "single", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def boom(*a, **k):
        raise AssertionError("cache miss")

    monkeypatch.setattr(tc, "encode_classes", boom)
    again = tc.build_text_classifier(clip, ["cat", "dog"], "single", cache_dir=tmp_path)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    with pytest.raises(AssertionError, match="cache miss"):
        tc.build_text_classifier(clip, ["dog", "cat"], "single", cache_dir=tmp_path)
    k = tc.cache_key
    assert k("a", ("x",), ("t",)) != k("b", ("x",), ("t",)) != k("a", ("x",), ("u",))


def test_unknown_template_set(clip, tmp_path):
    with pytest.raises(ValueError, match="template set"):
        tc.build_text_classifier(clip, ["cat"], "fancy", cache_dir=tmp_path)


@pytest.mark.parametrize("backbone", ["ovss-tiny-vit", "ViT-B-16"])
def test_truncated_text_encoding_equals_full_context(backbone):
    clip = load_clip(backbone)
    tokens = clip.tokenizer(
        ["a photo of a cat.", "a bad photo of the fire hydrant in the scene.", "x"]
    )
    with torch.no_grad():
        full = clip.model.encode_text(tokens)
        short = tc.encode_tokens(clip.model, tokens)
    assert clip.model.positional_embedding.shape[0] == 77 and clip.model.attn_mask.shape == (77, 77)
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)
