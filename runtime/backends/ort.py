"""onnxruntime backend (CPU, or CUDA with the ``ort-gpu`` extra)."""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from runtime.backends import BackendClosed, TensorInfo, Timings
from runtime.errors import ModelFolderError

log = logging.getLogger(__name__)

ORT_AVAILABLE = find_spec("onnxruntime") is not None
# Preference order; only providers this onnxruntime build offers are requested.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
ORT_DTYPES = {
    "float": "float32",
    "double": "float64",
}  # onnxruntime type names numpy spells otherwise


def require_ort():
    """Import onnxruntime or raise an ImportError that names the extra to install."""
    if not ORT_AVAILABLE:
        raise ImportError(
            "onnxruntime is not installed: pip install 'ovss-edge[ort]' (or [ort-gpu])"
        )
    import onnxruntime

    return onnxruntime


@functools.lru_cache(maxsize=1)
def int8_dot_product_cpu() -> bool:
    """Whether this CPU multiplies int8 with int32 accumulation in one instruction (x86: AVX-512
    VNNI, AVX-VNNI or AMX; any non-x86 CPU, or one whose flags cannot be read, counts as yes).

    Without it onnxruntime's fused int8 kernels (u8s8 on AVX2) sum pairs of products in int16
    with saturation: measured here on an AVX2-only CPU, a tiny ViT's INT8 graph had a mean logit
    error of 3.6 % of the logits' std with them and 2.2 % with Q/DQ run as float ops (what
    TensorRT's explicit quantization computes), and was not faster (2.2 vs 1.9 ms)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return True
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return True
    flags = next((line for line in text.splitlines() if line.startswith("flags")), None)
    if flags is None:
        return True
    have = set(flags.split(":", 1)[-1].split())
    return bool(have & {"avx512_vnni", "avx_vnni", "amx_int8"})


def session_options(
    ort, threads: int | None, optimization: str = "ORT_ENABLE_ALL", quantized: bool = False
):
    """Session options used everywhere: full graph optimisation, sequential execution.

    ``threads`` sets intra-op threads; None uses one per available core. ``optimization`` names a
    ``GraphOptimizationLevel`` (benchmarks compare the lower ones). ``quantized``: the graph has
    Q/DQ pairs (an INT8 variant); on a CPU without int8 dot products (``int8_dot_product_cpu``)
    they are then not fused into int8 kernels but run as float ops.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # Idle intra-op threads sleep instead of spinning: the host work between two runs (resize,
    # label map, drawing, the camera's capture thread) gets the cores. Measured here (2 cores,
    # 720p frames, MobileNetV3 student @224, benchmarks.host_cost): inference 8-9.6 ms vs 15-24 ms
    # and the label map 2.0 ms vs 2.9-6.8 ms with spinning on.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if quantized and not int8_dot_product_cpu():
        log.info("no int8 dot-product instructions on this CPU: Q/DQ runs as float operations")
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    return so


def _spec(arg) -> TensorInfo:
    """A ``TensorInfo`` from an onnxruntime NodeArg ("tensor(float)", [1, "classes", None])."""
    kind = arg.type[len("tensor(") : -1] if arg.type.startswith("tensor(") else arg.type
    try:
        dtype = np.dtype(ORT_DTYPES.get(kind, kind)).name
    except TypeError:  # string, bfloat16, float8: no numpy type, keep onnxruntime's name
        dtype = kind
    return TensorInfo(arg.name, dtype, tuple(-1 if d is None else d for d in arg.shape))


class OrtBackend:
    """Runs an ONNX file (or serialised ONNX bytes) with onnxruntime.

    Args:
        model_path: path to the .onnx file, or the serialised model.
        providers: execution providers to request (names, or (name, options) pairs); default:
            CUDA when this build has it, then CPU.
        threads: intra-op threads (None: all available cores).
        optimization: graph optimisation level (a ``GraphOptimizationLevel`` name).
        quantized: the graph is a Q/DQ (INT8) variant (see ``session_options``).

    ``last_timings.compute`` is the wall time of the last ``session.run`` (copies included).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path | bytes,
        providers: list | None = None,
        threads: int | None = None,
        optimization: str = "ORT_ENABLE_ALL",
        quantized: bool = False,
    ):
        ort = require_ort()
        if providers is None:
            providers = [p for p in PREFERRED_PROVIDERS if p in ort.get_available_providers()]
        model = model_path if isinstance(model_path, bytes) else str(model_path)
        what = "a serialised model" if isinstance(model, bytes) else repr(model)
        try:
            self.session = ort.InferenceSession(
                model, session_options(ort, threads, optimization, quantized), providers=providers
            )
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            raise ModelFolderError(f"onnxruntime cannot load {what}: {e}") from e
        self.source = what
        self.input_specs = tuple(_spec(i) for i in self.session.get_inputs())
        self.output_specs = tuple(_spec(o) for o in self.session.get_outputs())
        self.last_timings: Timings | None = None
        used = tuple(self.session.get_providers())
        first = (
            providers[0][0]
            if providers and isinstance(providers[0], tuple)
            else (providers[0] if providers else None)
        )
        if first and first not in used:
            log.warning("requested %s but onnxruntime runs on %s", first, used)

    @property
    def providers(self) -> tuple[str, ...]:
        """Providers the session actually uses (not merely those requested)."""
        return tuple(self._session().get_providers())

    @property
    def input_names(self) -> tuple[str, ...]:
        """Graph input names, in order."""
        return tuple(i.name for i in self.input_specs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph output names, in order."""
        return tuple(o.name for o in self.output_specs)

    def _session(self):
        if self.session is None:
            raise BackendClosed(f"the onnxruntime backend for {self.source} is closed")
        return self.session

    def __call__(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run once; returns ``{name: array}`` for ``outputs``."""
        session = self._session()
        t0 = time.perf_counter()
        result = session.run(outputs, feeds)
        self.last_timings = Timings(compute=(time.perf_counter() - t0) * 1e3)
        return dict(zip(outputs, result))

    def close(self) -> None:
        """Drop the session (idempotent)."""
        self.session = None

    def __enter__(self) -> OrtBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
