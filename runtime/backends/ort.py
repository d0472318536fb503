"""onnxruntime backend (CPU, or CUDA with the ``ort-gpu`` extra)."""

from __future__ import annotations

import logging
import os
from importlib.util import find_spec

import numpy as np

from runtime.errors import ModelFolderError

log = logging.getLogger(__name__)

ORT_AVAILABLE = find_spec("onnxruntime") is not None
# Preference order; only providers this onnxruntime build offers are requested.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def require_ort():
    """Import onnxruntime or raise an ImportError that names the extra to install."""
    if not ORT_AVAILABLE:
        raise ImportError("onnxruntime is not installed: pip install 'ovss-edge[ort]' (or [ort-gpu])")
    import onnxruntime

    return onnxruntime


def session_options(ort, threads: int | None):
    """Session options used everywhere: full graph optimisation, sequential execution.

    ``threads`` sets intra-op threads; None uses one per available core.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


class OrtBackend:
    """Runs an ONNX file with onnxruntime.

    Args:
        model_path: path to the .onnx file.
        providers: execution providers to request (names, or (name, options) pairs); default:
            CUDA when this build has it, then CPU.
        threads: intra-op threads (None: all available cores).
    """

    name = "onnxruntime"

    def __init__(self, model_path: str, providers: list | None = None, threads: int | None = None):
        ort = require_ort()
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in PREFERRED_PROVIDERS if p in available]
        try:
            self.session = ort.InferenceSession(
                str(model_path), session_options(ort, threads), providers=providers
            )
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            raise ModelFolderError(f"onnxruntime cannot load {str(model_path)!r}: {e}") from e
        used = tuple(self.session.get_providers())
        first = providers[0][0] if providers and isinstance(providers[0], tuple) else \
            (providers[0] if providers else None)
        if first and first not in used:
            log.warning("requested %s but onnxruntime runs on %s", first, used)

    @property
    def providers(self) -> tuple[str, ...]:
        """Providers the session actually uses (not merely those requested)."""
        return tuple(self.session.get_providers())

    @property
    def input_names(self) -> tuple[str, ...]:
        """Graph input names, in order."""
        return tuple(i.name for i in self.session.get_inputs())

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph output names, in order."""
        return tuple(o.name for o in self.session.get_outputs())

    def __call__(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run once; returns ``{name: array}`` for ``outputs``."""
        return dict(zip(outputs, self.session.run(outputs, feeds)))

    def close(self) -> None:
        """Drop the session."""
        self.session = None

    def __enter__(self) -> "OrtBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
