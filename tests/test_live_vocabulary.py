"""Live vocabulary: a watched class file and ``set_classes`` from another thread change the
classes between frames of a running camera loop, without dropping the stream or a frame, and a
result's classes always match its logits."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import export_folder

cv2 = pytest.importorskip("cv2")

from benchmarks.camera import synthetic_video  # noqa: E402
from runtime.camera import LoopCfg, run_loop  # noqa: E402
from runtime.errors import VocabularyError  # noqa: E402
from runtime.segmenter import Segmenter  # noqa: E402
from runtime.sources import open_source  # noqa: E402
from runtime.video_out import NullSink  # noqa: E402
from runtime.vocab_watch import ClassFileWatcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory) -> Path:
    return export_folder(tmp_path_factory, "tiny_vit_live", vocab_mode="input", text_encoder=True)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return synthetic_video(tmp_path_factory.mktemp("live") / "in.mp4", 8, 96, 64, fps=25)


def _write(path: Path, text: str) -> None:
    """Replace atomically, as the docs ask."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def test_watcher_applies_changes_and_keeps_the_vocabulary_through_bad_files(tmp_path):
    path, applied = tmp_path / "classes.txt", []
    _write(path, "sky\nroad\n")
    w = ClassFileWatcher(path, applied.append)
    assert applied == [("sky", "road")] and not w.poll()
    _write(path, "# comments change nothing\nsky\nroad\n")
    assert not w.poll() and len(applied) == 1
    _write(path, "car\nperson\ntree\n")
    assert w.poll() and applied[-1] == ("car", "person", "tree") and w.changes == 1
    for bad in ("", "car\ncar\n", "\n# only comments\n"):
        _write(path, bad)
        assert not w.poll() and w.names == ("car", "person", "tree")
    path.unlink()
    assert not w.poll() and not w.poll() and w.names == ("car", "person", "tree")
    errors = w.errors
    _write(path, "bus\n")
    assert w.poll() and applied[-1] == ("bus",) and w.errors == errors


def test_watcher_needs_a_readable_file_at_start(tmp_path):
    with pytest.raises(VocabularyError, match="cannot read class file"):
        ClassFileWatcher(tmp_path / "missing.txt", print)
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(VocabularyError, match="empty"):
        ClassFileWatcher(tmp_path / "empty.txt", print)


class _Recorder:
    """A Segmenter stand-in for the loop that records what each frame was segmented with."""

    def __init__(self, seg: Segmenter):
        self.seg, self.results = seg, []

    def __call__(self, image):
        result = self.seg(image)
        self.results.append(result)
        return result


class _WriteAfter(NullSink):
    """After frame ``k`` is written, rewrite the class file."""

    def __init__(self, path: Path, k: int, text: str):
        self.path, self.k, self.text, self.written = path, k, text, 0

    def write(self, image, frame):
        self.written += 1
        if self.written == self.k:
            _write(self.path, self.text)


@pytest.mark.parametrize("sequential", [True, False])
def test_watched_file_changes_the_next_frame_and_loses_none(
    text_folder, video, tmp_path, sequential
):
    path = tmp_path / "classes.txt"
    _write(path, "sky\nroad\n")
    with Segmenter(text_folder, backend="onnxruntime") as seg:
        watcher = ClassFileWatcher(path, seg.set_classes)
        rec = _Recorder(seg)
        cfg = LoopCfg(sequential=sequential, queue_size=2, drop="never")
        stats = run_loop(
            open_source(str(video)),
            rec,
            _WriteAfter(path, 3, "car\ntree\nbus\n"),
            cfg,
            watcher=watcher,
        )
    classes = [r.classes for r in rec.results]
    assert stats.frames_processed == 8 and stats.frames_dropped == 0 and len(classes) == 8
    assert classes[:3] == [("sky", "road")] * 3  # frames 1-3; the file changes after frame 3
    assert classes[3:] == [("car", "tree", "bus")] * 5  # from the very next frame on
    assert stats.vocabulary_changes == 1
    assert all(r.logits.shape[0] == len(r.classes) for r in rec.results)


def test_set_classes_from_another_thread_lands_between_frames(text_folder, video):
    vocabularies = [("sky", "road"), ("car", "tree", "bus", "person")]
    with Segmenter(text_folder, backend="onnxruntime") as seg:
        rec, stop, errors = _Recorder(seg), threading.Event(), []

        def flip():
            i = 0
            while not stop.is_set():
                try:
                    seg.set_classes(vocabularies[i % 2])
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    errors.append(e)
                i += 1

        seg.set_classes(vocabularies[0])
        t = threading.Thread(target=flip)
        t.start()
        try:
            for _ in range(3):  # 24 frames while the vocabulary flips under them
                run_loop(open_source(str(video)), rec, NullSink(), LoopCfg(drop="never"))
        finally:
            stop.set()
            t.join()
    assert not errors and len(rec.results) == 24
    assert {r.classes for r in rec.results} == set(vocabularies)  # it did flip mid-stream
    for r in rec.results:
        assert r.classes in vocabularies and r.logits.shape[0] == len(r.classes)
        assert int(r.labels.max()) < len(r.classes)
        assert set(r.classes_present) <= set(r.classes)


def test_camera_cli_watch_classes(text_folder, tiny_vit_folder, video, tmp_path):
    path = tmp_path / "classes.txt"
    _write(path, "sky\nroad\n")
    base = [sys.executable, "-m", "runtime.camera", "--source", str(video), "--max-frames", "2"]
    ok = subprocess.run(
        [*base, "--model", str(text_folder), "--watch-classes", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert '"classes": 2' in ok.stdout and '"vocabulary_changes": 0' in ok.stdout
    both = subprocess.run(
        [*base, "--model", str(text_folder), "--watch-classes", str(path), "--classes", "a,b"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert both.returncode == 2 and "give one" in both.stderr
    fixed = subprocess.run(
        [*base, "--model", str(tiny_vit_folder), "--watch-classes", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fixed.returncode == 2 and "fixed vocabulary" in fixed.stderr
    assert len(fixed.stderr.strip().splitlines()[-1:]) == 1 and "Traceback" not in fixed.stderr
