"""Re-exporting into a folder: the old graph's files go, the user's stay, and a failure before
the new manifest leaves the old folder as it was (and loadable)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from export import build
from export.builders import build_maskclip
from export.config import ExportCfg
from runtime.manifest import MANIFEST_FILE, Manifest, load_manifest
from runtime.segmenter import Segmenter

OLD_GRAPH = [
    "engines",
    "model.fp16.onnx",
    "model.int8.onnx",
    "precision_report.json",
    "text_embeddings.npy",
    "text_encoder.onnx",
    "vocab.txt.gz",
]


def _args(out: Path, *extra: str) -> list[str]:
    return [
        "--method",
        "maskclip",
        "--backbone",
        "ovss-tiny-vit",
        "--classes",
        "cat,dog",
        "--image-size",
        "224",
        "--templates",
        "single",
        "--output",
        str(out),
        *extra,
    ]


def _aged(folder: Path) -> Path:
    """``folder`` as an older export left it: variants, engines, a precision report, a text
    encoder and embeddings in files and manifest entries, plus a user's notes.txt."""
    for name in OLD_GRAPH[1:]:
        (folder / name).write_bytes(b"old " + name.encode())
    (folder / "engines").mkdir(exist_ok=True)  # the shared fixture may have one already
    (folder / "engines" / "fp32-abc.engine").write_bytes(b"plan")
    (folder / "notes.txt").write_text("mine")
    d = json.loads((folder / MANIFEST_FILE).read_text())
    d["variants"] = {
        p: {"file": f"model.{p}.onnx", "sha256": "0" * 64, "settings": {}, "accuracy": {}}
        for p in ("fp16", "int8")
    }
    d["text_embeddings_file"] = "text_embeddings.npy"
    d["text_encoder"] = {"file": "text_encoder.onnx", "vocab_file": "vocab.txt.gz"}
    (folder / MANIFEST_FILE).write_text(json.dumps(d))
    return folder


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")
    }


def test_reexport_removes_the_old_graph_and_keeps_user_files(tiny_vit_folder, tmp_path, capsys):
    out = _aged(Path(shutil.copytree(tiny_vit_folder, tmp_path / "m")))
    assert build.main(_args(out)) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["removed"] == OLD_GRAPH
    assert not [n for n in OLD_GRAPH if (out / n).exists()]
    assert (out / "notes.txt").read_text() == "mine"
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["manifest.json", "model.onnx", "notes.txt"]
    m = load_manifest(out)
    assert m.classes == ("cat", "dog") and not m.variants
    Segmenter(out).close()


def test_reexport_keeps_what_the_new_manifest_names(tiny_vit_input_folder, tmp_path, capsys):
    out = Path(shutil.copytree(tiny_vit_input_folder, tmp_path / "m"))
    (out / "model.fp16.onnx").write_bytes(b"old")
    assert build.main(_args(out, "--vocab-mode", "input")) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["removed"] == []  # model.fp16.onnx was never named by a manifest
    assert (out / "text_embeddings.npy").is_file() and (out / "model.fp16.onnx").is_file()


def test_first_export_removes_nothing(tmp_path, capsys):
    out = tmp_path / "fresh"
    out.mkdir()
    (out / "model.int8.onnx").write_bytes(b"not ours: no manifest names it")
    assert build.main(_args(out)) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["removed"] == [] and (out / "model.int8.onnx").is_file()


def test_failure_before_the_manifest_leaves_the_old_folder(tiny_vit_folder, tmp_path, monkeypatch):
    out = _aged(Path(shutil.copytree(tiny_vit_folder, tmp_path / "m")))
    before = _snapshot(out)

    def fail(self, folder):
        raise OSError("disk full")

    cfg = ExportCfg.create(
        method="maskclip",
        backbone="ovss-tiny-vit",
        output=str(out),
        classes="cat,dog",
        image_size=224,
        templates="single",
    )
    monkeypatch.setattr(Manifest, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        build_maskclip(cfg)
    monkeypatch.undo()
    assert _snapshot(out) == before  # old files back in place, no staging folders left
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    d = json.loads((out / MANIFEST_FILE).read_text())
    del d["variants"], d["text_encoder"], d["text_embeddings_file"]  # the fakes of _aged
    (out / MANIFEST_FILE).write_text(json.dumps(d))
    Segmenter(out).close()  # model.onnx still matches the old manifest's sha256
