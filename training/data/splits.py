"""Class lists and seen/unseen splits of the zero-shot benchmarks (MaskCLIP+, ZegCLIP, CLIP-RC).

Default unseen sets (METHODS.md A1/A6): VOC the last 5 ids (potted plant, sheep, sofa, train,
tv monitor); COCO-Stuff the 15 ids of MaskCLIP+/ZegCLIP; Context-60 the 10 ids of the MaskCLIP+
config (cow, motorbike, sofa, cat, boat, fence, bird, tv monitor, keyboard, airplane), and for
Context-59 the same classes (ids minus 1, as background is dropped).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import NamedTuple

from runtime.errors import DatasetError, VocabularyError
from runtime.vocab import validate_classes
from training.class_names import COCO_STUFF, CONTEXT, VOC
from training.data.config import IGNORE, DataCfg

CONTEXT60_UNSEEN = (20, 34, 49, 15, 8, 25, 7, 55, 32, 1)

BUILTIN_CLASSES: dict[str, tuple[str, ...]] = {
    "voc": VOC,
    "coco_stuff": COCO_STUFF,
    "context59": CONTEXT,
    "context60": ("background",) + CONTEXT,
}

DEFAULT_UNSEEN: dict[str, tuple[int, ...]] = {
    "voc": (15, 16, 17, 18, 19),
    "coco_stuff": (19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160),
    "context60": CONTEXT60_UNSEEN,
    "context59": tuple(i - 1 for i in CONTEXT60_UNSEEN),
    "folder": (),
}


class ClassSplit(NamedTuple):
    """The vocabulary of a dataset and its zero-shot split.

    Attributes:
        classes: class names; label value i means ``classes[i]``.
        seen, unseen: sorted class indices; together they cover ``range(len(classes))``.
    """

    classes: tuple[str, ...]
    seen: tuple[int, ...]
    unseen: tuple[int, ...]


def dataset_classes(cfg: DataCfg) -> tuple[str, ...]:
    """The class names of ``cfg.dataset`` (``cfg.classes`` for a folder or as a renaming).

    Raises:
        DatasetError: a folder dataset without classes, blank or duplicate names, more than 255
            classes, or a renaming whose length differs from the built-in list.
    """
    builtin = BUILTIN_CLASSES.get(cfg.dataset)
    if builtin is None and not cfg.classes:
        raise DatasetError("the folder dataset needs classes=(...): one name per label value")
    names = cfg.classes or builtin
    try:
        names = validate_classes(names)
    except VocabularyError as err:
        raise DatasetError(f"{cfg.dataset} classes: {err}") from err
    if builtin is not None and len(names) != len(builtin):
        raise DatasetError(
            f"classes renames the {len(builtin)} {cfg.dataset} classes but has {len(names)} names"
        )
    if len(names) > IGNORE:
        raise DatasetError(
            f"{len(names)} classes: at most {IGNORE} fit 8-bit labels with 255 = ignore"
        )
    if cfg.dataset == "folder" and cfg.ignore_label < len(names) and cfg.ignore_label != IGNORE:
        raise DatasetError(
            f"ignore_label {cfg.ignore_label} is also a class index (0..{len(names) - 1}): "
            "give an ignore value outside the class range"
        )
    return names


def _suggest(name: str, classes: Sequence[str]) -> str:
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in classes], n=3, cutoff=0.6)
    return f"{name!r} (did you mean {', '.join(map(repr, close))}?)" if close else repr(name)


def unseen_indices(names: Sequence[str], classes: Sequence[str]) -> tuple[int, ...]:
    """Map unseen class names to sorted indices into ``classes`` (case-insensitive, stripped).

    Raises:
        DatasetError: listing every unknown name, close matches and the valid names.
    """
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    unknown = [n for n in names if str(n).strip().lower() not in lookup]
    if unknown:
        shown = ", ".join(classes[:40])
        shown += f", ... ({len(classes)} in all)" if len(classes) > 40 else ""
        raise DatasetError(
            f"unknown unseen class names: {', '.join(_suggest(n, classes) for n in unknown)}; "
            f"valid names: {shown}"
        )
    return tuple(sorted({lookup[str(n).strip().lower()] for n in names}))


def resolve_split(cfg: DataCfg) -> ClassSplit:
    """Classes and seen/unseen indices for ``cfg`` (default split when ``cfg.unseen`` is None)."""
    classes = dataset_classes(cfg)
    if cfg.unseen is None:
        unseen = tuple(sorted(DEFAULT_UNSEEN[cfg.dataset]))
    else:
        unseen = unseen_indices(cfg.unseen, classes)
    held_out = set(unseen)
    seen = tuple(i for i in range(len(classes)) if i not in held_out)
    return ClassSplit(classes, seen, unseen)
