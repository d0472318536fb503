"""DataCfg: one flat, frozen description of a segmentation dataset and its training pipeline.

The pipeline defaults follow the mmseg 0.x configs that ZegCLIP, CLIP-RC and MaskCLIP+ use
(``Resize img_scale=(2048, 512), ratio_range=(0.5, 2.0)``, ``RandomCrop 512, cat_max_ratio=0.75``,
ImageNet mean/std on 0..255 RGB).
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import DatasetError

IGNORE = 255
NAMED_DATASETS = ("voc", "coco_stuff", "context59", "context60")
DATASETS = NAMED_DATASETS + ("folder",)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class DataCfg:
    """Where a dataset lives, its class split and its augmentation settings.

    Attributes:
        dataset: ``voc`` | ``coco_stuff`` | ``context59`` | ``context60`` | ``folder``.
        root: mmseg-layout root of a named dataset (``VOCdevkit/VOC2012``, the COCO-Stuff root
            holding ``images/`` and ``annotations/``, ``VOCdevkit/VOC2010``).
        images, masks: folder dataset only: image dir and PNG label-map dir, paired by file stem.
        classes: folder dataset class names (label value i = class i); for a named dataset an
            optional renaming of its built-in list (same length).
        ignore_label: folder dataset only: the raw label value meaning "ignore" (CamVid: 11);
            it is mapped to 255. Raw 255 is always ignore.
        unseen: class names held out for zero-shot training; None = the dataset's default
            split (folder: none); () = no unseen classes.
        crop_size: side of the square training crop, pixels.
        img_scale: (long, short) edge bound of the keep-ratio resize; the test pipeline uses it
            as is, training multiplies it by a ratio drawn from ``ratio_range``.
        ratio_range: (low, high) of the training rescale ratio.
        cat_max_ratio: the largest class may cover at most this share of the non-ignored crop
            pixels (1.0 disables the retries).
        mean, std: RGB normalisation on 0..255.
        photometric: apply PhotoMetricDistortion in training (off only for tests and debugging).
    """

    dataset: str
    root: str = ""
    images: str = ""
    masks: str = ""
    classes: tuple[str, ...] = ()
    ignore_label: int = IGNORE
    unseen: tuple[str, ...] | None = None
    crop_size: int = 512
    img_scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    photometric: bool = True

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise DatasetError(
                f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}"
            )
        if self.dataset == "folder":
            if not (self.images and self.masks):
                raise DatasetError("the folder dataset needs both images= and masks= dirs")
            if self.root:
                raise DatasetError("the folder dataset takes images= and masks=, not root=")
        else:
            if not self.root:
                raise DatasetError(f"dataset {self.dataset!r} needs root= (its mmseg layout)")
            if self.images or self.masks:
                raise DatasetError(
                    f"images=/masks= are for the folder dataset, not {self.dataset!r}"
                )
            if self.ignore_label != IGNORE:
                raise DatasetError(f"ignore_label is fixed to 255 for {self.dataset!r}")
        if isinstance(self.classes, str) or isinstance(self.unseen, str):
            raise DatasetError("classes and unseen must be tuples of names, not one string")
        if not 0 <= self.ignore_label <= 65535:
            raise DatasetError(f"ignore_label {self.ignore_label} is not a 0..65535 label value")
        assert self.crop_size > 0, f"crop_size must be positive, got {self.crop_size}"
        assert len(self.img_scale) == 2 and min(self.img_scale) > 0, (
            f"img_scale must be two positive sides, got {self.img_scale}"
        )
        lo, hi = self.ratio_range
        assert 0 < lo <= hi, f"ratio_range must be 0 < low <= high, got {self.ratio_range}"
        assert 0 < self.cat_max_ratio <= 1, (
            f"cat_max_ratio must be in (0, 1], got {self.cat_max_ratio}"
        )
        assert len(self.mean) == 3 and len(self.std) == 3, "mean and std need 3 (RGB) values"
        assert min(self.std) > 0, f"std must be positive, got {self.std}"
