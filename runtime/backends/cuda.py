"""Thin cuda-python helpers: checked calls, device and pinned host buffers, a stream, events.

cuda-python is imported lazily (``cudart_module()``); every CUDA call goes through ``check`` so
a failure raises one ``CudaError`` naming the call and the driver's error.
"""

from __future__ import annotations

import ctypes

import numpy as np

from runtime.errors import OvssError


class CudaError(OvssError, RuntimeError):
    """A CUDA runtime call failed (no device, out of memory, bad address, ...)."""


def cudart_module():
    """The cuda-python runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6).

    Raises:
        ImportError: cuda-python is not installed; names the extra to install.
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise ImportError("cuda-python is not installed: pip install 'ovss-edge[trt]'") from e
    return cudart


def error_name(err) -> str:
    """The CUDA error's name, e.g. ``cudaErrorInsufficientDriver``."""
    try:
        name = cudart_module().cudaGetErrorName(err)[1]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # naming an error must never raise a second one
        return str(err)


def check(result, what: str = "CUDA call"):
    """Unwrap a cuda-python ``(err, *values)`` result; raise CudaError unless err is success.

    Returns:
        None, the single value, or a tuple of values.
    """
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaError(f"{what} failed: {error_name(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class Stream:
    """One CUDA stream; ``handle`` is the integer TensorRT's ``execute_async_v3`` takes."""

    def __init__(self):
        self.cudart = cudart_module()
        self.stream = check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.stream is not None:
            check(self.cudart.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self.stream = None


class DeviceBuffer:
    """``nbytes`` of device memory (cudaMalloc); ``ptr`` is its integer address."""

    def __init__(self, nbytes: int):
        self.cudart = cudart_module()
        self.nbytes = int(nbytes)
        self.ptr = int(check(self.cudart.cudaMalloc(max(1, self.nbytes)), f"cudaMalloc({nbytes})"))

    def close(self) -> None:
        if self.ptr:
            check(self.cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) seen as a flat numpy array of ``dtype``."""

    def __init__(self, count: int, dtype):
        self.cudart = cudart_module()
        self.dtype = np.dtype(dtype)
        self.nbytes = int(count) * self.dtype.itemsize
        self.ptr = int(
            check(self.cudart.cudaMallocHost(max(1, self.nbytes)), f"cudaMallocHost({self.nbytes})")
        )
        raw = (ctypes.c_uint8 * max(1, self.nbytes)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8)[: self.nbytes].view(self.dtype)

    def close(self) -> None:
        if self.ptr:
            self.array = None
            check(self.cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


def copy_async(dst: int, src: int, nbytes: int, to_device: bool, stream: Stream) -> None:
    """cudaMemcpyAsync between a pinned host address and a device address on ``stream``."""
    cudart = stream.cudart
    kind = (
        cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        if to_device
        else cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    )
    check(cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream.stream), "cudaMemcpyAsync")


class Event:
    """A CUDA event for timing stages on the stream."""

    def __init__(self):
        self.cudart = cudart_module()
        self.event = check(self.cudart.cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(self.cudart.cudaEventRecord(self.event, stream.stream), "cudaEventRecord")

    def ms_since(self, start: Event) -> float:
        """Milliseconds from ``start`` to this event (both recorded and completed)."""
        return float(
            check(self.cudart.cudaEventElapsedTime(start.event, self.event), "cudaEventElapsedTime")
        )

    def close(self) -> None:
        if self.event is not None:
            check(self.cudart.cudaEventDestroy(self.event), "cudaEventDestroy")
            self.event = None


class CudaGraph:
    """Capture of whatever is enqueued on a stream between ``begin`` and ``end``, then replay."""

    def __init__(self, stream: Stream):
        self.cudart, self.stream = stream.cudart, stream
        self.graph = self.exec = None

    def begin(self) -> None:
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(
            self.cudart.cudaStreamBeginCapture(self.stream.stream, mode), "cudaStreamBeginCapture"
        )

    def end(self) -> None:
        self.graph = check(
            self.cudart.cudaStreamEndCapture(self.stream.stream), "cudaStreamEndCapture"
        )
        self.exec = check(self.cudart.cudaGraphInstantiate(self.graph, 0), "cudaGraphInstantiate")

    def launch(self) -> None:
        check(self.cudart.cudaGraphLaunch(self.exec, self.stream.stream), "cudaGraphLaunch")

    def close(self) -> None:
        if self.exec is not None:
            check(self.cudart.cudaGraphExecDestroy(self.exec), "cudaGraphExecDestroy")
            self.exec = None
        if self.graph is not None:
            check(self.cudart.cudaGraphDestroy(self.graph), "cudaGraphDestroy")
            self.graph = None
