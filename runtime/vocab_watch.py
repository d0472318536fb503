"""A watched class file: the camera loop's live vocabulary (torch-free).

``ClassFileWatcher.poll()`` runs between frames: it reads the file (a few bytes, every frame),
and when its content changed and parses to another vocabulary, hands the new names to
``apply`` (``Segmenter.set_classes``), so the next frame is segmented with them. A file that is
momentarily empty, half-written or invalid keeps the current vocabulary (with a warning): the
stream never stops for it. Replace the file atomically (write a temporary file, then rename)
for a clean switch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from runtime.errors import VocabularyError
from runtime.vocab import read_class_file

log = logging.getLogger(__name__)


class ClassFileWatcher:
    """Args:
    path: the class file (one class per line, # comments; see ``runtime.vocab``).
    apply: called with the new names (a tuple) when they change; e.g. ``seg.set_classes``.
        If it raises a VocabularyError the current vocabulary stays.
    Raises:
        VocabularyError: the file cannot be read or parsed at start-up (nothing to keep then).
    Attributes:
        changes: vocabularies applied after the first; errors: changes refused.
    """

    def __init__(self, path: str | Path, apply: Callable[[tuple[str, ...]], None]):
        self.path, self.apply = Path(path), apply
        self.changes = self.errors = 0
        self._unreadable = False  # in an outage (missing or unreadable file): warned once
        self._content = self._read()
        self.names = read_class_file(self.path, self._content)
        apply(self.names)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as e:
            raise VocabularyError(f"cannot read class file {str(self.path)!r}: {e}") from None

    def poll(self) -> bool:
        """Apply the file's vocabulary if it changed; returns whether it did."""
        try:
            content = self._read()
        except VocabularyError as e:
            return self._refuse(e, None)
        self._unreadable = False
        if content == self._content:
            return False
        self._content = content
        try:
            names = read_class_file(self.path, content)
            if names == self.names:
                return False
            self.apply(names)
        except VocabularyError as e:
            return self._refuse(e, content)
        self.names, self.changes = names, self.changes + 1
        log.info("vocabulary from %s: %d classes (%s)", self.path, len(names), ", ".join(names))
        return True

    def _refuse(self, error: VocabularyError, content: bytes | None) -> bool:
        if content is not None or not self._unreadable:  # an unreadable file: once per outage
            log.warning("%s; keeping the current %d classes", error, len(self.names))
        self._unreadable = content is None
        self.errors += 1
        return False
