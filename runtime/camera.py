"""The embedded camera loop: capture thread -> bounded queue -> segment -> overlay -> output.

    python -m runtime.camera --model DIR
        --source {INDEX|/dev/videoN|FILE|rtsp://...|gst:PIPELINE|DIR}
        [--out FILE.mp4|DIR] [--max-frames N] [--json STATS] [--show] [--queue 2] [--sequential]

A capture thread reads frames into a bounded queue; the main thread segments the newest ones,
draws the overlay and writes them. Live sources (cameras, streams) drop the OLDEST queued frame
when the queue is full and are reopened with exponential backoff when they fail; finite sources
(files, folders) by default wait for room, so every frame is processed, and end the loop when they
end. ``--sequential`` reads, segments and writes in one thread instead, for comparison.
SIGINT/SIGTERM stop cleanly: the capture thread joins, the video is finalised, the stats JSON is
written and the exit status is 0. Prints one JSON line of stats; exit status 2 on bad input
(``runtime.cli``), 130 on a forced stop (a second signal).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.cli import (
    ArgumentParser,
    add_max_pixels_arg,
    add_segmenter_args,
    add_verbose_arg,
    cli_main,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    segmenter_kwargs,
    setup_logging,
    unit_float,
)
from runtime.errors import ConfigError, SourceError
from runtime.frame_queue import CaptureThread, FrameQueue, QueueClosed, Reader, Ring
from runtime.fsutil import atomic_write_text
from runtime.outputs import check_output_dir, check_output_file
from runtime.postprocess import load_palette
from runtime.segmenter import Segmenter, SegResult
from runtime.sources import Frame, FrameSource, SourceCfg, open_source, parse_size
from runtime.video_out import DEFAULT_FPS, Painter, Sink, open_sink
from runtime.vocab_watch import ClassFileWatcher

log = logging.getLogger(__name__)
DROP_POLICIES = ("auto", "oldest", "never")  # auto: oldest for live sources, never for finite ones
Segment = Callable[[np.ndarray], SegResult]


@dataclass(frozen=True)
class LoopCfg:
    """Camera loop settings.

    Attributes:
        queue_size: frames the capture thread may hold ahead of the main thread (>= 1).
        sequential: no capture thread: read, segment and write in one thread.
        drop: full-queue policy: "oldest" (drop it), "never" (capture waits), "auto" (by source).
        max_frames: stop after this many processed frames (None: until the source ends or a stop).
        realtime: deliver a finite source at its frame rate (``pace_fps`` if it has none), as a
            camera would.
        pace_fps: frame rate for ``realtime`` when the source reports none.
        alpha, legend: overlay opacity in [0, 1]; legend strip below the overlay.
        palette_file: class colours from an image (e.g. the dataset's), else the fixed palette.
        overlay_stats: draw the frame rate and latency (over the last 30 frames) top left.
        backoff_initial_s, backoff_max_s: reconnect delay, doubling from initial up to max.
        reconnect_attempts: reopen attempts per outage before giving up (0: never give up).
        stats_window: latency/timing samples kept (the most recent), so memory stays flat.
        log_every_s: progress log period in seconds (0: off).
        join_timeout_s: how long to wait for a capture thread stuck in a read.
    """

    queue_size: int = 2
    sequential: bool = False
    drop: str = "auto"
    max_frames: int | None = None
    realtime: bool = False
    pace_fps: float = DEFAULT_FPS
    alpha: float = 0.5
    legend: bool = True
    palette_file: str | None = None
    overlay_stats: bool = False
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    reconnect_attempts: int = 0
    stats_window: int = 10_000
    log_every_s: float = 10.0
    join_timeout_s: float = 5.0

    def __post_init__(self):
        checks = [
            (self.queue_size >= 1, "queue_size must be >= 1"),
            (self.drop in DROP_POLICIES, f"drop must be one of {DROP_POLICIES}"),
            (self.max_frames is None or self.max_frames >= 1, "max_frames must be >= 1"),
            (self.pace_fps > 0, "pace_fps must be > 0"),
            (0.0 <= self.alpha <= 1.0, "alpha must be in [0, 1]"),
            (
                0 < self.backoff_initial_s <= self.backoff_max_s,
                "need 0 < backoff_initial_s <= backoff_max_s",
            ),
            (self.reconnect_attempts >= 0, "reconnect_attempts must be >= 0"),
            (self.stats_window >= 1, "stats_window must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{message}: {self}")


@dataclass(frozen=True)
class LoopStats:
    """What one run of the loop did. Times in milliseconds unless named ``_s``; memory in MiB.

    Attributes:
        stop_reason: "end" (finite source done), "max_frames", "stopped" (signal, window key or
            the caller's event) or "source_failed" (see ``error``).
        frames_captured: frames read; >= processed + dropped (the rest were queued at the stop).
        frames_skipped: files the source could not decode and skipped.
        queue_high_water: the largest queue depth reached (<= queue_size; 0 when sequential).
        fps: processed frames per second of loop wall time.
        latency_p50_ms, latency_p90_ms, latency_p99_ms: capture -> written, over the last
            ``stats_window`` frames (None without frames).
        stage_median_ms: median per stage: read (in the source), wait (captured -> segment start),
            segment (its preprocess/inference/postprocess too when it reports them), render, write.
        peak_rss_mb, rss_mb: ru_maxrss, and /proc/self/statm resident size now (None elsewhere).
        vocabulary_changes: vocabularies taken from a watched class file after the first.
    """

    source: str
    live: bool
    pipelined: bool
    stop_reason: str
    error: str | None
    frames_captured: int
    frames_processed: int
    frames_dropped: int
    frames_skipped: int
    reconnects: int
    reconnect_attempts: int
    queue_size: int
    queue_high_water: int
    elapsed_s: float
    fps: float
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    stage_median_ms: dict[str, float]
    peak_rss_mb: float
    rss_mb: float | None
    vocabulary_changes: int = 0


def rss_mb() -> float | None:
    """Resident set size now, MiB, from /proc/self/statm (None where that does not exist)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB (getrusage ru_maxrss)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class _Step:
    """Segment, render and write one frame; keeps the per-frame timings (bounded)."""

    def __init__(
        self,
        segment: Segment,
        painter: Painter,
        sink: Sink,
        window: int,
        watcher=None,
        overlay_stats: bool = False,
    ):
        self.segment, self.painter, self.sink, self.watcher = segment, painter, sink, watcher
        self.overlay_stats, self._done = overlay_stats, collections.deque(maxlen=30)
        self.processed, self.last_latency_ms = 0, 0.0
        self.latency_ms = Ring(window)
        self.stages: dict[str, Ring] = collections.defaultdict(lambda: Ring(window))

    def __call__(self, frame: Frame) -> None:
        if self.watcher is not None:  # between frames: a changed class file applies to this one
            self.watcher.poll()
        t0 = time.perf_counter()
        result = self.segment(frame.image)
        t1 = time.perf_counter()
        shown = self.painter(frame.image, result.labels, tuple(result.classes))
        if self.overlay_stats:
            shown = draw_stats(shown, self._fps(), self.last_latency_ms)
        t2 = time.perf_counter()
        self.sink.write(shown, frame)
        t3 = time.perf_counter()
        self.processed += 1
        self._done.append(t3)
        self.last_latency_ms = (t3 - frame.t_capture) * 1e3
        self.latency_ms.append(self.last_latency_ms)
        ms = {"wait": t0 - frame.t_capture, "segment": t1 - t0, "render": t2 - t1, "write": t3 - t2}
        for name, seconds in ms.items():
            self.stages[name].append(seconds * 1e3)
        for name, value in (getattr(result, "timings_ms", None) or {}).items():
            self.stages[name].append(float(value))

    def _fps(self) -> float | None:
        """Frames per second over the last (up to 30) written frames; None before two."""
        if len(self._done) < 2 or self._done[-1] <= self._done[0]:
            return None
        return (len(self._done) - 1) / (self._done[-1] - self._done[0])


def draw_stats(image: np.ndarray, fps: float | None, latency_ms: float | None) -> np.ndarray:
    """``image`` (HxWx3 uint8 RGB) with "F fps | L ms" drawn top left, white on a dark box."""
    import cv2

    text = f"{fps:.1f} fps" if fps else "-- fps"
    text += f" | {latency_ms:.0f} ms" if latency_ms else ""
    out = np.ascontiguousarray(image).copy()
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(out, (0, 0), (w + 8, h + base + 8), (0, 0, 0), thickness=-1)
    cv2.putText(
        out, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
    )
    return out


class _Progress:
    """Logs a progress line every ``period_s`` seconds."""

    def __init__(self, period_s: float):
        self.period_s, self._next = period_s, time.perf_counter() + period_s

    def __call__(self, step: _Step, reader: Reader, dropped: int) -> None:
        if step.processed == 1:
            log.info("first frame out, %.1f ms after its capture", step.last_latency_ms)
        now = time.perf_counter()
        if self.period_s and now >= self._next:
            self._next = now + self.period_s
            log.info(
                "%d frames processed, %d captured, %d dropped, %d reconnects",
                step.processed,
                reader.captured,
                dropped,
                reader.reconnects,
            )


def _pipelined(capture: CaptureThread, step: _Step, cfg: LoopCfg) -> str:
    progress, frames, stop = _Progress(cfg.log_every_s), capture.frames, capture.reader.stop
    while not stop.is_set():
        try:
            frame = frames.get(timeout=0.1)
        except queue.Empty:
            continue
        except QueueClosed:
            if capture.error is not None:
                raise capture.error from None
            return "stopped" if stop.is_set() else "end"
        step(frame)
        progress(step, capture.reader, frames.dropped)
        if cfg.max_frames and step.processed >= cfg.max_frames:
            return "max_frames"
    return "stopped"


def _sequential(reader: Reader, step: _Step, cfg: LoopCfg) -> str:
    progress = _Progress(cfg.log_every_s)
    while True:
        frame = reader.next()
        if frame is None:
            return "stopped" if reader.stop.is_set() else "end"
        step(frame)
        progress(step, reader, 0)
        if cfg.max_frames and step.processed >= cfg.max_frames:
            return "max_frames"


def _pct(ring: Ring, q: float) -> float | None:
    return round(float(np.percentile(ring.values(), q)), 3) if len(ring) else None


def run_loop(
    source: FrameSource,
    segment: Segment,
    sink: Sink,
    cfg: LoopCfg = LoopCfg(),
    stop: threading.Event | None = None,
    watcher: ClassFileWatcher | None = None,
) -> LoopStats:
    """Run the camera loop until the source ends, ``max_frames``, ``stop`` is set, or it fails.

    Args:
        source: frame source (``runtime.sources.open_source`` or any FrameSource).
        segment: HxWx3 uint8 RGB -> SegResult (a Segmenter, or a stand-in with labels/classes).
        sink: receives each rendered (H + legend)xWx3 uint8 RGB frame with its Frame.
        cfg: loop settings.
        stop: set it (e.g. from a signal handler) to stop cleanly; set on return.
        watcher: a watched class file, polled before every frame (live vocabulary); a
            ``Segmenter.set_classes`` call from another thread works too (it lands between
            frames).
    Returns:
        LoopStats. A live source that stays down ends with stop_reason "source_failed".
    The loop owns ``source`` and ``sink``: both are closed on return or on an exception (the source
    is left open only if the capture thread is stuck in a read).
    """
    stop = stop or threading.Event()
    reader = Reader(
        source,
        stop,
        pace_fps=(source.fps or cfg.pace_fps) if cfg.realtime else None,
        backoff_initial_s=cfg.backoff_initial_s,
        backoff_max_s=cfg.backoff_max_s,
        reconnect_attempts=cfg.reconnect_attempts,
        window=cfg.stats_window,
    )
    # A score threshold at the start lists "unknown" in the (fixed-height) legend.
    unknown = float(getattr(segment, "score_threshold", 0.0) or 0.0) > 0
    painter = Painter(cfg.alpha, cfg.legend, cfg.palette_file, unknown_legend=unknown)
    step = _Step(segment, painter, sink, cfg.stats_window, watcher, cfg.overlay_stats)
    drop = cfg.drop == "oldest" or (cfg.drop == "auto" and source.live)
    frames = None if cfg.sequential else FrameQueue(cfg.queue_size, drop_oldest=drop)
    capture, error, close_source, crashed, t0 = None, None, True, True, time.perf_counter()
    try:
        if frames is None:
            reason = _sequential(reader, step, cfg)
        else:
            capture = CaptureThread(reader, frames)
            reason = _pipelined(capture, step, cfg)
        crashed = False
    except SourceError as e:
        reason, error, crashed = "source_failed", str(e), False
        log.error("%s", e)
    finally:
        elapsed = time.perf_counter() - t0
        stop.set()
        try:
            if capture is not None and not capture.join(cfg.join_timeout_s):
                close_source = False
                log.warning(
                    "capture thread still blocked in a read after %.1f s: leaving the source open",
                    cfg.join_timeout_s,
                )
        finally:  # even when a forced stop interrupts the join: finalise (or drop) the output
            try:
                # A crash must not replace a previous good output with a partial one.
                (getattr(sink, "abort", sink.close) if crashed else sink.close)()
            finally:
                if close_source:
                    source.close()
    return _stats(source, reader, step, cfg, frames, reason, error, elapsed)


def _stats(
    source: FrameSource,
    reader: Reader,
    step: _Step,
    cfg: LoopCfg,
    frames: FrameQueue | None,
    reason: str,
    error: str | None,
    elapsed: float,
) -> LoopStats:
    stages = {"read": reader.read_ms, **step.stages}
    lat, now_rss = step.latency_ms, rss_mb()
    return LoopStats(
        source=source.name,
        live=source.live,
        pipelined=not cfg.sequential,
        stop_reason=reason,
        error=error,
        frames_captured=reader.captured,
        frames_processed=step.processed,
        frames_dropped=frames.dropped if frames is not None else 0,
        frames_skipped=int(getattr(source, "skipped", 0)),
        reconnects=reader.reconnects,
        reconnect_attempts=reader.attempts,
        queue_size=cfg.queue_size,
        queue_high_water=frames.high_water if frames is not None else 0,
        elapsed_s=round(elapsed, 3),
        fps=round(step.processed / elapsed, 3) if elapsed > 0 else 0.0,
        latency_p50_ms=_pct(lat, 50),
        latency_p90_ms=_pct(lat, 90),
        latency_p99_ms=_pct(lat, 99),
        stage_median_ms={k: _pct(v, 50) for k, v in stages.items() if len(v)},
        peak_rss_mb=round(peak_rss_mb(), 2),
        rss_mb=None if now_rss is None else round(now_rss, 2),
        vocabulary_changes=step.watcher.changes if step.watcher is not None else 0,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m runtime.camera", description=__doc__.splitlines()[0])
    add_segmenter_args(p)
    p.add_argument(
        "--source",
        required=True,
        help="camera INDEX or /dev/videoN, video FILE, rtsp:// or http(s):// URL, "
        "gst:PIPELINE (ending in appsink), or a folder of images",
    )
    p.add_argument("--out", help="overlay video FILE.mp4 (mp4v) / FILE.avi (MJPG), or a PNG folder")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many processed frames")
    p.add_argument("--json", help="also write the stats here (atomically)")
    p.add_argument("--show", action="store_true", help="display in a window (OpenCV GUI build)")
    p.add_argument(
        "--watch-classes",
        metavar="FILE",
        help="live vocabulary: a class file (one class per line) read now and re-read before "
        "every frame; a change applies to the next frame (needs a folder exported with "
        "--text-encoder; replace the file atomically for a clean switch)",
    )
    p.add_argument("--queue", type=positive_int, default=2, help="capture queue size (default 2)")
    p.add_argument("--sequential", action="store_true", help="no capture thread (for comparison)")
    p.add_argument(
        "--drop",
        default="auto",
        choices=DROP_POLICIES,
        help="full queue: drop the oldest frame, or make capture wait (never); auto: "
        "oldest for cameras/streams, never for files/folders",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="deliver a file/folder at its frame rate (else --fps), like a camera",
    )
    p.add_argument(
        "--fps", type=positive_float, help="output video rate (default: the source's, else 30)"
    )
    p.add_argument("--alpha", type=unit_float, default=0.5, help="overlay opacity in [0,1]")
    p.add_argument("--no-legend", action="store_true", help="overlay only, no legend strip below")
    p.add_argument(
        "--palette",
        metavar="FILE",
        help="class colours from an image: a palette PNG or a colour strip (CamVid's "
        "palette11.png); default: a fixed VOC-style palette",
    )
    p.add_argument(
        "--overlay-stats",
        action="store_true",
        help="draw the frame rate and latency (last 30 frames) top left of the output",
    )
    p.add_argument("--fourcc", help="camera pixel format to request, e.g. MJPG")
    p.add_argument("--capture-size", type=parse_size, help="camera capture size WIDTHxHEIGHT")
    p.add_argument(
        "--reconnect-delay", type=positive_float, default=0.5, help="first reopen delay, seconds"
    )
    p.add_argument(
        "--reconnect-max-delay", type=positive_float, default=8.0, help="backoff cap, seconds"
    )
    p.add_argument(
        "--reconnect-attempts", type=nonneg_int, default=0, help="per outage; 0: unlimited"
    )
    p.add_argument(
        "--log-every", type=nonneg_float, default=10.0, help="progress log period, seconds (0: off)"
    )
    add_max_pixels_arg(p)
    add_verbose_arg(p)
    args = p.parse_args(argv)
    if args.watch_classes and args.classes:
        p.error("--classes and --watch-classes both set the vocabulary: give one")
    if args.fourcc is not None and len(args.fourcc) != 4:
        p.error(f"--fourcc must be 4 characters, e.g. MJPG, got {args.fourcc!r}")
    if args.reconnect_delay > args.reconnect_max_delay:
        p.error(
            f"--reconnect-delay ({args.reconnect_delay}) must be <= --reconnect-max-delay "
            f"({args.reconnect_max_delay})"
        )
    return args


def loop_cfg(args: argparse.Namespace) -> LoopCfg:
    """The LoopCfg for parsed command-line ``args``."""
    return LoopCfg(
        queue_size=args.queue,
        sequential=args.sequential,
        drop=args.drop,
        max_frames=args.max_frames,
        realtime=args.realtime,
        pace_fps=args.fps or DEFAULT_FPS,
        alpha=args.alpha,
        legend=not args.no_legend,
        palette_file=args.palette,
        overlay_stats=args.overlay_stats,
        backoff_initial_s=args.reconnect_delay,
        backoff_max_s=args.reconnect_max_delay,
        reconnect_attempts=args.reconnect_attempts,
        log_every_s=args.log_every,
    )


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):
    """SIGINT/SIGTERM set ``stop`` (a clean stop); a second signal raises KeyboardInterrupt.

    Signals are counted here: ``stop`` is also set by the loop itself (max frames, shutdown)."""
    received = [0]

    def handler(signum, _frame):
        received[0] += 1
        if received[0] > 1:
            raise KeyboardInterrupt
        log.warning("%s: stopping cleanly (send it again to force)", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread
        yield stop
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_cli(args: argparse.Namespace, stop: threading.Event) -> dict:
    """Load the model, open the source and the output, run the loop; returns the report."""
    cfg = loop_cfg(args)
    if args.palette:
        load_palette(args.palette)  # a bad palette fails before the model is loaded
    seg = Segmenter(**segmenter_kwargs(args))
    with seg:
        if args.classes:
            seg.set_classes(args.classes)
        watcher = (
            ClassFileWatcher(args.watch_classes, seg.set_classes) if args.watch_classes else None
        )
        width, height = args.capture_size or (None, None)
        source = open_source(
            args.source,
            SourceCfg(fourcc=args.fourcc, width=width, height=height, max_pixels=args.max_pixels),
        )
        try:
            sink = open_sink(args.out, args.fps or source.fps, args.show, stop)
        except BaseException:
            source.close()
            raise
        model = {
            "model": str(args.model),
            "backend": seg.backend.name,
            "precision": args.precision,
            "providers": list(seg.backend.providers),
            "backend_reasons": list(seg.backend_reasons),
            "classes": len(seg.classes),
            "weights_random": seg.manifest.weights.random,
            "out": args.out,
        }
        stats = run_loop(source, seg, sink, cfg, stop, watcher)
    return {**dataclasses.asdict(stats), **model, "video_codec": _video_codec(sink)}


def _video_codec(sink) -> str | None:
    """The codec the output video was written with (H.264 ``avc1`` or ``mp4v``, ``MJPG``), or
    None (no video, or no frame written)."""
    for s in (sink, *getattr(sink, "sinks", ())):
        if getattr(s, "codec", None):
            return s.codec
    return None


def check_outputs(args: argparse.Namespace) -> None:
    """``--out`` (a video file by suffix, else a PNG folder, as ``open_sink`` decides) and
    ``--json`` can be written and are distinct, before the model and the source are opened.

    Raises:
        OutputPathError: a folder where a file goes, a file where a folder goes, a file as a
            parent, no permission.
        ConfigError: ``--out`` and ``--json`` are the same path.
    """
    if args.out:
        out = Path(args.out)
        if out.suffix and not out.is_dir():
            check_output_file(out, "--out")
        else:
            check_output_dir(out, "--out")
    if args.json:
        check_output_file(args.json, "--json")
        if args.out and Path(args.json).resolve() == Path(args.out).resolve():
            raise ConfigError(f"--json {args.json!r} is the same path as --out")


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # a bad --classes fails here, before any model is loaded
    setup_logging(args.verbose)
    check_outputs(args)
    with stop_on_signals(threading.Event()) as stop:
        report = run_cli(args, stop)
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    if report["error"]:
        print(f"error: {report['error']}", file=sys.stderr)
    print(json.dumps(report))
    return 2 if report["stop_reason"] == "source_failed" else 0


if __name__ == "__main__":
    sys.exit(main())
