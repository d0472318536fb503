"""The capture side of the camera loop: reading a source, the bounded queue, the capture thread.

- ``Reader`` reads frames from a source, paces a finite one at a frame rate when asked, and reopens
  a failed live one with exponential backoff.
- ``FrameQueue``: when full, ``put`` either drops the OLDEST queued item (a live camera: the newest
  frame is the one worth segmenting) or waits for room (a file: every frame is processed). Drops
  are counted, and so is the highest depth reached, which never exceeds ``size``.
- ``CaptureThread`` runs a Reader into a FrameQueue and hands back the error it stopped on.
- ``Ring`` keeps the last N timing samples in a fixed array.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Generic, TypeVar

import numpy as np

from runtime.errors import FrameTooLargeError, SourceError
from runtime.sources import Frame, FrameSource

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueClosed(Exception):
    """``get`` on a queue that was closed and has been drained."""


class FrameQueue(Generic[T]):
    """Bounded FIFO for one producer and one consumer.

    Args:
        size: capacity, >= 1.
        drop_oldest: when full, drop the oldest item (True) or block the producer (False).
    Attributes:
        dropped: items dropped so far.
        high_water: the largest depth reached so far (<= size).
    """

    def __init__(self, size: int, drop_oldest: bool = True):
        assert size >= 1, f"queue size must be >= 1, got {size}"
        self.size, self.drop_oldest = size, drop_oldest
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.high_water = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T, stop: threading.Event | None = None, poll_s: float = 0.05) -> bool:
        """Add ``item``; returns False (item not added) if the queue is closed or ``stop`` is set
        while waiting for room in blocking mode."""
        with self._cond:
            while not self.drop_oldest and len(self._items) >= self.size:
                if self._closed or (stop is not None and stop.is_set()):
                    return False
                self._cond.wait(poll_s)
            if self._closed:
                return False
            if len(self._items) >= self.size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T:
        """Take the oldest item.

        Raises:
            queue.Empty: nothing arrived within ``timeout`` seconds.
            QueueClosed: the queue is closed and empty.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise queue.Empty
            if not self._items:
                raise QueueClosed
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more puts; ``get`` drains what is left, then raises QueueClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Ring:
    """The last ``size`` float samples in a preallocated float64 array, so memory stays flat
    however long the loop runs."""

    def __init__(self, size: int):
        assert size >= 1, f"ring size must be >= 1, got {size}"
        self._data = np.zeros(size, dtype=np.float64)
        self._count = 0

    def append(self, value: float) -> None:
        self._data[self._count % self._data.size] = value
        self._count += 1

    def __len__(self) -> int:
        return min(self._count, self._data.size)

    def values(self) -> np.ndarray:
        """float64 [len(self)] samples (in no particular order)."""
        return self._data[: len(self)]


class Reader:
    """Reads a source for the loop: paces a finite one, reopens a failed live one.

    Args:
        source: the frame source.
        stop: set it to make ``next`` return None (it also cuts a pacing or backoff wait short).
        pace_fps: deliver a finite source at this rate (None: as fast as it reads).
        backoff_initial_s, backoff_max_s: reopen delay, doubling from initial up to max.
        reconnect_attempts: reopen attempts per outage before giving up (0: never give up).
        window: read timings kept (the most recent).
    Attributes:
        captured, reconnects, attempts: frames delivered, successful and attempted reopenings.
        read_ms: the last ``window`` ``source.read()`` durations, ms.
    """

    def __init__(
        self,
        source: FrameSource,
        stop: threading.Event,
        *,
        pace_fps: float | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        reconnect_attempts: int = 0,
        window: int = 10_000,
    ):
        self.source, self.stop = source, stop
        self.backoff = (backoff_initial_s, backoff_max_s)
        self.reconnect_attempts = reconnect_attempts
        self.captured = self.reconnects = self.attempts = 0
        self.read_ms = Ring(window)
        self._period = 1.0 / pace_fps if pace_fps and not source.live else 0.0
        self._t0: float | None = None
        # One outage lasts until a frame arrives: a reopen that "works" but delivers nothing
        # (an RTSP server with no frames) keeps counting attempts and growing the delay.
        self._outage_attempts, self._delay = 0, backoff_initial_s

    def next(self) -> Frame | None:
        """The next frame; None when the source ended or ``stop`` is set.

        Raises:
            SourceError: a live source stayed down for ``reconnect_attempts`` attempts, or a
                finite one raised.
        """
        while not self.stop.is_set():
            if not self._pace():
                return None
            frame = self._read()
            if frame is not None:
                self.captured += 1
                self._outage_attempts, self._delay = 0, self.backoff[0]
                return frame
            if not self.source.live:
                return None
            self._reconnect()
        return None

    def _pace(self) -> bool:
        if not self._period:
            return True
        now = time.perf_counter()
        self._t0 = now if self._t0 is None else self._t0
        wait = self._t0 + self.captured * self._period - now
        if wait < 0:  # behind (the loop stalled): re-anchor rather than burst to catch up
            self._t0 -= wait
            return True
        return not self.stop.wait(wait)

    def _read(self) -> Frame | None:
        t0 = time.perf_counter()
        try:
            frame = self.source.read()
        except FrameTooLargeError:  # a reconnect would give the same frames
            raise
        except Exception as e:  # OpenCV and user sources raise anything
            if not self.source.live:
                raise SourceError(f"{self.source.name} failed: {e}") from e
            log.warning("%s: read failed: %s", self.source.name, e)
            return None
        if frame is not None:
            self.read_ms.append((time.perf_counter() - t0) * 1e3)
        return frame

    def _reconnect(self) -> None:
        """Wait, then reopen, until a reopen succeeds; the attempt count and the (doubling,
        capped) delay carry over to the next failure until a frame actually arrives."""
        while not self.stop.is_set():
            attempt, delay = self._outage_attempts, self._delay
            if self.reconnect_attempts and attempt >= self.reconnect_attempts:
                raise SourceError(
                    f"{self.source.name} failed and {attempt} reconnect attempts "
                    "did not bring it back"
                )
            self._outage_attempts += 1
            self._delay = min(2 * delay, self.backoff[1])
            log.warning(
                "%s: no frame; reopening in %.2f s (attempt %d)",
                self.source.name,
                delay,
                attempt + 1,
            )
            if self.stop.wait(delay):
                return
            self.attempts += 1
            try:
                self.source.reopen()
            except FrameTooLargeError:
                raise
            except Exception as e:  # try again later, with a longer delay
                log.warning("%s: reopen failed: %s", self.source.name, e)
                continue
            self.reconnects += 1
            log.info("%s: reopened after %d attempt(s)", self.source.name, attempt + 1)
            return


class CaptureThread:
    """A daemon thread that moves frames from ``reader`` into ``frames`` until the source ends or
    ``reader.stop`` is set, then closes the queue. ``error`` holds the exception it stopped on."""

    def __init__(self, reader: Reader, frames: FrameQueue[Frame]):
        self.reader, self.frames = reader, frames
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="ovss-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            stop = self.reader.stop
            while (frame := self.reader.next()) is not None and self.frames.put(frame, stop):
                pass
        except Exception as e:  # reported by the loop as source_failed
            self.error = e
        finally:
            self.frames.close()

    def join(self, timeout_s: float) -> bool:
        """Set ``stop``, wait up to ``timeout_s``; False if the thread is still stuck in a read."""
        self.reader.stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
