"""Frame sources for the camera loop: cameras, streams, GStreamer pipelines, videos, image folders.

``open_source(spec)`` turns a command-line string into a ``FrameSource``:

- ``0``, ``1``, ... or ``/dev/videoN``: a local camera (OpenCV, V4L2 on Linux); live.
- ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``: a network stream
  (OpenCV's FFMPEG backend, with open/read timeouts); live.
- ``gst:PIPELINE``: a GStreamer pipeline ending in ``appsink`` (needs an OpenCV built with
  GStreamer); live.
- a folder: its image files in sorted name order; finite. Unreadable files are logged and skipped.
- an image file: that one image; finite.
- any other existing file: a video file (OpenCV, FFMPEG); finite.

Every source yields ``Frame`` objects: HxWx3 uint8 RGB, a sequence number that increases by one per
frame delivered (and keeps counting across reopenings), and a ``time.perf_counter()`` capture time.
OpenCV is imported lazily (extra ``[camera]``); image folders need only Pillow.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.errors import FrameTooLargeError, InvalidImageError, SourceError
from runtime.image import DEFAULT_MAX_PIXELS, load_image

log = logging.getLogger(__name__)

CV2_AVAILABLE = find_spec("cv2") is not None
GST_PREFIX = "gst:"
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_DEVICE = re.compile(r"^/dev/video(\d+)$")


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        image: HxWx3 uint8 RGB [0,255].
        seq: 0-based sequence number, +1 per frame this source delivered (across reopenings).
        t_capture: ``time.perf_counter()`` seconds when the frame was read.
    """

    image: np.ndarray
    seq: int
    t_capture: float


@dataclass(frozen=True)
class SourceCfg:
    """How to open a source.

    Attributes:
        fourcc: camera pixel format to request, e.g. "MJPG" (cameras only; None: driver default).
        width, height: camera capture size to request in pixels (cameras only; None: default).
        timeout_ms: open and read timeout for network streams, milliseconds.
        max_pixels: largest frame, width x height (``--max-pixels``; 0: no limit). Video
            sources whose reported frame size is over it are refused at open (and any frame over
            it stops the source); image files over it are skipped, from their header.
    """

    fourcc: str | None = None
    width: int | None = None
    height: int | None = None
    timeout_ms: int = 5000
    max_pixels: int = DEFAULT_MAX_PIXELS


class FrameSource(Protocol):
    """What the camera loop needs from a source."""

    name: str
    live: bool  # camera/stream: a failed read means reconnect; finite: a failed read means the end
    fps: float | None  # nominal frame rate, None when unknown

    def read(self) -> Frame | None:
        """The next frame, or None at the end (finite) or on a failed read (live)."""

    def reopen(self) -> None:
        """Close and open again; raises SourceError when it cannot."""

    def close(self) -> None:
        """Release the device, stream or file."""


def require_cv2():
    """Import OpenCV or raise an ImportError that names the extra to install."""
    if not CV2_AVAILABLE:
        raise ImportError("cameras and video files need OpenCV: pip install 'ovss-edge[camera]'")
    import cv2

    return cv2


def build_has(feature: str) -> bool:
    """Whether ``cv2.getBuildInformation()`` lists ``feature`` (e.g. "GStreamer") as YES."""
    cv2 = require_cv2()
    pattern = re.compile(rf"^\s*{re.escape(feature)}:\s*(.*)$", re.MULTILINE)
    found = pattern.search(cv2.getBuildInformation())
    return bool(found) and found.group(1).strip().upper().startswith("YES")


def gstreamer_available() -> bool:
    """Whether this OpenCV build can open ``gst:`` pipelines."""
    return build_has("GStreamer")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR, BGRA or gray uint8 frame as contiguous HxWx3 RGB uint8."""
    cv2 = require_cv2()
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class CaptureSource:
    """A ``cv2.VideoCapture``: camera index, stream URL, GStreamer pipeline or video file.

    Args:
        target: device index (int) or a file name / URL / pipeline string.
        api: OpenCV backend id (``cv2.CAP_V4L2``, ``cv2.CAP_FFMPEG``, ...).
        name: what to call it in logs and errors.
        live: whether a failed read means reconnect (True) or end of stream (False).
        params: flat ``[prop, value, ...]`` list passed to ``cv2.VideoCapture`` at open.
        cfg: camera format and size to request after opening (cameras only).
    Raises:
        SourceError: OpenCV cannot open it.
    """

    def __init__(
        self,
        target: int | str,
        api: int,
        name: str,
        live: bool,
        params: list[int] | None = None,
        cfg: SourceCfg | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.target, self.api, self.name, self.live = target, api, name, live
        self._params, self._cfg, self.max_pixels = params or [], cfg, max_pixels
        self._seq = 0
        self._cap = self._open()
        fps = self._cap.get(require_cv2().CAP_PROP_FPS)
        self.fps = float(fps) if math.isfinite(fps) and 0 < fps < 1000 else None
        count = self._cap.get(require_cv2().CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and count > 0 else 0

    def _open(self):
        cv2 = require_cv2()
        cap = cv2.VideoCapture(self.target, self.api, self._params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}")
        if self._cfg is not None:
            self._request_format(cap, self._cfg)
        w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        if math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0:
            try:
                self._check_size(int(w), int(h))
            except SourceError:
                cap.release()
                raise
        return cap

    def _check_size(self, width: int, height: int) -> None:
        """Refuse frames over ``max_pixels`` (SourceError naming the flag)."""
        if self.max_pixels and width * height > self.max_pixels:
            raise FrameTooLargeError(
                f"{self.name} gives {width}x{height} = {width * height:,} pixel frames, over the "
                f"limit of {self.max_pixels:,}; raise it with --max-pixels N (0: no limit)"
            )

    @staticmethod
    def _request_format(cap, cfg: SourceCfg) -> None:
        cv2 = require_cv2()
        if cfg.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        if cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)

    def read(self) -> Frame | None:
        ok, image = self._cap.read()
        if not ok or image is None or image.size == 0:
            return None
        self._check_size(image.shape[1], image.shape[0])
        frame = Frame(to_rgb(image), self._seq, time.perf_counter())
        self._seq += 1
        return frame

    def reopen(self) -> None:
        self._cap.release()
        self._cap = self._open()

    def close(self) -> None:
        self._cap.release()


class ImageFilesSource:
    """Image files read in the given order with Pillow; files that fail to decode are skipped.

    Args:
        paths: image files, in the order to deliver them.
        name: what to call it in logs and errors.
    Attributes:
        skipped: number of files that could not be read so far.
    """

    live = False
    fps = None

    def __init__(self, paths: list[Path], name: str, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.paths, self.name, self.max_pixels = list(paths), name, max_pixels
        self._next, self._seq, self.skipped = 0, 0, 0

    def read(self) -> Frame | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            try:
                image = load_image(path, max_pixels=self.max_pixels)
            except InvalidImageError as e:
                self.skipped += 1
                log.warning("skipping unreadable image %s: %s", path, e)
                continue
            frame = Frame(image, self._seq, time.perf_counter())
            self._seq += 1
            return frame
        return None

    def reopen(self) -> None:
        raise SourceError(f"{self.name} is finite and cannot be reopened")

    def close(self) -> None:
        self._next = len(self.paths)


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720); an argparse ``type`` (raises ArgumentTypeError)."""
    import argparse

    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1280x720, got {text!r}")
    return int(w), int(h)


def list_images(folder: Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _camera(index: int, spec: str, cfg: SourceCfg) -> CaptureSource:
    cv2 = require_cv2()
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    return CaptureSource(
        index, api, f"camera {spec!r}", live=True, cfg=cfg, max_pixels=cfg.max_pixels
    )


def _stream(url: str, cfg: SourceCfg) -> CaptureSource:
    cv2 = require_cv2()
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        cfg.timeout_ms,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        cfg.timeout_ms,
    ]
    source = CaptureSource(
        url, cv2.CAP_FFMPEG, f"stream {url!r}", live=True, params=params, max_pixels=cfg.max_pixels
    )
    # A file served over http(s) has a frame count and an end: replaying it forever is wrong.
    if source.frame_count > 0 and url.lower().startswith(("http://", "https://")):
        source.live = False
    return source


def _gstreamer(pipeline: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> CaptureSource:
    cv2 = require_cv2()
    if not pipeline.strip():
        raise SourceError("gst: needs a pipeline after the prefix, ending in appsink")
    if not gstreamer_available():
        raise SourceError(
            f"this OpenCV {cv2.__version__} build has no GStreamer support "
            "(cv2.getBuildInformation() shows 'GStreamer: NO'); use an OpenCV built with "
            "GStreamer, e.g. JetPack's python3-opencv, instead of the opencv-python wheels"
        )
    name = f"GStreamer pipeline {pipeline!r}"
    return CaptureSource(pipeline, cv2.CAP_GSTREAMER, name, live=True, max_pixels=max_pixels)


def _folder(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFilesSource:
    files = list_images(path)
    if not files:
        raise SourceError(
            f"image folder {str(path)!r} has no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    return ImageFilesSource(files, f"image folder {str(path)!r}", max_pixels)


def _video_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> CaptureSource:
    cv2 = require_cv2()
    name = f"video file {str(path)!r}"
    return CaptureSource(str(path), cv2.CAP_FFMPEG, name, live=False, max_pixels=max_pixels)


def open_source(spec: str, cfg: SourceCfg | None = None) -> FrameSource:
    """Open a source from its command-line form (see the module docstring).

    Args:
        spec: ``INDEX``, ``/dev/videoN``, a stream URL, ``gst:PIPELINE``, a folder or a file.
        cfg: camera format/size and stream timeouts (defaults: ``SourceCfg()``).
    Raises:
        SourceError: it does not exist, cannot be opened, or needs a missing OpenCV feature.
    """
    cfg = cfg or SourceCfg()
    spec = spec.strip()
    if spec.startswith(GST_PREFIX):
        return _gstreamer(spec[len(GST_PREFIX) :], cfg.max_pixels)
    if spec.isdigit():
        return _camera(int(spec), spec, cfg)
    device = _DEVICE.match(spec)
    if device:
        if not Path(spec).exists():
            raise SourceError(f"camera device {spec!r} does not exist (is the camera plugged in?)")
        return _camera(int(device.group(1)), spec, cfg)
    if spec.lower().startswith(STREAM_SCHEMES):
        return _stream(spec, cfg)
    path = Path(spec)
    if path.is_dir():
        return _folder(path, cfg.max_pixels)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([path], f"image {spec!r}", cfg.max_pixels)
        return _video_file(path, cfg.max_pixels)
    if "/" in spec or path.suffix:
        raise SourceError(f"source file or folder {spec!r} does not exist")
    raise SourceError(
        f"source {spec!r} is not a camera index, /dev/videoN, stream URL, "
        "gst: pipeline, or an existing file or folder"
    )
