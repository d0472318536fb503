"""Find (image, mask) pairs in the mmseg 0.x dataset layouts, or in a plain image/mask folder pair.

Layouts (read as they are):
- voc: ``VOCdevkit/VOC2012``: ``JPEGImages/*.jpg``, ``SegmentationClass/*.png``,
  ``ImageSets/Segmentation/<split>.txt``; a training ``train`` split adds ``aug.txt`` ids with masks
  from ``SegmentationClassAug`` when both exist (mmseg concatenates the two lists, keeping repeats).
- coco_stuff: ``images/<split>2017/*.jpg``, ``annotations/<split>2017/*_labelTrainIds.png``.
- context59 / context60: ``VOCdevkit/VOC2010``: ``JPEGImages``, ``SegmentationClassContext``,
  ``ImageSets/SegmentationContext/<split>.txt``.
- folder: ``images`` and ``masks`` dirs (flat), paired by file stem; masks are PNG.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from runtime.errors import DatasetError
from training.data.config import DataCfg

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MASK_MODES = ("L", "P", "I", "I;16")
REDUCE_ZERO_LABEL = {"voc": True, "coco_stuff": False, "context59": True, "context60": False}


class Pair(NamedTuple):
    """One sample on disk: an RGB image and its label map (same width and height)."""

    image: Path
    mask: Path


class LabelRule(NamedTuple):
    """How raw mask values become class ids (255 = ignore).

    Attributes:
        reduce_zero_label: mmseg semantics: raw 0 -> 255, v -> v - 1, 255 stays 255.
        ignore_value: a raw value also meaning ignore (mapped to 255); 255 for the named datasets.
    """

    reduce_zero_label: bool
    ignore_value: int


def label_rule(cfg: DataCfg) -> LabelRule:
    """The raw-label convention of ``cfg.dataset``."""
    return LabelRule(REDUCE_ZERO_LABEL.get(cfg.dataset, False), cfg.ignore_label)


def few(items: Sequence[object], n: int = 5) -> str:
    """``a, b, c, ... (+k more)``: a short listing for error messages."""
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def find_pairs(cfg: DataCfg, split: str, train: bool = False) -> tuple[Pair, ...]:
    """All (image, mask) pairs of one split, in the order the split lists them.

    Args:
        cfg: the dataset config.
        split: ``train`` / ``val`` (any split file the layout has); ignored for ``folder``.
        train: adds the VOC ``aug`` list to the ``train`` split (mmseg's voc_aug training set).
    Raises:
        DatasetError: unrecognised layout, missing split file, missing images or masks, no samples.
    """
    if cfg.dataset == "folder":
        pairs = _folder(Path(cfg.images), Path(cfg.masks))
    elif cfg.dataset == "voc":
        pairs = _voc(Path(cfg.root), split, train)
    elif cfg.dataset == "coco_stuff":
        pairs = _coco_stuff(Path(cfg.root), split)
    else:
        pairs = _context(Path(cfg.root), split, cfg.dataset)
    if not pairs:
        raise DatasetError(f"{cfg.dataset} split {split!r} has no samples")
    return pairs


def _listing(path: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    return few(names, 12) if names else "nothing (empty dir)"


def _expect_dirs(root: Path, name: str, hint: str, required: Sequence[str]) -> None:
    """Raise unless every ``required`` sub-dir exists under ``root``; suggest a better root."""
    if not root.is_dir():
        raise DatasetError(f"{name} root {root} does not exist or is not a directory")
    missing = [d for d in required if not (root / d).is_dir()]
    if not missing:
        return
    msg = (
        f"{root} is not a {name} root ({hint}): expected dirs {', '.join(required)}; "
        f"missing {', '.join(missing)}; found {_listing(root)}"
    )
    below = [p for pattern in ("*/", "*/*/") for p in root.glob(pattern) if p.is_dir()]
    better = [p for p in below if all((p / d).is_dir() for d in required)]
    if better:
        msg += f"; did you mean root={better[0]}?"
    raise DatasetError(msg)


def _read_ids(sets: Path, split: str) -> list[str]:
    path = sets / f"{split}.txt"
    if not path.is_file():
        have = sorted(p.stem for p in sets.glob("*.txt"))
        raise DatasetError(
            f"split file {path} does not exist; splits there: {few(have, 12) or 'none'}"
        )
    ids = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not ids:
        raise DatasetError(f"split file {path} lists no ids: the dataset is empty")
    return ids


def _pair_ids(
    root: Path, entries: Iterable[tuple[str, Sequence[str]]], image_dir: str
) -> tuple[Pair, ...]:
    """Pair ``<image_dir>/<id>.jpg`` with ``<mask_dir>/<id>.png``, first mask dir that has it."""
    pairs, no_image, no_mask = [], [], []
    for ident, mask_dirs in entries:
        image = root / image_dir / f"{ident}.jpg"
        masks = [root / d / f"{ident}.png" for d in mask_dirs]
        mask = next((m for m in masks if m.is_file()), None)
        if not image.is_file():
            no_image.append(ident)
        elif mask is None:
            no_mask.append(ident)
        else:
            pairs.append(Pair(image, mask))
    if no_image:
        raise DatasetError(
            f"{len(no_image)} listed ids have no image {root / image_dir}/<id>.jpg: {few(no_image)}"
        )
    if no_mask:
        dirs = dict.fromkeys(d for _, mask_dirs in entries for d in mask_dirs)
        where = " or ".join(str(root / d) for d in dirs)
        raise DatasetError(
            f"{len(no_mask)} listed ids have no mask <id>.png in {where}: {few(no_mask)}"
        )
    return tuple(pairs)


def _voc(root: Path, split: str, train: bool) -> tuple[Pair, ...]:
    required = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
    _expect_dirs(root, "voc", "VOCdevkit/VOC2012", required)
    sets = root / "ImageSets" / "Segmentation"
    entries = [(i, ("SegmentationClass", "SegmentationClassAug")) for i in _read_ids(sets, split)]
    has_aug_dir = (root / "SegmentationClassAug").is_dir()
    has_aug_list = (sets / "aug.txt").is_file()
    if split == "train" and train and has_aug_dir and has_aug_list:
        aug = _read_ids(sets, "aug")
        entries += [(i, ("SegmentationClassAug", "SegmentationClass")) for i in aug]
    elif split == "train" and train and has_aug_dir != has_aug_list:
        warnings.warn(
            f"{root}: SegmentationClassAug/ and ImageSets/Segmentation/aug.txt come "
            "together; only one is there, so training uses train.txt alone",
            stacklevel=3,
        )
    return _pair_ids(root, entries, "JPEGImages")


def _context(root: Path, split: str, name: str) -> tuple[Pair, ...]:
    required = ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext")
    _expect_dirs(root, name, "VOCdevkit/VOC2010", required)
    ids = _read_ids(root / "ImageSets" / "SegmentationContext", split)
    return _pair_ids(root, [(i, ("SegmentationClassContext",)) for i in ids], "JPEGImages")


def _coco_stuff(root: Path, split: str) -> tuple[Pair, ...]:
    sub = split if split.endswith("2017") else f"{split}2017"
    required = (f"images/{sub}", f"annotations/{sub}")
    _expect_dirs(root, "coco_stuff", "images/ and annotations/", required)
    images = sorted(p for p in (root / "images" / sub).iterdir() if p.suffix.lower() == ".jpg")
    pairs = [Pair(p, root / "annotations" / sub / f"{p.stem}_labelTrainIds.png") for p in images]
    no_mask = [p.image.name for p in pairs if not p.mask.is_file()]
    if no_mask:
        raise DatasetError(
            f"{len(no_mask)} images in {root / 'images' / sub} have no "
            f"<stem>_labelTrainIds.png in {root / 'annotations' / sub}: "
            f"{few(no_mask)}"
        )
    return tuple(pairs)


def _by_stem(folder: Path, exts: Sequence[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"folder dataset dir {folder} does not exist or is not a directory")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in exts:
            continue
        if path.stem in found:
            raise DatasetError(
                f"{folder} has two files with stem {path.stem!r}: "
                f"{found[path.stem].name} and {path.name}"
            )
        found[path.stem] = path
    return found


def _folder(images: Path, masks: Path) -> tuple[Pair, ...]:
    imgs, msks = _by_stem(images, IMAGE_EXTS), _by_stem(masks, (".png",))
    if not imgs:
        raise DatasetError(f"no images ({'/'.join(e[1:] for e in IMAGE_EXTS)}) in {images}")
    no_mask, no_image = sorted(set(imgs) - set(msks)), sorted(set(msks) - set(imgs))
    problems = []
    if no_mask:
        problems.append(f"{len(no_mask)} images have no <stem>.png in {masks}: {few(no_mask)}")
    if no_image:
        problems.append(f"{len(no_image)} masks have no image in {images}: {few(no_image)}")
    if problems:
        raise DatasetError("folder dataset is not paired by file stem: " + "; ".join(problems))
    return tuple(Pair(imgs[s], msks[s]) for s in sorted(imgs))


def read_header(path: Path) -> Image.Image:
    """Open an image lazily (header only, no pixel data), as a DatasetError when unreadable."""
    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from err


def check_headers(pairs: Sequence[Pair]) -> None:
    """Check, from file headers only, that every mask is single-channel and sized as its image.

    Raises:
        DatasetError: listing the first few problems and their count.
    """
    problems = []
    for pair in pairs:
        with read_header(pair.image) as img, read_header(pair.mask) as mask:
            if mask.mode not in MASK_MODES:
                problems.append(
                    f"{pair.mask}: mode {mask.mode}, expected a single-channel "
                    f"label map ({'/'.join(MASK_MODES)})"
                )
            elif mask.size != img.size:
                problems.append(
                    f"{pair.mask}: mask size {mask.size} differs from its image "
                    f"{pair.image.name} {img.size} (width, height)"
                )
    if problems:
        raise DatasetError(
            f"{len(problems)} bad masks: "
            + "; ".join(problems[:5])
            + ("; ..." if len(problems) > 5 else "")
        )
