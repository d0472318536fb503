"""Run a deployable folder on images: validation, resize/slide, backend, upsample + argmax."""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime import io_names, label_kernel
from runtime.backends import ModelRef, open_backend
from runtime.engine_cache import manifest_input_shapes
from runtime.errors import ConfigError, ModelFolderError, VocabularyError
from runtime.folder_files import model_file, pinned_folder, text_embeddings
from runtime.graph_check import check_graph
from runtime.image import as_rgb_uint8
from runtime.label_map import METHODS as LABEL_METHODS
from runtime.label_map import UNKNOWN, LabelMap, label_map, upsample
from runtime.manifest import Manifest, load_manifest
from runtime.preprocess import normalize, resize_rgb, short_side_size
from runtime.text_encoder import TextEncoder
from runtime.vocab import seen_vector, validate_classes
from runtime.windows import EDGES, WindowPlan, default_stride, plan_windows, stitch

log = logging.getLogger(__name__)
MODES = ("auto", "whole", "slide")


@dataclass(frozen=True)
class _TextInput:
    """The text side of one vocabulary of a ``vocab_mode: input`` graph.

    Attributes:
        rows: float32 [C, D] text classifier fed to the graph.
        bias: float32 [C] seen-class bias subtracted from the graph's LOGITS, or None.
        seen: the seen class names (those with a bias).
    """

    rows: np.ndarray
    bias: np.ndarray | None = None
    seen: tuple[str, ...] = ()


@dataclass(frozen=True)
class SegResult:
    """One segmented image.

    Attributes:
        labels: [H, W] class indices at the input image's size, uint8 for at most 255
            classes (else int32); ``UNKNOWN`` (255) where the top score is below the score
            threshold.
        logits: float32 [C, h, w] scores at feature resolution (whole mode and ``grid`` slide
            plans; stitched over windows), or [C, Hp, Wp] at the (rescaled) image's resolution
            for ``flush`` slide plans (averaged there, as the official code); None when the
            graph computed the labels (``postprocess == "graph"``).
        classes: the class names, index-aligned with ``labels`` values.
        classes_present: names of classes that occur in ``labels``, in class order.
        scores: float32 [H, W] top-class probability in [0, 1] (the method's own
            normalisation, see ``Segmenter``), or None when not asked for.
        unknown: fraction of pixels labelled ``UNKNOWN``, in [0, 1].
        mode: "whole" (one resized pass) or "slide" (windows at native scale).
        windows: number of model runs.
        timings_ms: {"preprocess", "inference", "postprocess"} wall-clock milliseconds.
        backend, providers: the backend name and the providers it actually used.
        postprocess: "host" (``runtime.label_map``) or "graph" (the folder's in-graph labels
            and scores, exported with ``--postprocess graph``).
    """

    labels: np.ndarray
    logits: np.ndarray | None
    classes: tuple[str, ...]
    classes_present: tuple[str, ...]
    mode: str
    windows: int
    timings_ms: dict[str, float]
    backend: str
    providers: tuple[str, ...]
    scores: np.ndarray | None = None
    unknown: float = 0.0
    postprocess: str = "host"


class Segmenter:
    """Loads a deployable folder and segments HxWx3 uint8 images.

    Args:
        folder: deployable folder written by ``export.build``.
        backend: "auto" (a TensorRT engine that fits this GPU, else onnxruntime with the best
            provider this machine offers), "onnxruntime" or "tensorrt" (see ``runtime.backends``).
        mode: "auto" (whole image when it fits in the input, else slide), "whole" or "slide".
        stride: slide step in pixels (default: the method's ``slide_stride`` recorded in the
            manifest, else two thirds of the input size).
        slide_edge: window placement and averaging (``runtime.windows``): ``flush`` (the
            official mmseg ``slide_inference``: last window flush with the image edge, overlaps
            averaged at full resolution) or ``grid`` (feature-grid windows on a padded image,
            averaged at feature resolution: faster, labels can differ at window seams);
            None: the manifest's ``method_cfg.slide_edge``, else ``flush``.
        short_side: rescale images so the short side has this length first (aspect kept;
            None: the method's ``short_side`` from the manifest, else none; 0: none).
        verify: check the model file's sha256 against the manifest.
        precision: which graph to run: ``fp32`` (``model.onnx``), or an ``fp16`` / ``int8``
            variant recorded in the manifest by ``calibration.calibrate``.
        score_threshold: in [0, 1): pixels whose top-class probability is below it are labelled
            ``UNKNOWN`` (255) instead of being forced into a class; 0 = off (needs <= 255
            classes). The probability is the method's own: softmax over the classes of the
            upsampled logits (MaskCLIP, MaskCLIP+, SCLIP, ClearCLIP, NACLIP; with logit scale
            100, cosine gaps of a few hundredths already give p near 1), or the upsampled
            per-class sigmoid score minus the seen bias (ZegCLIP, CLIP-RC; not exclusive, so
            a pixel can have no class above 0.5). Settable between calls.
        label_method: ``fast`` (default; same labels, see ``runtime.label_map``) or ``exact``
            (the reference upsample of every class to every pixel).
        graph_labels: use the folder's in-graph labels and scores (``--postprocess graph``) in
            whole-image mode when the image has the graph's output size; False: always the host.
        backend_options: passed to ``runtime.backends.open_backend`` (threads, providers,
            cuda_graph, dla_core, probe).

    Attributes:
        backend: the backend that runs (``backend.name``, ``backend.providers``).
        backend_reasons: why "auto" skipped the choices before it (empty when the first ran).
    """

    def __init__(
        self,
        folder: str | Path,
        backend: str = "auto",
        *,
        mode: str = "auto",
        stride: int | None = None,
        slide_edge: str | None = None,
        short_side: int | None = None,
        verify: bool = True,
        precision: str = "fp32",
        score_threshold: float = 0.0,
        label_method: str = "fast",
        graph_labels: bool = True,
        **backend_options,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if label_method not in LABEL_METHODS:
            raise ValueError(f"label_method must be one of {LABEL_METHODS}, got {label_method!r}")
        self.label_method, self.graph_labels = label_method, graph_labels
        self._warned_graph_size: tuple[int, int] | None = None
        self.folder = Path(folder)
        # the manifest and its files from one generation (export / calibrate may commit another)
        self._files = pinned_folder(self.folder)
        self.manifest: Manifest = load_manifest(self._files)
        size = self.manifest.preprocess.input_size
        if size[0] != size[1]:
            raise ModelFolderError(f"only square inputs are supported, manifest has {size}")
        # The method's own slide step and short side (recorded by the exporter) are the defaults.
        method = self.manifest.method_cfg
        self.mode, self.precision = mode, precision
        # short_side None: the method's (manifest); 0: no rescaling.
        self.short_side = (method.get("short_side") if short_side is None else short_side) or None
        # SCLIP-style background threshold: low-confidence pixels go to class 0.
        self.background_thd = float(method.get("prob_thd") or 0.0)
        self.score_kind, self.score_scale = self.manifest.score, self.manifest.score_scale
        self.score_threshold = score_threshold
        self.stride = (
            stride
            or method.get("slide_stride")
            or default_stride(size[0], self.manifest.preprocess.feature_stride)
        )
        if stride and stride > size[0]:  # the manifest's own step is capped at the window
            raise ConfigError(
                f"stride {stride} is larger than the model's window of {size[0]} pixels: "
                f"slide windows would leave gaps; give 1..{size[0]}"
            )
        # ZegCLIP / CLIP-RC folders with the mask logits: the flush slide path upsamples them
        # before the sigmoid (older folders: the scores, sigmoid first).
        self._mask_logits = any(o.name == io_names.MASK_LOGITS for o in self.manifest.outputs)
        self.slide_edge = slide_edge or method.get("slide_edge") or "flush"
        if self.slide_edge not in EDGES:
            raise ValueError(f"slide_edge must be one of {EDGES}, got {self.slide_edge!r}")
        self._verify = verify
        model_path = self._model_path(verify)
        ref = ModelRef(
            model_path,
            self.folder,
            precision,
            self.manifest.model_for(precision)[1],
            manifest_input_shapes(self.manifest.inputs),
        )
        opened = open_backend(backend, ref, **backend_options)
        self.backend, self.backend_reasons = opened.backend, opened.reasons
        # (text input or None, class names): replaced as one object, read once per call, so a
        # vocabulary change from another thread lands between calls and a result's classes
        # always match its logits (and its seen bias).
        self._vocab: tuple[_TextInput | None, tuple[str, ...]] = (None, self.manifest.classes)
        self._encode_lock = threading.Lock()
        # The on-device text encoder (set_classes): always onnxruntime, loaded on first use, with
        # this backend's options when it is onnxruntime too (else only its thread count).
        self._text_encoder: TextEncoder | None = None
        ort_keys = ("threads", "providers") if self.backend.name == "onnxruntime" else ("threads",)
        self._text_encoder_options = {
            "verify": verify,
            **{k: backend_options[k] for k in ort_keys if k in backend_options},
        }
        try:
            self._check_graph_io()
            if self.manifest.vocab_mode == "input":
                self._load_default_vocabulary()
        except BaseException:
            self.backend.close()
            raise
        if label_method == "fast":
            label_kernel.warm()  # compile / load the label kernel at load time, not on frame 1
        if self.manifest.weights.random:
            log.warning("model %s has RANDOM weights: its masks are meaningless", self.folder)

    @property
    def score_threshold(self) -> float:
        """Pixels whose top-class probability is below this get ``UNKNOWN``; 0 = off."""
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"score threshold must be in [0, 1), got {value}")
        self._score_threshold = value

    def _model_path(self, verify: bool) -> Path:
        """The graph of ``self.precision``, confined to the folder and its sha256 present (and
        compared when ``verify``): ``runtime.folder_files``."""
        return model_file(self._files, self.manifest, self.precision, verify)

    def _check_graph_io(self) -> None:
        """The loaded graph's names, dtypes and shapes agree with the manifest
        (``runtime.graph_check``)."""
        check_graph(self.manifest, self.backend.input_specs, self.backend.output_specs)

    def _load_default_vocabulary(self) -> None:
        """The folder's own text embeddings (confined, hashed, float [C, D], finite)."""
        dim = self.manifest.input(io_names.TEXT_EMBEDDINGS).shape[-1]
        emb = text_embeddings(self._files, self.manifest, dim, self._verify)
        try:
            self.set_vocabulary(self.manifest.classes, emb, seen=self.manifest.seen_classes)
        except VocabularyError as e:  # all-zero rows: the folder's file is unusable
            raise ModelFolderError(f"the folder's text embeddings are unusable: {e}") from e

    def set_vocabulary(
        self,
        classes: list[str] | tuple[str, ...],
        embeddings: np.ndarray,
        *,
        seen: list[str] | tuple[str, ...] | None = None,
        normalize: bool = True,
    ) -> None:
        """Swap the vocabulary of a ``vocab_mode: input`` model without re-export.

        Args:
            classes: C class names.
            embeddings (np.ndarray): float [C, D] finite text classifier from the same CLIP, no
                all-zero row.
            seen: ZegCLIP / CLIP-RC inductive: the names in ``classes`` seen in training; the
                manifest's ``seen_bias`` (0.1 officially) is subtracted from their scores in
                every later call, as the official inference does. None / empty: no bias.
            normalize: L2-normalise the rows (default); False: use them as given (float32), as
                the official code uses its float16 text files.
        Raises:
            VocabularyError: fixed-vocabulary model, bad names, or a shape/dtype mismatch.
            ConfigError: ``seen`` names a class not in ``classes``, or the folder has no seen
                bias (a method without one, a transductive export, or an older export).
        """
        if self.manifest.vocab_mode != "input":
            raise VocabularyError(
                "this model was exported with a fixed vocabulary (--vocab-mode fixed)"
            )
        classes = validate_classes(classes)
        dim = self.manifest.input(io_names.TEXT_EMBEDDINGS).shape[-1]
        emb = np.asarray(embeddings)
        if (
            emb.ndim != 2
            or emb.shape != (len(classes), dim)
            or not np.issubdtype(emb.dtype, np.floating)
        ):
            raise VocabularyError(
                f"embeddings must be float [{len(classes)}, {dim}], got {emb.dtype} {emb.shape}"
            )
        emb = emb.astype(np.promote_types(emb.dtype, np.float32), copy=False)  # float16 too
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if not np.all(np.isfinite(emb)) or np.any(norms == 0):
            raise VocabularyError("embeddings contain non-finite values or all-zero rows")
        bias = self._seen_bias(classes, seen)
        rows = np.ascontiguousarray(emb / norms if normalize else emb, dtype=np.float32)
        names = () if bias is None else tuple(c for c, b in zip(classes, bias) if b)
        self._vocab = (_TextInput(rows, bias, names), classes)

    def _seen_bias(self, classes: tuple[str, ...], seen) -> np.ndarray | None:
        """float32 [C] bias of ``seen`` (the manifest's ``seen_bias`` on those classes), or None."""
        vector = seen_vector(classes, () if seen is None else seen, self.manifest.seen_bias)
        if vector is None:
            return None
        if not self.manifest.seen_bias:
            why = (
                f"{self.manifest.method} has no seen-class bias"
                if self.manifest.score != "probability"
                else "it was exported without a seen-class bias (transductive, --seen-bias 0, "
                "or by a version that did not record it: re-export to set seen classes)"
            )
            raise ConfigError(f"seen= does not apply to {str(self.folder)!r}: {why}")
        return np.asarray(vector, dtype=np.float32)

    @property
    def classes(self) -> tuple[str, ...]:
        """The current vocabulary, index-aligned with the labels of the next call."""
        return self._vocab[1]

    @property
    def seen_classes(self) -> tuple[str, ...]:
        """The classes of the current vocabulary whose scores get the seen-class bias."""
        text = self._vocab[0]
        return self.manifest.seen_classes if text is None else text.seen

    @property
    def _text(self) -> np.ndarray | None:
        """The current [C,D] text classifier input (None for fixed-vocabulary models)."""
        text = self._vocab[0]
        return None if text is None else text.rows

    def set_classes(
        self,
        names: list[str] | tuple[str, ...],
        *,
        seen: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        """Change the vocabulary on the device: encode ``names`` with the folder's text encoder
        (CLIP text tower + BPE tokenizer, no torch) and ``set_vocabulary`` the result.

        Args:
            names: C class names; each is put into every manifest template (``a photo of a {}.``).
            seen: the names seen in training, biased as in ``set_vocabulary``.
        Raises:
            VocabularyError: fixed-vocabulary model, or empty/blank/duplicate names.
            ConfigError: bad ``seen`` (see ``set_vocabulary``), before anything is encoded.
            ModelFolderError: the folder has no text encoder, or its files are missing/modified.
            ImportError: the ``text`` extra (regex, ftfy) is not installed.
        """
        if self.manifest.vocab_mode != "input":
            raise VocabularyError(
                "this model was exported with a fixed vocabulary (--vocab-mode "
                "fixed): re-export with --vocab-mode input --text-encoder"
            )
        info = self.manifest.text_encoder
        if info is None:
            raise ModelFolderError(
                f"{str(self.folder)!r} has no text encoder: re-export with "
                "--text-encoder, or pass embeddings to set_vocabulary"
            )
        classes = validate_classes(names)
        self._seen_bias(classes, seen)  # refuse a bad seen= before encoding
        with self._encode_lock:  # one encoder, loaded once, even with callers on several threads
            if self._text_encoder is None:
                self._text_encoder = TextEncoder(self._files, info, **self._text_encoder_options)
            embeddings = self._text_encoder.encode(classes)
        self.set_vocabulary(classes, embeddings, seen=seen)

    def _run(self, x: np.ndarray, text: _TextInput | None, names=(io_names.LOGITS,)):
        """The graph on one input; the first batch item of each of ``names`` (default: logits),
        LOGITS with the vocabulary's seen bias subtracted (as a fixed graph has it built in)."""
        feeds = {io_names.IMAGE: x}
        if text is not None:
            feeds[io_names.TEXT_EMBEDDINGS] = text.rows
        out = self._backend_run(feeds, list(names))
        if text is not None and text.bias is not None and io_names.LOGITS in names:
            out = {**out, io_names.LOGITS: out[io_names.LOGITS] - text.bias[:, None, None]}
        return out[names[0]][0] if len(names) == 1 else [out[n][0] for n in names]

    def _backend_run(self, feeds: dict[str, np.ndarray], names: list[str]) -> dict:
        """``self.backend(feeds, names)``, one call at a time for backends that are not
        thread-safe (TensorRT: one stream and shared buffers); onnxruntime sessions run
        concurrently. So ``__call__`` may be used from several threads with any backend."""
        if self.backend.name == "onnxruntime":
            return self.backend(feeds, names)
        # dict.setdefault is atomic: every thread gets the same lock, made on first use
        with self.__dict__.setdefault("_backend_lock", threading.Lock()):
            return self.backend(feeds, names)

    def _sigmoid_upsample(self, text: _TextInput | None, num_classes: int):
        """(mask logits [C, h, w], (S, S)) -> sigmoid(upsampled) - seen bias [C, S, S], float32:
        a window's scores as the official slide inference (and ``training.evaluate``) takes
        them. The bias is the vocabulary's (``seen=``) or the fixed graph's own."""
        if text is not None:
            bias = np.zeros(num_classes, np.float32) if text.bias is None else text.bias
        else:
            bias = np.asarray(self.manifest.method_cfg.get("seen_bias") or [0.0] * num_classes)
        bias = bias.astype(np.float32)[:, None, None]

        def up(mask_logits: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
            u = upsample(mask_logits, hw)
            with np.errstate(over="ignore"):  # exp(-u) -> inf: sigmoid 0, as float32 torch
                return 1.0 / (1.0 + np.exp(-u)) - bias

        return up

    def _feed(self, nchw: np.ndarray) -> np.ndarray:
        """The image input from [1, 3, S, S] (normalised float32, or uint8 for graphs that
        normalise themselves): laid out as the manifest's ``input_format`` says."""
        if self.manifest.preprocess.input_format == "uint8-nhwc":
            return np.ascontiguousarray(nchw[0].transpose(1, 2, 0)[None])
        return np.ascontiguousarray(nchw)

    def _nchw(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> [1, 3, H, W]: normalised float32, or uint8 when the graph normalises."""
        pre = self.manifest.preprocess
        if pre.input_format == "float32-nchw":
            return normalize(rgb, pre)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])

    def _slide(self, work: np.ndarray) -> tuple[np.ndarray, WindowPlan]:
        pre = self.manifest.preprocess
        plan = plan_windows(
            work.shape[:2], pre.input_size[0], self.stride, pre.feature_stride, self.slide_edge
        )
        x = self._nchw(work)
        # Padding is the mean colour: 0 after normalisation, the rounded mean in uint8 (within
        # half a grey level of it).
        canvas = np.zeros((1, 3) + plan.padded_hw, dtype=x.dtype)
        if x.dtype == np.uint8:
            canvas[:] = np.rint(np.asarray(pre.mean)).astype(np.uint8)[None, :, None, None]
        canvas[:, :, : work.shape[0], : work.shape[1]] = x
        return canvas, plan

    def _use_graph_labels(self, mode: str, out_hw: tuple[int, int]) -> bool:
        post = self.manifest.postprocess
        if not self.graph_labels or post is None or mode != "whole":
            return False
        if tuple(post.output_hw) == tuple(out_hw):
            return True
        if self._warned_graph_size != out_hw:
            self._warned_graph_size = out_hw
            log.info(
                "image %s is not the graph's label size %s: labels computed on the host",
                list(out_hw),
                list(post.output_hw),
            )
        return False

    def _graph_labels(
        self, labels: np.ndarray, scores: np.ndarray, threshold: float, num_classes: int
    ):
        """The graph's labels / scores [H, W] with the thresholds applied, as ``label_map``;
        ``num_classes``: the call's vocabulary (not ``self.classes``, which another thread may
        have changed since)."""
        labels = labels.astype(label_kernel.labels_dtype(num_classes), copy=True)
        scores = np.asarray(scores, dtype=np.float32)
        if self.score_kind == "probability":
            scores = np.clip(scores, 0.0, 1.0)
        for t, fill in ((self.background_thd, 0), (threshold, UNKNOWN)):
            if t > 0:
                labels[scores < t] = fill
        counts = np.bincount(labels.ravel(), minlength=max(num_classes, 256))
        return LabelMap(labels, scores, counts)

    def __call__(self, image: np.ndarray, *, scores: bool = False) -> SegResult:
        """Segment one image.

        Args:
            image (np.ndarray): HxWx3 uint8 RGB [0,255] (gray and RGBA accepted, see runtime.image).
            scores: also return the confidence map (``SegResult.scores``); it costs a softmax
                over the relevant classes at every pixel.
        Returns:
            SegResult with labels at the image's own size.
        Raises:
            ConfigError: a score threshold with more than 255 classes.
        Thread safety: the vocabulary and the score threshold are read once per call
        (``set_vocabulary`` / ``set_classes`` / ``score_threshold =`` from another thread take
        effect from the next call).
        """
        t0 = time.perf_counter()
        text, classes = self._vocab
        threshold = self._score_threshold
        rgb = as_rgb_uint8(image)
        out_hw = rgb.shape[:2]
        work = (
            rgb
            if self.short_side is None
            else resize_rgb(rgb, short_side_size(out_hw, self.short_side))
        )
        size = self.manifest.preprocess.input_size
        mode = self.mode
        if mode == "auto":
            mode = "whole" if work.shape[0] <= size[0] and work.shape[1] <= size[1] else "slide"
        # the graph's own labels know no seen bias given at run time
        on_graph = (text is None or text.bias is None) and self._use_graph_labels(mode, out_hw)
        if on_graph and threshold > 0 and len(classes) > UNKNOWN:
            raise ConfigError(f"a score threshold needs <= {UNKNOWN} classes, got {len(classes)}")
        if mode == "whole":
            x = self._feed(self._nchw(resize_rgb(work, size)))
            t1 = time.perf_counter()
            names = (io_names.LABELS, io_names.SCORES) if on_graph else (io_names.LOGITS,)
            logits, runs = self._run(x, text, names), 1
            span = out_hw
        else:
            x, plan = self._slide(work)
            padded = plan.padded_hw
            t1 = time.perf_counter()
            zeros = functools.partial(np.zeros, dtype=np.float32)
            names, up = (io_names.LOGITS,), upsample
            if plan.edge == "flush" and self._mask_logits:  # the official order (sigmoid last)
                names, up = (io_names.MASK_LOGITS,), self._sigmoid_upsample(text, len(classes))
            run = lambda w: self._run(self._feed(w), text, names)  # noqa: E731
            logits = stitch(plan, x, run, zeros, up)
            runs = len(plan.boxes)
            scale = (out_hw[0] / work.shape[0], out_hw[1] / work.shape[1])
            span = (padded[0] * scale[0], padded[1] * scale[1])
        t2 = time.perf_counter()
        if on_graph:
            out, logits = self._graph_labels(*logits, threshold, len(classes)), None
        else:
            out = label_map(
                logits,
                out_hw,
                span,
                score_kind=self.score_kind,
                score_scale=self.score_scale,
                score_threshold=threshold,
                background_thd=self.background_thd,
                with_scores=scores,
                method=self.label_method,
            )
        present = tuple(classes[i] for i in out.present() if i != UNKNOWN or threshold == 0)
        t3 = time.perf_counter()
        ms = {
            "preprocess": (t1 - t0) * 1e3,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        return SegResult(
            out.labels,
            logits,
            tuple(classes),
            present,
            mode,
            runs,
            {k: round(v, 3) for k, v in ms.items()},
            self.backend.name,
            self.backend.providers,
            out.scores if scores else None,
            float(out.counts[UNKNOWN]) / out.labels.size if threshold > 0 else 0.0,
            "graph" if on_graph else "host",
        )

    def close(self) -> None:
        """Release the backend (and the text encoder's)."""
        self.backend.close()
        if self._text_encoder is not None:
            self._text_encoder.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
