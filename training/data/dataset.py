"""SegDataset: a torch Dataset over one split, with the mmseg test and (seeded) training pipelines.

``ds[i]`` is an evaluation sample (image resized as the test pipeline does, label at its original
size); ``ds[(i, seed)]`` is a training sample, augmented with ``np.random.default_rng(seed)`` so the
same pair always gives bit-identical tensors. Seen-only supervision is left to the training loop
(``training.labels.seen_only`` with ``ds.seen``).
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np
import torch

from runtime.errors import DatasetError
from training.data.config import IGNORE, DataCfg
from training.data.layouts import (
    MASK_MODES,
    LabelRule,
    Pair,
    check_headers,
    few,
    find_pairs,
    label_rule,
    read_header,
)
from training.data.splits import resolve_split
from training.data.transforms import Augmented, eval_image, train_pair


class Sample(NamedTuple):
    """One dataset item.

    Attributes:
        image: float32 [3,H,W], RGB normalised with the config's mean/std (padding 0).
        label: int64 [H,W], class ids 0..C-1, 255 = ignore (and padding).
        index: position of the sample in the dataset.
    """

    image: torch.Tensor
    label: torch.Tensor
    index: int


def load_image(path) -> np.ndarray:
    """Decode an image file as RGB uint8 HWC [0,255] (no EXIF rotation, as its header size)."""
    with read_header(path) as img:
        try:
            return np.asarray(img.convert("RGB"))
        except OSError as err:
            raise DatasetError(f"cannot decode {path}: {err}") from err


def map_label(raw: np.ndarray, rule: LabelRule, num_classes: int, path) -> np.ndarray:
    """Raw mask values -> class ids, checked against the class range.

    Args:
        raw: HW integer array as stored in the PNG.
        rule: reduce_zero_label (0 -> 255, v -> v-1) and the extra raw ignore value (-> 255).
        num_classes: C; valid outputs are 0..C-1 and 255.
        path: the mask file, named in errors.
    Returns:
        HW uint8 class ids, 255 = ignore.
    Raises:
        DatasetError: naming the file, the bad values (mapped and raw) and the class count.
    """
    raw = raw.astype(np.int32, copy=False)
    out = raw - 1 if rule.reduce_zero_label else raw.copy()
    if rule.reduce_zero_label:
        out[raw == 0] = IGNORE
    out[(raw == IGNORE) | (raw == rule.ignore_value)] = IGNORE
    bad = (out >= num_classes) & (out != IGNORE)
    if bad.any():
        mapped, stored = np.unique(out[bad]).tolist(), np.unique(raw[bad]).tolist()
        how = " after reduce_zero_label" if rule.reduce_zero_label else ""
        raise DatasetError(
            f"{path}: label values {few(mapped, 10)}{how} (stored as {few(stored, 10)}) are "
            f"outside the {num_classes} classes 0..{num_classes - 1} (255 = ignore"
            + (f", raw {rule.ignore_value} = ignore)" if rule.ignore_value != IGNORE else ")")
        )
    return out.astype(np.uint8)


def load_label(path, rule: LabelRule, num_classes: int) -> np.ndarray:
    """Decode a single-channel PNG label map and map it with ``map_label``; HW uint8."""
    with read_header(path) as mask:
        if mask.mode not in MASK_MODES:
            raise DatasetError(f"{path}: mode {mask.mode} is not a single-channel label map")
        try:
            raw = np.asarray(mask)
        except OSError as err:
            raise DatasetError(f"cannot decode {path}: {err}") from err
    return map_label(raw, rule, num_classes, path)


def _to_sample(pair: Augmented, index: int) -> Sample:
    image = torch.from_numpy(np.ascontiguousarray(pair.image.transpose(2, 0, 1), dtype=np.float32))
    label = torch.from_numpy(pair.label.astype(np.int64))
    return Sample(image, label, index)


class SegDataset(torch.utils.data.Dataset):
    """One split of a segmentation dataset (see ``build_dataset``).

    Attributes:
        cfg, split, train: as given to ``build_dataset``.
        classes: class names; label value i is ``classes[i]``.
        seen, unseen: sorted class indices of the zero-shot split.
        pairs: the (image, mask) files, in split order.
        rule: how raw mask values map to class ids.
    """

    def __init__(self, cfg: DataCfg, split: str, train: bool) -> None:
        self.cfg, self.split, self.train = cfg, split, train
        self.classes, self.seen, self.unseen = resolve_split(cfg)
        self.rule = label_rule(cfg)
        self.pairs: tuple[Pair, ...] = find_pairs(cfg, split, train)
        check_headers(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return (
            f"SegDataset({self.cfg.dataset}, split={self.split!r}, {len(self)} samples, "
            f"{len(self.classes)} classes, {len(self.unseen)} unseen)"
        )

    def image_path(self, index: int) -> str:
        return str(self.pairs[index].image)

    def label_path(self, index: int) -> str:
        return str(self.pairs[index].mask)

    def _index(self, index) -> int:
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return index % len(self)

    def load(self, index: int) -> Augmented:
        """The decoded sample at its stored size: RGB uint8 HWC image, uint8 HW class ids."""
        pair = self.pairs[self._index(index)]
        image = load_image(pair.image)
        label = load_label(pair.mask, self.rule, len(self.classes))
        if image.shape[:2] != label.shape:
            raise DatasetError(
                f"{pair.mask}: mask size {label.shape[::-1]} differs from its image "
                f"{pair.image.name} {image.shape[1::-1]} (width, height)"
            )
        return Augmented(image, label)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """``ds[i]``: evaluation sample; ``ds[(i, seed)]``: deterministic training sample.

        Evaluation: image keep-ratio resized to ``img_scale`` (float32 [3,h,w]), label int64 at
        the original [H,W]. Training: image float32 [3,crop,crop], label int64 [crop,crop].
        """
        if isinstance(key, tuple):
            index, seed = key
            index = self._index(index)
            raw = self.load(index)
            rng = np.random.default_rng(operator.index(seed))
            return _to_sample(train_pair(raw.image, raw.label, self.cfg, rng), index)
        index = self._index(key)
        raw = self.load(index)
        return _to_sample(Augmented(eval_image(raw.image, self.cfg), raw.label), index)

    def validate(self) -> None:
        """Decode every mask; check its mode, its size against the image header and its values.

        Raises:
            DatasetError: the count of bad masks and the first few problems.
        """
        problems = []
        for pair in self.pairs:
            try:
                label = load_label(pair.mask, self.rule, len(self.classes))
                with read_header(pair.image) as img:
                    if img.size != label.shape[::-1]:
                        raise DatasetError(
                            f"{pair.mask}: mask size {label.shape[::-1]} differs "
                            f"from its image {pair.image.name} {img.size}"
                        )
            except DatasetError as err:
                problems.append(str(err))
        if problems:
            raise DatasetError(
                f"{len(problems)} of {len(self)} masks are bad: "
                + "; ".join(problems[:5])
                + ("; ..." if len(problems) > 5 else "")
            )


def build_dataset(cfg: DataCfg, split: str, train: bool) -> SegDataset:
    """Build one split of ``cfg.dataset``.

    Args:
        cfg: dataset location, class split and pipeline settings.
        split: ``train`` or ``val`` (any split the layout holds); ignored by ``folder``.
        train: the training set (for VOC ``train``: adds ``aug.txt`` / ``SegmentationClassAug``).
    Raises:
        DatasetError: unknown layout, unpaired or missing files, empty split, a mask whose header
            size differs from its image, bad class names or unseen names.
    """
    return SegDataset(cfg, split, train)
