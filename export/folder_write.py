"""Write a deployable folder as one transaction: a kill at any instant leaves the old folder or
the new one, loadable, never a mix.

Layout (generations)::

    DIR/.gen/g-XXXX/            one generation: manifest.json, model.onnx, text_embeddings.npy,
                                variants, text encoder, precision_report.json (real files)
    DIR/.current -> .gen/g-XXXX the pointer: which generation is the folder
    DIR/manifest.json -> .current/manifest.json     stable names, relative symlinks
    DIR/model.onnx    -> .current/model.onnx        (and so on for each file of the generation)
    DIR/engines/                TensorRT engines (a cache keyed by the graph's sha256: real folder)

``FolderWrite(out)`` stages a new generation inside ``out`` (same file system, so renames are
atomic). ``commit(manifest)``

1. writes the manifest into the generation, so it is complete before anything points at it,
2. turns a folder of plain files (written before generations, or by hand) into a generation of
   the same files (hard links; each name is replaced by a link to identical bytes),
3. adds a top-level link for each new name (it dangles until step 4: no manifest names it yet),
4. switches ``.current`` to the new generation with one rename: the commit point,
5. removes what the new manifest does not name (the old generation, links of names it dropped,
   an export's stale ``engines/``).

Before step 4 the old generation is untouched; from step 4 on the new one is complete. A later
``FolderWrite`` on the folder (export or calibrate) first removes what a killed run left: stray
generations, dangling links, temp files, and the ``.bak`` files and ``.export-*`` folders of the
per-file scheme this replaced (restored where the manifest says they hold its files). An
exclusive lock (``flock`` on the folder) keeps two writers out of one folder.

Files that no manifest named (a user's notes, images) are never touched. On a file system
without symlinks (FAT, some network shares) the plain layout is kept, with the per-file commit
(backup, move in, manifest last): atomic per file only, which the log says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from runtime.engine_cache import ENGINE_DIR
from runtime.errors import ModelFolderError
from runtime.fsutil import sha256_file
from runtime.manifest import MANIFEST_FILE, Manifest

log = logging.getLogger(__name__)
# Written by calibration.calibrate beside the variants it describes.
REPORT_FILE = "precision_report.json"
GEN_DIR = ".gen"
CURRENT = ".current"
# What killed runs leave at the top level: our temp links and files (fsutil.atomic_write's
# ``.NAME.XXXX.tmp``), and the per-file scheme's backups and staging folders.
# Only these exact forms are ever removed: mkstemp / mkdtemp suffixes (8 of [a-z0-9_]) or a pid.
_TMP = re.compile(r"^\..+\.([a-z0-9_]{8}|\d+)\.(tmp|lnk)$")
_BAK = re.compile(r"^\.(?P<name>.+)\.\d+\.bak$")
_OLD_STAGE = re.compile(r"^\.export-(new|old)-[a-z0-9_]{8}$")
_GENERATION = re.compile(r"^g-[a-z0-9_]{8}$")


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


def _hashes(manifest: dict) -> dict[str, str]:
    """{file name: sha256} for the manifest's files that state one."""
    pairs = [(manifest.get("model_file"), manifest.get("model_sha256"))]
    pairs.append((manifest.get("text_embeddings_file"), manifest.get("text_embeddings_sha256")))
    for v in (manifest.get("variants") or {}).values():
        if isinstance(v, dict):
            pairs.append((v.get("file"), v.get("sha256")))
    enc = manifest.get("text_encoder")
    if isinstance(enc, dict):
        pairs.append((enc.get("file"), enc.get("sha256")))
        pairs.append((enc.get("vocab_file"), enc.get("vocab_sha256")))
    return {n: s for n, s in pairs if _plain(n) and isinstance(s, str) and s}


def _old_manifest(out: Path) -> dict | None:
    """The folder's current manifest as a dict, or None (absent or unreadable)."""
    try:
        data = json.loads((out / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stale_files(out: Path, new: set[str], engines: bool = True) -> list[str]:
    """Files of the folder's old graph that a manifest naming ``new`` would leave behind
    (``engines``: the ``engines/`` cache counts as the old graph's)."""
    old = _old_manifest(out)
    if old is None:
        return []
    names = named_files(old) | {REPORT_FILE} | ({ENGINE_DIR} if engines else set())
    return sorted(n for n in names - new if os.path.lexists(out / n))


# --- the generation layout ---------------------------------------------------------------------


def _link_target(name: str) -> str:
    return f"{CURRENT}/{name}"


def _is_ours(out: Path, name: str) -> bool:
    """``out/name`` is our link into the current generation."""
    path = out / name
    return os.path.islink(path) and os.readlink(path) == _link_target(name)


def uses_generations(out: str | os.PathLike) -> bool:
    """The folder is in the generation layout (its manifest.json is our link)."""
    out = Path(out)
    return _is_ours(out, MANIFEST_FILE) and os.path.islink(out / CURRENT)


def current_generation(out: str | os.PathLike) -> Path | None:
    """The generation folder ``.current`` points at, or None."""
    out = Path(out)
    pointer = out / CURRENT
    if not os.path.islink(pointer):
        return None
    target = out / os.readlink(pointer)
    return target if target.is_dir() and target.parent == out / GEN_DIR else None


def _fsync(path: Path) -> None:
    """Flush a file's data or a folder's entries to disk (a no-op where it fails)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _symlink_replace(target: str, path: Path) -> None:
    """Make ``path`` a symlink to ``target`` atomically (a temp link renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.lnk")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _point(out: Path, generation: Path) -> None:
    """Switch ``.current`` to ``generation``: one rename."""
    _symlink_replace(f"{GEN_DIR}/{generation.name}", out / CURRENT)
    _fsync(out)


def _link(out: Path, name: str) -> None:
    """``out/name`` becomes our link ``.current/name`` (whatever file was there is replaced)."""
    if _is_ours(out, name):
        return
    path = out / name
    if path.is_dir() and not path.is_symlink():
        raise ModelFolderError(f"{str(path)!r} is a folder: cannot write the file {name!r} there")
    _symlink_replace(_link_target(name), path)


def _carry(src: Path, dst: Path) -> None:
    """``dst`` gets ``src``'s bytes: a hard link (no copy, same file system), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _check_gen_dir(out: Path) -> None:
    """``out/.gen``, where it exists, is a real folder of ``out`` (not a symlink elsewhere):
    nothing is ever written or removed through a link leading out.

    Raises:
        ModelFolderError: ``.gen`` is a symlink or not a folder.
    """
    gens = out / GEN_DIR
    if os.path.islink(gens) or (os.path.lexists(gens) and not gens.is_dir()):
        raise ModelFolderError(
            f"{str(gens)!r} is a symlink or not a folder: refusing to write or clean up "
            "through it (remove it, or copy the folder with cp -a / rsync -a)"
        )


def _is_ovss_folder(out: Path) -> bool:
    """``out`` holds a manifest, a generation pointer or our generations folder: only then is
    anything in it cleaned up (a user's own folder with ``.x.tmp`` files is left alone)."""
    return (
        os.path.lexists(out / MANIFEST_FILE)
        or os.path.islink(out / CURRENT)
        or (out / GEN_DIR).is_dir()
    )


def _new_generation(out: Path) -> Path:
    _check_gen_dir(out)
    gens = out / GEN_DIR
    gens.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="g-", dir=gens))


def _to_generations(out: Path) -> None:
    """Turn a plain folder into a generation of the same files; loadable as before at every
    step (the pointer is set before any name moves, and manifest.json is linked last)."""
    old = _old_manifest(out)
    real = out.resolve()
    names = sorted(
        n
        for n in (named_files(old or {}) | {REPORT_FILE})
        if (out / n).is_file() and (out / n).resolve().is_relative_to(real)
    )
    gen = current_generation(out)  # a conversion that was killed half-way is finished, not redone
    if gen is None:
        gen = _new_generation(out)
        for name in [*names, MANIFEST_FILE]:
            _carry((out / name).resolve(), gen / name)
        _fsync(gen)
        _point(out, gen)
    for name in [*names, MANIFEST_FILE]:  # manifest.json last: the layout test
        if (gen / name).exists():
            _link(out, name)


def recover(out: str | os.PathLike, *, quiet: bool = False) -> list[str]:
    """Remove (or restore) what a killed export or calibrate left in ``out``.

    - temp files and links (``.NAME.XXXX.tmp``, ``.NAME.PID.lnk``) are removed;
    - generations other than the current one are removed, and so are our links that dangle;
    - the per-file scheme's leftovers: a ``.NAME.PID.bak`` (or a file in an ``.export-old-*``
      folder) is put back where the manifest names it with that sha256 and the file there does
      not match; otherwise removed, as are ``.export-new-*`` folders.

    Args:
        quiet: do not log (a commit's own clean-up of the generation it replaced).
    Returns:
        What it did, one phrase per item (logged unless ``quiet``).
    """
    out = Path(out)
    _check_gen_dir(out)
    if not out.is_dir() or not _is_ovss_folder(out):
        return []
    done: list[str] = []
    manifest = _old_manifest(out) or {}
    hashes = _hashes(manifest)

    def restore(name: str, backup: Path) -> None:
        want = hashes.get(name)
        here = out / name
        if want and backup.is_file() and sha256_file(backup) == want:
            if not here.is_file() or sha256_file(here) != want:
                os.replace(backup, here)
                done.append(f"restored {name} from {backup.name}")
                return
        if backup.is_dir() and not backup.is_symlink():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            backup.unlink(missing_ok=True)
        done.append(f"removed {backup.name}")

    for entry in sorted(out.iterdir()):
        name = entry.name
        if _TMP.match(name) and (entry.is_symlink() or entry.is_file()):
            os.unlink(entry)
            done.append(f"removed {name}")
        elif (m := _BAK.match(name)) and entry.is_file() and not entry.is_symlink():
            restore(m["name"], entry)
        elif _OLD_STAGE.match(name) and entry.is_dir() and not entry.is_symlink():
            if name.startswith(".export-old-"):
                for kept in sorted(entry.iterdir()):
                    if kept.name in hashes:
                        restore(kept.name, kept)
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {name}")
    current = current_generation(out)
    gens = out / GEN_DIR
    if gens.is_dir():
        for gen in sorted(gens.iterdir()):  # only our generations: g-XXXXXXXX folders
            if gen != current and _GENERATION.match(gen.name) and not gen.is_symlink():
                if gen.is_dir():
                    shutil.rmtree(gen)
                    done.append(f"removed {GEN_DIR}/{gen.name}")
    pointer = out / CURRENT
    if current is None and os.path.lexists(pointer) and not uses_generations(out):
        # a pointer to nothing, or the copy a link-following copy (cp -rL) made of it beside
        # its copy of .gen: nothing links through it
        if not any(_is_ours(out, e.name) for e in out.iterdir() if e.name != CURRENT):
            if pointer.is_symlink():
                os.unlink(pointer)
                done.append(f"removed {CURRENT}")
            elif pointer.is_dir() and gens.is_dir():
                shutil.rmtree(pointer)
                done.append(f"removed {CURRENT}")
    for entry in sorted(out.iterdir()):
        if _is_ours(out, entry.name) and not entry.exists():
            entry.unlink()
            done.append(f"removed the dangling link {entry.name}")
    if done and not quiet:
        log.info("cleaned up after an interrupted write of %s: %s", out, "; ".join(done))
    return done


@contextlib.contextmanager
def _locked(out: Path):
    """An exclusive lock on the folder itself for one writer (flock on its directory: no lock
    file; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelFolderError(
                f"{str(out)!r} is being written by another export or calibrate run: "
                "wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def _symlinks_work(out: Path) -> bool:
    probe = out / f".ovss-probe.{os.getpid()}.lnk"
    try:
        os.symlink(CURRENT, probe)
    except (OSError, NotImplementedError):
        return False
    os.unlink(probe)
    return True


class FolderWrite:
    """Stage a deployable folder's new generation, then ``commit`` it (see the module).

    Args:
        out: the folder (created with its parents).
    Raises:
        ModelFolderError: another writer holds the folder.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = _locked(self.out)
        self._lock.__enter__()
        try:
            recover(self.out)
            self.generations = _symlinks_work(self.out)
            if not self.generations:
                log.warning(
                    "%s: no symlinks on this file system; the folder is replaced file by file "
                    "(a kill mid-way can leave it unloadable until the next export)",
                    self.out,
                )
            self.stage = _new_generation(self.out)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self.committed = False

    def __enter__(self) -> FolderWrite:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self.committed:
                shutil.rmtree(self.stage, ignore_errors=True)
                with contextlib.suppress(OSError):
                    recover(self.out, quiet=True)  # links made for names that never arrived
                with contextlib.suppress(OSError):
                    (self.out / GEN_DIR).rmdir()  # only when empty
        finally:
            self._lock.__exit__(None, None, None)

    def path(self, name: str) -> Path:
        """Where to write the new file ``name`` (in the staging generation)."""
        assert _plain(name), f"{name!r} is not a bare file name"
        return self.stage / name

    def carry(self, names: Iterable[str]) -> list[str]:
        """Give the new generation the folder's current files ``names`` (hard links; those
        missing are skipped). Returns the names carried."""
        carried = []
        for name in names:
            src = self.out / name
            inside = src.is_file() and src.resolve().is_relative_to(self.out.resolve())
            if _plain(name) and inside and not (self.stage / name).exists():
                _carry(src.resolve(), self.stage / name)
                carried.append(name)
        return carried

    def commit(self, manifest: Manifest, *, engines_stale: bool = True) -> list[str]:
        """Write ``manifest`` into the new generation and switch the folder to it.

        Args:
            manifest: the new manifest (its files must be staged or carried).
            engines_stale: the ``engines/`` cache belongs to the old graph (an export: True);
                False keeps it (a calibration adds a variant to the same graph).
        Returns:
            The names removed (files of the old manifest that ``manifest`` does not name).
        """
        manifest.write(self.stage)
        staged = sorted(p.name for p in self.stage.iterdir())
        # staged files are written with fsutil.atomic_write (fsynced); their folders now, so the
        # switch never points at entries a power cut could lose
        _fsync(self.stage)
        _fsync(self.out / GEN_DIR)
        removed = stale_files(self.out, set(staged), engines=engines_stale)
        if not self.generations:
            self._commit_plain(staged, removed)
        else:
            if os.path.lexists(self.out / MANIFEST_FILE) and not uses_generations(self.out):
                _to_generations(self.out)
            fresh = not uses_generations(self.out)  # nothing loadable yet: link manifest too
            for name in staged:
                if name != MANIFEST_FILE or fresh:
                    _link(self.out, name)
            _point(self.out, self.stage)  # the commit point
            self.committed = True
            self._drop(removed)
        self.committed = True
        if removed:
            log.info("removed the old graph's files: %s", ", ".join(removed))
        return removed

    def _drop(self, removed: list[str]) -> None:
        """After the switch: the old graph's names, other generations, dangling links."""
        for name in removed:
            path = self.out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        recover(self.out, quiet=True)

    def _commit_plain(self, staged: list[str], removed: list[str]) -> None:
        """The per-file commit (no symlinks): back up, move in, manifest last, drop backup."""
        backup = Path(tempfile.mkdtemp(prefix=".export-old-", dir=self.out))
        moved: list[str] = []
        placed: list[str] = []
        names = [n for n in staged if n != MANIFEST_FILE]
        try:
            for name in [*names, *removed]:
                if os.path.lexists(self.out / name):
                    os.replace(self.out / name, backup / name)
                    moved.append(name)
            for name in [*names, MANIFEST_FILE]:
                os.replace(self.stage / name, self.out / name)
                placed.append(name)
        except BaseException:
            for name in placed:
                os.replace(self.out / name, self.stage / name)
            for name in moved:
                os.replace(backup / name, self.out / name)
            shutil.rmtree(backup, ignore_errors=True)
            raise
        shutil.rmtree(backup, ignore_errors=True)
        shutil.rmtree(self.stage, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.out / GEN_DIR).rmdir()
