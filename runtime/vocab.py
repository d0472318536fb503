"""Vocabularies: the one ``--classes`` parser and the validation shared by export and runtime.

Torch-free. ``parse_vocabulary`` is what every program's ``--classes`` goes through (export,
training, ``runtime.infer``, ``runtime.camera``), so a spec means the same thing everywhere.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from runtime.class_names import BUILTIN
from runtime.errors import ConfigError, VocabularyError

NAME_MAX = 255  # bytes in one path component on Linux, macOS and Windows file systems


def validate_classes(classes: Iterable[str]) -> tuple[str, ...]:
    """Strip names and reject empty vocabularies, blank names and duplicates.

    Duplicates are compared case-insensitively after stripping ("Car" and "car " clash), since
    they would give identical text embeddings and an arbitrary winner in the argmax.

    Raises:
        VocabularyError: naming the problem and the offending entries.
    """
    if isinstance(classes, str):
        raise VocabularyError("classes must be a sequence of names, not one string")
    names = tuple(str(c).strip() for c in classes)
    if not names:
        raise VocabularyError("vocabulary is empty: give at least one class name")
    blank = [i for i, n in enumerate(names) if not n]
    if blank:
        raise VocabularyError(f"vocabulary has blank class names at positions {blank}")
    counts = Counter(n.lower() for n in names)
    dupes = sorted(n for n, k in counts.items() if k > 1)
    if dupes:
        raise VocabularyError(f"vocabulary has duplicate class names: {dupes}")
    return names


def seen_vector(
    classes: tuple[str, ...], seen: Iterable[str], value: float
) -> tuple[float, ...] | None:
    """The seen-class bias of a vocabulary: [C] floats, ``value`` at the classes named in
    ``seen`` (stripped, matched exactly), 0 elsewhere; None when ``seen`` names no class.

    Raises:
        ConfigError: ``seen`` is one string, or names classes that are not in ``classes``.
    """
    if isinstance(seen, str):
        raise ConfigError("seen must be a sequence of class names, not one string")
    names = {str(n).strip() for n in seen}
    unknown = sorted(names - set(classes))
    if unknown:
        raise ConfigError(f"seen classes {unknown} are not in the vocabulary {list(classes)}")
    if not names:
        return None
    return tuple(float(value) if c in names else 0.0 for c in classes)


def parse_vocabulary(spec: str) -> tuple[str, ...]:
    """Turn a ``--classes`` spec into a validated vocabulary.

    Args:
        spec: one of, in this order of precedence:
            - an existing text file: one class per line, blank lines and ``#`` comment lines
              skipped; UTF-8, with or without a BOM, LF or CRLF line ends;
            - a built-in list name, case-insensitive: ``voc``, ``context``, ``coco_stuff``,
              ``ade20k``, ``cityscapes``, ``camvid`` (``runtime.class_names.BUILTIN``);
            - comma-separated names, ``"road,car,person"``; a single name is a 1-class vocabulary.
    Returns:
        tuple of stripped, unique (case-insensitively) class names, in the given order.
    Raises:
        VocabularyError: empty, blank or duplicate names; a missing ``.txt`` file, an unreadable or
            non-UTF-8 file; a single name that is a near-miss of a built-in list name
            (``camvidd``: "did you mean camvid?").
    """
    if not isinstance(spec, str):
        raise VocabularyError(f"a vocabulary spec must be a string, got {type(spec).__name__}")
    spec = spec.strip()
    if not spec:
        raise VocabularyError("vocabulary is empty: give a list name, a class file or 'a,b,c'")
    if _is_file(spec):
        return read_class_file(Path(spec))
    if spec.lower() in BUILTIN:
        return BUILTIN[spec.lower()]
    if "," not in spec:
        if _is_file(spec, kind="dir"):  # a list name wins over a folder of that name (voc/)
            raise VocabularyError(
                f"--classes {_short(spec)} is a folder: give a class file (one name per line), "
                "a list name or 'a,b,c'"
            )
        _refuse_misspelt_single(spec)
        return validate_classes([spec])
    names = spec.split(",")
    if any(not n.strip() for n in names):
        raise VocabularyError(f"class list {_short(spec)} has an empty entry between commas")
    return validate_classes(names)


def _is_file(spec: str, kind: str = "file") -> bool:
    """Whether ``spec`` names an existing file (``kind="dir"``: folder), without ever raising: a
    comma list longer than a file name can be (``NAME_MAX`` bytes per path component) is not
    even looked up."""
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in spec.split(os.sep)):
        return False
    try:
        return Path(spec).is_dir() if kind == "dir" else Path(spec).is_file()
    except (OSError, ValueError):  # ENAMETOOLONG, EACCES, an embedded NUL byte, ...
        return False


def read_class_file(path: Path, content: bytes | None = None) -> tuple[str, ...]:
    """The vocabulary of a class file (one class per line; blank lines and ``#`` comments
    skipped; UTF-8 with or without BOM, LF or CRLF). ``content``: the file's bytes, if already
    read. Raises VocabularyError: unreadable, not UTF-8, empty, blank or duplicate names."""
    try:
        text = (path.read_bytes() if content is None else content).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise VocabularyError(
            f"class file {str(path)!r} is not valid UTF-8 (byte {e.start}: "
            f"{e.object[e.start : e.start + 1]!r}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise VocabularyError(f"cannot read class file {str(path)!r}: {e.strerror or e}") from None
    lines = (line.strip() for line in text.splitlines())
    names = [line for line in lines if line and not line.startswith("#")]
    if not names:
        raise VocabularyError(
            f"class file {str(path)!r} is empty: no class names (blank lines "
            "and # comments are skipped)"
        )
    return validate_classes(names)


def _refuse_misspelt_single(spec: str) -> None:
    """A single name that is no file: refuse a missing ``.txt`` file or a near-miss of a built-in
    list name (``camvidd``, ``vocc``, ``coco-stuff``); genuine class names (``person``) pass."""
    if spec.lower().endswith(".txt"):
        raise VocabularyError(f"class file {spec!r} does not exist")
    key = spec.lower().replace("-", "_").replace(" ", "_")
    close = difflib.get_close_matches(key, BUILTIN, n=1, cutoff=0.8)
    if close:
        raise VocabularyError(
            f"unknown vocabulary {spec!r}: did you mean {close[0]}? (for a "
            "1-class vocabulary of that name, put it in a class file)"
        )


def _short(spec: str, limit: int = 80) -> str:
    return repr(spec if len(spec) <= limit else spec[:limit] + "...")
