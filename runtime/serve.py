"""A small HTTP server around one Segmenter: a live page, an MJPEG stream and a JSON API.

    python -m runtime.serve --model DIR [--source SRC] [--port 8000] [--host 127.0.0.1]

Endpoints (stdlib ``http.server``, one thread per connection):

- ``GET /``: one HTML page (inline JS, no external assets): the stream, a class box, a score
  threshold slider, the legend, the frame rate and an image upload.
- ``GET /stream``: ``multipart/x-mixed-replace`` JPEG overlays with the legend strip: frames of
  ``--source`` (``runtime.sources``; a file or folder loops), or, without one, the overlay of the
  latest upload.
- ``GET /legend``: ``{"classes": [...], "colours": ["#rrggbb", ...], "unknown": "#808080"|null}``.
- ``GET /stats``: ``{"fps", "frames", "uploads", "classes", "threshold", "model", "source",
  "text_encoder"}``.
- ``POST /segment`` with PNG/JPEG bytes: ``{"classes", "labels_png" (base64 palette PNG whose
  pixel values are the class indices, 255 = unknown), "shape": [H, W], "present", "unknown"}``.
- ``POST /classes`` ``{"classes": [...]}`` (folders exported with ``--vocab-mode input
  --text-encoder``) and ``POST /threshold`` ``{"value": T}`` with T in [0, 1).

Bad requests get 400 and ``{"error": message}``, unknown paths 404. Inference is serialised by
one lock around the shared Segmenter. Binds 127.0.0.1 unless told otherwise: there is no
authentication. SIGINT/SIGTERM stop cleanly (the stream thread joins, the model is closed).
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import logging
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np

from runtime.cli import (
    ArgumentParser,
    add_segmenter_args,
    add_verbose_arg,
    bounded_int,
    cli_main,
    missing_extra,
    positive_float,
    positive_int,
    segmenter_kwargs,
    setup_logging,
    unit_float,
)
from runtime.errors import ConfigError, InvalidImageError, OvssError
from runtime.frame_queue import CaptureThread, FrameQueue, QueueClosed, Reader
from runtime.image import as_rgb_uint8
from runtime.postprocess import UNKNOWN_COLOUR, label_png
from runtime.segmenter import Segmenter, SegResult
from runtime.serve_page import PAGE
from runtime.sources import SourceCfg, open_source
from runtime.video_out import Painter

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
JSON_MAX_BYTES = 64 * 1024
BOUNDARY = "ovssframe"


class RequestError(OvssError, ValueError):
    """A bad request: answered 400 with ``{"error": message}``."""


@dataclass(frozen=True)
class ServeCfg:
    """Server settings.

    Attributes:
        max_bytes: largest accepted upload body, bytes.
        max_pixels: largest accepted upload, width x height (checked before decoding).
        pace_fps: frame rate at which a file or folder source is read (live ones: as they come).
        jpeg_quality: stream JPEG quality in [1, 95].
        alpha: overlay opacity in [0, 1].
    """

    max_bytes: int = 20 * 2**20
    max_pixels: int = 25_000_000
    pace_fps: float = 10.0
    jpeg_quality: int = 80
    alpha: float = 0.5

    def __post_init__(self):
        if self.max_bytes < 1 or self.max_pixels < 1 or self.pace_fps <= 0:
            raise ConfigError(f"max_bytes, max_pixels and pace_fps must be positive: {self}")
        if not (1 <= self.jpeg_quality <= 95 and 0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"need jpeg_quality in [1, 95] and alpha in [0, 1]: {self}")


def decode_image(body: bytes, max_pixels: int) -> np.ndarray:
    """PNG/JPEG (any format Pillow reads) bytes -> HxWx3 uint8 RGB, as ``runtime.image``.

    Raises:
        InvalidImageError: empty, not an image, truncated, non-8-bit, or over ``max_pixels``.
    """
    from PIL import Image

    if not body:
        raise InvalidImageError("empty upload: send the image file's bytes as the request body")
    try:
        with Image.open(io.BytesIO(body)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise InvalidImageError(f"image is {w}x{h}, over the {max_pixels} pixel limit")
            im.load()
            if im.mode in ("I", "I;16", "F"):
                raise InvalidImageError(f"a {im.mode} (non-8-bit) image is not supported")
            rgb = im.convert("RGB")
    except InvalidImageError:
        raise
    except Exception as e:  # UnidentifiedImageError, OSError, DecompressionBombError, ...
        raise InvalidImageError(f"cannot decode the upload as an image: {e}") from e
    return as_rgb_uint8(np.asarray(rgb, dtype=np.uint8))


def _hex(colour) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in colour)


class App:
    """The shared state: one Segmenter (inference under a lock), the painter, the latest
    stream frame and the counters. ``start()`` runs the source thread, ``close()`` stops it.

    Args:
        seg: the Segmenter (the caller closes it).
        cfg: server settings.
        source: a ``runtime.sources.open_source`` spec, or None (the stream shows uploads).
    """

    def __init__(self, seg: Segmenter, cfg: ServeCfg | None = None, source: str | None = None):
        self.seg, self.cfg, self.source = seg, cfg or ServeCfg(), source
        self.stop = threading.Event()
        self._lock = threading.Lock()  # one inference at a time
        self._painters = {u: Painter(self.cfg.alpha, unknown_legend=u) for u in (False, True)}
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self.frames = self.uploads = self._seq = 0
        self._done: collections.deque[float] = collections.deque(maxlen=30)
        self._thread: threading.Thread | None = None

    # --- inference and painting --------------------------------------------------------

    def segment(self, image: np.ndarray) -> SegResult:
        """``seg(image)`` under the inference lock. image (np.ndarray): HxWx3 uint8 RGB."""
        with self._lock:
            return self.seg(image)

    def _painter(self) -> Painter:
        return self._painters[self.seg.score_threshold > 0]

    def paint(self, image: np.ndarray, result: SegResult) -> bytes:
        """The overlay of ``result`` on ``image``, with its legend strip, as JPEG bytes."""
        from PIL import Image

        shown = self._painter()(image, result.labels, tuple(result.classes))
        buf = io.BytesIO()
        Image.fromarray(shown).save(buf, "JPEG", quality=self.cfg.jpeg_quality)
        return buf.getvalue()

    def upload(self, body: bytes) -> dict:
        """Segment an uploaded image file; the ``POST /segment`` answer."""
        if len(body) > self.cfg.max_bytes:
            raise InvalidImageError(f"upload is {len(body)} bytes, over {self.cfg.max_bytes}")
        image = decode_image(body, self.cfg.max_pixels)
        result = self.segment(image)
        colours = self._painter().colours(tuple(result.classes))
        png = io.BytesIO()
        label_png(result.labels, colours).save(png, "PNG")
        with self._cond:
            self.uploads += 1
        if self.source is None:  # without a source the stream shows the uploads
            self.publish(self.paint(image, result))
        return {
            "classes": list(result.classes),
            "labels_png": base64.b64encode(png.getvalue()).decode("ascii"),
            "shape": list(result.labels.shape),
            "present": list(result.classes_present),
            "unknown": round(float(result.unknown), 6),
        }

    # --- vocabulary, threshold, legend, stats ---------------------------------------------

    def set_classes(self, names) -> None:
        """Encode ``names`` on the device (the swap itself is atomic in the Segmenter)."""
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RequestError('send {"classes": ["name", ...]}: a list of strings')
        try:
            self.seg.set_classes(names)
        except ImportError as e:
            raise RequestError(missing_extra(e) or str(e)) from e

    def set_threshold(self, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestError('send {"value": T} with a number T in [0, 1)')
        self.seg.score_threshold = value  # ConfigError outside [0, 1)

    def legend(self) -> dict:
        classes = tuple(self.seg.classes)
        colours = self._painter().colours(classes)
        unknown = _hex(UNKNOWN_COLOUR) if self.seg.score_threshold > 0 else None
        return {"classes": list(classes), "colours": [_hex(c) for c in colours], "unknown": unknown}

    def stats(self) -> dict:
        with self._cond:
            done, frames, uploads = list(self._done), self.frames, self.uploads
        fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0
        return {
            "fps": round(fps, 2),
            "frames": frames,
            "uploads": uploads,
            "classes": list(self.seg.classes),
            "threshold": self.seg.score_threshold,
            "model": str(self.seg.folder),
            "source": self.source,
            "text_encoder": self.seg.manifest.text_encoder is not None,
        }

    # --- the stream -------------------------------------------------------------------------

    def publish(self, jpeg: bytes) -> None:
        with self._cond:
            self._jpeg, self._seq = jpeg, self._seq + 1
            self._done.append(time.perf_counter())
            self._cond.notify_all()

    def next_frame(self, after: int, timeout: float = 0.5) -> tuple[int, bytes] | None:
        """The newest frame (seq, JPEG) once its seq is above ``after``; None on timeout or stop."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self.stop.is_set(), timeout)
            if self._seq <= after or self.stop.is_set() or self._jpeg is None:
                return None
            return self._seq, self._jpeg

    def start(self) -> None:
        """Start the source thread (no-op without a source). Opens it once here, so a bad
        ``--source`` fails before the server binds."""
        if self.source is None:
            return
        open_source(self.source, SourceCfg(max_pixels=self.cfg.max_pixels)).close()
        self._thread = threading.Thread(target=self._run_source, name="ovss-serve", daemon=True)
        self._thread.start()

    def _run_source(self) -> None:
        while not self.stop.is_set():
            try:
                if not self._one_pass() and not self.stop.is_set():
                    log.warning("stream %s gave no frame (retrying in 1 s)", self.source)
                    self.stop.wait(1.0)
            except Exception as e:  # a source or inference failure: log, wait, open it again
                log.error("stream %s failed: %s (retrying in 1 s)", self.source, e)
                self.stop.wait(1.0)

    def _one_pass(self) -> int:
        """Read the source to its end (a file or folder), segmenting the newest frames; returns
        the number of frames shown."""
        source = open_source(self.source, SourceCfg(max_pixels=self.cfg.max_pixels))
        reader = Reader(source, threading.Event(), pace_fps=self.cfg.pace_fps)
        capture = CaptureThread(reader, FrameQueue(1, drop_oldest=source.live))
        shown = 0
        try:
            while not self.stop.is_set():
                try:
                    frame = capture.frames.get(timeout=0.5)
                except queue.Empty:
                    continue
                except QueueClosed:
                    break
                jpeg = self.paint(frame.image, self.segment(frame.image))
                with self._cond:
                    self.frames += 1
                self.publish(jpeg)
                shown += 1
        finally:
            capture.join(2.0)
            source.close()
        if capture.error is not None:
            raise capture.error
        return shown

    def close(self) -> None:
        """Stop the source thread and wake every stream connection."""
        self.stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)


# --- HTTP ------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """Routes one request to the server's ``App``; every error is a JSON answer, never a crash."""

    server_version = "ovss-serve"
    server: Server

    def do_GET(self) -> None:
        self._route(
            {
                "/": self._page,
                "/stream": self._stream,
                "/legend": self._legend,
                "/stats": self._stats,
            }
        )

    def do_POST(self) -> None:
        self._route(
            {"/segment": self._segment, "/classes": self._classes, "/threshold": self._threshold}
        )

    def _route(self, routes: dict) -> None:
        path = urlsplit(self.path).path
        handler = routes.get(path)
        try:
            if handler is None:
                status = 405 if path in ROUTES else 404
                self._json({"error": f"no {self.command} {path}"}, status)
            else:
                handler()
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            self.close_connection = True
        except OvssError as e:  # bad image, vocabulary, threshold, or a folder without encoder
            self._json({"error": str(e)}, 400)
        except Exception as e:
            log.exception("%s %s failed", self.command, path)
            self._json({"error": f"internal error: {type(e).__name__}: {e}"}, 500)

    @property
    def app(self) -> App:
        return self.server.app

    def _json(self, payload: dict, status: int = 200) -> None:
        self._send(json.dumps(payload).encode(), "application/json", status)

    def _send(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _body(self, limit: int, what: str) -> bytes:
        """The request body, at most ``limit`` bytes (a larger one is drained, then refused)."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(
                f"{what} needs a Content-Length header (no chunked bodies)"
            ) from None
        if length < 0:
            raise RequestError(f"bad Content-Length {length}")
        if length > limit:
            self.close_connection = True
            left = min(length, 64 * 2**20)  # read what the client sends so it sees the answer
            while left > 0 and (chunk := self.rfile.read(min(left, 2**16))):
                left -= len(chunk)
            raise InvalidImageError(f"{what} is {length} bytes, over the {limit} byte limit")
        return self.rfile.read(length)

    def _json_body(self) -> dict:
        try:
            payload = json.loads(self._body(JSON_MAX_BYTES, "the JSON body"))
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not JSON: {e}") from None
        if not isinstance(payload, dict):
            raise RequestError("the body must be a JSON object")
        return payload

    def _page(self) -> None:
        self._send(PAGE.encode(), "text/html; charset=utf-8")

    def _legend(self) -> None:
        self._json(self.app.legend())

    def _stats(self) -> None:
        self._json(self.app.stats())

    def _segment(self) -> None:
        self._json(self.app.upload(self._body(self.app.cfg.max_bytes, "the upload")))

    def _classes(self) -> None:
        self.app.set_classes(self._json_body().get("classes"))
        self._json(self.app.legend())

    def _threshold(self) -> None:
        self.app.set_threshold(self._json_body().get("value"))
        self._json({"threshold": self.app.seg.score_threshold})

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        seq = 0
        while not self.app.stop.is_set():
            got = self.app.next_frame(seq)
            if got is None:
                continue
            seq, jpeg = got
            head = (
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            )
            self.wfile.write(head.encode() + jpeg + b"\r\n")
            self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


ROUTES = ("/", "/stream", "/legend", "/stats", "/segment", "/classes", "/threshold")


class Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` (daemon connection threads) serving ``app``; IPv6 hosts too."""

    daemon_threads = True

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0):
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def warn_if_public(host: str) -> bool:
    """Log a warning (and return True) when ``host`` is not a loopback address."""
    if host in LOOPBACK:
        return False
    log.warning(
        "listening on %s: anyone who can reach this machine can use the model and see the "
        "stream (there is no authentication); the default 127.0.0.1 is local only",
        host,
    )
    return True


def serve(app: App, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then stop the stream, the connections and the server."""
    from runtime.camera import stop_on_signals

    warn_if_public(host)
    server = Server(app, host, port)
    thread = threading.Thread(target=server.serve_forever, name="ovss-http", daemon=True)
    with stop_on_signals(threading.Event()) as stop:
        thread.start()
        log.info("serving %s on %s (Ctrl-C stops)", app.seg.folder, server.url)
        while not stop.wait(0.5):
            pass
    app.close()
    server.shutdown()
    server.server_close()
    thread.join(5.0)
    log.info("stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m runtime.serve", description=__doc__.splitlines()[0])
    add_segmenter_args(p)
    p.add_argument(
        "--source",
        help="stream this through the model (runtime.sources: camera INDEX, /dev/videoN, video "
        "FILE, URL, gst:PIPELINE or an image folder; files and folders loop); default: none, "
        "the page shows uploaded images",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=bounded_int(0, 65535), default=8000, help="port (default 8000; 0: any)"
    )
    p.add_argument(
        "--max-bytes", type=positive_int, default=ServeCfg.max_bytes, help="largest upload, bytes"
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=ServeCfg.max_pixels,
        help="largest upload, width x height",
    )
    p.add_argument(
        "--fps",
        type=positive_float,
        default=ServeCfg.pace_fps,
        help="rate at which a file or folder source is read (default 10)",
    )
    p.add_argument("--alpha", type=unit_float, default=ServeCfg.alpha, help="overlay opacity")
    add_verbose_arg(p)
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    cfg = ServeCfg(args.max_bytes, args.max_pixels, args.fps, alpha=args.alpha)
    with Segmenter(**segmenter_kwargs(args)) as seg:
        if args.classes:
            seg.set_classes(args.classes)
        app = App(seg, cfg, args.source)
        try:
            app.start()
            serve(app, args.host, args.port)
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
