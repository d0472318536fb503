"""Vocabulary validation shared by export and runtime."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from runtime.errors import VocabularyError


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


def read_classes(spec: str) -> tuple[str, ...]:
    """Class names from a text file (one per line; blank lines and ``#`` comments skipped) or
    from a comma-separated list; validated (non-empty, no blanks or duplicates).

    Raises:
        VocabularyError: no names, blank entries or duplicates.
    """
    path = Path(spec)
    if path.is_file():
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        return validate_classes([line for line in lines if line and not line.startswith("#")])
    return validate_classes(spec.split(","))
