"""Check an output path before the expensive work: a command should refuse ``--out /no/such``
in milliseconds, not after a ten-minute export.

Both checks raise ``OutputPathError`` (exit 2 with one line under ``runtime.cli``) and create
nothing. Missing parent folders are allowed (the writers create them), as long as the nearest
existing ancestor is a folder this process may write into.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.errors import OvssError


class OutputPathError(OvssError, OSError):
    """An output file or folder cannot be written: a file where a folder is needed (or the
    reverse), an ancestor that is a file, or no write permission."""


def _writable_ancestor(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` is a folder this process may create files in."""
    parent = path.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{what} {str(path)!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {str(path)!r}: no permission to write in {str(parent)!r}")


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` can be written as a file (replacing a file there, never a folder).

    Returns:
        ``path`` as a Path.
    Raises:
        OutputPathError: ``path`` is a folder, an ancestor is a file, or no write permission.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise OutputPathError(f"{what}: empty path")
    if path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is an existing folder, not a file")
    if os.path.lexists(path):
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {str(path)!r}: no permission to replace it")
        return path
    _writable_ancestor(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` is a folder this process can write into, or can be created as one.

    Returns:
        ``path`` as a Path.
    Raises:
        OutputPathError: ``path`` (or an ancestor) is a file, or no write permission.
    """
    path = Path(path)
    if str(path) == "":
        raise OutputPathError(f"{what}: empty path")
    if os.path.lexists(path):
        if not path.is_dir():
            raise OutputPathError(f"{what} {str(path)!r} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {str(path)!r}: no permission to write in it")
        return path
    _writable_ancestor(path, what)
    return path
