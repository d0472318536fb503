"""Write a deployable folder as one transaction: staged files, ``manifest.json`` last, and the
files of the graph it replaces taken away.

``FolderWrite(out)`` gives a staging folder inside ``out`` (same file system: renames are
atomic). The exporter writes every new file there; ``commit(manifest)`` then

1. moves the old copies of the new files, and every file the old manifest named that the new
   one does not (precision variants, the text encoder and its vocabulary, the text embeddings,
   plus the old graph's ``engines/`` and ``precision_report.json``), into a backup folder,
2. moves the new files into ``out``,
3. writes ``manifest.json`` (the folder's claim to its files) last,
4. deletes the backup.

A failure before step 3 puts the backup back, so the old folder stays loadable; files no
manifest named (a user's notes, images) are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from runtime.engine_cache import ENGINE_DIR
from runtime.manifest import MANIFEST_FILE, Manifest

log = logging.getLogger(__name__)
# Written by calibration.calibrate beside the variants it describes.
REPORT_FILE = "precision_report.json"


def _plain(name) -> bool:
    """A bare file name inside the folder (no separators, not '.' or '..')."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def named_files(manifest: dict) -> set[str]:
    """Every file name a manifest (as a JSON dict) claims: graph, variants, text embeddings,
    text encoder and vocabulary. Names with path parts are left out (never ours to delete)."""
    names = {manifest.get("model_file"), manifest.get("text_embeddings_file")}
    variants = manifest.get("variants")
    if isinstance(variants, dict):
        names |= {v.get("file") for v in variants.values() if isinstance(v, dict)}
    encoder = manifest.get("text_encoder")
    if isinstance(encoder, dict):
        names |= {encoder.get("file"), encoder.get("vocab_file")}
    return {n for n in names if _plain(n)}


def _old_manifest(out: Path) -> dict | None:
    """The folder's current manifest as a dict, or None (absent or unreadable)."""
    try:
        data = json.loads((out / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stale_files(out: Path, new: set[str]) -> list[str]:
    """Files of the folder's old graph that a manifest naming ``new`` would leave behind."""
    old = _old_manifest(out)
    if old is None:
        return []
    names = named_files(old) | {ENGINE_DIR, REPORT_FILE}
    return sorted(n for n in names - new if os.path.lexists(out / n))


class FolderWrite:
    """Stage a deployable folder's files, then ``commit`` them with the manifest (see module)."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(prefix=".export-new-", dir=self.out))

    def __enter__(self) -> FolderWrite:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write the new file ``name`` (in the staging folder)."""
        assert _plain(name), f"{name!r} is not a bare file name"
        return self.stage / name

    def commit(self, manifest: Manifest) -> list[str]:
        """Move the staged files in, write ``manifest``, and remove the old graph's files.

        Returns:
            The names removed (files of the old manifest that ``manifest`` does not name).
        """
        staged = sorted(p.name for p in self.stage.iterdir())
        new = set(staged) | named_files(json.loads(manifest.to_json()))
        removed = stale_files(self.out, new)
        backup = Path(tempfile.mkdtemp(prefix=".export-old-", dir=self.out))
        moved: list[str] = []  # names now in the backup
        placed: list[str] = []  # new names now in the folder
        try:
            for name in [*staged, *removed]:
                if os.path.lexists(self.out / name):
                    os.replace(self.out / name, backup / name)
                    moved.append(name)
            for name in staged:
                os.replace(self.stage / name, self.out / name)
                placed.append(name)
            manifest.write(self.out)
        except BaseException:
            for name in placed:
                os.replace(self.out / name, self.stage / name)
            for name in moved:
                os.replace(backup / name, self.out / name)
            shutil.rmtree(backup, ignore_errors=True)
            raise
        shutil.rmtree(backup, ignore_errors=True)
        if removed:
            log.info("removed the old graph's files: %s", ", ".join(removed))
        return removed
