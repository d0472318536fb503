"""runtime.camera on CPU: video files, image folders, fake live sources, signals, memory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from benchmarks.camera import BITS, synthetic_video  # noqa: E402
from runtime import camera  # noqa: E402
from runtime.camera import LoopCfg, rss_mb, run_loop  # noqa: E402
from runtime.errors import ConfigError, SourceError  # noqa: E402
from runtime.frame_queue import FrameQueue, QueueClosed  # noqa: E402
from runtime.segmenter import Segmenter, SegResult  # noqa: E402
from runtime.sources import Frame, gstreamer_available, open_source  # noqa: E402
from runtime.video_out import NullSink, VideoSink, gui_available  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
W, H = 160, 96  # synthetic frames: 10 index blocks of 16 px along the top edge


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, BGR uint8."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def decode_index(bgr: np.ndarray) -> int:
    """The frame index synthetic_video drew along the top edge (block centres, threshold 128)."""
    block, rows = W // BITS, H // 4
    bits = [
        bgr[rows // 2 - 4 : rows // 2 + 4, b * block + 4 : (b + 1) * block - 4].mean() > 128
        for b in range(BITS)
    ]
    return int("".join("1" if x else "0" for x in bits), 2)


class FakeSeg:
    """Stand-in segmenter: all pixels class 0, after ``delay_s`` of 'inference'."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.calls = delay_s, 0

    def __call__(self, image: np.ndarray) -> SegResult:
        self.calls += 1
        time.sleep(self.delay_s)
        labels = np.zeros(image.shape[:2], np.int32)
        return SegResult(
            labels,
            np.zeros((2, 2, 2), np.float32),
            ("a", "b"),
            ("a",),
            "whole",
            1,
            {"inference": self.delay_s * 1e3},
            "fake",
            (),
        )


class RecordingSink(NullSink):
    """Keeps the sequence numbers and shapes it was given."""

    def __init__(self, on_write=None):
        self.seqs, self.shapes, self.closed, self.on_write = [], [], False, on_write

    def write(self, image, frame):
        self.seqs.append(frame.seq)
        self.shapes.append(image.shape)
        if self.on_write:
            self.on_write(len(self.seqs))

    def close(self):
        self.closed = True


class FakeLive:
    """A live source of 48x64 frames: ``fail_after`` frames, then ``outage`` failed reads, while
    reopen raises ``reopen_failures`` times first. ``period_s`` between frames."""

    name, live, fps = "fake camera", True, None

    def __init__(self, fail_after=None, reopen_failures=0, period_s=0.0, shape=(48, 64, 3)):
        self.fail_after, self.reopen_failures, self.period_s = fail_after, reopen_failures, period_s
        self.seq, self.down, self.reopens, self.closed = 0, False, 0, False
        self.image = np.full(shape, 90, np.uint8)

    def read(self):
        time.sleep(self.period_s)
        if self.down or (self.fail_after is not None and self.seq == self.fail_after):
            self.down = True
            return None
        frame = Frame(self.image.copy(), self.seq, time.perf_counter())
        self.seq += 1
        return frame

    def reopen(self):
        self.reopens += 1
        if self.reopens <= self.reopen_failures:
            raise SourceError("still unplugged")
        self.down, self.fail_after = False, None

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return synthetic_video(tmp_path_factory.mktemp("cam") / "in.mp4", 30, W, H, fps=25)


def run_cli(args: list[str], capsys) -> tuple[int, dict | None, str]:
    rc = camera.main(args)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return rc, json.loads(lines[-1]) if lines else None, err


def test_synthetic_video_encodes_its_index(video):
    assert [decode_index(f) for f in read_video(video)] == list(range(30))


def test_frame_queue_drops_oldest_and_stays_bounded():
    q = FrameQueue(2)
    for i in range(5):
        assert q.put(i)
        assert len(q) <= 2
    assert (q.dropped, q.high_water) == (3, 2)
    assert [q.get(0), q.get(0)] == [3, 4]
    q.close()
    with pytest.raises(QueueClosed):
        q.get(0)
    blocking, stop = FrameQueue(1, drop_oldest=False), threading.Event()
    assert blocking.put("a")
    threading.Timer(0.05, stop.set).start()
    assert blocking.put("b", stop) is False and blocking.dropped == 0  # waited, then gave up


@pytest.mark.parametrize("extra", [[], ["--sequential"], ["--drop", "oldest"]])
def test_video_file_in_order(tiny_vit_folder, video, tmp_path, capsys, extra):
    out = tmp_path / "out.mp4"
    rc, stats, err = run_cli(
        [
            "--model",
            str(tiny_vit_folder),
            "--source",
            str(video),
            "--out",
            str(out),
            "--alpha",
            "0",
            "--no-legend",
            "--threads",
            "1",
            *extra,
        ],
        capsys,
    )
    assert rc == 0, err
    assert stats["stop_reason"] == "end" and stats["frames_captured"] == 30
    assert stats["pipelined"] == ("--sequential" not in extra)
    written = read_video(out)
    assert len(written) == stats["frames_processed"] and written[0].shape == (H, W, 3)
    order = [decode_index(f) for f in written]  # alpha 0: the overlay is the frame itself
    assert all(a < b for a, b in zip(order, order[1:]))
    if extra != ["--drop", "oldest"]:  # sequential, or a file waiting for room: every frame
        assert order == list(range(30)) and stats["frames_dropped"] == 0
    assert stats["frames_processed"] + stats["frames_dropped"] == 30
    assert stats["latency_p50_ms"] > 0 and {"read", "segment", "inference", "write"} <= set(
        stats["stage_median_ms"]
    )
    assert stats["weights_random"] is True and stats["peak_rss_mb"] > 0


def test_camvid_image_folder(tiny_vit_folder, camvid, tmp_path, capsys):
    out = tmp_path / "pngs"
    rc, stats, err = run_cli(
        [
            "--model",
            str(tiny_vit_folder),
            "--source",
            str(camvid / "test"),
            "--out",
            str(out),
            "--max-frames",
            "20",
            "--threads",
            "1",
        ],
        capsys,
    )
    assert rc == 0, err
    assert stats["stop_reason"] == "max_frames" and stats["frames_processed"] == 20
    pngs = sorted(out.glob("frame_*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(20)]
    from PIL import Image

    shown = np.asarray(Image.open(pngs[0]))
    assert shown.shape[1:] == (480, 3) and shown.shape[0] > 360  # 360x480 frame + legend strip


def test_slow_segment_drops_oldest_bounded_queue():
    sink, source = RecordingSink(), FakeLive(period_s=0.002)
    stats = run_loop(source, FakeSeg(delay_s=0.03), sink, LoopCfg(queue_size=2, max_frames=12))
    assert stats.stop_reason == "max_frames" and stats.frames_processed == 12 == len(sink.seqs)
    assert stats.frames_dropped > 0 and stats.queue_high_water <= 2
    assert all(a < b for a, b in zip(sink.seqs, sink.seqs[1:]))
    assert sink.seqs[-1] - sink.seqs[0] > 12  # frames were skipped: the newest ones were kept
    assert stats.frames_captured >= stats.frames_processed + stats.frames_dropped
    assert sink.closed and source.closed


@pytest.mark.parametrize("sequential", [False, True])
def test_reconnect_after_failure(sequential):
    sink, source = RecordingSink(), FakeLive(fail_after=5, reopen_failures=1)
    cfg = LoopCfg(
        sequential=sequential,
        drop="never",
        max_frames=10,
        backoff_initial_s=0.01,
        backoff_max_s=0.04,
    )
    stats = run_loop(source, FakeSeg(), sink, cfg)
    assert stats.stop_reason == "max_frames" and stats.reconnects == 1
    assert stats.reconnect_attempts == 2  # the first reopen failed, the second worked
    assert sink.seqs == list(range(10))  # frames continue after the outage


class EmptyAfterReopen(FakeLive):
    """Reopens fine but never delivers a frame again (an RTSP server that sends nothing)."""

    def __init__(self):
        super().__init__(fail_after=3)
        self.reopen_times = []

    def reopen(self):
        self.reopen_times.append(time.perf_counter())
        self.reopens += 1  # "works", yet the stream stays down


def test_backoff_grows_and_gives_up_when_reopen_brings_no_frames():
    source = EmptyAfterReopen()
    cfg = LoopCfg(
        sequential=True,
        max_frames=10,
        backoff_initial_s=0.02,
        backoff_max_s=0.08,
        reconnect_attempts=5,
    )
    stats = run_loop(source, FakeSeg(), RecordingSink(), cfg)
    assert stats.stop_reason == "source_failed" and "5 reconnect attempts" in stats.error
    assert stats.frames_processed == 3 and len(source.reopen_times) == 5
    gaps = np.diff(source.reopen_times)
    # delays 0.02, 0.04, 0.08, 0.08, 0.08: the gaps grow, then stay at the cap
    assert gaps[0] > 0.03 and gaps[1] > 0.07 and gaps[2] > 0.07 and gaps[3] < 0.2


def test_source_that_stays_down_fails_cleanly():
    sink, source = RecordingSink(), FakeLive(fail_after=3, reopen_failures=99)
    cfg = LoopCfg(backoff_initial_s=0.01, backoff_max_s=0.02, reconnect_attempts=3)
    stats = run_loop(source, FakeSeg(), sink, cfg)
    assert stats.stop_reason == "source_failed" and "3 reconnect attempts" in stats.error
    assert stats.frames_captured == 3 == stats.frames_processed + stats.frames_dropped
    assert stats.reconnects == 0 and stats.reconnect_attempts == 3 and sink.closed and source.closed


def test_stop_event_ends_a_live_loop():
    stop, sink = threading.Event(), RecordingSink()
    sink.on_write = lambda n: n == 5 and stop.set()
    stats = run_loop(FakeLive(), FakeSeg(), sink, LoopCfg(), stop)
    assert stats.stop_reason == "stopped" and 5 <= stats.frames_processed <= 6


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly(tiny_vit_folder, tmp_path, sig):
    src = synthetic_video(tmp_path / "long.mp4", 600, W, H, fps=30)  # 20 s at --realtime
    out, stats_path = tmp_path / "out.mp4", tmp_path / "stats.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.camera",
            "--model",
            str(tiny_vit_folder),
            "--source",
            str(src),
            "--out",
            str(out),
            "--json",
            str(stats_path),
            "--realtime",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:  # wait until frames are being written
            if "first frame out" in line:
                break
        time.sleep(0.7)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    stats = json.loads(stats_path.read_text())
    assert json.loads(stdout.strip().splitlines()[-1]) == stats
    assert stats["stop_reason"] == "stopped" and 0 < stats["frames_processed"] < 600
    assert len(read_video(out)) == stats["frames_processed"]
    assert not list(tmp_path.glob(".out.mp4.*"))  # temp file renamed, none left


@pytest.mark.parametrize("sequential", [True, False])
def test_rss_flat_over_2000_frames(tiny_vit_folder, tmp_path, sequential):
    rss: dict[int, float] = {}
    sink = VideoSink(tmp_path / "rss.mp4", 30)
    write = sink.write

    def measured(image, frame):
        write(image, frame)
        if sink.frames in (200, 2000):
            rss[sink.frames] = rss_mb()

    sink.write = measured
    source = FakeLive(period_s=0.0, shape=(48, 64, 3))
    cfg = LoopCfg(sequential=sequential, drop="never", max_frames=2000, stats_window=50)
    with Segmenter(tiny_vit_folder, threads=1) as seg:
        stats = run_loop(source, seg, sink, cfg)
    assert stats.frames_processed == 2000 and len(read_video(tmp_path / "rss.mp4")) == 2000
    assert stats.frames_captured >= stats.frames_processed + stats.frames_dropped
    assert rss[2000] - rss[200] < 2.0, rss  # measured here: +0.1 MB (the mp4 index)


def test_timing_buffers_stay_bounded():
    """Per-frame statistics live in fixed rings: 500 frames with a 50-sample window keep 50."""
    from runtime import camera as cam

    kept = []
    original = cam._stats

    def spy(source, reader, step, *rest):
        kept.extend(
            [len(reader.read_ms), len(step.latency_ms), *(len(r) for r in step.stages.values())]
        )
        return original(source, reader, step, *rest)

    cam._stats = spy
    try:
        run_loop(FakeLive(), FakeSeg(), RecordingSink(), LoopCfg(max_frames=500, stats_window=50))
    finally:
        cam._stats = original
    assert kept and max(kept) == 50


def test_image_folder_skips_unreadable(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((20, 30), 40 * i, np.uint8)).save(tmp_path / f"f{i}.png")
    (tmp_path / "f1b.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path))
    frames = [source.read() for _ in range(4)]
    assert frames[-1] is None and source.skipped == 1 and not source.live
    assert [f.seq for f in frames[:3]] == [0, 1, 2]
    assert frames[0].image.shape == (20, 30, 3) and frames[0].image.dtype == np.uint8


def test_clear_errors(tiny_vit_folder, tmp_path, capsys):
    base = ["--model", str(tiny_vit_folder), "--source"]
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "missing.mp4"): "does not exist",
        str(tmp_path / "empty"): "has no image files",
    }
    if not gstreamer_available():
        cases["gst:videotestsrc ! appsink"] = "no GStreamer support"
    for spec, message in cases.items():
        rc, _, err = run_cli([*base, spec], capsys)
        assert rc == 2 and message in err, err
    with pytest.raises(SystemExit) as e:
        camera.main([*base, str(tmp_path), "--queue", "0"])
    assert (
        e.value.code == 2 and "argument --queue: must be an integer > 0" in capsys.readouterr().err
    )
    if not gui_available():
        from PIL import Image

        (tmp_path / "one").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one" / "a.png")
        rc, _, err = run_cli([*base, str(tmp_path / "one"), "--show"], capsys)
        assert rc == 2 and "--show needs an OpenCV build with a GUI" in err, err
    with pytest.raises(ConfigError):
        LoopCfg(queue_size=0)


def test_benchmark_report(tiny_vit_folder, tmp_path, capsys):
    from benchmarks.camera import main

    out = tmp_path / "bench.json"
    args = [
        "--model",
        str(tiny_vit_folder),
        "--frames",
        "5",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--size",
        "96x64",
        "--threads",
        "1",
        "--json",
        str(out),
        "--plot",
        str(tmp_path / "b.png"),
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    rows = {r["loop"]: r for r in report["results"]}
    assert sorted(rows) == ["pipelined", "sequential"]
    for r in rows.values():
        assert r["runs"] == 2 and len(r["fps_per_run"]) == 2 and r["median_fps"] > 0
        assert r["p10_fps"] <= r["median_fps"] <= r["p90_fps"] and r["median_latency_p50_ms"] > 0
    assert report["ratio_pipelined_over_sequential"] > 0 and report["peak_rss_mb"] > 0
    assert report["frame_hw"] == [64, 96] and report["frames"] == 5 and report["weights_random"]
    assert "benchmarks.camera" in report["command"]
    assert report["plot"] is None or Path(report["plot"]).is_file()


def test_crash_keeps_the_previous_output(tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"previous good video")

    class Crash(FakeSeg):
        def __call__(self, image):
            if self.calls == 2:  # the third frame
                raise RuntimeError("model exploded")
            return super().__call__(image)

    with pytest.raises(RuntimeError, match="exploded"):
        run_loop(FakeLive(), Crash(), VideoSink(out, 30), LoopCfg(max_frames=10))
    assert out.read_bytes() == b"previous good video"
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]  # no temp file left


def test_writer_that_cannot_open_gives_source_error(tmp_path, monkeypatch):
    import cv2

    class Closed:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

    frame = Frame(np.zeros((8, 8, 3), np.uint8), 0, 0.0)
    monkeypatch.setattr(cv2, "VideoWriter", Closed)  # OpenCV refused, and created no temp file
    with pytest.raises(SourceError, match="cannot write"):
        VideoSink(tmp_path / "o.mp4", 30).write(frame.image, frame)
    monkeypatch.undo()
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(SourceError, match="cannot create the folder"):
        VideoSink(tmp_path / "file" / "o.mp4", 30).write(frame.image, frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_first_signal_never_forces_even_if_the_loop_already_set_stop():
    import os

    with camera.stop_on_signals(threading.Event()) as stop:
        stop.set()  # the loop sets it itself when it reaches max frames or shuts down
        os.kill(os.getpid(), signal.SIGINT)  # a first Ctrl-C: still a clean stop
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one forces
            time.sleep(0.5)
