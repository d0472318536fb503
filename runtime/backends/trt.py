"""TensorRT backend: a deserialised engine run with cuda-python buffers on one stream.

Per call: feeds are copied into pinned host buffers, sent to the device asynchronously, the
engine runs with ``execute_async_v3`` (or as a replayed CUDA graph), the requested outputs come
back to pinned memory, and the stream is synchronised once. CUDA events time each stage
(``last_timings``: h2d, compute, d2h).

TensorRT is imported lazily: ``tensorrt`` (full) or ``tensorrt_lean`` (runtime only). Never
construct this without a GPU: ``runtime.backends.open_backend`` checks with ``runtime.probe``
first, because deserialising without one crashes the process.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from runtime.backends import BackendClosed, TensorInfo, Timings
from runtime.backends.cuda import (
    CudaError,
    CudaGraph,
    DeviceBuffer,
    Event,
    PinnedBuffer,
    Stream,
    copy_async,
)
from runtime.errors import ModelFolderError, OvssError
from runtime.fsutil import sha256_file

log = logging.getLogger(__name__)
TRT_MODULES = ("tensorrt", "tensorrt_lean")
TRT_AVAILABLE = any(find_spec(m) is not None for m in TRT_MODULES)


class TrtError(OvssError, RuntimeError):
    """TensorRT refused an engine, a shape or an execution."""


def require_trt():
    """Import ``tensorrt`` (or ``tensorrt_lean``) or raise an ImportError saying how to get it."""
    for name in TRT_MODULES:
        if find_spec(name) is not None:
            return importlib.import_module(name)
    raise ImportError(
        "TensorRT is not installed: it ships with JetPack and NVIDIA's containers, or "
        "pip install tensorrt (from pypi.nvidia.com); plus pip install 'ovss-edge[trt]'"
    )


def make_logger(trt, logger: logging.Logger = log):
    """A ``trt.ILogger`` that forwards TensorRT's messages to Python logging."""
    sev = trt.ILogger.Severity
    levels = {
        sev.INTERNAL_ERROR: logging.CRITICAL,
        sev.ERROR: logging.ERROR,
        sev.WARNING: logging.WARNING,
        sev.INFO: logging.DEBUG,
        sev.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            logger.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return _Logger()


@dataclass
class _Binding:
    """One engine I/O tensor: buffers sized for its largest allowed shape."""

    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: tuple[int, ...]
    min_shape: tuple[int, ...]
    host: PinnedBuffer
    device: DeviceBuffer


class TrtBackend:
    """Runs a serialised TensorRT engine.

    Args:
        engine_path: the ``.engine`` file.
        expect_sha256: its sha256 from the engine record (checked before deserialising).
        cuda_graph: capture the engine's launch in a CUDA graph and replay it while the input
            shapes stay the same (re-captured when they change).
        version_compatible: the engine was built VERSION_COMPATIBLE (allows its embedded host code).
        device_name: the GPU's name, reported in ``providers``.
        dla_core: the DLA core a DLA engine runs on (-1: GPU engine).

    Not thread-safe: one stream and shared pinned buffers; call it from one thread.

    Raises:
        ModelFolderError: missing / modified engine file, or TensorRT cannot deserialise it.
        ImportError: TensorRT or cuda-python is not installed.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        expect_sha256: str = "",
        cuda_graph: bool = False,
        version_compatible: bool = False,
        device_name: str = "",
        dla_core: int = -1,
    ):
        self.trt = require_trt()
        path = Path(engine_path)
        if not path.is_file():
            raise ModelFolderError(f"engine file {str(path)!r} is missing")
        if expect_sha256 and sha256_file(path) != expect_sha256:
            raise ModelFolderError(
                f"engine {str(path)!r} does not match its record's sha256: corrupt"
            )
        self.logger = make_logger(self.trt)
        self.runtime = self.trt.Runtime(self.logger)
        if version_compatible:
            self.runtime.engine_host_code_allowed = True
        if dla_core >= 0:
            self.runtime.DLA_core = dla_core  # before deserialising, as trtexec does
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelFolderError(
                f"TensorRT {self.trt.__version__} cannot deserialise {str(path)!r} "
                "(built by another TensorRT version or for another GPU, or corrupt; "
                "see the TensorRT errors logged above)"
            )
        self.context = self.engine.create_execution_context()
        self.stream = Stream()
        self.events = [Event() for _ in range(4)]
        self.bindings: dict[str, _Binding] = {}
        self._graph: CudaGraph | None = None
        self._graph_shapes = None
        self.use_graph = cuda_graph
        self.device_name = device_name
        self.last_timings: Timings | None = None
        self.input_specs: tuple[TensorInfo, ...] = ()
        self.output_specs: tuple[TensorInfo, ...] = ()
        try:
            self._allocate()
        except BaseException:
            self.close()
            raise

    def _allocate(self) -> None:
        eng, trt = self.engine, self.trt
        for i in range(eng.num_io_tensors):
            name = eng.get_tensor_name(i)
            is_input = eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(eng.get_tensor_shape(name))
            lo = hi = shape
            if is_input and -1 in shape:
                lo, _, hi = (tuple(s) for s in eng.get_tensor_profile_shape(name, 0))
                self.context.set_input_shape(name, hi)
            elif is_input:
                self.context.set_input_shape(name, shape)
            try:
                dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(name)))
            except TypeError as e:  # BF16, FP8, INT4, ... have no numpy type
                raise TrtError(
                    f"engine tensor {name!r} has type {eng.get_tensor_dtype(name)}, which "
                    "numpy cannot hold: export with float32/float16 inputs and outputs"
                ) from e
            self.bindings[name] = _Binding(name, is_input, dtype, hi, lo, None, None)
        for b in self.bindings.values():  # outputs at their largest: every input at its profile max
            if not b.is_input:
                b.max_shape = b.min_shape = tuple(self.context.get_tensor_shape(b.name))
            count = int(np.prod(b.max_shape))
            b.host, b.device = PinnedBuffer(count, b.dtype), DeviceBuffer(count * b.dtype.itemsize)
            self.context.set_tensor_address(b.name, b.device.ptr)
        self.input_specs = tuple(self._spec(n) for n in self.input_names)
        self.output_specs = tuple(self._spec(n) for n in self.output_names)

    def _spec(self, name: str) -> TensorInfo:
        """The engine's shape (-1 on dynamic axes) and the dtype a caller passes or gets back:
        float outputs come back as float32."""
        b = self.bindings[name]
        dtype = np.dtype(np.float32) if not b.is_input and b.dtype.kind == "f" else b.dtype
        return TensorInfo(
            name, dtype.name, tuple(int(d) for d in self.engine.get_tensor_shape(name))
        )

    @property
    def providers(self) -> tuple[str, ...]:
        """``("TensorRT <version>", <GPU name>)``."""
        return tuple(p for p in (f"TensorRT {self.trt.__version__}", self.device_name) if p)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(n for n, b in self.bindings.items() if b.is_input)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(n for n, b in self.bindings.items() if not b.is_input)

    def _stage_inputs(self, feeds: dict[str, np.ndarray]) -> tuple:
        shapes = []
        for name in self.input_names:
            b = self.bindings[name]
            if name not in feeds:
                raise TrtError(f"missing input {name!r}")
            arr = np.asarray(feeds[name])
            if arr.ndim != len(b.max_shape) or any(
                not lo <= s <= hi for s, lo, hi in zip(arr.shape, b.min_shape, b.max_shape)
            ):
                raise TrtError(
                    f"input {name!r} has shape {arr.shape}; the engine accepts "
                    f"{b.min_shape} to {b.max_shape}"
                )
            if not self.context.set_input_shape(name, arr.shape):
                raise TrtError(f"TensorRT rejected shape {arr.shape} for {name!r}")
            b.host.array[: arr.size] = arr.astype(b.dtype, copy=False).ravel()
            shapes.append(arr.shape)
        return tuple(shapes)

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise TrtError("execute_async_v3 failed (see the TensorRT errors logged above)")

    def _launch(self, shapes: tuple) -> None:
        if not self.use_graph:
            self._execute()
            return
        if self._graph is not None and self._graph_shapes == shapes:
            self._graph.launch()
            return
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        # A plain launch first: it applies the new shapes (which must not happen inside a capture)
        # and computes this call's outputs; the capture below only records the next ones.
        self._execute()
        self._capture(shapes)

    def _capture(self, shapes: tuple) -> None:
        """Record one engine launch as a CUDA graph; on failure, run without graphs from now on
        (TensorRT documents that the context stays usable without them)."""
        graph = CudaGraph(self.stream)
        ok = False
        try:
            graph.begin()
            try:
                ok = bool(self.context.execute_async_v3(self.stream.handle))
            finally:
                graph.end()  # always leave capture mode, or every later call on the stream fails
        except CudaError as e:
            log.warning("CUDA graph capture failed (%s): running without CUDA graphs", e)
        if ok:
            self._graph, self._graph_shapes = graph, shapes
            return
        graph.close()
        self.use_graph = False
        log.warning("the engine cannot be captured as a CUDA graph: running without CUDA graphs")

    def __call__(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run once. Float outputs come back as float32 copies (FP16 engine outputs widened)."""
        if self.context is None:
            raise BackendClosed("the TensorRT backend is closed")
        unknown = [o for o in outputs if o not in self.bindings or self.bindings[o].is_input]
        if unknown:
            raise TrtError(f"the engine has no outputs {unknown}; it has {list(self.output_names)}")
        shapes = self._stage_inputs(feeds)
        ev = self.events
        ev[0].record(self.stream)
        for name in self.input_names:
            b = self.bindings[name]
            copy_async(
                b.device.ptr,
                b.host.ptr,
                int(np.prod(self.context.get_tensor_shape(name))) * b.dtype.itemsize,
                True,
                self.stream,
            )
        ev[1].record(self.stream)
        self._launch(shapes)
        ev[2].record(self.stream)
        out_shapes = {o: tuple(self.context.get_tensor_shape(o)) for o in outputs}
        for o in outputs:
            b = self.bindings[o]
            copy_async(
                b.host.ptr,
                b.device.ptr,
                int(np.prod(out_shapes[o])) * b.dtype.itemsize,
                False,
                self.stream,
            )
        ev[3].record(self.stream)
        self.stream.synchronize()
        self.last_timings = Timings(
            h2d=ev[1].ms_since(ev[0]), compute=ev[2].ms_since(ev[1]), d2h=ev[3].ms_since(ev[2])
        )
        out = {}
        for o in outputs:
            b = self.bindings[o]
            view = b.host.array[: int(np.prod(out_shapes[o]))].reshape(out_shapes[o])
            out[o] = view.astype(np.float32) if b.dtype.kind == "f" else view.copy()  # never a view
        return out

    def close(self) -> None:
        """Free the graph, buffers, events and stream, then the context and engine (idempotent).
        Every free is attempted even after a CUDA error (logged), so one sticky error leaks nothing
        else."""
        resources = [getattr(self, "_graph", None)]
        resources += [
            buf for b in getattr(self, "bindings", {}).values() for buf in (b.host, b.device)
        ]
        resources += [*getattr(self, "events", []), getattr(self, "stream", None)]
        for r in resources:
            if r is None:
                continue
            try:
                r.close()
            except CudaError as e:
                log.warning("while releasing TensorRT resources: %s", e)
        self._graph, self.bindings, self.events, self.stream = None, {}, [], None
        self.context = self.engine = None

    def __enter__(self) -> TrtBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
