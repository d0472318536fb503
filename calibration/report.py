"""Accuracy of a reduced-precision graph against its FP32 graph on held-out frames.

Both graphs see the same input, prepared by the runtime's own whole-image path
(``resize_rgb`` to the model input, then ``normalize``). Reported per variant:
- label agreement (%): argmax over classes of the logits at feature resolution, over all cells,
  and over the *decided* cells (FP32 top-2 margin > ``margin``; elsewhere classes tie within
  noise), None ("n/a") when no cell is decided; and the decided share of cells (%);
- mean and max |logit error|, in logits (and the FP32 logit range, to read them against);
- with ground truth (``labels``: a folder of label PNGs named like the frames): mIoU (%) of FP32 and
  the variant, labels upsampled to the frame's own size as the runtime does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from runtime import io_names
from runtime.errors import CalibrationError
from runtime.manifest import Manifest
from runtime.postprocess import upsample_argmax
from runtime.preprocess import normalize, resize_rgb

log = logging.getLogger(__name__)
IGNORE = 255


@dataclass(frozen=True)
class AccuracyReport:
    """One variant against FP32 (percentages in 0..100; None where not measured, and
    ``decided_agreement`` None when no cell was decided)."""

    precision: str
    images: int
    label_agreement: float
    decided_agreement: float | None
    decided_fraction: float
    mean_abs_logit_error: float
    max_abs_logit_error: float
    fp32_logit_range: float
    miou_fp32: float | None = None
    miou_variant: float | None = None
    labelled_images: int = 0

    def row(self) -> str:
        """One markdown table row, in :data:`HEADER`'s columns ("n/a" where not measured)."""
        cells = [self.precision, str(self.images)]
        cells += [_pct(getattr(self, k)) for k in PCT_FIELDS[:3]]
        cells += [f"{self.mean_abs_logit_error:.4g}", f"{self.max_abs_logit_error:.4g}"]
        cells += [_pct(self.miou_fp32), _pct(self.miou_variant)]
        return "| " + " | ".join(cells) + " |"

    def to_json(self) -> dict:
        """Every field, and each percentage again under a ``_pct`` name that says its unit (the
        bare names stay for readers written before). Non-finite values become None (null)."""
        d = {k: finite_or_none(v) for k, v in dataclasses.asdict(self).items()}
        return {**d, **{f"{k}_pct": d[k] for k in PCT_FIELDS}}


# The report's percentages (0..100), in the table's column order.
PCT_FIELDS = (
    "label_agreement",
    "decided_agreement",
    "decided_fraction",
    "miou_fp32",
    "miou_variant",
)
HEADER = (
    "| precision | images | label agreement (%) | decided agreement (%) | decided cells (%) | "
    "mean abs logit err (logit) | max abs logit err (logit) | mIoU FP32 (%) | mIoU variant (%) |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def finite_or_none(x):
    """``x``, or None where it is a non-finite float (strict JSON, and ``jq``, reject NaN)."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _pct(x: float | None) -> str:
    return "n/a" if finite_or_none(x) is None else f"{x:.2f}"


def to_table(reports: Iterable[AccuracyReport]) -> str:
    """Markdown table, one row per variant; units in the header, "n/a" where not measured."""
    return "\n".join([HEADER, *(r.row() for r in reports)])


class _Confusion:
    def __init__(self, n: int):
        self.n, self.m = n, np.zeros((n, n), np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        keep = gt != IGNORE
        idx = gt[keep].astype(np.int64) * self.n + pred[keep].astype(np.int64)
        self.m += np.bincount(idx, minlength=self.n * self.n).reshape(self.n, self.n)

    def miou(self) -> float:
        tp = np.diag(self.m).astype(np.float64)
        union = self.m.sum(0) + self.m.sum(1) - tp
        present = self.m.sum(1) > 0
        return float(100 * np.mean(tp[present] / np.maximum(union[present], 1)))


def load_gt(
    labels: Path, name: str, num_classes: int, ignore_label: int | None
) -> np.ndarray | None:
    """The label map for frame ``name`` (same stem, .png) as uint8 class ids, 255 = ignore; None
    when there is none."""
    path = labels / (Path(name.split("#")[0]).stem + ".png")
    if not path.is_file():
        return None
    try:
        gt = np.asarray(Image.open(path))
    except OSError as e:
        raise CalibrationError(f"cannot read label map {path}: {e}") from e
    if gt.ndim != 2:
        raise CalibrationError(f"{path} is not a single-channel label map")
    gt = gt.astype(np.int64)
    if ignore_label is not None:
        gt[gt == ignore_label] = IGNORE
    bad = (gt >= num_classes) & (gt != IGNORE)
    if bad.any():
        raise CalibrationError(
            f"{path} holds label values {sorted(np.unique(gt[bad]).tolist())[:5]} "
            f"outside the model's {num_classes} classes (use --ignore-label)"
        )
    return gt.astype(np.uint8)


def compare_variant(
    precision: str,
    fp32,
    variant,
    frames,
    manifest: Manifest,
    extra_feeds: dict[str, np.ndarray] | None = None,
    labels: Path | None = None,
    ignore_label: int | None = None,
    margin: float = 1e-3,
) -> AccuracyReport:
    """Run ``fp32`` and ``variant`` (callables: feeds -> LOGITS [1,C,h,w]) on ``frames``
    (iterable of (name, rgb uint8 HxWx3)) and summarise the differences."""
    pre, n_cls = manifest.preprocess, len(manifest.classes)
    conf32, conf_v = _Confusion(n_cls), _Confusion(n_cls)
    n = agree = decided = agree_decided = 0
    abs_sum = cells = 0.0
    max_err, lo, hi, labelled = 0.0, np.inf, -np.inf, 0
    for name, rgb in tqdm(frames, desc=f"{precision} vs fp32", unit="img"):
        feeds = {
            io_names.IMAGE: normalize(resize_rgb(rgb, pre.input_size), pre),
            **(extra_feeds or {}),
        }
        ref, got = fp32(feeds)[0].astype(np.float64), variant(feeds)[0].astype(np.float64)
        err = np.abs(got - ref)
        abs_sum, cells, max_err = (
            abs_sum + err.sum(),
            cells + err.size,
            max(max_err, float(err.max())),
        )
        lo, hi = min(lo, float(ref.min())), max(hi, float(ref.max()))
        top2 = (
            np.sort(ref, axis=0)[-2:] if ref.shape[0] > 1 else np.stack([ref[0] - np.inf, ref[0]])
        )
        sure = (top2[1] - top2[0]) > margin
        same = ref.argmax(0) == got.argmax(0)
        n, agree = n + 1, agree + int(same.sum())
        decided, agree_decided = decided + int(sure.sum()), agree_decided + int(same[sure].sum())
        gt = load_gt(labels, name, n_cls, ignore_label) if labels is not None else None
        if gt is not None:
            if gt.shape != rgb.shape[:2]:
                raise CalibrationError(
                    f"the label map of {name} is {gt.shape}, its frame {rgb.shape[:2]}"
                )
            labelled += 1
            conf32.add(upsample_argmax(ref.astype(np.float32), gt.shape), gt)
            conf_v.add(upsample_argmax(got.astype(np.float32), gt.shape), gt)
    if n == 0:
        raise CalibrationError("no held-out frames to compare on")
    total = cells / max(n_cls, 1)
    return AccuracyReport(
        precision,
        n,
        100 * agree / total,
        100 * agree_decided / decided if decided else None,  # nothing decided: n/a, not 0
        100 * decided / total,
        abs_sum / cells,
        max_err,
        hi - lo,
        conf32.miou() if labelled else None,
        conf_v.miou() if labelled else None,
        labelled,
    )
