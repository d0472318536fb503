"""Check a device graph (``export.graph_io.device_graph``) against the graph before its edits
and against the numpy host post-processing, on one probe image, with onnxruntime on the CPU."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx

from export.parity import ort_outputs
from runtime import io_names
from runtime.manifest import INPUT_FORMATS, PostprocessCfg, PreprocessCfg
from runtime.postprocess import bilinear_matrix, upsample_argmax
from runtime.preprocess import normalize


@dataclass(frozen=True)
class DeviceIoReport:
    """The edited graph against the graph before the edits, on one probe image.

    Attributes:
        max_abs_diff: max |LOGITS difference| (uint8 input normalised in-graph vs on the host).
        label_agreement: share of LABELS pixels equal to ``runtime.postprocess.upsample_argmax``
            of the same run's LOGITS, over the pixels whose host top-2 gap exceeds
            ``tie_tol`` (1.0 without in-graph post-processing).
        near_ties: pixels with a host top-2 gap <= ``tie_tol`` (either label is right there).
        disagreements: LABELS pixels that differ from the host labels (near ties included).
        max_score_diff: max |SCORES - host score| (0.0 without in-graph post-processing).
    """

    max_abs_diff: float
    label_agreement: float
    near_ties: int
    disagreements: int
    max_score_diff: float


def probe_image(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth RGB image, uint8 HxWx3 [0,255]: seeded low-resolution noise, bilinearly
    upsampled."""
    low = np.random.default_rng(seed).uniform(0, 255, (3, max(2, hw[0] // 32), max(2, hw[1] // 32)))
    a_h = bilinear_matrix(hw[0], low.shape[1], dtype=np.float64)
    a_w = bilinear_matrix(hw[1], low.shape[2], dtype=np.float64)
    img = np.einsum("hi,cij,wj->hwc", a_h, low, a_w)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def image_feed(rgb: np.ndarray, pre: PreprocessCfg) -> np.ndarray:
    """The IMAGE feed of ``pre.input_format`` for an RGB uint8 HxWx3 image already at
    ``pre.input_size``: float32 [1,3,H,W] normalised, or uint8 [1,H,W,3] / [1,3,H,W] as it is."""
    assert rgb.dtype == np.uint8 and rgb.shape == (*pre.input_size, 3), (rgb.dtype, rgb.shape)
    if pre.input_format == "uint8-nhwc":
        return np.ascontiguousarray(rgb[None])
    if pre.input_format == "uint8-nchw":
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
    return normalize(rgb, pre)


@dataclass(frozen=True)
class HostScores:
    """``host_scores``: labels int32 [H,W], top score float64 [H,W], top-2 gap float64 [H,W]
    (inf for one class)."""

    labels: np.ndarray
    scores: np.ndarray
    gap: np.ndarray


def host_scores(
    logits: np.ndarray, out_hw: tuple[int, int], score: str, score_scale: float = 1.0
) -> HostScores:
    """The host's reference for LABELS / SCORES of ``logits`` (float32 [C,h,w]) at ``out_hw``:
    labels from ``runtime.postprocess.upsample_argmax`` (int32 [H,W]); the top score (float64
    [H,W], softmax or probability) and top-2 gap of the same float64 bilinear resize."""
    c, h, w = logits.shape
    a_h = bilinear_matrix(out_hw[0], h, dtype=np.float64)
    a_w = bilinear_matrix(out_hw[1], w, dtype=np.float64)
    up = np.einsum("hi,cij,wj->chw", a_h, logits.astype(np.float64), a_w)
    top2 = np.sort(up, axis=0)[-2:] if c > 1 else np.stack([up[0] - np.inf, up[0]])
    best = top2[-1]
    if score == "softmax":
        best = 1.0 / np.exp(score_scale * (up - top2[-1])).sum(axis=0)
    return HostScores(upsample_argmax(logits, out_hw), best, top2[1] - top2[0])


def verify_device_graph(
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    pre: PreprocessCfg,
    post: PostprocessCfg | None,
    score: str,
    extra_feeds: dict[str, np.ndarray],
    tie_tol: float,
    score_scale: float = 1.0,
) -> DeviceIoReport:
    """Run ``before`` (float32 input) and ``after`` (``device_graph``) on ``probe_image`` and
    compare: LOGITS, and LABELS / SCORES against ``host_scores`` of ``after``'s own LOGITS.

    Args:
        extra_feeds: the other inputs (TEXT_EMBEDDINGS for an input vocabulary), or {}.
        tie_tol: host top-2 gaps at or below it are near ties (float32 Resize vs float64 host
            may pick either class there).
        score_scale: the softmax temperature of the scores (``Manifest.score_scale``).
    """
    rgb = probe_image(pre.input_size)
    host_pre = dataclasses.replace(pre, input_format=INPUT_FORMATS[0])
    ref = ort_outputs(
        before.SerializeToString(),
        {io_names.IMAGE: image_feed(rgb, host_pre), **extra_feeds},
        [io_names.LOGITS],
    )[io_names.LOGITS]
    names = [io_names.LOGITS] + ([io_names.LABELS, io_names.SCORES] if post else [])
    got = ort_outputs(
        after.SerializeToString(), {io_names.IMAGE: image_feed(rgb, pre), **extra_feeds}, names
    )
    diff = float(np.abs(got[io_names.LOGITS] - ref).max())
    if post is None:
        return DeviceIoReport(diff, 1.0, 0, 0, 0.0)
    host = host_scores(got[io_names.LOGITS][0], post.output_hw, score, score_scale)
    differ = got[io_names.LABELS][0] != host.labels
    decided = host.gap > tie_tol
    return DeviceIoReport(
        diff,
        float(1.0 - differ[decided].mean()) if decided.any() else 1.0,
        int((~decided).sum()),
        int(differ.sum()),
        float(np.abs(got[io_names.SCORES][0] - host.scores).max()),
    )
