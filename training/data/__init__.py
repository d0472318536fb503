"""Training and evaluation datasets: mmseg layouts, zero-shot splits, seeded mmseg augmentation."""

from training.data.config import DATASETS, DataCfg
from training.data.dataset import Sample, SegDataset, build_dataset
from training.data.splits import ClassSplit, resolve_split

__all__ = [
    "DATASETS",
    "ClassSplit",
    "DataCfg",
    "Sample",
    "SegDataset",
    "build_dataset",
    "resolve_split",
]
