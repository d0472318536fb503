"""Flat export configuration: the general job fields, plus the method's own options by name."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from runtime.cli_checks import MAX_OPSET, MAX_SEED, MIN_OPSET
from runtime.errors import ConfigError
from runtime.manifest import INPUT_FORMATS
from training.methods.spec import EXPORT_INPUTS

VOCAB_MODES = ("fixed", "input")
# Where labels are made: "host" (the runtime upsamples LOGITS) or "graph" (LABELS and SCORES
# outputs, ``export.graph_io``).
POSTPROCESS_MODES = ("host", "graph")


@dataclass(frozen=True)
class ExportCfg:
    """One export job. Method options (``image_size``, ``templates``, MaskCLIP's ``ks_thresh``,
    SCLIP's ``logit_scale``, ...) are not fields here: ``options`` holds only those the user set,
    and the method's config (``training.methods``) holds every default, so nothing states a
    method's default twice and a checkpoint's values win over the defaults but not over the user.

    Attributes:
        method, backbone: registry method name and open_clip backbone name.
        output: deployable folder to write.
        classes: vocabulary spec (built-in name, text file, or "a,b,c").
        pretrained: ``none`` (random), an open_clip tag, or a checkpoint path.
        fallback_random: if the weights cannot be obtained, continue with random ones (loudly).
        vocab_mode: ``fixed`` (classifier baked in) or ``input`` (classifier is a graph input).
        text_encoder: also write CLIP's text tower (``text_encoder.onnx``) and BPE vocabulary so
            the device can encode new class names without torch; needs ``vocab_mode='input'``.
        atol, min_label_agreement: parity gates between PyTorch and onnxruntime.
        checkpoint: ZegCLIP / CLIP-RC weights (ours or an official release), or our MaskCLIP+
            training checkpoint.
        seen: classes seen in training (names, comma-separated) that get ``seen_bias`` subtracted;
            None = from our checkpoint by name. Official checkpoints carry no names: a fixed
            vocabulary needs it, or ``seen_bias=0`` to export transductive on purpose; an input
            vocabulary records the bias for the runtime's ``seen=`` instead.
        text_embeddings: an .npy [C,D] classifier to use as it is (e.g. the official float16).
        postprocess: ``host`` (the graph outputs LOGITS only) or ``graph`` (also LABELS and
            SCORES at ``output_size``, for device backends).
        output_size: (H, W) of the in-graph LABELS / SCORES, pixels; None = the model input size.
            Only with ``postprocess='graph'``.
        input_format: the IMAGE input: ``float32-nchw`` (normalised on the host) or
            ``uint8-nhwc`` / ``uint8-nchw`` (RGB 0..255, normalised in the graph).
        options: {method config field: value} set explicitly (see ``create``).
    """

    method: str
    backbone: str
    output: str
    classes: str
    pretrained: str = "none"
    fallback_random: bool = False
    seed: int = 0
    vocab_mode: str = "fixed"
    text_encoder: bool = False
    opset: int = 17
    simplify: bool = True
    atol: float = 1e-4
    min_label_agreement: float = 0.999
    cache_dir: str | None = None
    checkpoint: str | None = None
    seen: str | None = None
    text_embeddings: str | None = None
    postprocess: str = "host"
    output_size: tuple[int, int] | None = None
    input_format: str = "float32-nchw"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.vocab_mode not in VOCAB_MODES:
            raise ConfigError(f"vocab_mode must be one of {VOCAB_MODES}, got {self.vocab_mode!r}")
        self._check_device_io()
        self._check_numbers()
        spec = self.spec
        for name in EXPORT_INPUTS:
            if getattr(self, name) is not None and name not in spec.accepts:
                takes = ", ".join("--" + a.replace("_", "-") for a in spec.accepts) or "none"
                raise ConfigError(
                    f"--{name.replace('_', '-')} does not apply to --method {self.method} (it "
                    f"takes {takes})"
                )
        names = {f.name for f in spec.fields()}
        unknown = sorted(set(self.options) - names)
        if unknown:
            raise ConfigError(
                f"option(s) {unknown} do not apply to --method {self.method} (its "
                f"options: {sorted(names)})"
            )

    def _check_numbers(self) -> None:
        """``opset`` in 17..20 (LayerNormalization .. torch.onnx's newest), ``seed`` in
        0..2**32-1, ``atol`` and ``min_label_agreement`` finite and in range."""
        if type(self.opset) is not int or not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(
                f"opset must be an integer in {MIN_OPSET}..{MAX_OPSET} ({MIN_OPSET}: "
                f"LayerNormalization; {MAX_OPSET}: the newest torch.onnx writes), "
                f"got {self.opset!r}"
            )
        if type(self.seed) is not int or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}")
        if not (isinstance(self.atol, int | float) and math.isfinite(self.atol) and self.atol >= 0):
            raise ConfigError(f"atol must be a finite number >= 0, got {self.atol!r}")
        agreement = self.min_label_agreement
        if not (isinstance(agreement, int | float) and 0 <= agreement <= 1):
            raise ConfigError(f"min_label_agreement must be in [0, 1], got {agreement!r}")

    def _check_device_io(self) -> None:
        """``postprocess``, ``output_size`` and ``input_format`` are known and consistent."""
        if self.postprocess not in POSTPROCESS_MODES:
            raise ConfigError(
                f"postprocess must be one of {POSTPROCESS_MODES}, got {self.postprocess!r}"
            )
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(
                f"input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}"
            )
        if self.output_size is None:
            return
        size = tuple(self.output_size)
        if len(size) != 2 or not all(type(v) is int and v > 0 for v in size):
            raise ConfigError(f"output_size must be (H, W) positive ints, got {self.output_size}")
        if self.postprocess != "graph":
            raise ConfigError("--output-size needs --postprocess graph (it sizes LABELS/SCORES)")

    @classmethod
    def create(cls, **kwargs) -> ExportCfg:
        """Split keyword arguments into the general fields and the method's ``options``; a
        method option given as None means the method's default (as an absent flag)."""
        general = {f.name for f in dataclasses.fields(cls)} - {"options"}
        options = {k: v for k, v in kwargs.items() if k not in general and v is not None}
        return cls(**{k: v for k, v in kwargs.items() if k in general}, options=options)

    @property
    def spec(self):
        from training.methods import get_method

        return get_method(self.method)

    def method_cfg(self, base: Any = None) -> Any:
        """The method's config: ``base`` (default: the method's defaults, or e.g. a checkpoint's
        values) with the user's ``options`` on top. Invalid values raise ConfigError."""
        try:
            return self.spec.make_config(base, **self.options)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--method {self.method}: {e}") from e

    def given(self, name: str) -> bool:
        """Whether the user set method option ``name``."""
        return name in self.options
