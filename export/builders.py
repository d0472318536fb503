"""One thin ``build_<method>()`` per method, all ending in the shared ``_build``."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from export.config import ExportCfg
from export.onnx_export import OnnxExport, parity_image, run_export
from export.wrappers import MaskClipOnnxModel
from runtime import __version__, io_names
from runtime.errors import CheckpointError
from runtime.fsutil import atomic_save_npy, atomic_write, sha256_file
from runtime.manifest import METADATA_KEY, Manifest, PreprocessCfg, TensorSpec, WeightsInfo
from training.clip_loader import LoadedClip, load_clip
from training.maskclip import MaskClipCfg, build_maskclip_model
from training.text_classifier import build_text_classifier
from training.vocab import resolve_classes

log = logging.getLogger(__name__)
MODEL_FILE = "model.onnx"
TEXT_FILE = "text_embeddings.npy"


@dataclass(frozen=True)
class ExportResult:
    """A written deployable folder and the evidence that it is right."""

    output: Path
    manifest: Manifest
    export: OnnxExport
    seconds: float


def load_clip_for_export(cfg: ExportCfg) -> LoadedClip:
    """``load_clip`` with the optional loud fallback to random weights."""
    try:
        return load_clip(cfg.backbone, cfg.pretrained, cfg.seed)
    except CheckpointError as e:
        if not cfg.fallback_random:
            raise
        log.warning("=" * 72)
        log.warning("could not load %s weights %r: %s", cfg.backbone, cfg.pretrained, e)
        log.warning("FALLING BACK TO RANDOM WEIGHTS: the exported masks will be MEANINGLESS")
        log.warning("=" * 72)
        return load_clip(cfg.backbone, "none", cfg.seed)


def build_maskclip(cfg: ExportCfg) -> ExportResult:
    """Export MaskCLIP (key smoothing and prompt denoising fused) to ``cfg.output``."""
    t0 = time.perf_counter()
    clip = load_clip_for_export(cfg)
    classes = resolve_classes(cfg.classes)
    text = build_text_classifier(clip, classes, cfg.templates, cfg.cache_dir)
    # ExportCfg carries MaskClipCfg's switches flat (one CLI flag each); copy them by name.
    mcfg = MaskClipCfg(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(MaskClipCfg)
                          if hasattr(cfg, f.name)})
    model = build_maskclip_model(clip, mcfg)
    return _build(
        cfg=cfg, clip=clip, classes=classes, text=text,
        wrapper=MaskClipOnnxModel(model, text, cfg.vocab_mode).eval(),
        preprocess=PreprocessCfg((cfg.image_size,) * 2, mcfg.mean, mcfg.std, model.feature_stride),
        method_cfg=dataclasses.asdict(mcfg), t0=t0,
    )


def _tensor_specs(cfg: ExportCfg, pre: PreprocessCfg, num_classes: int, dim: int):
    s, f = cfg.image_size, cfg.image_size // pre.feature_stride
    c = "num_classes" if cfg.vocab_mode == "input" else num_classes
    inputs = [TensorSpec(io_names.IMAGE, "float32", (1, 3, s, s), io_names.MEANINGS[io_names.IMAGE])]
    if cfg.vocab_mode == "input":
        inputs.append(TensorSpec(io_names.TEXT_EMBEDDINGS, "float32", (c, dim),
                                 io_names.MEANINGS[io_names.TEXT_EMBEDDINGS]))
    outputs = [TensorSpec(io_names.LOGITS, "float32", (1, c, f, f), io_names.MEANINGS[io_names.LOGITS]),
               TensorSpec(io_names.LABELS, "int64", (1, s, s), io_names.MEANINGS[io_names.LABELS])]
    return tuple(inputs), tuple(outputs)


def _build(*, cfg: ExportCfg, clip: LoadedClip, classes: tuple[str, ...], text: torch.Tensor,
           wrapper: torch.nn.Module, preprocess: PreprocessCfg, method_cfg: dict, t0: float) -> ExportResult:
    """Export, validate and write ``model.onnx`` (+ text embeddings) and ``manifest.json`` atomically."""
    dummy = {io_names.IMAGE: parity_image(cfg.image_size, preprocess.mean, preprocess.std, cfg.seed)}
    axes = {}
    if cfg.vocab_mode == "input":
        dummy[io_names.TEXT_EMBEDDINGS] = text.float().contiguous()
        axes = {io_names.TEXT_EMBEDDINGS: {0: "num_classes"}, io_names.LOGITS: {1: "num_classes"}}
    log.info("exporting %s %s at %d px (%d classes)", cfg.method, cfg.backbone, cfg.image_size, len(classes))
    result = run_export(model=wrapper, dummy_inputs=dummy, output_names=[io_names.LOGITS, io_names.LABELS],
                        dynamic_axes=axes, opset=cfg.opset, simplify=cfg.simplify, atol=cfg.atol,
                        min_label_agreement=cfg.min_label_agreement)
    inputs, outputs = _tensor_specs(cfg, preprocess, len(classes), text.shape[1])
    manifest = Manifest(
        method=cfg.method, backbone=cfg.backbone,
        weights=WeightsInfo(clip.source, clip.weights_sha256, clip.random),
        classes=classes, vocab_mode=cfg.vocab_mode, preprocess=preprocess, inputs=inputs,
        outputs=outputs, opset=cfg.opset, package_version=__version__, model_file=MODEL_FILE,
        text_embeddings_file=TEXT_FILE if cfg.vocab_mode == "input" else None,
        method_cfg={**method_cfg, "templates": cfg.templates},
        parity={"max_abs_diff": result.parity.max_abs_diff, "atol": result.parity.atol,
                "rtol": result.parity.rtol,
                "label_agreement": result.parity.label_agreement,
                "decided_label_agreement": result.parity.decided_agreement,
                "tie_fraction": result.parity.tie_fraction},
    )
    out = Path(cfg.output)
    _write_folder(out, result.model, manifest, text if cfg.vocab_mode == "input" else None)
    final = dataclasses.replace(manifest, model_sha256=sha256_file(out / MODEL_FILE))
    final.write(out)
    return ExportResult(out, final, result, time.perf_counter() - t0)


def _write_folder(out: Path, proto: onnx.ModelProto, manifest: Manifest, text: torch.Tensor | None) -> None:
    """model.onnx (manifest in its metadata_props, without the file's own hash), then embeddings."""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, manifest.to_json()
    proto.producer_name, proto.producer_version = "ovss-edge", __version__
    atomic_write(out / MODEL_FILE, lambda tmp: onnx.save(proto, tmp))
    if text is not None:
        atomic_save_npy(out / TEXT_FILE, text.float().numpy())
