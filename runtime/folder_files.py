"""The files a deployable folder's manifest names, confined to the folder and checked by hash.

Every file a manifest names (``model_file``, ``variants.*.file``, ``text_embeddings_file``,
``text_encoder.file`` / ``vocab_file``), ``manifest.json`` itself and the engine files of
``DIR/engines`` go through ``folder_file`` / ``resolve_in_folder``. Refused, with a
``ModelFolderError`` that names the manifest field:

- a name that is not a non-empty string, contains a NUL, is absolute (``/x``, ``C:\\x``,
  ``\\\\host\\x``) or has a ``..`` component (``/`` and ``\\`` both count as separators);
- a name whose real path (``os.path.realpath``: every symlink followed) lies outside the
  folder's real path. Symlinks that stay inside are fine: the generation layout
  (``DIR/model.onnx -> .current/model.onnx``, ``DIR/.current -> .gen/<id>``) is made of them;
- a file that is missing or not a regular file;
- a sha256 that is missing, empty or not 64 hex digits: an empty hash never means "no check";
- with ``verify`` on, a file whose sha256 differs. ``verify=False`` (an explicit user choice)
  skips only this comparison, never the presence and form of the hash.

The checked path returned is the file's real path, so the file opened is the one checked even
if a link in the folder is switched afterwards (a concurrent export commits a new generation).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

import numpy as np

from runtime.errors import ModelFolderError
from runtime.fsutil import sha256_file

if TYPE_CHECKING:
    from runtime.manifest import Manifest

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def pinned_folder(folder: str | os.PathLike, manifest_name: str = "manifest.json") -> Path:
    """The folder a reader takes the manifest and every file it names from: the generation
    ``manifest.json`` resolves into at this instant (``DIR/.gen/<id>``, through ``.current``),
    when that lies inside ``folder``; else ``folder`` itself (a plain folder).

    Reading everything from one generation means an export or calibrate committing a new one
    meanwhile can never pair this manifest with the next generation's graph: the reader sees
    the old folder or, if the old generation is removed before a lazy read (the text encoder on
    the first ``set_classes``), a clear "missing" error. A generation's files are never
    rewritten in place, so a file hashed here is the file opened.
    """
    folder = Path(folder)
    root = os.path.realpath(folder)
    real = os.path.dirname(os.path.realpath(folder / manifest_name))
    if real != root and os.path.commonpath([root, real]) == root:
        return Path(real)
    return folder


def check_name(name: object, field: str) -> str:
    """``name`` if it is a safe relative file name for manifest field ``field``.

    Raises:
        ModelFolderError: not a non-empty string, a NUL in it, absolute, or a ``..`` component.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelFolderError(f"manifest field '{field}' must be a non-empty file name")
    if "\x00" in name:
        raise ModelFolderError(f"manifest field '{field}' contains a NUL character")
    win = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or win.drive or win.root:
        raise ModelFolderError(
            f"manifest field '{field}' names an absolute path {name!r}: "
            "files must be relative to the folder"
        )
    if ".." in re.split(r"[/\\]", name):
        raise ModelFolderError(
            f"manifest field '{field}' names {name!r}, which leaves the folder ('..')"
        )
    return name


def check_sha256(value: object, field: str, *, required: bool = True) -> str:
    """``value`` lower-cased if it is a sha256 (64 hex digits) for manifest field ``field``.

    ``required=False`` also accepts "" (the graph's metadata copy of the manifest, written before
    the file's own hash exists).

    Raises:
        ModelFolderError: not a string, empty (when required), or not 64 hex digits.
    """
    if not isinstance(value, str):
        raise ModelFolderError(f"manifest field '{field}' must be a sha256 string")
    if not value and not required:
        return value
    if not value:
        raise ModelFolderError(
            f"manifest field '{field}' is empty: every file the manifest names needs its "
            "sha256 (re-export the folder)"
        )
    if not _SHA256.fullmatch(value):
        raise ModelFolderError(
            f"manifest field '{field}' is not a sha256 (64 hex digits): {value[:80]!r}"
        )
    return value.lower()


def resolve_in_folder(folder: str | os.PathLike, name: str, field: str) -> Path:
    """The real path of ``folder/name``, refused unless it lies inside the folder's real path.

    Raises:
        ModelFolderError: a bad name (``check_name``), or a symlink leading out of the folder.
    """
    check_name(name, field)
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, real]) != root:
        raise ModelFolderError(
            f"manifest field '{field}' names {name!r}, which resolves to {real!r}, outside "
            f"the folder {root!r} (a symlink leading out is refused)"
        )
    return Path(real)


def folder_file(
    folder: str | os.PathLike,
    name: str,
    sha256: str,
    *,
    what: str,
    field: str,
    sha_field: str,
    verify: bool = True,
) -> Path:
    """The checked real path of the file ``name`` that manifest field ``field`` names.

    Args:
        folder: the deployable folder.
        name, sha256: the file name and its hash from the manifest.
        what: what the file is, for messages ("model file", "BPE vocabulary", ...).
        field, sha_field: the manifest fields of the name and of the hash, for messages.
        verify: compare the file's sha256 with the manifest's (the hash must be present anyway).
    Raises:
        ModelFolderError: see the module docstring.
    """
    path = resolve_in_folder(folder, name, field)
    if not path.exists():
        raise ModelFolderError(
            f"{what} {str(Path(folder) / name)!r} named by the manifest is missing"
        )
    if not path.is_file():
        raise ModelFolderError(
            f"{what} {str(Path(folder) / name)!r} named by the manifest is not a regular file"
        )
    want = check_sha256(sha256, sha_field)
    if verify and sha256_file(path) != want:
        raise ModelFolderError(
            f"{what} {str(Path(folder) / name)!r} does not match the manifest's sha256 "
            f"('{sha_field}'): corrupt or modified"
        )
    return path


def model_file(
    folder: str | os.PathLike, manifest: Manifest, precision: str = "fp32", verify: bool = True
) -> Path:
    """The checked graph of ``precision`` (``model_file`` or a variant's file).

    Raises:
        ModelFolderError: unknown precision or variant, or a file refused by ``folder_file``.
    """
    name, sha = manifest.model_for(precision)
    where = "model_" if precision == "fp32" else f"variants.{precision}."
    return folder_file(
        folder,
        name,
        sha,
        what="model file" if precision == "fp32" else f"{precision} variant",
        field=f"{where}file",
        sha_field="model_sha256" if precision == "fp32" else f"{where}sha256",
        verify=verify,
    )


def text_embeddings(
    folder: str | os.PathLike, manifest: Manifest, width: int | None, verify: bool = True
) -> np.ndarray:
    """The folder's default text classifier (``text_embeddings_file``), checked.

    Args:
        width: D, the width of the graph's text-embedding input (None: not checked).
    Returns:
        np.ndarray: float [C, D] with C = ``len(manifest.classes)``, finite.
    Raises:
        ModelFolderError: no such file, a file refused by ``folder_file``, not an ``.npy`` array,
            pickled objects, a non-float dtype, another shape (read from the header, before the
            data), or non-finite values.
    """
    name = manifest.text_embeddings_file
    if not name:
        raise ModelFolderError("vocab_mode 'input' needs the manifest field 'text_embeddings_file'")
    path = folder_file(
        folder,
        name,
        manifest.text_embeddings_sha256,
        what="text embeddings",
        field="text_embeddings_file",
        sha_field="text_embeddings_sha256",
        verify=verify,
    )
    want = (len(manifest.classes), width)
    where = str(Path(folder) / name)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(f)
            if dtype.hasobject or dtype.kind != "f":
                raise ModelFolderError(
                    f"text embeddings {where!r} hold {dtype}, not floats (pickled objects refused)"
                )
            if len(shape) != 2 or shape[0] != want[0] or (width is not None and shape[1] != width):
                raise ModelFolderError(
                    f"text embeddings {where!r} have shape {list(shape)}, the manifest needs "
                    f"[{want[0]}, {width if width is not None else 'D'}] ({want[0]} classes)"
                )
        emb = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ModelFolderError(f"cannot read text embeddings {where!r}: {e}") from e
    if not np.all(np.isfinite(emb)):
        raise ModelFolderError(f"text embeddings {where!r} contain NaN or infinite values")
    return emb
