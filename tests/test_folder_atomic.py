"""A deployable folder is written as one transaction (export.folder_write): a kill at any instant
of an export or a calibration leaves the old folder or the new one, loadable, and the next run
cleans up what the killed one left.

The fault-injection tests run the real programs in a child process that SIGKILLs itself right
after its k-th file-system change (rename, link, unlink, removal) inside the folder's commit, for
every k, then load the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export import build
from export.folder_write import (
    CURRENT,
    GEN_DIR,
    FolderWrite,
    current_generation,
    recover,
    uses_generations,
)
from runtime.errors import ModelFolderError
from runtime.fsutil import sha256_file
from runtime.manifest import MANIFEST_FILE, load_manifest
from runtime.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]
OLD, NEW = "cat,dog", "cat,dog,bird"

# The child: patch the file-system calls that change a folder so that, once the commit has
# begun, the k-th one is followed by SIGKILL (k = 0: count them and print the count).
# ``program``: run export.build / calibration.calibrate's main on the arguments; ``commit``:
# stage the files of an already written folder and commit them (what both programs end with,
# without torch: fast enough to kill at every step).
CHILD = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    kill_at, kind, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    from export import folder_write
    state = {"on": False, "n": 0}

    def counted(fn):
        def wrapper(*a, **k):
            out = fn(*a, **k)
            if state["on"]:
                state["n"] += 1
                if state["n"] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return out
        return wrapper

    for mod, name in ((os, "replace"), (os, "rename"), (os, "symlink"), (os, "unlink"),
                      (os, "link"), (os, "rmdir"), (shutil, "rmtree")):
        setattr(mod, name, counted(getattr(mod, name)))
    commit = folder_write.FolderWrite.commit

    def traced_commit(self, *a, **k):
        state["on"] = True
        return commit(self, *a, **k)

    folder_write.FolderWrite.commit = traced_commit
    if kind == "export":
        from export.build import main
        status = main(argv)
    elif kind == "calibrate":
        from calibration.calibrate import main
        status = main(argv)
    else:  # commit WORK NEW export|calibrate: switch WORK to the files of the folder NEW
        from pathlib import Path
        from runtime.manifest import MANIFEST_FILE, load_manifest
        work, new, how = Path(argv[0]), Path(argv[1]), argv[2]
        manifest = load_manifest(new)
        with folder_write.FolderWrite(work) as fw:
            if how == "calibrate":
                old = json.loads((work / MANIFEST_FILE).read_text())
                fw.carry(sorted(folder_write.named_files(old)))
            for p in sorted(new.iterdir()):
                if p.is_file() and p.name[0] != "." and p.name != MANIFEST_FILE:
                    if not (fw.path(p.name)).exists():
                        shutil.copyfile(p, fw.path(p.name))
            fw.commit(manifest, engines_stale=how == "export")
        status = 0
    print(json.dumps({"steps": state["n"], "status": status}))
    """
)


def _export_args(out: Path, classes: str) -> list[str]:
    return [
        "--method",
        "maskclip",
        "--backbone",
        "ovss-tiny-vit",
        "--classes",
        classes,
        "--image-size",
        "224",
        "--templates",
        "single",
        "--output",
        str(out),
    ]


def _child(tmp_path: Path, kill_at: int, kind: str, argv: list[str]) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script), str(kill_at), kind, *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def _view(folder: Path) -> dict[str, str]:
    """What a user sees: each top-level name (not dot-names) and the sha256 of its bytes."""
    return {
        p.name: sha256_file(p) if p.is_file() else "dir"
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".")
    }


def _loads(folder: Path, precision: str = "fp32") -> tuple[str, ...]:
    """The folder loads (every file checked against the manifest); its classes."""
    with Segmenter(folder, precision=precision) as seg:
        out = seg(np.zeros((40, 56, 3), np.uint8))
        assert out.labels.shape == (40, 56)
        return seg.classes


def _tidy(folder: Path) -> None:
    """After a successful run: one generation, no temp or dangling names."""
    assert uses_generations(folder)
    gen = current_generation(folder)
    assert gen is not None and sorted(p.name for p in (folder / GEN_DIR).iterdir()) == [gen.name]
    dots = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    assert dots == [CURRENT, GEN_DIR]
    for p in folder.iterdir():
        assert p.exists(), f"{p.name} dangles"


@pytest.fixture()
def exported(tmp_path) -> Path:
    out = tmp_path / "m"
    assert build.main(_export_args(out, OLD)) == 0
    return out


def _plain_copy(folder: Path, dst: Path) -> Path:
    """``folder`` as a plain folder (real files at the top level, as older exports wrote)."""
    dst.mkdir()
    for p in folder.iterdir():
        if not p.name.startswith(".") and p.is_file():
            shutil.copyfile(p, dst / p.name)
    return dst


def _frames(folder: Path, n: int = 6) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"f{i}.png")
    return folder


def _calibrate_args(folder: Path, frames: Path) -> list[str]:
    return [
        "--model",
        str(folder),
        "--precision",
        "fp16",
        "--images",
        str(frames),
        "--eval-num",
        "2",
    ]


def _steps(run: subprocess.CompletedProcess) -> int:
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])["steps"]


def _outcome(folder: Path, how: str) -> str:
    """ "old" or "new": which folder a killed run left (it must load either way)."""
    if how == "export":
        classes = _loads(folder)
        assert classes in (tuple(OLD.split(",")), tuple(NEW.split(","))), classes
        return "new" if classes == tuple(NEW.split(",")) else "old"
    variants = tuple(load_manifest(folder).variants)
    assert variants in ((), ("fp16",)), variants
    _loads(folder)
    if variants:
        _loads(folder, "fp16")
    return "new" if variants else "old"


@pytest.mark.parametrize("case", ["export", "export-over-plain", "calibrate"])
def test_commit_killed_after_every_step_leaves_a_loadable_folder(exported, tmp_path, case):
    """Both programs end with FolderWrite.commit: kill it after each of its file-system steps."""
    how = case.split("-")[0]
    old = exported if case != "export-over-plain" else _plain_copy(exported, tmp_path / "plain")
    new = tmp_path / "new"
    if how == "export":
        assert build.main(_export_args(new, NEW)) == 0
    else:
        from calibration.calibrate import main as calibrate_main

        shutil.copytree(exported, new, symlinks=True)
        assert calibrate_main(_calibrate_args(new, _frames(tmp_path / "frames"))) == 0
    work = tmp_path / "work"
    shutil.copytree(old, work, symlinks=True)
    steps = _steps(_child(tmp_path, 0, "commit", [str(work), str(new), how]))
    assert steps >= 3
    seen = []
    for k in range(1, steps + 1):
        shutil.rmtree(work)
        shutil.copytree(old, work, symlinks=True)
        run = _child(tmp_path, k, "commit", [str(work), str(new), how])
        assert run.returncode == -9, (k, run.returncode, run.stderr[-3000:])
        seen.append(_outcome(work, how))
        # the next run cleans up what this one left, and commits
        assert _steps(_child(tmp_path, 0, "commit", [str(work), str(new), how])) > 0
        assert _outcome(work, how) == "new"
        _tidy(work)
    # old until the switch, new from it on: never a mix, never unloadable
    assert seen == sorted(seen, key=["old", "new"].index) and set(seen) == {"old", "new"}, seen


@pytest.mark.parametrize("how", ["export", "calibrate"])
def test_the_programs_killed_in_their_commit_leave_a_loadable_folder(exported, tmp_path, how):
    """The real programs, SIGKILLed at the first, middle and last step of their commit."""
    if how == "export":
        argv = _export_args(exported, NEW)
    else:
        argv = _calibrate_args(exported, _frames(tmp_path / "frames"))
    template = tmp_path / "template"
    shutil.copytree(exported, template, symlinks=True)
    steps = _steps(_child(tmp_path, 0, how, argv))
    for k in sorted({1, steps // 2, steps}):
        shutil.rmtree(exported)
        shutil.copytree(template, exported, symlinks=True)
        run = _child(tmp_path, k, how, argv)
        assert run.returncode == -9, (k, run.returncode, run.stderr[-3000:])
        _outcome(exported, how)
    if how == "export":
        assert build.main(argv) == 0
    else:
        from calibration.calibrate import main as calibrate_main

        assert calibrate_main(argv) == 0
    assert _outcome(exported, how) == "new"
    _tidy(exported)


def test_a_reexport_keeps_the_names_and_drops_the_old_generation(exported):
    first = current_generation(exported)
    assert build.main(_export_args(exported, NEW)) == 0
    assert current_generation(exported) != first and not first.exists()
    assert sorted(_view(exported)) == [MANIFEST_FILE, "model.onnx"]
    assert os.readlink(exported / "model.onnx") == f"{CURRENT}/model.onnx"
    _tidy(exported)


def test_a_plain_folder_is_converted_and_user_files_kept(exported, tmp_path):
    plain = _plain_copy(exported, tmp_path / "plain")
    (plain / "notes.txt").write_text("mine")
    assert not uses_generations(plain) and _loads(plain) == tuple(OLD.split(","))
    assert build.main(_export_args(plain, NEW)) == 0
    assert _loads(plain) == tuple(NEW.split(","))
    assert (plain / "notes.txt").read_text() == "mine" and not (plain / "notes.txt").is_symlink()
    _tidy(plain)


def test_a_copied_folder_with_followed_links_exports_again(exported, tmp_path):
    """``shutil.copytree`` / ``cp -rL`` follow the links: real files plus copies of .current
    and .gen. It loads as a plain folder, and the next export removes the copies."""
    copy = Path(shutil.copytree(exported, tmp_path / "copy"))
    assert not (copy / CURRENT).is_symlink() and (copy / CURRENT).is_dir()
    assert _loads(copy) == tuple(OLD.split(","))
    assert build.main(_export_args(copy, NEW)) == 0
    assert _loads(copy) == tuple(NEW.split(","))
    _tidy(copy)


def test_failure_before_the_switch_leaves_the_old_folder(exported, monkeypatch):
    before = _view(exported)
    gen = current_generation(exported)

    def fail(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("export.folder_write._point", fail)
    with pytest.raises(OSError, match="simulated"):
        from export.builders import build_maskclip
        from export.config import ExportCfg

        build_maskclip(
            ExportCfg.create(
                method="maskclip",
                backbone="ovss-tiny-vit",
                output=str(exported),
                classes=NEW,
                image_size=224,
                templates="single",
            )
        )
    monkeypatch.undo()
    assert _view(exported) == before and current_generation(exported) == gen
    _tidy(exported)
    assert _loads(exported) == tuple(OLD.split(","))


def test_leftovers_of_a_killed_run_are_removed_or_restored(exported):
    """Stray generations, temp files and links, and the per-file scheme's .bak files and
    .export-* folders: removed, or put back where the manifest says they hold its files."""
    gens = exported / GEN_DIR
    (gens / "g-stray_01").mkdir()
    (gens / "g-stray_01" / "model.onnx").write_bytes(b"half")
    (exported / ".model.onnx.abc12_yz.tmp").write_bytes(b"half")
    os.symlink(f"{CURRENT}/model.fp16.onnx", exported / "model.fp16.onnx")  # dangling
    (exported / ".export-new-k2j4x9aa").mkdir()
    (exported / ".precision_report.json.77.bak").write_text("{}")
    # not in our name forms: the user's, left alone
    (gens / "mine").mkdir()
    (exported / ".cache.tmp").mkdir()
    (exported / ".notes.tmp").write_text("mine")
    done = recover(exported)
    assert len(done) == 5, done
    assert (gens / "mine").is_dir() and (exported / ".cache.tmp").is_dir()
    assert (exported / ".notes.tmp").read_text() == "mine"
    (gens / "mine").rmdir()
    (exported / ".cache.tmp").rmdir()
    (exported / ".notes.tmp").unlink()
    _tidy(exported)
    assert _loads(exported) == tuple(OLD.split(","))


def test_a_folder_that_is_not_ours_is_not_cleaned(tmp_path):
    """No manifest, pointer or generations: temp-looking files of the user's stay."""
    user = tmp_path / "proj"
    user.mkdir()
    (user / ".data.abcdefgh.tmp").write_text("mine")
    (user / ".x.1234.bak").write_text("mine")
    (user / ".export-old-abcdefgh").mkdir()
    assert recover(user) == []
    assert sorted(p.name for p in user.iterdir()) == [
        ".data.abcdefgh.tmp",
        ".export-old-abcdefgh",
        ".x.1234.bak",
    ]


def test_a_gen_symlink_leading_out_is_refused_and_nothing_deleted(exported, tmp_path):
    victim = tmp_path / "victim"
    (victim / "g-abcdefgh").mkdir(parents=True)
    (victim / "notes.txt").write_text("mine")
    plain = _plain_copy(exported, tmp_path / "plain")
    os.symlink(victim, plain / GEN_DIR)
    with pytest.raises(ModelFolderError, match="symlink"):
        recover(plain)
    with pytest.raises(ModelFolderError, match="symlink"):
        FolderWrite(plain)
    assert sorted(p.name for p in victim.iterdir()) == ["g-abcdefgh", "notes.txt"]


def test_a_bak_holding_the_manifests_file_is_restored(exported, tmp_path):
    """The per-file calibrate of older versions could be killed between moving the old
    variant aside and writing the manifest: the .bak is the file the manifest names."""
    plain = _plain_copy(exported, tmp_path / "plain")
    good = (plain / "model.onnx").read_bytes()
    (plain / ".model.onnx.4242.bak").write_bytes(good)
    (plain / "model.onnx").write_bytes(b"the new graph the manifest never recorded")
    assert "restored model.onnx from .model.onnx.4242.bak" in recover(plain)
    assert (plain / "model.onnx").read_bytes() == good
    assert _loads(plain) == tuple(OLD.split(","))


def test_a_second_writer_is_refused(exported):
    with FolderWrite(exported):
        with pytest.raises(ModelFolderError, match="another export or calibrate"):
            FolderWrite(exported)
    with FolderWrite(exported):  # released on exit
        pass
    _tidy(exported)


def test_without_symlinks_the_plain_commit_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr("export.folder_write._symlinks_work", lambda out: False)
    out = tmp_path / "m"
    assert build.main(_export_args(out, OLD)) == 0
    assert build.main(_export_args(out, NEW)) == 0
    assert not (out / MANIFEST_FILE).is_symlink() and not os.path.lexists(out / CURRENT)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, "model.onnx"]
    assert _loads(out) == tuple(NEW.split(","))


def test_a_plain_file_linking_outside_is_not_carried(exported, tmp_path):
    """Converting a plain folder never copies a file from outside it into a generation."""
    plain = _plain_copy(exported, tmp_path / "plain")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"outside")
    d = json.loads((plain / MANIFEST_FILE).read_text())
    d["text_embeddings_file"] = "emb.npy"
    (plain / MANIFEST_FILE).write_text(json.dumps(d))
    os.symlink(secret, plain / "emb.npy")
    with FolderWrite(plain) as fw:
        fw.carry(["emb.npy", "model.onnx"])
        assert sorted(p.name for p in fw.stage.iterdir()) == ["model.onnx"]
