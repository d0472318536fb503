"""Inference backends behind one small protocol, and the choice between them.

``open_backend("auto", ref)`` tries, in order: a TensorRT engine from ``DIR/engines`` that fits
this GPU, TensorRT version, precision, input shapes and ONNX hash (only when the GPU probe
passes); then onnxruntime with the TensorRT EP, the CUDA EP, and the CPU, keeping those this
onnxruntime build offers and requesting GPU providers only when the probe found a GPU. The
returned ``Opened.reasons`` says why each earlier choice was skipped, and the backend's
``providers`` say what actually runs. Backend modules are imported lazily.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.errors import OvssError, UnknownNameError

log = logging.getLogger(__name__)
BACKENDS = ("auto", "onnxruntime", "tensorrt")
# onnxruntime providers in preference order for "auto" on a machine with a GPU.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
ORT_ENGINE_CACHE = "ort_trt"  # onnxruntime TensorRT EP engine cache, under DIR/engines


class BackendUnavailable(OvssError, RuntimeError):
    """The requested backend cannot run this model here (no GPU, no engine, not installed)."""


class BackendClosed(OvssError, RuntimeError):
    """A backend was called after ``close()`` (or after its ``with`` block ended)."""


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output as a backend sees it (Polygraphy's ``TensorMetadata``).

    Attributes:
        name: the tensor name.
        dtype: numpy dtype name of the array passed in or returned ("float32", "int64", ...).
        shape: one entry per axis: an int for a fixed axis; for a dynamic one -1, or the ONNX
            symbolic name (str) where the backend knows it (onnxruntime does, TensorRT does not).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @property
    def dims(self) -> tuple[int, ...]:
        """``shape`` with -1 for every dynamic axis (TensorRT's form, same on all backends)."""
        return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in self.shape)

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        """Indices of the dynamic axes."""
        return tuple(i for i, d in enumerate(self.dims) if d == -1)


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent in the stages of one backend call; None where a backend cannot split
    a stage out (onnxruntime copies inside ``run``, so it reports ``compute`` only: the wall time
    of the whole run, copies included).

    Attributes:
        compute: the engine / session run.
        h2d: host-to-device input copies (TensorRT: CUDA events).
        d2h: device-to-host output copies (TensorRT: CUDA events).
    """

    compute: float
    h2d: float | None = None
    d2h: float | None = None


class Backend(Protocol):
    """What every backend offers (in the spirit of Polygraphy's ``BaseRunner``): named feeds in,
    named outputs out, typed I/O specs, the last call's timings, and owned resources released by
    ``close()`` or a ``with`` block. ``close()`` may be called any number of times; a call after it
    raises ``BackendClosed``."""

    name: str

    @property
    def providers(self) -> tuple[str, ...]:
        """Execution providers or devices actually in use."""

    @property
    def input_names(self) -> tuple[str, ...]:
        """Graph input names, in order."""

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph output names, in order."""

    @property
    def input_specs(self) -> tuple[TensorInfo, ...]:
        """One ``TensorInfo`` per graph input, in order."""

    @property
    def output_specs(self) -> tuple[TensorInfo, ...]:
        """One ``TensorInfo`` per graph output, in order."""

    @property
    def last_timings(self) -> Timings | None:
        """Stage times of the last call (None before the first)."""

    def __call__(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run once. ``feeds`` maps input names to arrays; returns the requested outputs.

        Raises:
            BackendClosed: after ``close()``.
        """

    def close(self) -> None:
        """Release sessions, engines and device memory (idempotent)."""

    def __enter__(self) -> Backend:
        """Returns the backend itself."""

    def __exit__(self, *exc) -> None:
        """Calls ``close()``."""


@dataclass(frozen=True)
class ModelRef:
    """The graph to run and what identifies its TensorRT engines.

    Attributes:
        onnx_path: the ONNX file (``model.onnx`` or a precision variant).
        folder: the deployable folder (engines live in ``folder/engines``).
        precision: "fp32", "fp16" or "int8".
        onnx_sha256: the ONNX file's sha256 (from the manifest).
        input_shapes: {input name: shape}, -1 for dynamic axes.
    """

    onnx_path: Path
    folder: Path
    precision: str = "fp32"
    onnx_sha256: str = ""
    input_shapes: dict | None = None


@dataclass(frozen=True)
class Opened:
    """A backend and why the choices before it were skipped (empty when the first one ran)."""

    backend: Backend
    reasons: tuple[str, ...]


def _ort(ref: ModelRef, providers, threads):
    """onnxruntime on the folder's graph (an INT8 variant's Q/DQ flagged, ``session_options``)."""
    from runtime.backends.ort import OrtBackend

    quantized = ref.precision == "int8"
    return OrtBackend(str(ref.onnx_path), providers=providers, threads=threads, quantized=quantized)


def make_backend(name: str, model_path: str | Path | bytes, **options) -> Backend:
    """The onnxruntime backend for ``model_path`` (``name`` must be "onnxruntime").

    For callers that hold only an ONNX path (or serialised bytes); ``open_backend`` does the full
    selection. ``options`` go to ``OrtBackend`` (providers, threads, optimization).
    """
    if name == "onnxruntime":
        from runtime.backends.ort import OrtBackend

        return OrtBackend(model_path, **options)
    raise UnknownNameError(
        f"make_backend runs onnxruntime only, got {name!r}; use open_backend for {list(BACKENDS)}"
    )


def _engine_record(ref: ModelRef, probe, dla_core: int):
    """The best fitting engine record (version-compatible ones only on the lean runtime)."""
    from runtime.engine_cache import EngineKey, find_engine

    gpu = probe.gpus[0]
    key = EngineKey(
        gpu.name,
        gpu.compute_capability,
        probe.tensorrt,
        ref.precision,
        dict(ref.input_shapes or {}),
        ref.onnx_sha256,
        dla_core,
    )
    lean = probe.tensorrt_module == "tensorrt_lean"
    record = find_engine(ref.folder, key, version_compatible_only=lean)
    if record is None and lean and find_engine(ref.folder, key) is not None:
        raise BackendUnavailable(
            "the engine for this GPU is not version-compatible, and the lean "
            "TensorRT runtime runs only those: rebuild it with python -m "
            "export.engine --version-compatible, or install full TensorRT"
        )
    return record, gpu


def _open_tensorrt(ref: ModelRef, probe, cuda_graph: bool = False, dla_core: int = -1) -> Backend:
    """TrtBackend on the engine that fits, or BackendUnavailable saying why not."""
    if not probe.gpu_usable:
        raise BackendUnavailable(
            f"no usable CUDA GPU ({probe.cuda_error or probe.error or 'none found'})"
        )
    if not probe.tensorrt:
        raise BackendUnavailable(
            "TensorRT is not installed (JetPack, NVIDIA containers, or pip install tensorrt)"
        )
    record, gpu = _engine_record(ref, probe, dla_core)
    if record is None:
        raise BackendUnavailable(
            f"no {ref.precision} engine in {str(ref.folder / 'engines')!r} fits {gpu.name} "
            f"(sm {gpu.compute_capability}), TensorRT {probe.tensorrt} and this ONNX; build one "
            f"with python -m export.engine {ref.folder} --precision {ref.precision}"
        )
    from runtime.backends.trt import TrtBackend
    from runtime.engine_cache import engine_path

    return TrtBackend(
        engine_path(ref.folder, record),
        expect_sha256=record.engine_sha256,
        cuda_graph=cuda_graph,
        version_compatible=record.key.version_compatible,
        device_name=gpu.name,
        dla_core=dla_core,
    )


def _ort_cache_dir(ref: ModelRef) -> str:
    """onnxruntime's TensorRT EP engine cache, created here: the EP makes only the last level and
    falls back to CUDA / CPU when it cannot. ``DIR/engines/ort_trt``, or the user cache when the
    folder is read-only."""
    for path in (
        ref.folder / "engines" / ORT_ENGINE_CACHE,
        Path(os.environ.get("OVSS_CACHE_DIR") or Path.home() / ".cache" / "ovss-edge")
        / ORT_ENGINE_CACHE
        / (ref.onnx_sha256[:16] or "unknown"),
    ):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return str(path)
        except OSError as e:
            log.warning("cannot create the onnxruntime TensorRT cache %s: %s", path, e)
    return str(ref.folder / "engines" / ORT_ENGINE_CACHE)


def _ort_providers(ref: ModelRef, probe, available: list[str]) -> list:
    """GPU providers (when the probe found a GPU) that this onnxruntime build offers, then CPU."""
    chosen: list = []
    if probe.gpu_usable:
        cache = _ort_cache_dir(ref)
        trt_opts = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            # The graph's own types and Q/DQ decide precision; these only permit the kernels.
            "trt_fp16_enable": ref.precision in ("fp16", "int8"),
            "trt_int8_enable": ref.precision == "int8",
        }
        for p in GPU_PROVIDERS:
            if p in available:
                chosen.append((p, trt_opts) if p == "TensorrtExecutionProvider" else p)
    return chosen + ["CPUExecutionProvider"]


def open_backend(
    choice: str,
    ref: ModelRef,
    *,
    probe=None,
    threads: int | None = None,
    providers: list | None = None,
    cuda_graph: bool = False,
    dla_core: int = -1,
) -> Opened:
    """Open the backend ``choice`` ("auto", "onnxruntime" or "tensorrt") for ``ref``.

    Args:
        probe: a ``runtime.probe.ProbeResult`` (default: probe this machine once per process).
        threads, providers: onnxruntime options (``providers`` overrides the automatic list).
        cuda_graph, dla_core: TensorRT options.
    Raises:
        UnknownNameError: unknown ``choice``.
        BackendUnavailable: "tensorrt" asked for where it cannot run (the reason is in the message).
    """
    if choice not in BACKENDS:
        raise UnknownNameError(f"unknown backend {choice!r}; choose from {list(BACKENDS)}")
    from runtime.backends.ort import require_ort

    if choice == "onnxruntime":
        return Opened(_ort(ref, providers, threads), ())
    if probe is None:
        from runtime.probe import cached_probe

        probe = cached_probe()
    if choice == "tensorrt":
        return Opened(_open_tensorrt(ref, probe, cuda_graph, dla_core), ())
    reasons = []
    try:
        return Opened(_open_tensorrt(ref, probe, cuda_graph, dla_core), ())
    except (ImportError, OvssError) as e:
        reasons.append(f"tensorrt: {e}")
    if providers is None:
        providers = _ort_providers(ref, probe, require_ort().get_available_providers())
    backend = _ort(ref, providers, threads)
    log.info("backend: onnxruntime on %s (%s)", list(backend.providers), "; ".join(reasons))
    return Opened(backend, tuple(reasons))
