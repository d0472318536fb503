"""Where the camera loop's frames go: the overlay painter and the sinks (video file, PNG folder,
window), each a small class with ``write(image, frame)`` and ``close()``.

The video file is written to a hidden temp file next to the output and renamed on ``close``, so
the output path only ever holds a complete, readable video.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.errors import ConfigError, SourceError
from runtime.fsutil import atomic_write
from runtime.postprocess import (
    UNKNOWN_COLOUR,
    UNKNOWN_NAME,
    class_colours,
    legend,
    overlay,
    unknown_mask,
    with_unknown,
)
from runtime.sources import CV2_AVAILABLE, Frame, require_cv2

log = logging.getLogger(__name__)

# Codecs tried in order: H.264 where the OpenCV/FFmpeg build has an encoder (the opencv-python
# wheels do not), else what every build writes.
VIDEO_FOURCC = {".mp4": ("avc1", "mp4v"), ".avi": ("MJPG",)}
DEFAULT_FPS = 30.0
WINDOW = "ovss-edge"


class Sink(Protocol):
    """Consumes rendered frames."""

    def write(self, image: np.ndarray, frame: Frame) -> None:
        """Take one rendered HxWx3 uint8 RGB image made from ``frame``."""

    def close(self) -> None:
        """Flush and release; the output is complete after this returns."""


class Painter:
    """Colour overlay plus an optional legend strip listing every class (so the height is fixed).

    Args:
        alpha: label colour weight in [0, 1].
        with_legend: append the legend strip below the overlay.
        palette_file: class colours from an image (``runtime.postprocess.load_palette``; e.g.
            the dataset's own), else the fixed palette.
        unknown_legend: list "unknown" (pixels below a score threshold, drawn unblended) in
            the legend too.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        with_legend: bool = True,
        palette_file: str | None = None,
        unknown_legend: bool = False,
    ):
        assert 0.0 <= alpha <= 1.0, f"alpha must be in [0, 1], got {alpha}"
        self.alpha, self.with_legend, self.palette_file = alpha, with_legend, palette_file
        self.unknown_legend = unknown_legend
        self._colours: dict[tuple[str, ...], np.ndarray] = {}
        self._strips: dict[tuple[tuple[str, ...], int], np.ndarray] = {}

    def colours(self, classes: tuple[str, ...]) -> np.ndarray:
        """uint8 [C, 3] palette for ``classes`` (cached)."""
        if classes not in self._colours:
            self._colours[classes] = class_colours(len(classes), self.palette_file, extend=True)
        return self._colours[classes]

    def strip(self, classes: tuple[str, ...], width: int) -> np.ndarray:
        """The legend strip for ``classes`` at ``width`` pixels: uint8 [h, width, 3] (cached)."""
        key = (classes, width)
        if key not in self._strips:
            blank = np.zeros((1, width, 3), dtype=np.uint8)
            names, colours = list(classes), self.colours(classes)
            if self.unknown_legend:
                names, colours = names + [UNKNOWN_NAME], np.vstack([colours, UNKNOWN_COLOUR])
            self._strips[key] = legend(blank, names, colours)[1:]
        return self._strips[key]

    def blend(self, image: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
        """``runtime.postprocess.overlay``, done with OpenCV when present (about 5x faster at
        360x480, results within one grey level): HxWx3 uint8."""
        if not CV2_AVAILABLE:
            return overlay(image, labels, colours, self.alpha)
        cv2 = require_cv2()
        unknown = unknown_mask(labels, len(colours))
        table = colours if unknown is None else with_unknown(colours)
        out = cv2.addWeighted(
            image, 1.0 - self.alpha, np.take(table, labels, axis=0), self.alpha, 0.0
        )
        if unknown is not None:  # below the score threshold: the image shows through
            out[unknown] = image[unknown]
        return out

    def __call__(
        self, image: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]
    ) -> np.ndarray:
        """Render one frame.

        Args:
            image (np.ndarray): HxWx3 uint8 RGB.
            labels (np.ndarray): HxW int class indices in [0, len(classes)), or ``UNKNOWN``.
            classes: class names, index-aligned with ``labels``.
        Returns:
            np.ndarray: (H + legend)xWx3 uint8 RGB.
        """
        shown = self.blend(image, labels, self.colours(classes))
        if not self.with_legend:
            return shown
        return np.concatenate([shown, self.strip(classes, image.shape[1])], axis=0)


def _discard(path: str) -> None:
    """Remove a temp file if it exists; never raises (it runs on error paths)."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as e:
        log.debug("could not remove %s: %s", path, e)


# Whether this process's OpenCV could open a writer with a codec ({fourcc: bool}), so a missing
# encoder is tried (and its FFmpeg complaints silenced) once, not for every output.
_CODEC_WORKS: dict[str, bool] = {}


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to /dev/null for the block: FFmpeg writes its "could not find an
    encoder" lines there directly, under OpenCV's own log level."""
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class VideoSink:
    """A video file (``.mp4``: H.264 where the OpenCV build can encode it, else mp4v; ``.avi``:
    MJPG) opened at the first frame's size; ``codec`` says which was used.

    Later frames of another size are resized to it (logged once). Raises SourceError if OpenCV
    cannot open a writer; ConfigError for another suffix.
    """

    def __init__(self, path: str | os.PathLike, fps: float = DEFAULT_FPS):
        self.path, self.fps = Path(path), float(fps)
        if self.path.suffix.lower() not in VIDEO_FOURCC:
            raise ConfigError(
                f"video output must end in one of {sorted(VIDEO_FOURCC)}: {str(path)!r}"
            )
        assert self.fps > 0, f"fps must be > 0, got {fps}"
        self._writer, self._tmp, self._size, self._resized = None, None, None, False
        self.frames, self.codec = 0, None

    def _open(self, width: int, height: int) -> None:
        cv2 = require_cv2()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SourceError(f"cannot create the folder for {str(self.path)!r}: {e}") from e
        # OpenCV picks the container by suffix, so the temp name keeps it (and normal permissions)
        # (the stem is cut so that the temp name is no longer than the final one can be)
        name = f".{self.path.stem[:200]}.{os.getpid()}.tmp{self.path.suffix}"
        self._tmp = str(self.path.with_name(name))
        candidates = VIDEO_FOURCC[self.path.suffix.lower()]
        for codec in candidates:
            if not _CODEC_WORKS.get(codec, True):
                continue
            fourcc = cv2.VideoWriter_fourcc(*codec)
            probing = codec not in _CODEC_WORKS and codec != candidates[-1]
            with _quiet_stderr() if probing else contextlib.nullcontext():
                self._writer = cv2.VideoWriter(self._tmp, fourcc, self.fps, (width, height))
            _CODEC_WORKS[codec] = self._writer.isOpened() or _CODEC_WORKS.get(codec, False)
            if self._writer.isOpened():
                self.codec = codec
                break
            _discard(self._tmp)  # OpenCV may not have created it
            self._writer = None
        if self._writer is None:
            raise SourceError(f"OpenCV cannot write {str(self.path)!r} ({width}x{height})")
        log.info("writing %s with the %s codec", self.path, self.codec)
        self._size = (width, height)

    def write(self, image: np.ndarray, frame: Frame) -> None:
        cv2 = require_cv2()
        h, w = image.shape[:2]
        if self._writer is None:
            self._open(w, h)
        if (w, h) != self._size:
            if not self._resized:
                log.warning(
                    "frame size %dx%d differs from the video's %dx%d: resizing", w, h, *self._size
                )
                self._resized = True
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is None:
            if self.frames == 0:
                log.warning("no frames: %s not written", self.path)
            return
        self._writer.release()
        self._writer = None
        try:
            with open(self._tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self._tmp, self.path)
        finally:
            _discard(self._tmp)  # only left if the replace failed

    def abort(self) -> None:
        """Drop the unfinished video (the loop crashed): a previous file at ``path`` survives."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            _discard(self._tmp)


class PngFolderSink:
    """One PNG per frame, ``frame_{seq:06d}.png`` in ``folder``, each written atomically.

    Args:
        folder: created if missing.
        compress_level: zlib level 0-9 (1: fast, larger files).
    """

    def __init__(self, folder: str | os.PathLike, compress_level: int = 1):
        self.folder, self.compress_level = Path(folder), compress_level
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def write(self, image: np.ndarray, frame: Frame) -> None:
        from PIL import Image

        path = self.folder / f"frame_{frame.seq:06d}.png"
        atomic_write(
            path,
            lambda tmp: Image.fromarray(image).save(
                tmp, format="PNG", compress_level=self.compress_level
            ),
        )
        self.frames += 1

    def close(self) -> None:
        pass


def gui_available() -> bool:
    """Whether this OpenCV build has a GUI backend for ``cv2.imshow`` (headless wheels do not)."""
    cv2 = require_cv2()
    found = re.search(r"^\s*GUI:\s*(.*)$", cv2.getBuildInformation(), re.MULTILINE)
    return found is None or found.group(1).strip().upper() not in ("NONE", "NO", "")


class ShowSink:
    """A ``cv2.imshow`` window; pressing q or Esc in it sets ``stop``.

    Raises:
        ConfigError: this OpenCV build has no GUI (e.g. opencv-python-headless).
    """

    def __init__(self, stop: threading.Event):
        cv2 = require_cv2()
        message = (
            "--show needs an OpenCV build with a GUI (pip install opencv-python, not "
            "opencv-python-headless, and a display); write --out instead"
        )
        if not gui_available():
            raise ConfigError(message)
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise ConfigError(f"{message}: {e}") from e
        self.stop = stop

    def write(self, image: np.ndarray, frame: Frame) -> None:
        cv2 = require_cv2()
        cv2.imshow(WINDOW, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            log.info("window key: stopping")
            self.stop.set()

    def close(self) -> None:
        require_cv2().destroyWindow(WINDOW)


class NullSink:
    """Discards frames (benchmarks, dry runs)."""

    def write(self, image: np.ndarray, frame: Frame) -> None:
        pass

    def close(self) -> None:
        pass


class TeeSink:
    """Writes every frame to each of ``sinks``; ``close`` closes them all, even if one fails."""

    def __init__(self, sinks: Sequence[Sink]):
        self.sinks = list(sinks)

    def write(self, image: np.ndarray, frame: Frame) -> None:
        for sink in self.sinks:
            sink.write(image, frame)

    def close(self) -> None:
        self._each("close")

    def abort(self) -> None:
        """Abort the sinks that can (unfinished videos are dropped), close the others."""
        self._each("abort")

    def _each(self, method: str) -> None:
        errors = []
        for sink in self.sinks:
            try:
                getattr(sink, method, sink.close)()
            except Exception as e:  # finish the rest, then report the first failure
                errors.append(e)
        if errors:
            raise errors[0]


def open_sink(out: str | None, fps: float | None, show: bool, stop: threading.Event) -> Sink:
    """The sink for the CLI's ``--out`` (video by suffix, else a PNG folder) and ``--show``.

    Args:
        out: ``FILE.mp4`` / ``FILE.avi``, a folder for PNGs, or None.
        fps: output video frame rate (None: DEFAULT_FPS).
        show: also display in a window.
        stop: set by the window on q / Esc.
    """
    sinks: list[Sink] = []
    if out and Path(out).suffix and not Path(out).is_dir():
        sinks.append(VideoSink(out, fps or DEFAULT_FPS))
    elif out:
        sinks.append(PngFolderSink(out))
    if show:
        sinks.append(ShowSink(stop))
    if not sinks:
        return NullSink()
    return sinks[0] if len(sinks) == 1 else TeeSink(sinks)
