"""Segmentation metrics, mmseg semantics: confusion matrix, mIoU (seen / unseen), hIoU, accuracies.

Zero-shot papers (ZegCLIP, CLIP-RC; METHODS.md A5) report mIoU over seen classes (S), over unseen
classes (U) and their harmonic mean hIoU = 2SU / (S + U). Label 255 is ignored everywhere (A6).

Per class, IoU = TP / (GT + Pred - TP) and Acc = TP / GT. As in mmseg, a class with neither ground
truth nor predictions has IoU NaN and is left out of every mean (nanmean); a class that is predicted
but absent from the ground truth has IoU 0 and counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Accumulates a [C, C] int64 confusion matrix: rows = ground truth, columns = prediction.

    Args:
        num_classes: C, the number of classes; valid ids are 0..C-1.
        ignore_index: label id that is not counted (255, mmseg's and the papers' convention).
        device: where the matrix lives (use the CUDA device when reducing with NCCL).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: str = "cpu"):
        assert num_classes > 0, f"num_classes must be positive, got {num_classes}"
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Set every count back to 0."""
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add one batch.

        Args:
            pred: integer tensor of any shape, e.g. [B, H, W], predicted class ids in 0..C-1.
            label: integer tensor of the same shape, ground-truth ids in 0..C-1 or ``ignore_index``.
        Raises:
            ValueError: shapes differ, a label is neither a class id nor ``ignore_index``, or a
                prediction at a non-ignored pixel is outside 0..C-1 (predictions at ignored
                pixels are not looked at).
        """
        if pred.shape != label.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and label {tuple(label.shape)} differ")
        if pred.is_floating_point() or label.is_floating_point():
            raise ValueError("pred and label must be integer tensors (class ids)")
        c = self.num_classes
        keep = label != self.ignore_index
        lab, prd = label[keep].long(), pred[keep].long()
        if lab.numel() and (lab.min() < 0 or lab.max() >= c):
            bad = lab[(lab < 0) | (lab >= c)].unique()[:5].tolist()
            raise ValueError(f"labels {bad} outside 0..{c - 1} (ignore {self.ignore_index})")
        if prd.numel() and (prd.min() < 0 or prd.max() >= c):
            bad = prd[(prd < 0) | (prd >= c)].unique()[:5].tolist()
            raise ValueError(f"predictions {bad} outside 0..{c - 1}")
        counts = torch.bincount(lab * c + prd, minlength=c * c)
        self.matrix += counts.reshape(c, c).to(self.matrix.device)

    def all_reduce(self) -> None:
        """Sum the matrix over all processes in place; no-op unless torch.distributed is set up."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)


@dataclass(frozen=True)
class ClassIoU:
    """One class's scores, in percent [0, 100]; NaN where undefined (see the module docstring)."""

    name: str
    iou: float
    acc: float  # NaN when the class has no ground-truth pixels
    seen: bool
    gt_pixels: int


@dataclass(frozen=True)
class SegMetrics:
    """Headline segmentation numbers, all in percent [0, 100] as mmseg prints and papers report.

    Means are nanmeans over the classes whose IoU (or Acc) is defined. ``miou_unseen`` and ``hiou``
    are None when the split has no unseen classes; ``hiou`` is 0 when mIoU(S) + mIoU(U) == 0.
    """

    miou: float
    miou_seen: float
    miou_unseen: float | None
    hiou: float | None
    pacc: float  # correct / non-ignored pixels
    macc: float  # mean over classes of correct / ground-truth pixels
    per_class: tuple[ClassIoU, ...]

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None); ``per_class`` is a list of dicts."""
        return _clean(asdict(self))

    def to_markdown(self) -> str:
        """A summary table, then a per-class table with a seen/unseen column; 2 decimals."""
        lines = [
            "| mIoU(S) | mIoU(U) | hIoU | mIoU | pAcc | mAcc |",
            "|---:|---:|---:|---:|---:|---:|",
            "| "
            + " | ".join(
                _fmt(v)
                for v in (
                    self.miou_seen,
                    self.miou_unseen,
                    self.hiou,
                    self.miou,
                    self.pacc,
                    self.macc,
                )
            )
            + " |",
            "",
            "| class | split | IoU | Acc | GT pixels |",
            "|---|---|---:|---:|---:|",
        ]
        for c in self.per_class:
            split = "seen" if c.seen else "unseen"
            lines.append(f"| {c.name} | {split} | {_fmt(c.iou)} | {_fmt(c.acc)} | {c.gt_pixels} |")
        return "\n".join(lines) + "\n"


def summarize(
    matrix: torch.Tensor | np.ndarray, classes: Sequence[str], unseen: Sequence[int] = ()
) -> SegMetrics:
    """Turn a confusion matrix into :class:`SegMetrics`.

    Args:
        matrix: [C, C] non-negative integer counts, rows = ground truth, columns = prediction
            (``ConfusionMatrix.matrix``, after ``all_reduce`` when distributed).
        classes: C class names, in id order.
        unseen: ids (0..C-1) of the unseen classes; the rest are seen. Empty: fully supervised.
    Returns:
        SegMetrics in percent [0, 100].
    """
    m = torch.as_tensor(matrix).detach().cpu().to(torch.float64).numpy()
    c = len(classes)
    assert m.shape == (c, c), f"matrix {m.shape} does not match {c} classes"
    assert (m >= 0).all(), "matrix has negative counts"
    unseen_ids = sorted(set(int(i) for i in unseen))
    assert all(0 <= i < c for i in unseen_ids), f"unseen ids {unseen_ids} outside 0..{c - 1}"
    tp, gt, pred = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(gt + pred > 0, tp / (gt + pred - tp), np.nan) * 100.0
        acc = np.where(gt > 0, tp / gt, np.nan) * 100.0
    seen = np.ones(c, dtype=bool)
    seen[unseen_ids] = False
    s = _nanmean(iou[seen])
    u = _nanmean(iou[~seen]) if unseen_ids else None
    per_class = tuple(
        ClassIoU(str(classes[i]), float(iou[i]), float(acc[i]), bool(seen[i]), int(gt[i]))
        for i in range(c)
    )
    total = gt.sum()
    return SegMetrics(
        miou=_nanmean(iou),
        miou_seen=s,
        miou_unseen=u,
        hiou=None if u is None else _hmean(s, u),
        pacc=float(tp.sum() / total * 100.0) if total > 0 else math.nan,
        macc=_nanmean(acc),
        per_class=per_class,
    )


def _nanmean(x: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN when there are none (no warning)."""
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def _hmean(s: float, u: float) -> float:
    """hIoU = 2SU / (S + U); 0 when S + U == 0; NaN propagates."""
    return 0.0 if s + u == 0 else 2.0 * s * u / (s + u)


def _fmt(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.2f}"


def _clean(obj):
    """Replace NaN floats by None, recursively; tuples become lists."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj
