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
from export.device_check import DeviceIoReport, verify_device_graph
from export.folder_write import FolderWrite
from export.graph_io import device_graph, labels_dtype
from export.graph_names import name_model_graph, name_text_graph
from export.onnx_export import (
    ExportError,
    OnnxExport,
    keep_outputs,
    name_text_classifier,
    parity_image,
    run_export,
)
from export.text_export import (
    TextExport,
    check_against_classifier,
    export_text_encoder,
    write_text_encoder,
)
from export.trtexec import folder_commands
from export.wrappers import ClipRcOnnxModel, LogitsOnnxModel, ZegClipOnnxModel
from runtime import __version__, io_names
from runtime.errors import CheckpointError, ConfigError, UnknownNameError, VocabularyError
from runtime.fsutil import atomic_save_npy, atomic_write, sha256_file
from runtime.manifest import (
    METADATA_KEY,
    Manifest,
    PostprocessCfg,
    PreprocessCfg,
    TensorSpec,
    WeightsInfo,
)
from training.clip_loader import LoadedClip, load_clip
from training.loading import Trained, class_text, load_text_file, load_trained
from training.maskclip import IMAGENET_MEAN, IMAGENET_STD
from training.maskclip_plus import BACKGROUND
from training.methods.zegclip import slide_step
from training.models import build_model, text_dim
from training.students import STUDENTS, StudentCfg, build_student
from training.text_classifier import TEMPLATE_SETS, build_text_classifier
from training.vocab import resolve_classes
from training.zegclip import bias_vector

log = logging.getLogger(__name__)
MODEL_FILE = "model.onnx"
# ZegCLIP / CLIP-RC options that shape the network (a checkpoint fixes them).
ARCHITECTURE_OPTIONS = ("num_tokens", "total_d_layer", "decoder_layers", "decoder_heads")
TEXT_FILE = "text_embeddings.npy"
# Gate on |in-graph SCORES - host score| (float32 Resize/Softmax vs the float64 host).
SCORE_ATOL = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """A written deployable folder and the evidence that it is right."""

    output: Path
    manifest: Manifest
    export: OnnxExport
    seconds: float
    removed: tuple[str, ...] = ()  # files of the folder's old graph the export took away


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
    return build_training_free(cfg)


def _check_slide_stride(stride: int | None, size: int) -> None:
    """A slide step given by hand is at most the window (``--image-size``): a larger one would
    leave gaps between windows. None: the method's default.

    Raises:
        ConfigError: naming both flags and the range.
    """
    if stride and stride > size:
        raise ConfigError(
            f"--slide-stride {stride} is larger than --image-size {size}: slide windows would "
            f"leave gaps; give --slide-stride 1..{size}"
        )


def build_training_free(cfg: ExportCfg) -> ExportResult:
    """Export a training-free method (MaskCLIP, SCLIP, ClearCLIP, NACLIP, ...): the method's
    ``model_builder(clip, method_cfg)`` over CLIP (a module ``(image, text) -> logits`` with a
    ``feature_stride``), its text classifier baked in or a graph input, whatever the method
    fuses (refinement, logit scale, PAMR) in the graph."""
    t0 = time.perf_counter()
    _check_text_encoder_cfg(cfg)
    mcfg = cfg.method_cfg()
    if cfg.given("slide_stride"):  # a method's default step is capped at the window instead
        _check_slide_stride(mcfg.slide_stride, mcfg.image_size)
    clip = load_clip_for_export(cfg)
    classes = resolve_classes(cfg.classes)
    model = _checked(cfg.spec.load("model_builder"), clip, mcfg)
    if cfg.text_embeddings and cfg.text_encoder:
        raise ExportError(
            "--text-embeddings gives the classifier as it is: --text-encoder would "
            "encode new classes with a text tower it was not checked against"
        )
    if cfg.text_embeddings:  # used as they are (the official files are not renormalised)
        text = load_text_file(cfg.text_embeddings, len(classes), text_dim(clip))
    else:
        text = build_text_classifier(clip, classes, mcfg.templates, cfg.cache_dir)
    return _build(
        cfg=cfg,
        size=mcfg.image_size,
        templates=mcfg.templates,
        clip=clip,
        classes=classes,
        text=text,
        wrapper=LogitsOnnxModel(model, text, cfg.vocab_mode).eval(),
        preprocess=PreprocessCfg((mcfg.image_size,) * 2, mcfg.mean, mcfg.std, model.feature_stride),
        method_cfg=dataclasses.asdict(mcfg),
        t0=t0,
    )


def _checked(builder, clip: LoadedClip, mcfg):
    """``builder(clip, mcfg)``, with the model's refusals (input size vs patch, backbone kind)
    as ConfigError: bad arguments, not crashes."""
    try:
        return builder(clip, mcfg)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def build_zegclip(cfg: ExportCfg) -> ExportResult:
    """Export ZegCLIP (decoder fused, text folded into the query projection, seen bias constant)."""
    return _build_zero_shot(cfg, ZegClipOnnxModel)


def build_cliprc(cfg: ExportCfg) -> ExportResult:
    """Export CLIP-RC inference (region tokens, region alignment, dual decoder; no recovery)."""
    return _build_zero_shot(cfg, ClipRcOnnxModel)


def _load_zero_shot(cfg: ExportCfg) -> Trained:
    """A checkpoint (ours or official), or a random head on ``cfg.pretrained`` CLIP weights."""
    if cfg.checkpoint:
        trained = load_trained(
            cfg.checkpoint, cfg.method, cfg.backbone, cfg.options.get("seen_bias")
        )
        clip = dataclasses.replace(
            trained.clip, source=cfg.checkpoint, weights_sha256=sha256_file(cfg.checkpoint)
        )
        return dataclasses.replace(trained, clip=clip)
    clip = load_clip_for_export(cfg)
    log.warning("no --checkpoint: the %s head is RANDOM-INIT (outputs are meaningless)", cfg.method)
    mcfg = cfg.method_cfg()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.method, clip, mcfg).eval()
    clip = dataclasses.replace(
        clip, random=True, source=f"{clip.source} + random {cfg.method} head"
    )
    return Trained(
        cfg.method, model, clip, mcfg, None, None, (), False, clip.source, crop_size=mcfg.image_size
    )


@dataclass(frozen=True)
class SeenSplit:
    """The seen-class bias of a zero-shot export.

    Attributes:
        value: subtracted from the seen classes' sigmoid scores (0: none, transductive).
        classes: the export vocabulary's seen classes (empty when none, or ``value`` is 0).
        graph: [C] bias baked into the graph: ``value`` at ``classes`` for ``vocab_mode
            'fixed'``; zeros for ``'input'``, where the runtime subtracts ``value`` from
            ``classes`` and from the classes given as ``seen=`` later (manifest ``seen_bias``).
    """

    value: float
    classes: tuple[str, ...]
    graph: torch.Tensor


def _seen_names(cfg: ExportCfg, trained: Trained, classes: tuple[str, ...]) -> tuple[str, ...]:
    """The export classes seen in training: ``--seen``, or our checkpoint's by name."""
    if cfg.seen is None:
        own = () if trained.classes is None else (trained.classes[i] for i in trained.seen)
        return tuple(n for n in classes if n in set(own))
    seen_names = resolve_classes(cfg.seen)
    unknown = sorted(set(seen_names) - set(classes))
    if unknown:
        raise VocabularyError(f"--seen names {unknown} are not in the export vocabulary")
    return seen_names


def _seen_split(cfg: ExportCfg, trained: Trained, classes: tuple[str, ...]) -> SeenSplit:
    """The bias of ``cfg``: ``seen_bias`` on the export classes seen in training (matched by
    name). An official checkpoint carries no class names: a fixed vocabulary needs ``--seen``,
    or ``--seen-bias 0`` to deploy it transductive on purpose (never silently)."""
    official = bool(cfg.checkpoint) and trained.classes is None
    seen_names = _seen_names(cfg, trained, classes)
    given = cfg.given("seen_bias")
    value = cfg.options["seen_bias"] if given else trained.model_cfg.seen_bias
    if not given and not (trained.inductive or cfg.seen is not None):
        # ours, transductive; a random head keeps its value for ``seen=`` at run time
        value = value if cfg.vocab_mode == "input" and trained.classes is None else 0.0
    if not 0 <= value < 1e6:  # NaN fails too
        raise ConfigError(f"--seen-bias must be a number >= 0, got {value}")
    fixed = cfg.vocab_mode == "fixed"
    if fixed and official and cfg.seen is None and not (given and value == 0):
        raise ConfigError(
            f"{cfg.checkpoint} is an official checkpoint: it carries no class names, so name "
            f"its training-seen classes with --seen (the official inductive inference "
            f"subtracts {value:g} from their scores), or pass --seen-bias 0 to deploy it "
            "transductive"
        )
    if fixed and given and value and not seen_names:
        raise ConfigError(
            f"--seen-bias {value} applies to no class: name the seen classes with --seen "
            "(a random head or an official checkpoint carries none)"
        )
    seen_names = seen_names if value else ()
    if not fixed and value:
        (log.warning if official and not seen_names else log.info)(
            "vocab-mode input: the runtime subtracts the seen bias %g from the folder's seen "
            "classes %s (--seen) and from those given as seen= to set_vocabulary / set_classes",
            value,
            list(seen_names),
        )
    graph = bias_vector(len(classes), [classes.index(n) for n in seen_names], value)
    return SeenSplit(float(value), seen_names, graph if fixed else torch.zeros(len(classes)))


def _build_zero_shot(cfg: ExportCfg, wrapper_cls) -> ExportResult:
    t0 = time.perf_counter()
    _check_text_encoder_cfg(cfg)
    trained = _load_zero_shot(cfg)
    # The checkpoint's values are the base; the user's options go on top.
    base = dataclasses.replace(
        trained.model_cfg, templates=trained.templates or trained.model_cfg.templates
    )
    mcfg = cfg.method_cfg(base)
    if cfg.checkpoint:  # the network is the checkpoint's: its shape options cannot change
        for name in ARCHITECTURE_OPTIONS:
            if cfg.given(name) and getattr(mcfg, name) != getattr(trained.model_cfg, name):
                raise ConfigError(
                    f"--{name.replace('_', '-')} {getattr(mcfg, name)}: {cfg.checkpoint} was "
                    f"trained with {getattr(trained.model_cfg, name)} (leave it out)"
                )
    size, templates = mcfg.image_size, mcfg.templates
    fixed = getattr(trained.model, "fixed_size", None)  # CLIP-RC: its region mask's grid
    if fixed is not None and size != fixed:
        raise ExportError(
            f"{trained.method}'s region mask is fixed for {fixed} px; --image-size {size} is "
            "not possible"
        )
    if size % trained.model.feature_stride:
        raise ConfigError(
            f"--image-size {size} is not a multiple of the patch size "
            f"{trained.model.feature_stride}"
        )
    _check_slide_stride(mcfg.slide_stride, size)
    classes = resolve_classes(cfg.classes)
    text = class_text(trained, classes, templates, cfg.text_embeddings)
    seen = _seen_split(cfg, trained, classes)
    wrapper = wrapper_cls(trained.model, text, seen.graph, cfg.vocab_mode, output="export").eval()
    method_cfg = {
        **dataclasses.asdict(trained.model_cfg),
        "image_size": size,
        "slide_stride": slide_step(dataclasses.replace(mcfg, image_size=size)),
        "seen_bias": seen.graph.tolist(),
    }
    return _build(
        cfg=cfg,
        size=size,
        templates=templates,
        clip=trained.clip,
        classes=classes,
        text=text,
        wrapper=wrapper,
        preprocess=PreprocessCfg(
            (size, size), IMAGENET_MEAN, IMAGENET_STD, trained.model.feature_stride
        ),
        method_cfg=method_cfg,
        t0=t0,
        text_tower=trained.text_tower,
        seen=seen,
        extra_outputs=(io_names.MASK_LOGITS,),
    )


def build_maskclip_plus(cfg: ExportCfg) -> ExportResult:
    """Export a MaskCLIP+ student alone: its net and the CLIP text classifier as a 1x1 conv
    (baked, or the text input), a learned background embedding as class 0 when it has one."""
    t0 = time.perf_counter()
    _check_text_encoder_cfg(cfg)
    trained = _load_student(cfg)
    scfg: StudentCfg = trained.model_cfg
    size = cfg.options.get("image_size", trained.crop_size)
    if size % 32:
        raise ConfigError(
            f"--image-size {size} is not a multiple of 32 (the students' deepest stride)"
        )
    templates = (
        cfg.method_cfg().templates
        if cfg.given("templates") or not trained.templates
        else trained.templates
    )
    classes = resolve_classes(cfg.classes)
    if trained.background:
        if BACKGROUND in classes[1:]:
            raise VocabularyError(
                f"{BACKGROUND!r} must come first for a student with a learned background embedding"
            )
        if classes[0] != BACKGROUND:
            log.info("the student scores %r with its learned embedding: output class 0", BACKGROUND)
            classes = (BACKGROUND,) + classes
    if trained.background and cfg.vocab_mode == "input":
        raise ExportError(
            "--vocab-mode input is not available for a student with a learned "
            "background (its output has one class more than the text input)"
        )
    named = classes[1:] if trained.background else classes
    if not named:
        raise VocabularyError("the vocabulary needs at least one class besides the background")
    text = class_text(trained, named, templates, cfg.text_embeddings)
    method_cfg = {
        **dataclasses.asdict(scfg),
        "image_size": size,
        "output_stride": trained.model.output_stride,
    }
    return _build(
        cfg=cfg,
        size=size,
        templates=templates,
        clip=trained.clip,
        classes=classes,
        text=text,
        wrapper=LogitsOnnxModel(trained.model, text, cfg.vocab_mode).eval(),
        preprocess=PreprocessCfg(
            (size, size), IMAGENET_MEAN, IMAGENET_STD, trained.model.output_stride
        ),
        method_cfg=method_cfg,
        t0=t0,
        text_tower=trained.text_tower,
    )


def _load_student(cfg: ExportCfg) -> Trained:
    """Our maskclip_plus checkpoint, or a random student (``--student``) whose classifier is
    encoded with ``cfg.pretrained`` CLIP text weights."""
    if cfg.checkpoint:
        trained = load_trained(cfg.checkpoint, cfg.method)
        student = cfg.options.get("student")
        if student and student != trained.model_cfg.name:
            raise CheckpointError(
                f"{cfg.checkpoint} holds a {trained.model_cfg.name} student, but "
                f"--student is {student}"
            )
        clip = dataclasses.replace(
            trained.clip, source=cfg.checkpoint, weights_sha256=sha256_file(cfg.checkpoint)
        )
        return dataclasses.replace(trained, clip=clip)
    student = cfg.method_cfg().student
    if not student:
        raise ConfigError("maskclip_plus export needs --checkpoint, or --student for a random one")
    if student not in STUDENTS:
        raise UnknownNameError(f"unknown student {student!r}; students: {sorted(STUDENTS)}")
    clip = load_clip_for_export(cfg)
    log.warning("no --checkpoint: the %s student is RANDOM-INIT (outputs are meaningless)", student)
    torch.manual_seed(cfg.seed)
    scfg = StudentCfg(student, text_dim(clip), dropout=0.0)
    model = build_student(scfg).eval()
    clip = dataclasses.replace(clip, random=True, source=f"{clip.source} + random {student}")
    return Trained(
        cfg.method,
        model,
        clip,
        scfg,
        None,
        None,
        (),
        False,
        clip.source,
        crop_size=cfg.method_cfg().image_size,
    )


def _check_text_encoder_cfg(cfg: ExportCfg) -> None:
    """``--text-encoder`` only makes sense when the text classifier is a graph input."""
    if cfg.text_encoder and cfg.vocab_mode != "input":
        raise ExportError(
            "--text-encoder needs --vocab-mode input: a fixed-vocabulary graph "
            "has no text input for on-device class names to feed"
        )


def _text_encoder(
    cfg: ExportCfg,
    templates: str,
    clip: LoadedClip,
    classes: tuple[str, ...],
    text: torch.Tensor,
    text_tower: bool,
) -> TextExport | None:
    """Export and check the text encoder in memory (``--text-encoder``), or None."""
    if not cfg.text_encoder:
        return None
    if not text_tower:
        raise ExportError(
            f"--text-encoder: the CLIP text tower of {clip.source} is not available "
            "here (its weights could not be loaded, or the checkpoint carries none): "
            "exporting it would encode new class names with random weights"
        )
    export = export_text_encoder(clip=clip, opset=cfg.opset, atol=cfg.atol)
    if export.embed_dim != text.shape[1]:
        raise ExportError(
            f"the text tower gives {export.embed_dim}-d features but the model's "
            f"text input is {text.shape[1]}-d"
        )
    check_against_classifier(export, classes, TEMPLATE_SETS[templates], text.float().numpy())
    return export


def _tensor_specs(
    cfg: ExportCfg,
    pre: PreprocessCfg,
    post: PostprocessCfg | None,
    num_classes: int,
    dim: int,
    extra_outputs: tuple[str, ...] = (),
):
    """(inputs, outputs) TensorSpecs of the deployed graph."""
    s = pre.input_size[0]
    f = s // pre.feature_stride
    c = "num_classes" if cfg.vocab_mode == "input" else num_classes
    image = (
        io_names.MEANINGS[io_names.IMAGE]
        if pre.image_dtype == "float32"
        else io_names.IMAGE_UINT8_MEANING
    )
    inputs = [TensorSpec(io_names.IMAGE, pre.image_dtype, pre.image_shape, image)]
    if cfg.vocab_mode == "input":
        inputs.append(
            TensorSpec(
                io_names.TEXT_EMBEDDINGS,
                "float32",
                (c, dim),
                io_names.MEANINGS[io_names.TEXT_EMBEDDINGS],
            )
        )
    outputs = [
        TensorSpec(name, "float32", (1, c, f, f), io_names.MEANINGS[name])
        for name in (io_names.LOGITS, *extra_outputs)
    ]
    if post is not None:
        hw = (1, *post.output_hw)
        outputs += [
            TensorSpec(io_names.LABELS, post.labels_dtype, hw, io_names.MEANINGS[io_names.LABELS]),
            TensorSpec(io_names.SCORES, "float32", hw, io_names.MEANINGS[io_names.SCORES]),
        ]
    return tuple(inputs), tuple(outputs)


def _postprocess_cfg(cfg: ExportCfg, pre: PreprocessCfg, num_classes: int):
    """The in-graph post-processing of ``cfg`` (None for ``--postprocess host``)."""
    if cfg.postprocess != "graph":
        return None
    hw = tuple(cfg.output_size) if cfg.output_size else pre.input_size
    return PostprocessCfg(hw, labels_dtype(cfg.vocab_mode, num_classes))


def _device_io(
    cfg: ExportCfg,
    model: onnx.ModelProto,
    pre: PreprocessCfg,
    post: PostprocessCfg | None,
    text: torch.Tensor,
    score: tuple[str, float],
) -> tuple[onnx.ModelProto, DeviceIoReport | None]:
    """The deployed graph with ``cfg``'s input format and post-processing (``export.graph_io``),
    checked against ``model`` on a probe image; ``model`` as it is (no report) for the defaults.

    Raises:
        ExportError: the edited graph's logits, labels or scores disagree with the reference.
    """
    if post is None and pre.input_format == "float32-nchw":
        return model, None
    kind, scale = score
    edited = device_graph(model, pre, post, kind, scale)
    extra = {io_names.TEXT_EMBEDDINGS: text.float().numpy()} if cfg.vocab_mode == "input" else {}
    report = verify_device_graph(model, edited, pre, post, kind, extra, cfg.atol, scale)
    log.info(
        "device I/O (%s, %s): max|logit diff| %.3g, labels %.5f where decided (%d near ties, "
        "%d pixels differ), max|score diff| %.3g",
        pre.input_format,
        "host post-processing" if post is None else f"labels/scores at {post.output_hw}",
        report.max_abs_diff,
        report.label_agreement,
        report.near_ties,
        report.disagreements,
        report.max_score_diff,
    )
    if (
        report.max_abs_diff > cfg.atol
        or report.label_agreement < cfg.min_label_agreement
        or report.max_score_diff > SCORE_ATOL
    ):
        raise ExportError(
            f"the device graph disagrees with the host: max|logit diff| "
            f"{report.max_abs_diff:.3g} (<= {cfg.atol}), decided labels "
            f"{report.label_agreement:.5f} (>= {cfg.min_label_agreement}), max|score diff| "
            f"{report.max_score_diff:.3g} (<= {SCORE_ATOL})"
        )
    return edited, report


def _build(
    *,
    cfg: ExportCfg,
    size: int,
    templates: str,
    clip: LoadedClip,
    classes: tuple[str, ...],
    text: torch.Tensor,
    wrapper: torch.nn.Module,
    preprocess: PreprocessCfg,
    method_cfg: dict,
    t0: float,
    text_tower: bool = True,
    seen: SeenSplit | None = None,
    extra_outputs: tuple[str, ...] = (),
) -> ExportResult:
    """Export, validate and write ``model.onnx`` (+ text embeddings, + text encoder) and
    ``manifest.json`` atomically. Every graph is checked before the first file is written, and
    ``manifest.json`` (the folder's claim to its files) comes last.

    ``text_tower``: whether ``clip``'s text tower is the model's own (``--text-encoder`` needs it).
    ``seen``: the zero-shot methods' seen-class bias (manifest ``seen_bias`` / ``seen_classes``).
    ``extra_outputs``: float [1, C, h, w] outputs the wrapper returns after LOGITS and LABELS
    (ZegCLIP / CLIP-RC: MASK_LOGITS), checked like LOGITS and deployed beside it.
    """
    if templates not in TEMPLATE_SETS:
        raise UnknownNameError(f"unknown template set {templates!r}; sets: {sorted(TEMPLATE_SETS)}")
    preprocess = dataclasses.replace(preprocess, input_format=cfg.input_format)
    post = _postprocess_cfg(cfg, preprocess, len(classes))
    dummy = {io_names.IMAGE: parity_image(size, preprocess.mean, preprocess.std, cfg.seed)}
    axes = {}
    if cfg.vocab_mode == "input":
        dummy[io_names.TEXT_EMBEDDINGS] = text.float().contiguous()
        axes = {io_names.TEXT_EMBEDDINGS: {0: "num_classes"}, io_names.LOGITS: {1: "num_classes"}}
        axes.update({name: {1: "num_classes"} for name in extra_outputs})
    log.info("exporting %s %s at %d px (%d classes)", cfg.method, cfg.backbone, size, len(classes))
    result = run_export(
        model=wrapper,
        dummy_inputs=dummy,
        output_names=[io_names.LOGITS, io_names.LABELS, *extra_outputs],
        dynamic_axes=axes,
        opset=cfg.opset,
        simplify=cfg.simplify,
        atol=cfg.atol,
        min_label_agreement=cfg.min_label_agreement,
    )
    # The traced LABELS (int64, input size) is checked above (parity) but not deployed:
    # onnxruntime would compute the C x S x S label map on every call anyway. The device graph
    # gets its own LABELS / SCORES (``--postprocess graph``) and IMAGE format, checked here.
    score = cfg.spec.score_of(method_cfg)
    deployed, device = _device_io(
        cfg,
        keep_outputs(result.model, [io_names.LOGITS, *extra_outputs]),
        preprocess,
        post,
        text,
        score,
    )
    text_export = _text_encoder(cfg, templates, clip, classes, text, text_tower)
    inputs, outputs = _tensor_specs(
        cfg, preprocess, post, len(classes), text.shape[1], extra_outputs
    )
    manifest = Manifest(
        method=cfg.method,
        backbone=cfg.backbone,
        weights=WeightsInfo(clip.source, clip.weights_sha256, clip.random),
        classes=classes,
        vocab_mode=cfg.vocab_mode,
        preprocess=preprocess,
        inputs=inputs,
        outputs=outputs,
        opset=cfg.opset,
        package_version=__version__,
        model_file=MODEL_FILE,
        text_embeddings_file=TEXT_FILE if cfg.vocab_mode == "input" else None,
        # slide_edge: every method's official slide inference is mmseg's (runtime.windows)
        method_cfg={**method_cfg, "templates": templates, "slide_edge": "flush"},
        score=score[0],
        score_scale=score[1],
        postprocess=post,
        seen_bias=0.0 if seen is None else seen.value,
        seen_classes=() if seen is None else seen.classes,
        parity={
            "max_abs_diff": result.parity.max_abs_diff,
            "atol": result.parity.atol,
            "rtol": result.parity.rtol,
            "label_agreement": result.parity.label_agreement,
            "decided_label_agreement": result.parity.decided_agreement,
            "tie_fraction": result.parity.tie_fraction,
            **_device_parity(device),
        },
    )
    if cfg.vocab_mode == "fixed" and not name_text_classifier(deployed, text.float().numpy()):
        log.warning(
            "the baked text classifier was not found in the graph: precision variants "
            "cannot tell the final similarity from the backbone"
        )
    name_model_graph(deployed, manifest)
    out = Path(cfg.output)
    with FolderWrite(out) as folder:
        if text_export is not None:
            name_text_graph(
                text_export.model,
                cfg.method,
                cfg.backbone,
                text_export.context_length,
                text_export.embed_dim,
            )
            info = write_text_encoder(folder.stage, text_export, TEMPLATE_SETS[templates])
            manifest = dataclasses.replace(manifest, text_encoder=info)
        # the trtexec / polygraphy lines, in the manifest.json and the graph's metadata copy alike
        manifest = dataclasses.replace(manifest, build_commands=folder_commands(manifest))
        manifest = _write_folder(
            folder, deployed, manifest, text if cfg.vocab_mode == "input" else None
        )
        final = dataclasses.replace(manifest, model_sha256=sha256_file(folder.path(MODEL_FILE)))
        removed = folder.commit(final)
    return ExportResult(out, final, result, time.perf_counter() - t0, tuple(removed))


def _device_parity(report: DeviceIoReport | None) -> dict[str, float]:
    """The manifest's ``parity`` entries of the device graph check ({} when there was none)."""
    if report is None:
        return {}
    return {
        "device_max_abs_diff": report.max_abs_diff,
        "device_decided_label_agreement": report.label_agreement,
        "device_label_near_ties": report.near_ties,
        "device_label_disagreements": report.disagreements,
        "device_max_score_diff": report.max_score_diff,
    }


def _write_folder(
    folder: FolderWrite, proto: onnx.ModelProto, manifest: Manifest, text: torch.Tensor | None
) -> Manifest:
    """Stage the embeddings (their sha256 into the manifest: ``text_embeddings_sha256``), then
    model.onnx (the manifest in its metadata_props, without the graph file's own hash).

    Returns:
        The manifest with ``text_embeddings_sha256`` set (input vocabularies).
    """
    if text is not None:
        path = atomic_save_npy(folder.path(TEXT_FILE), text.float().numpy())
        manifest = dataclasses.replace(manifest, text_embeddings_sha256=sha256_file(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, manifest.to_json()
    proto.producer_name, proto.producer_version = "ovss-edge", __version__
    atomic_write(folder.path(MODEL_FILE), lambda tmp: onnx.save(proto, tmp))
    return manifest
