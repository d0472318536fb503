"""PyTorch-vs-onnxruntime parity on one set of inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime import io_names
from runtime.backends.ort import OrtBackend


@dataclass(frozen=True)
class ParityReport:
    """How closely onnxruntime reproduces PyTorch.

    Attributes:
        max_abs_diff: max |logit difference| over the LOGITS output (and MASK_LOGITS where the
            graph has it).
        max_excess: max of |diff| - (atol + rtol |ref|) over the same outputs (<= 0 when every
            element is within tolerance); the rtol term matters for key-smoothed scores, which
            are unbounded, and for mask logits.
        label_agreement: share of equal LABELS over all pixels.
        decided_agreement: share of equal labels over pixels whose reference top-2 margin exceeds
            ``2 * atol`` (elsewhere the classes tie within numerical noise: either label is
            right).
        tie_fraction: share of pixels excluded as ties.
    """

    max_abs_diff: float
    max_excess: float
    label_agreement: float
    decided_agreement: float
    tie_fraction: float
    atol: float
    rtol: float
    min_label_agreement: float

    @property
    def passed(self) -> bool:
        """True when |diff| <= atol + rtol |ref| everywhere and decided labels agree enough."""
        return self.max_excess <= 0.0 and self.decided_agreement >= self.min_label_agreement


def ort_outputs(
    model_bytes: bytes, feeds: dict[str, np.ndarray], names: list[str]
) -> dict[str, np.ndarray]:
    """Run a serialised ONNX model once on the CPU provider."""
    with OrtBackend(model_bytes, providers=["CPUExecutionProvider"]) as backend:
        return backend(feeds, names)


def compare(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    atol: float,
    min_label_agreement: float,
    margins: np.ndarray | None = None,
    rtol: float = 1e-5,
) -> ParityReport:
    """Compare LOGITS and MASK_LOGITS, where present (|diff| <= atol + rtol |ref|), and LABELS
    (agreement) of two output dicts.

    Args:
        rtol: relative term, at float32 accumulation level. Key-smoothed MaskCLIP scores reach
            1e3 and more (the official spatial key normalisation), where float32's own spacing
            exceeds 1e-4, so an absolute bound alone cannot hold there.
        margins: reference top-2 score margin per label pixel (same shape as LABELS); None
            treats every pixel as decided.
    """
    max_diff, excess = 0.0, -np.inf
    for name in (io_names.LOGITS, io_names.MASK_LOGITS):
        if name not in reference:
            continue
        ref = reference[name].astype(np.float64)
        diff = np.abs(ref - candidate[name])
        max_diff = max(max_diff, float(diff.max()))
        excess = max(excess, float((diff - (atol + rtol * np.abs(ref))).max()))
    same = reference[io_names.LABELS] == candidate[io_names.LABELS]
    decided = np.ones_like(same) if margins is None else margins > 2 * atol
    decided_agree = float(same[decided].mean()) if decided.any() else 1.0
    return ParityReport(
        max_diff,
        excess,
        float(same.mean()),
        decided_agree,
        float(1.0 - decided.mean()),
        atol,
        rtol,
        min_label_agreement,
    )
