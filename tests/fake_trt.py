"""A FAKE of the TensorRT and cuda-python calls that export.engine and runtime.backends.trt make.

This is not TensorRT and verifies nothing about TensorRT itself. It records every call (``CALLS``)
and behaves just enough like the documented API for the orchestration around it to be tested
on a CPU: the "engine" it serialises is a JSON header plus the ONNX bytes, "device memory" is
host memory at real addresses (so every address, size and copy our code computes is exercised),
and ``execute_async_v3`` runs the ONNX with onnxruntime on what the device buffers hold.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import time
import types

import numpy as np

MAGIC = b"FAKE-TRT-ENGINE\n"
CALLS: list[tuple] = []


def _rec(name, *args):
    CALLS.append((name,) + args)


# ----------------------------------------------------------------------------- cuda-python
class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1


class _Handle:
    _next = 0x1000

    def __init__(self):
        _Handle._next += 1
        self.value = _Handle._next
        self.capturing: list | None = None

    def __int__(self):
        return self.value


class FakeCudart(types.ModuleType):
    """The ``cuda.bindings.runtime`` calls used, with ``devices`` GPUs (0 = no GPU)."""

    cudaError_t, cudaMemcpyKind, cudaStreamCaptureMode = (
        cudaError_t,
        cudaMemcpyKind,
        cudaStreamCaptureMode,
    )

    def __init__(self, devices: int = 1, name: str = "Fake GPU", cc: tuple[int, int] = (8, 7)):
        super().__init__("cuda.bindings.runtime")
        self.devices, self.gpu_name, self.cc = devices, name, cc
        self.memory: dict[int, ctypes.Array] = {}
        self.streams: dict[int, _Handle] = {}
        self.fail_malloc = False

    def cudaGetErrorName(self, err):
        return cudaError_t.cudaSuccess, cudaError_t(int(err)).name.encode()

    def cudaDriverGetVersion(self):
        return cudaError_t.cudaSuccess, 12040 if self.devices else 0

    def cudaRuntimeGetVersion(self):
        return cudaError_t.cudaSuccess, 12040

    def cudaGetDeviceCount(self):
        if not self.devices:
            return cudaError_t.cudaErrorInsufficientDriver, None
        return cudaError_t.cudaSuccess, self.devices

    def cudaGetDeviceProperties(self, i):
        props = types.SimpleNamespace(
            name=self.gpu_name.encode() + b"\x00" * 8,
            major=self.cc[0],
            minor=self.cc[1],
            totalGlobalMem=8 << 30,
        )
        return cudaError_t.cudaSuccess, props

    def _alloc(self, kind, n):
        _rec(kind, n)
        if self.fail_malloc:
            return cudaError_t.cudaErrorMemoryAllocation, None
        buf = (ctypes.c_uint8 * n)()
        self.memory[ctypes.addressof(buf)] = buf
        return cudaError_t.cudaSuccess, ctypes.addressof(buf)

    def cudaMalloc(self, n):
        return self._alloc("cudaMalloc", n)

    def cudaMallocHost(self, n):
        return self._alloc("cudaMallocHost", n)

    def _free(self, kind, ptr):
        _rec(kind, ptr)
        self.memory.pop(int(ptr))
        return (cudaError_t.cudaSuccess,)

    fail_free = 0  # the next N cudaFree calls fail (a sticky error after a device fault)

    def cudaFree(self, ptr):
        if self.fail_free:
            self.fail_free -= 1
            _rec("cudaFree", ptr)
            return (cudaError_t.cudaErrorMemoryAllocation,)
        return self._free("cudaFree", ptr)

    def cudaFreeHost(self, ptr):
        return self._free("cudaFreeHost", ptr)

    def cudaStreamCreate(self):
        s = _Handle()
        self.streams[int(s)] = s
        _rec("cudaStreamCreate", int(s))
        return cudaError_t.cudaSuccess, s

    def cudaStreamDestroy(self, s):
        _rec("cudaStreamDestroy", int(s))
        self.streams.pop(int(s))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, s):
        _rec("cudaStreamSynchronize", int(s))
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        _rec("cudaMemcpyAsync", cudaMemcpyKind(int(kind)).name, n, int(stream))
        for addr in (dst, src):  # both ends must lie inside a live allocation
            if not any(a <= addr and addr + n <= a + len(b) for a, b in self.memory.items()):
                raise AssertionError(f"cudaMemcpyAsync touches unallocated memory at {addr:#x}+{n}")
        ctypes.memmove(dst, src, n)
        return (cudaError_t.cudaSuccess,)

    def cudaEventCreate(self):
        return cudaError_t.cudaSuccess, types.SimpleNamespace(t=None)

    def cudaEventRecord(self, event, stream):
        event.t = time.perf_counter()
        return (cudaError_t.cudaSuccess,)

    def cudaEventElapsedTime(self, start, end):
        return cudaError_t.cudaSuccess, (end.t - start.t) * 1e3

    def cudaEventDestroy(self, event):
        return (cudaError_t.cudaSuccess,)

    def cudaStreamBeginCapture(self, s, mode):
        _rec("cudaStreamBeginCapture", int(s))
        self.streams[int(s)].capturing = []
        return (cudaError_t.cudaSuccess,)

    def cudaStreamEndCapture(self, s):
        _rec("cudaStreamEndCapture", int(s))
        work, self.streams[int(s)].capturing = self.streams[int(s)].capturing, None
        return cudaError_t.cudaSuccess, types.SimpleNamespace(work=work)

    def cudaGraphInstantiate(self, graph, flags):
        return cudaError_t.cudaSuccess, types.SimpleNamespace(work=graph.work)

    def cudaGraphLaunch(self, graph_exec, s):
        _rec("cudaGraphLaunch", int(s))
        for step in graph_exec.work:
            step()
        return (cudaError_t.cudaSuccess,)

    def cudaGraphExecDestroy(self, g):
        return (cudaError_t.cudaSuccess,)

    def cudaGraphDestroy(self, g):
        return (cudaError_t.cudaSuccess,)


# ----------------------------------------------------------------------------- tensorrt
class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = _Severity

    def __init__(self):
        pass


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = np.float32
    HALF = np.float16
    INT64 = np.int64


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class BuilderFlag(enum.Enum):
    FP16 = 0
    INT8 = 1
    GPU_FALLBACK = 3
    VERSION_COMPATIBLE = 19


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class DeviceType(enum.Enum):
    GPU = 0
    DLA = 1


def nptype(dtype):
    return dtype.value


def _onnx_io(onnx_bytes: bytes):
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    inits = {i.name for i in model.graph.initializer}
    elem = {
        onnx.TensorProto.FLOAT: DataType.FLOAT,
        onnx.TensorProto.FLOAT16: DataType.HALF,
        onnx.TensorProto.INT64: DataType.INT64,
    }

    def spec(v):
        dims = [
            d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in v.type.tensor_type.shape.dim
        ]
        return v.name, elem[v.type.tensor_type.elem_type], dims

    return (
        [spec(v) for v in model.graph.input if v.name not in inits],
        [spec(v) for v in model.graph.output],
    )


class _Tensor:
    def __init__(self, name, dtype, dims):
        self.name, self.dtype = name, dtype
        self.shape = tuple(d if isinstance(d, int) else -1 for d in dims)


class _Network:
    def __init__(self, flags):
        self.flags, self.inputs, self.outputs, self.onnx = flags, [], [], None

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class OnnxParser:
    """Parses real ONNX with ``onnx``; ``reject`` makes it fail with the given errors."""

    reject: list[str] = []

    def __init__(self, network, logger):
        self.network, self.errors = network, []

    def parse_from_file(self, path):
        _rec("OnnxParser.parse_from_file", str(path))
        if OnnxParser.reject:
            self.errors = list(OnnxParser.reject)
            return False
        data = open(path, "rb").read()
        ins, outs = _onnx_io(data)
        self.network.inputs = [_Tensor(*s) for s in ins]
        self.network.outputs = [_Tensor(*s) for s in outs]
        self.network.onnx = data
        return True

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return f"In node {i} (parseGraph): INVALID_NODE: {self.errors[i]}"


class _TimingCache:
    def __init__(self, data):
        self.data = bytes(data) or b"timing:"

    def serialize(self):
        return self.data + b"+"


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        _rec("profile.set_shape", name, tuple(lo), tuple(opt), tuple(hi))
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class _Config:
    def __init__(self):
        self.flags, self.profiles, self.pool, self.cache = set(), [], {}, None
        self.default_device_type, self.DLA_core = DeviceType.GPU, -1

    def set_memory_pool_limit(self, pool, size):
        self.pool[pool] = size

    def set_flag(self, flag):
        _rec("config.set_flag", flag.name)
        self.flags.add(flag)

    def add_optimization_profile(self, p):
        self.profiles.append(p)
        return len(self.profiles) - 1

    def create_timing_cache(self, data):
        _rec("config.create_timing_cache", len(data))
        return _TimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class Builder:
    fail_build = False

    def __init__(self, logger):
        self.logger = logger

    def create_network(self, flags=0):
        _rec("Builder.create_network", flags)
        return _Network(flags)

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        _rec("Builder.build_serialized_network")
        if Builder.fail_build:
            self.logger.log(_Severity.ERROR, "fake build failure")
            return None
        dynamic = [t.name for t in network.inputs if -1 in t.shape]
        if dynamic and not config.profiles:
            self.logger.log(_Severity.ERROR, f"dynamic inputs {dynamic} without a profile")
            return None
        header = {
            "version": __version__,
            "profile": config.profiles[0].shapes if config.profiles else {},
            "strongly_typed": bool(network.flags),
            "flags": sorted(f.name for f in config.flags),
            "version_compatible": BuilderFlag.VERSION_COMPATIBLE in config.flags,
        }
        return MAGIC + json.dumps(header).encode() + b"\n" + network.onnx


class _Engine:
    def __init__(self, header, onnx_bytes):
        import onnxruntime as ort

        self.header, self.onnx = header, onnx_bytes
        ins, outs = _onnx_io(onnx_bytes)
        self.io = [(n, TensorIOMode.INPUT, d, s) for n, d, s in ins] + [
            (n, TensorIOMode.OUTPUT, d, s) for n, d, s in outs
        ]
        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self.shape_cache = {}

    @property
    def num_io_tensors(self):
        return len(self.io)

    def _find(self, name):
        return next(t for t in self.io if t[0] == name)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def get_tensor_mode(self, name):
        return self._find(name)[1]

    def get_tensor_dtype(self, name):
        return self._find(name)[2]

    def get_tensor_shape(self, name):
        return tuple(d if isinstance(d, int) else -1 for d in self._find(name)[3])

    def get_tensor_profile_shape(self, name, profile):
        return [tuple(s) for s in self.header["profile"][name]]

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        _rec("context.set_input_shape", name, tuple(shape))
        prof = self.engine.header["profile"].get(name)
        if prof and not all(lo <= s <= hi for s, lo, hi in zip(shape, prof[0], prof[2])):
            return False
        self.shapes[name] = tuple(int(s) for s in shape)
        return True

    def get_tensor_shape(self, name):
        _, mode, _, dims = self.engine._find(name)
        if mode == TensorIOMode.INPUT:
            return self.shapes[name]
        if all(isinstance(d, int) for d in dims):
            return tuple(dims)
        return self._inferred_shapes()[name]

    def _inferred_shapes(self):
        """Output shapes for the current input shapes (TensorRT infers them; we run the graph)."""
        key = tuple(sorted(self.shapes.items()))
        if key not in self.engine.shape_cache:
            feeds = {
                n: np.zeros(self.shapes[n], np.dtype(d.value))
                for n, m, d, _ in self.engine.io
                if m == TensorIOMode.INPUT
            }
            names = [n for n, m, _, _ in self.engine.io if m == TensorIOMode.OUTPUT]
            outs = self.engine.session.run(names, feeds)
            self.engine.shape_cache[key] = {n: tuple(o.shape) for n, o in zip(names, outs)}
        return self.engine.shape_cache[key]

    def set_tensor_address(self, name, ptr):
        _rec("context.set_tensor_address", name)
        self.addresses[name] = int(ptr)
        return True

    def _array(self, name):
        shape = self.get_tensor_shape(name)
        dtype = np.dtype(self.engine.get_tensor_dtype(name).value)
        n = int(np.prod(shape)) * dtype.itemsize
        return np.frombuffer(
            (ctypes.c_uint8 * n).from_address(self.addresses[name]), dtype=dtype
        ).reshape(shape)

    def _run(self):
        feeds = {
            n: self._array(n).copy() for n, m, _, _ in self.engine.io if m == TensorIOMode.INPUT
        }
        names = [n for n, m, _, _ in self.engine.io if m == TensorIOMode.OUTPUT]
        for name, value in zip(names, self.engine.session.run(names, feeds)):
            self._array(name)[...] = value

    fail_in_capture = False  # an engine TensorRT cannot capture (loops, conditionals)

    def execute_async_v3(self, stream_handle):
        _rec("context.execute_async_v3", int(stream_handle))
        missing = [n for n, *_ in self.engine.io if n not in self.addresses]
        if missing:
            raise AssertionError(f"execute_async_v3 without addresses for {missing}")
        stream = CUDART.streams[int(stream_handle)]
        if stream.capturing is not None:
            if _Context.fail_in_capture:
                return False
            stream.capturing.append(self._run)
        else:
            self._run()
        return True


class Runtime:
    def __init__(self, logger):
        self.logger, self.engine_host_code_allowed, self.DLA_core = logger, False, -1
        RUNTIMES.append(self)

    def deserialize_cuda_engine(self, data):
        _rec("Runtime.deserialize_cuda_engine", len(data))
        if not data.startswith(MAGIC):
            self.logger.log(_Severity.ERROR, "Serialization assertion failed: magic tag mismatch")
            return None
        head, onnx_bytes = data[len(MAGIC) :].split(b"\n", 1)
        header = json.loads(head)
        if header["version"] != __version__ and not (
            header["version_compatible"] and self.engine_host_code_allowed
        ):
            self.logger.log(_Severity.ERROR, "engine built by another TensorRT version")
            return None
        return _Engine(header, onnx_bytes)


__version__ = "10.3.0"
CUDART = FakeCudart()
RUNTIMES: list = []


def tensorrt_module(version: str = "10.3.0") -> types.ModuleType:
    """A module object standing in for ``tensorrt``."""
    global __version__
    __version__ = version
    mod = types.ModuleType("tensorrt")
    mod.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    for name in (
        "ILogger",
        "TensorIOMode",
        "DataType",
        "NetworkDefinitionCreationFlag",
        "BuilderFlag",
        "MemoryPoolType",
        "DeviceType",
        "nptype",
        "OnnxParser",
        "Builder",
        "Runtime",
    ):
        setattr(mod, name, globals()[name])
    mod.__version__ = version
    return mod


def install(monkeypatch, devices: int = 1, version: str = "10.3.0") -> FakeCudart:
    """Put the fakes in ``sys.modules`` for one test (``monkeypatch`` undoes it)."""
    global CUDART
    CUDART = FakeCudart(devices)
    CALLS.clear()
    RUNTIMES.clear()
    OnnxParser.reject, Builder.fail_build, _Context.fail_in_capture = [], False, False
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    for m, name in ((cuda, "cuda"), (bindings, "cuda.bindings"), (CUDART, "cuda.bindings.runtime")):
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    cuda.bindings, bindings.runtime = bindings, CUDART
    monkeypatch.setitem(__import__("sys").modules, "cuda", cuda)
    monkeypatch.setitem(__import__("sys").modules, "cuda.bindings", bindings)
    monkeypatch.setitem(__import__("sys").modules, "cuda.bindings.runtime", CUDART)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", tensorrt_module(version))
    return CUDART
