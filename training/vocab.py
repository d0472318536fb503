"""Turn a ``--classes`` argument into a validated vocabulary: ``runtime.vocab.parse_vocabulary``."""

from __future__ import annotations

from runtime.vocab import parse_vocabulary


def resolve_classes(spec: str) -> tuple[str, ...]:
    """Resolve a vocabulary spec with the runtime's parser (one parser for export, training and
    runtime; see ``runtime.vocab.parse_vocabulary`` for the accepted forms).

    Args:
        spec: a built-in list name (``voc``, ``context``, ``coco_stuff``, ``ade20k``,
            ``cityscapes``,
            ``camvid``), a text file with one class per line (blank lines and ``#`` comments
            skipped), or comma-separated names (``"road,car,person"``).
    Returns:
        tuple of stripped, unique class names.
    Raises:
        VocabularyError: empty, blank or duplicate names, a missing ``.txt`` file, a non-UTF-8
            file, or a near-miss of a built-in list name.
    """
    return parse_vocabulary(spec)
