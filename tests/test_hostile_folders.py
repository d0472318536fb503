"""Hostile deployable folders: confinement, hashes, manifest vs graph, numeric fields, limits.

Every case starts from a tiny folder the real exporter wrote, copies it to ``tmp_path`` and
breaks one thing; each asserts the error type and a distinctive part of its message.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime import io_names
from runtime.backends import TensorInfo
from runtime.engine_cache import (
    EngineKey,
    EngineRecord,
    engine_dir,
    engine_path,
    find_engine,
    read_record,
    write_record,
)
from runtime.errors import CalibrationError, ConfigError, ModelFolderError
from runtime.folder_files import check_name, check_sha256, folder_file
from runtime.fsutil import sha256_file
from runtime.graph_check import check_graph
from runtime.manifest import (
    MANIFEST_FILE,
    MAX_JSON_DEPTH,
    MAX_MANIFEST_BYTES,
    load_manifest,
    manifest_from_dict,
)
from runtime.segmenter import Segmenter
from runtime.tokenizer import MAX_CONTEXT_LENGTH, check_context_length

SHA = "ab" * 32


def _copy(src: Path, dst: Path) -> Path:
    """A plain-file copy of an exported folder (generation links dereferenced)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".gen", ".current", "engines"))
    for p in dst.iterdir():
        assert not p.is_symlink()
    return dst


def _read(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_FILE).read_text())


def _write(folder: Path, d: dict) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(d))


def _set(d: dict, dotted: str, value) -> None:
    """``d[a][b]... = value`` for ``dotted`` "a.b..." (list indices as integers); a value of
    ``...`` deletes the key."""
    *path, last = dotted.split(".")
    node = d
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[last]
    else:
        node[last] = value


def _edit(folder: Path, **fields) -> Path:
    d = _read(folder)
    for dotted, value in fields.items():
        _set(d, dotted.replace("__", "."), value)
    _write(folder, d)
    return folder


@pytest.fixture
def fixed(tiny_vit_folder, tmp_path) -> Path:
    return _copy(tiny_vit_folder, tmp_path / "fixed")


@pytest.fixture
def vocab(tiny_vit_input_folder, tmp_path) -> Path:
    return _copy(tiny_vit_input_folder, tmp_path / "input")


def _seg(folder: Path, **kw) -> Segmenter:
    return Segmenter(folder, "onnxruntime", threads=1, **kw)


def _with_variant(folder: Path, name: str = "model_fp16.onnx", sha: str | None = None) -> dict:
    """Add an fp16 "variant" (a copy of the FP32 graph) to the manifest; returns the dict."""
    shutil.copyfile(folder / "model.onnx", folder / "model_fp16.onnx")
    d = _read(folder)
    sha = sha256_file(folder / "model_fp16.onnx") if sha is None else sha
    d["variants"] = {"fp16": {"file": name, "sha256": sha, "settings": {}, "accuracy": {}}}
    _write(folder, d)
    return d


def _with_text_encoder(folder: Path, **entry) -> dict:
    """Add a text_encoder entry (files of any content: only names and hashes are checked)."""
    for name in ("text_encoder.onnx", "bpe.txt.gz"):
        (folder / name).write_bytes(b"stand-in")
    d = _read(folder)
    width = next(t for t in d["inputs"] if t["name"] == io_names.TEXT_EMBEDDINGS)["shape"][1]
    d["text_encoder"] = {
        "file": "text_encoder.onnx",
        "sha256": sha256_file(folder / "text_encoder.onnx"),
        "vocab_file": "bpe.txt.gz",
        "vocab_sha256": sha256_file(folder / "bpe.txt.gz"),
        "context_length": 77,
        "embed_dim": width,
        "templates": ["a photo of a {}."],
        **entry,
    }
    _write(folder, d)
    return d


# ------------------------------------------------------------------ 1. names at parse time
BAD_NAMES = [
    ("/etc/passwd", "absolute"),
    ("C:\\model.onnx", "absolute"),
    ("\\\\host\\share\\model.onnx", "absolute"),
    ("../model.onnx", "leaves the folder"),
    ("sub/../../model.onnx", "leaves the folder"),
    ("sub\\..\\..\\model.onnx", "leaves the folder"),
    ("", "non-empty"),
    ("a\x00b", "NUL"),
]


@pytest.mark.parametrize("name, match", BAD_NAMES)
def test_bad_model_file_names(fixed, name, match):
    _edit(fixed, model_file=name)
    with pytest.raises(ModelFolderError, match=match) as e:
        load_manifest(fixed)
    assert "model_file" in str(e.value)


@pytest.mark.parametrize("name, match", BAD_NAMES[:5])
def test_bad_variant_and_embedding_names(fixed, vocab, name, match):
    _with_variant(fixed, name)
    with pytest.raises(ModelFolderError, match=match) as e:
        load_manifest(fixed)
    assert "variants.fp16.file" in str(e.value)
    _edit(vocab, text_embeddings_file=name)
    with pytest.raises(ModelFolderError, match=match) as e:
        load_manifest(vocab)
    assert "text_embeddings_file" in str(e.value)


@pytest.mark.parametrize("key", ["file", "vocab_file"])
@pytest.mark.parametrize("name, match", BAD_NAMES[:5])
def test_bad_text_encoder_names(vocab, key, name, match):
    _with_text_encoder(vocab, **{key: name})
    with pytest.raises(ModelFolderError, match=match) as e:
        load_manifest(vocab)
    assert f"text_encoder.{key}" in str(e.value)


def test_name_type_is_checked():
    with pytest.raises(ModelFolderError, match="non-empty file name"):
        check_name(5, "model_file")
    assert check_name("sub/model.onnx", "model_file") == "sub/model.onnx"


# ------------------------------------------------------------------ 1. symlinks
def test_generation_layout_links_inside_are_accepted(tiny_vit_folder, tmp_path):
    folder = tmp_path / "gen"
    shutil.copytree(tiny_vit_folder, folder, symlinks=True)
    if not (folder / MANIFEST_FILE).is_symlink():
        pytest.skip("the exporter wrote plain files (no generation layout here)")
    assert (folder / "model.onnx").is_symlink() and (folder / ".current").is_symlink()
    with _seg(folder) as seg:
        assert seg(np.zeros((32, 32, 3), np.uint8)).labels.shape == (32, 32)


def test_symlink_inside_the_folder_is_accepted(fixed):
    (fixed / "real").mkdir()
    (fixed / "model.onnx").rename(fixed / "real" / "model.onnx")
    (fixed / "model.onnx").symlink_to("real/model.onnx")
    with _seg(fixed) as seg:
        assert seg.backend.input_names == (io_names.IMAGE,)


def test_model_symlink_leading_out_is_refused(fixed, tmp_path):
    outside = tmp_path / "outside.onnx"
    (fixed / "model.onnx").rename(outside)  # same bytes, same sha256: only the place is wrong
    (fixed / "model.onnx").symlink_to(outside)
    with pytest.raises(ModelFolderError, match="outside the folder"):
        _seg(fixed)


def test_relative_symlink_leading_out_is_refused(fixed, tmp_path):
    (fixed / "model.onnx").rename(tmp_path / "elsewhere.onnx")
    (fixed / "model.onnx").symlink_to("../elsewhere.onnx")
    with pytest.raises(ModelFolderError, match="outside the folder"):
        _seg(fixed)


def test_manifest_symlink_leading_out_is_refused(fixed, tmp_path):
    outside = tmp_path / "manifest.json"
    (fixed / MANIFEST_FILE).rename(outside)
    (fixed / MANIFEST_FILE).symlink_to(outside)
    with pytest.raises(ModelFolderError, match="outside the folder"):
        load_manifest(fixed)


def test_embeddings_symlink_leading_out_is_refused(vocab, tmp_path):
    outside = tmp_path / "emb.npy"
    (vocab / "text_embeddings.npy").rename(outside)
    (vocab / "text_embeddings.npy").symlink_to(outside)
    with pytest.raises(ModelFolderError, match="outside the folder") as e:
        _seg(vocab)
    assert "text_embeddings_file" in str(e.value)


def test_variant_symlink_leading_out_is_refused(fixed, tmp_path):
    _with_variant(fixed)
    (fixed / "model_fp16.onnx").rename(tmp_path / "v.onnx")
    (fixed / "model_fp16.onnx").symlink_to(tmp_path / "v.onnx")
    with pytest.raises(ModelFolderError, match="outside the folder") as e:
        _seg(fixed, precision="fp16")
    assert "variants.fp16.file" in str(e.value)


def test_text_encoder_symlink_leading_out_is_refused(vocab, tmp_path):
    from runtime.text_encoder import TextEncoder

    _with_text_encoder(vocab)
    (vocab / "bpe.txt.gz").rename(tmp_path / "bpe.txt.gz")
    (vocab / "bpe.txt.gz").symlink_to(tmp_path / "bpe.txt.gz")
    info = load_manifest(vocab).text_encoder
    with pytest.raises(ModelFolderError, match="outside the folder") as e:
        TextEncoder(vocab, info)
    assert "text_encoder.vocab_file" in str(e.value)


def test_named_file_that_is_a_folder_is_refused(fixed):
    (fixed / "model.onnx").unlink()
    (fixed / "model.onnx").mkdir()
    with pytest.raises(ModelFolderError, match="not a regular file"):
        _seg(fixed)


def test_missing_model_file(fixed):
    (fixed / "model.onnx").unlink()
    with pytest.raises(ModelFolderError, match="missing"):
        _seg(fixed)


# ------------------------------------------------------------------ 1. hashes
@pytest.mark.parametrize(
    "value, match",
    [("", "is empty"), (..., "missing 'model_sha256'"), ("xyz", "not a sha256"), (5, "type")],
)
def test_model_sha256_must_be_present(fixed, value, match):
    _edit(fixed, model_sha256=value)
    with pytest.raises(ModelFolderError, match=match):
        load_manifest(fixed)
    with pytest.raises(ModelFolderError, match=match):
        _seg(fixed, verify=False)  # verify=False skips the comparison, never the hash itself


def test_wrong_model_sha256(fixed):
    _edit(fixed, model_sha256=SHA)
    with pytest.raises(ModelFolderError, match="does not match the manifest's sha256"):
        _seg(fixed)
    with _seg(fixed, verify=False) as seg:  # an explicit choice: the comparison only
        assert seg.manifest.model_sha256 == SHA


def test_upper_case_sha256_is_accepted(fixed):
    d = _read(fixed)
    _edit(fixed, model_sha256=d["model_sha256"].upper())
    _seg(fixed).close()


@pytest.mark.parametrize("value, match", [(..., "missing or empty"), ("", "missing or empty")])
def test_text_embeddings_need_a_sha256(vocab, value, match):
    _edit(vocab, text_embeddings_sha256=value)
    with pytest.raises(ModelFolderError, match=match) as e:
        load_manifest(vocab)
    assert "text_embeddings_sha256" in str(e.value)


def test_wrong_text_embeddings_sha256(vocab):
    _edit(vocab, text_embeddings_sha256=SHA)
    with pytest.raises(ModelFolderError, match="text_embeddings_sha256"):
        _seg(vocab)


def test_exporter_writes_text_embeddings_sha256(tiny_vit_input_folder):
    m = load_manifest(tiny_vit_input_folder)
    assert m.text_embeddings_sha256 == sha256_file(tiny_vit_input_folder / "text_embeddings.npy")


def test_variant_needs_a_sha256(fixed):
    _with_variant(fixed, sha="")
    with pytest.raises(ModelFolderError, match="variants.fp16.sha256' is empty"):
        load_manifest(fixed)


def test_wrong_variant_sha256(fixed):
    _with_variant(fixed, sha=SHA)
    with pytest.raises(ModelFolderError, match="does not match"):
        _seg(fixed, precision="fp16")
    _seg(fixed).close()  # the FP32 graph is unaffected


@pytest.mark.parametrize("key", ["sha256", "vocab_sha256"])
def test_text_encoder_files_need_a_sha256(vocab, key):
    _with_text_encoder(vocab, **{key: ""})
    with pytest.raises(ModelFolderError, match=f"text_encoder.{key}' is empty"):
        load_manifest(vocab)


def test_metadata_copy_may_leave_hashes_empty(tiny_vit_input_folder):
    d = _read(tiny_vit_input_folder)
    d.update(model_sha256="", text_embeddings_sha256="")
    m = manifest_from_dict(d)  # the graph's copy, written before the files' hashes exist
    assert m.model_sha256 == ""
    with pytest.raises(ModelFolderError, match="model_sha256' is empty"):
        manifest_from_dict(d, require_hashes=True)


def test_folder_file_refuses_empty_hash_even_unverified(fixed):
    with pytest.raises(ModelFolderError, match="is empty"):
        folder_file(fixed, "model.onnx", "", what="model", field="f", sha_field="s", verify=False)
    with pytest.raises(ModelFolderError, match="64 hex"):
        check_sha256("g" * 64, "s")


# ------------------------------------------------------------------ 2. manifest vs graph
def _resize_manifest(d: dict, size: int, stride: int, classes: int | None = None) -> None:
    """Make the manifest consistent with itself at another size / stride / class count."""
    d["preprocess"]["input_size"] = [size, size]
    d["preprocess"]["feature_stride"] = stride
    for t in d["inputs"]:
        if t["name"] == io_names.IMAGE:
            t["shape"] = [1, 3, size, size]
    if classes is not None:
        d["classes"] = [f"c{i}" for i in range(classes)]
    for t in d["outputs"]:
        if t["name"] == io_names.LOGITS:
            t["shape"] = [1, len(d["classes"]), size // stride, size // stride]
    d["build_commands"] = {}


@pytest.mark.parametrize(
    "size, stride, classes, match",
    [
        (448, 16, None, r"'image' .*axis 2: 224 vs 448"),
        (224, 16, 5, r"'logits' .*axis 1: 4 vs 5"),
        (224, 32, None, r"'logits' .*axis 2: 14 vs 7"),
        (224, 8, None, r"'logits' .*axis 2: 14 vs 28"),
    ],
)
def test_manifest_that_disagrees_with_the_graph(fixed, size, stride, classes, match):
    d = _read(fixed)
    _resize_manifest(d, size, stride, classes)
    _write(fixed, d)
    load_manifest(fixed)  # consistent by itself: only the graph check can tell
    with pytest.raises(ModelFolderError, match=match):
        _seg(fixed)


def test_output_dtype_disagrees_with_the_graph(fixed):
    d = _read(fixed)
    next(t for t in d["outputs"] if t["name"] == io_names.LOGITS)["dtype"] = "float16"
    _write(fixed, d)
    with pytest.raises(ModelFolderError, match="is float32, but the manifest says float16"):
        _seg(fixed)


def test_graph_swapped_in_with_its_hash(fixed, tiny_rn_folder):
    """Another model's graph (stride 32) in place of the folder's, its hash updated too."""
    shutil.copyfile(tiny_rn_folder / "model.onnx", fixed / "model.onnx")
    _edit(fixed, model_sha256=sha256_file(fixed / "model.onnx"))
    with pytest.raises(ModelFolderError, match="'logits'"):
        _seg(fixed)


def test_input_vocabulary_width_disagrees_with_the_graph(vocab):
    d = _read(vocab)
    spec = next(t for t in d["inputs"] if t["name"] == io_names.TEXT_EMBEDDINGS)
    spec["shape"][1] += 1
    _write(vocab, d)
    with pytest.raises(ModelFolderError, match=r"'text_embeddings' .*axis 1"):
        _seg(vocab)


def _specs(shape_image=(1, 3, 224, 224), logits=(1, 4, 14, 14), dtype="float32"):
    return (
        (TensorInfo(io_names.IMAGE, dtype, shape_image),),
        (TensorInfo(io_names.LOGITS, "float32", logits),),
    )


def test_check_graph_symbolic_and_dynamic_axes_match_anything(tiny_vit_folder):
    m = load_manifest(tiny_vit_folder)
    check_graph(m, *_specs(logits=(-1, 4, "h", -1)))  # TensorRT's -1, onnxruntime's names
    with pytest.raises(ModelFolderError, match="rank 3 vs 4"):
        check_graph(m, *_specs(logits=(4, 14, 14)))
    with pytest.raises(ModelFolderError, match="is uint8, but the manifest says float32"):
        check_graph(m, *_specs(dtype="uint8"))
    with pytest.raises(ModelFolderError, match="do not match the manifest"):
        check_graph(m, (TensorInfo("other", "float32", (1, 3, 224, 224)),), _specs()[1])


# ------------------------------------------------------------------ 3. numeric fields
NUMERIC = [
    ("preprocess__input_size", [224.5, 224], "input_size"),
    ("preprocess__input_size", [224.0, 224.0], "input_size"),
    ("preprocess__input_size", [True, 224], "input_size"),
    ("preprocess__input_size", [0, 224], "input_size"),
    ("preprocess__input_size", [224], "input_size"),
    ("preprocess__input_size", [10**9, 10**9], "input_size"),
    ("preprocess__mean", [math.nan, 116.0, 104.0], "mean must be 3 finite"),
    ("preprocess__mean", ["1", 116.0, 104.0], "mean must be 3 finite"),
    ("preprocess__std", [math.inf, 1.0, 1.0], "std must be 3 finite"),
    ("preprocess__std", [0.0, 1.0, 1.0], "std must be > 0"),
    ("preprocess__std", [True, 1.0, 1.0], "std must be 3 finite"),
    ("preprocess__feature_stride", 0, "feature_stride 0"),
    ("preprocess__feature_stride", -16, "feature_stride -16"),
    ("preprocess__feature_stride", 15, "divide the input"),
    ("preprocess__feature_stride", 16.0, "feature_stride' has type float"),
    ("preprocess__feature_stride", True, "feature_stride' has type bool"),
    ("opset", 17.5, "opset' has type float"),
    ("opset", True, "opset' has type bool"),
    ("opset", 0, "outside"),
    ("format_version", True, "format_version' has type bool"),
    ("score_scale", math.nan, "score_scale"),
    ("seen_bias", math.inf, "seen_bias"),
    ("weights__random", 1, "weights.random' has type int"),
    ("outputs__0__shape", [1, 5, 14, 14], "5 classes"),
    ("outputs__0__shape", [1, 4, 13, 14], "height 13"),
    ("outputs__0__shape", [1, 4, 14], r"\[1, C, h, w\]"),
    ("outputs__0__shape", [1, 4, 14, 0], "axis 0"),
    ("outputs__0__shape", [1, 4, 14, 1.5], "axis 1.5"),
    ("outputs__0__shape", [1, 4, 14, True], "axis True"),
    ("method_cfg", [], "method_cfg' must be an object"),
    ("method_cfg__slide_stride", 0, "slide_stride"),
    ("method_cfg__slide_stride", "x", "slide_stride"),
    ("method_cfg__short_side", 1.5, "short_side"),
    ("method_cfg__prob_thd", math.nan, "prob_thd"),
    ("parity", "x", "parity"),
]


@pytest.mark.parametrize("field, value, match", NUMERIC, ids=lambda v: repr(v)[:30])
def test_numeric_fields_are_type_checked(fixed, field, value, match):
    _edit(fixed, **{field: value})
    with pytest.raises(ModelFolderError, match=match):
        load_manifest(fixed)


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"context_length": 4096}, "context_length' is 4096, outside"),
        ({"context_length": 1}, "context_length' is 1, outside"),
        ({"context_length": 77.0}, "context_length' has type float"),
        ({"context_length": True}, "context_length' has type bool"),
        ({"embed_dim": 0}, "embed_dim' is 0"),
        ({"templates": []}, "templates"),
    ],
)
def test_text_encoder_numbers(vocab, entry, match):
    _with_text_encoder(vocab, **entry)
    with pytest.raises(ModelFolderError, match=match):
        load_manifest(vocab)


def test_fixed_manifest_with_text_input_and_input_without_file(fixed, vocab):
    d = _read(vocab)
    d["vocab_mode"] = "fixed"
    d["outputs"][0]["shape"][1] = len(d["classes"])
    _write(vocab, d)
    with pytest.raises(ModelFolderError, match="declares a 'text_embeddings' input"):
        load_manifest(vocab)
    d["vocab_mode"] = "input"
    del d["text_embeddings_file"]
    _write(vocab, d)
    with pytest.raises(ModelFolderError, match="needs 'text_embeddings_file'"):
        load_manifest(vocab)


# ------------------------------------------------------------------ 3. JSON limits
def test_deep_json_is_refused(fixed):
    d = _read(fixed)
    nested: list = []
    for _ in range(MAX_JSON_DEPTH + 5):
        nested = [nested]
    d["method_cfg"]["deep"] = nested
    _write(fixed, d)
    with pytest.raises(ModelFolderError, match=f"nested deeper than {MAX_JSON_DEPTH}"):
        load_manifest(fixed)


def test_very_deep_json_is_refused_without_a_traceback(fixed):
    (fixed / MANIFEST_FILE).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ModelFolderError, match="nested deeper"):
        load_manifest(fixed)


def test_huge_manifest_is_refused_before_parsing(fixed):
    text = (fixed / MANIFEST_FILE).read_text()
    with open(fixed / MANIFEST_FILE, "w") as f:
        f.write(text)
        f.write(" " * (MAX_MANIFEST_BYTES + 1 - len(text)))
    with pytest.raises(ModelFolderError, match="over the manifest limit"):
        load_manifest(fixed)


@pytest.mark.parametrize(
    "data, match",
    [(b"\xff\xfe{}", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"{", "not valid JSON")],
)
def test_unreadable_manifest(fixed, data, match):
    (fixed / MANIFEST_FILE).write_bytes(data)
    with pytest.raises(ModelFolderError, match=match):
        load_manifest(fixed)


# ------------------------------------------------------------------ 3. text_embeddings.npy
def _replace_embeddings(folder: Path, write) -> None:
    path = folder / "text_embeddings.npy"
    write(path)
    _edit(folder, text_embeddings_sha256=sha256_file(path))


def _npy(array, **kw):
    def write(path):
        with open(path, "wb") as f:
            np.save(f, array, **kw)

    return write


def _truncated(c, d):
    def write(path):
        _npy(np.ones((c, d), np.float32))(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 8])

    return write


def _garbage(c, d):
    return lambda path: path.write_bytes(b"not an npy file")


# (C classes, D width) -> a writer of text_embeddings.npy
BAD_EMBEDDINGS = {
    "object": (
        lambda c, d: _npy(np.array([{"a": 1}] * c, dtype=object), allow_pickle=True),
        "not floats",
    ),
    "int": (lambda c, d: _npy(np.ones((c, d), np.int64)), "not floats"),
    "rows": (lambda c, d: _npy(np.ones((c - 1, d), np.float32)), "have shape"),
    "width": (lambda c, d: _npy(np.ones((c, d + 1), np.float32)), "have shape"),
    "rank": (lambda c, d: _npy(np.ones((c, d, 1), np.float32)), "have shape"),
    "nan": (lambda c, d: _npy(np.full((c, d), np.nan, np.float32)), "NaN or infinite"),
    "zero": (lambda c, d: _npy(np.zeros((c, d), np.float32)), "unusable"),
    "garbage": (_garbage, "cannot read"),
    "truncated": (_truncated, "cannot read"),
}


@pytest.mark.parametrize("case", sorted(BAD_EMBEDDINGS))
def test_bad_text_embeddings(vocab, case):
    make, match = BAD_EMBEDDINGS[case]
    d = _read(vocab)
    width = next(t for t in d["inputs"] if t["name"] == io_names.TEXT_EMBEDDINGS)["shape"][1]
    _replace_embeddings(vocab, make(len(d["classes"]), width))
    with pytest.raises(ModelFolderError, match=match):
        _seg(vocab)


# ------------------------------------------------------------------ 4. context length bound
@pytest.mark.parametrize("value", [0, 1, MAX_CONTEXT_LENGTH + 1, 77.0, True, "77"])
def test_context_length_bounds(value):
    with pytest.raises(ConfigError, match="context_length"):
        check_context_length(value)
    assert check_context_length(77) == 77


def test_tokenizer_refuses_a_huge_context_length(tmp_path):
    from runtime import tokenizer

    if not tokenizer.TEXT_AVAILABLE:
        pytest.skip("the text extra is not installed")
    with pytest.raises(ConfigError, match="context_length"):
        tokenizer.ClipTokenizer(tmp_path / "missing.gz", 10**7)


# ------------------------------------------------------------------ 1. engine records
def _key(**kw) -> EngineKey:
    base = dict(
        gpu_name="Orin",
        compute_capability="8.7",
        tensorrt_version="10.3.0",
        precision="fp16",
        input_shapes={"image": [1, 3, 224, 224]},
        onnx_sha256=SHA,
    )
    return EngineKey(**{**base, **kw})


def _record_file(folder: Path, **fields) -> Path:
    rec = EngineRecord(_key(), "fp16-x.engine", SHA)
    path = write_record(folder, rec)
    d = json.loads(path.read_text())
    for k, v in fields.items():
        _set(d, k.replace("__", "."), v)
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"engine_file": "../model.onnx"}, "leaves the folder"),
        ({"engine_file": "/etc/passwd"}, "absolute"),
        ({"engine_file": "sub/x.engine"}, "must be a file name"),
        ({"engine_file": ""}, "non-empty"),
        ({"engine_sha256": ""}, "is empty"),
        ({"engine_sha256": "x"}, "not a sha256"),
        ({"key__dla_core": True}, "dla_core"),
        ({"key__tensorrt_version": 10}, "tensorrt_version"),
        ({"key__evil": 1}, "unknown key field"),
        ({"key": []}, "must be an object"),
    ],
)
def test_hostile_engine_records(tmp_path, fields, match):
    path = _record_file(tmp_path, **fields)
    with pytest.raises(ModelFolderError, match=match):
        read_record(path)
    assert find_engine(tmp_path, _key()) is None  # skipped (logged), never used


def test_huge_engine_record(tmp_path):
    path = _record_file(tmp_path)
    path.write_text(" " * (2 << 20))
    with pytest.raises(ModelFolderError, match="over"):
        read_record(path)


def test_engine_file_symlink_leading_out(tmp_path):
    folder = tmp_path / "f"
    rec = EngineRecord(_key(), "fp16-x.engine", SHA)
    write_record(folder, rec)
    (tmp_path / "elsewhere.engine").write_bytes(b"x")
    (engine_dir(folder) / "fp16-x.engine").symlink_to(tmp_path / "elsewhere.engine")
    with pytest.raises(ModelFolderError, match="outside"):
        engine_path(folder, rec)
    assert find_engine(folder, _key()) is None
    (engine_dir(folder) / "fp16-x.engine").unlink()
    (engine_dir(folder) / "fp16-x.engine").write_bytes(b"x")
    assert engine_path(folder, rec) == (engine_dir(folder) / "fp16-x.engine").resolve()
    assert find_engine(folder, _key()) == rec


def test_engine_record_symlink_leading_out(tmp_path):
    folder, other = tmp_path / "f", tmp_path / "other"
    path = write_record(other, EngineRecord(_key(), "fp16-x.engine", SHA))
    engine_dir(folder).mkdir(parents=True)
    (engine_dir(folder) / path.name).symlink_to(path)
    assert find_engine(folder, _key()) is None


def test_engines_folder_symlink_leading_out(tmp_path):
    folder, other = tmp_path / "f", tmp_path / "other"
    write_record(other, EngineRecord(_key(), "fp16-x.engine", SHA))
    folder.mkdir()
    (folder / "engines").symlink_to(engine_dir(other))
    assert find_engine(folder, _key()) is None


# ------------------------------------------------------------------ other readers of folders
def test_calibrate_graph_and_text_are_confined(vocab, tmp_path):
    from calibration.calibrate import fp32_graph, text_feeds

    m = load_manifest(vocab)
    assert fp32_graph(vocab, m).is_file()
    assert text_feeds(vocab, m)[io_names.TEXT_EMBEDDINGS].shape[0] == len(m.classes)
    (vocab / "model.onnx").rename(tmp_path / "out.onnx")
    (vocab / "model.onnx").symlink_to(tmp_path / "out.onnx")
    with pytest.raises(CalibrationError, match="outside the folder"):
        fp32_graph(vocab, m)
    _replace_embeddings(vocab, _npy(np.ones((2, 3), np.float32)))
    with pytest.raises(ModelFolderError, match="have shape"):
        text_feeds(vocab, load_manifest(vocab))


def test_triton_source_graph_is_confined(fixed, tmp_path):
    from export.triton import _onnx_source

    (fixed / "model.onnx").rename(tmp_path / "out.onnx")
    (fixed / "model.onnx").symlink_to(tmp_path / "out.onnx")
    with pytest.raises(ModelFolderError, match="outside the folder"):
        _onnx_source(fixed, load_manifest(fixed), "fp32")


def test_hostile_folder_cli_is_one_line_exit_2(fixed, capsys):
    from PIL import Image

    from runtime.infer import main

    _edit(fixed, model_file="../../etc/passwd")
    image = fixed / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    argv = ["--model", str(fixed), "--image", str(image), "--out", str(fixed / "o.png")]
    assert main([*argv, "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leaves the folder" in err[0] and "Traceback" not in err[0]


def test_unprivileged_reads(fixed):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop reads")
    (fixed / "model.onnx").chmod(0)
    with pytest.raises(ModelFolderError):
        _seg(fixed)


def test_readers_are_pinned_to_one_generation(tiny_vit_folder, tmp_path):
    """The manifest and its files come from the generation manifest.json resolves into once:
    a commit switching ``.current`` afterwards cannot pair this manifest with the next graph."""
    from export.folder_write import current_generation
    from runtime.folder_files import pinned_folder

    folder = Path(shutil.copytree(tiny_vit_folder, tmp_path / "m", symlinks=True))
    gen = current_generation(folder)
    assert gen is not None and pinned_folder(folder) == gen.resolve()
    seg = _seg(folder)
    assert seg._files == gen.resolve()
    seg.close()
    # a plain folder reads from itself; a manifest link leading out is not followed
    plain = _copy(folder, tmp_path / "plain")
    assert pinned_folder(plain) == plain
    outside = tmp_path / "outside"
    outside.mkdir()
    (plain / "manifest.json").rename(outside / "manifest.json")
    (plain / "manifest.json").symlink_to(outside / "manifest.json")
    assert pinned_folder(plain) == plain
    with pytest.raises(ModelFolderError, match="outside"):
        _seg(plain)
