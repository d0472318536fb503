"""Turn a ``--classes`` argument into a validated vocabulary."""

from __future__ import annotations

from pathlib import Path

from runtime.errors import VocabularyError
from runtime.vocab import validate_classes
from training.class_names import BUILTIN


def resolve_classes(spec: str) -> tuple[str, ...]:
    """Resolve a vocabulary spec.

    Args:
        spec: a built-in list name (``voc``, ``context``, ``coco_stuff``, ``ade20k``, ``cityscapes``,
            ``camvid``), a text file with one class per line (blank lines and ``#`` comments
            skipped), or comma-separated names (``"road,car,person"``).
    Returns:
        tuple of stripped, unique class names.
    Raises:
        VocabularyError: empty, blank or duplicate names, or a missing ``.txt`` file.
    """
    spec = spec.strip()
    path = Path(spec)
    if spec and path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return validate_classes(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))
    if spec.lower() in BUILTIN:
        return BUILTIN[spec.lower()]
    if spec.endswith(".txt"):
        raise VocabularyError(f"class file {spec!r} does not exist")
    names = spec.split(",")
    if len(names) > 1 and any(not n.strip() for n in names):
        raise VocabularyError(f"class list {spec!r} has an empty entry between commas")
    return validate_classes(names if spec else [])
