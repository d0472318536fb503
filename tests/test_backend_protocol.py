"""The backend protocol (``runtime.backends.Backend``): typed I/O specs, per-call timings, context
manager and idempotent close, on onnxruntime and on the TensorRT backend run against
tests/fake_trt.py (which checks our orchestration, not TensorRT)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from runtime.backends import Backend, BackendClosed, TensorInfo, Timings, make_backend
from runtime.backends.ort import OrtBackend
from tests import fake_trt

ROOT = Path(__file__).resolve().parents[1]
CPU = ["CPUExecutionProvider"]
# x [N,3,4,4] float32 -> y = 2x [N,3,4,4] float32, labels = argmax over axis 1 [N,4,4] int64
X = TensorInfo("x", "float32", ("N", 3, 4, 4))
Y = TensorInfo("y", "float32", ("N", 3, 4, 4))
LABELS = TensorInfo("labels", "int64", ("N", 4, 4))


def _graph(batch="N") -> bytes:
    """The graph above; ``batch`` is the batch axis: a symbolic name, None (unnamed) or an int.
    IR 10 and opset 17 are pinned (onnx's newer defaults are rejected by onnxruntime)."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["y"]),
        helper.make_node("ArgMax", ["x"], ["labels"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "protocol",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 4, 4]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, 4, 4]),
        ],
        [two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return model.SerializeToString()


def _x(n=2, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 4, 4)).astype(np.float32)


@pytest.fixture
def onnx_path(tmp_path) -> Path:
    path = tmp_path / "protocol.onnx"
    path.write_bytes(_graph())
    return path


def test_ort_specs_name_dtype_and_symbolic_axis(onnx_path):
    with OrtBackend(onnx_path, providers=CPU) as b:
        assert b.input_specs == (X,) and b.output_specs == (Y, LABELS)
        assert b.input_names == ("x",) and b.output_names == ("y", "labels")
        assert b.input_specs[0].dynamic_axes == (0,) and b.input_specs[0].dims == (-1, 3, 4, 4)
        assert b.output_specs[1].dynamic_axes == (0,)


@pytest.mark.parametrize(
    "batch, shape, dynamic", [(None, (-1, 3, 4, 4), (0,)), (2, (2, 3, 4, 4), ())]
)
def test_ort_specs_unnamed_dynamic_and_fixed_axes(batch, shape, dynamic):
    b = make_backend("onnxruntime", _graph(batch), providers=CPU)  # serialised bytes work too
    spec = b.input_specs[0]
    assert spec.shape == shape and spec.dims == shape and spec.dynamic_axes == dynamic
    b.close()


def test_ort_timings_after_each_call(onnx_path):
    b = OrtBackend(onnx_path, providers=CPU)
    assert b.last_timings is None
    out = b({"x": _x()}, ["y", "labels"])
    np.testing.assert_array_equal(out["y"], 2 * _x())
    assert out["labels"].dtype == np.int64 and out["labels"].shape == (2, 4, 4)
    first = b.last_timings
    assert isinstance(first, Timings) and first.compute >= 0.0
    assert first.h2d is None and first.d2h is None  # onnxruntime copies inside run()
    b({"x": _x(3)}, ["y"])
    assert b.last_timings is not first  # each call records its own
    b.close()


def test_ort_options_reach_the_session(onnx_path):
    import onnxruntime as ort

    b = OrtBackend(onnx_path, providers=CPU, threads=1, optimization="ORT_ENABLE_BASIC")
    so = b.session.get_session_options()
    assert so.intra_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert b.providers == ("CPUExecutionProvider",)


def test_ort_with_block_closes_and_close_is_idempotent(onnx_path):
    with OrtBackend(onnx_path, providers=CPU) as b:
        b({"x": _x()}, ["y"])
    with pytest.raises(BackendClosed, match="closed"):
        b({"x": _x()}, ["y"])
    b.close()
    b.close()
    assert b.input_specs == (X,)  # specs stay readable after close


# ----------------------------------------------------------------------------- TensorRT (fake)
def _engine(onnx_path: Path, tmp_path: Path) -> Path:
    """Build an engine with the (fake) TensorRT Python API, batch 1..4 on the profile."""
    trt = sys.modules["tensorrt"]
    logger = trt.ILogger()
    builder = trt.Builder(logger)
    network = builder.create_network(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert trt.OnnxParser(network, logger).parse_from_file(str(onnx_path))
    config, profile = builder.create_builder_config(), builder.create_optimization_profile()
    profile.set_shape("x", (1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4))
    config.add_optimization_profile(profile)
    path = tmp_path / "protocol.engine"
    path.write_bytes(builder.build_serialized_network(network, config))
    return path


@pytest.fixture
def trt_engine(monkeypatch, onnx_path, tmp_path):
    cudart = fake_trt.install(monkeypatch)
    return _engine(onnx_path, tmp_path), cudart


def test_fake_trt_reports_the_same_specs_as_onnxruntime(trt_engine, onnx_path):
    from runtime.backends.trt import TrtBackend

    with TrtBackend(trt_engine[0]) as trt, OrtBackend(onnx_path, providers=CPU) as ort:
        for got, want in ((trt.input_specs, ort.input_specs), (trt.output_specs, ort.output_specs)):
            assert [(s.name, s.dtype, s.dims) for s in got] == [
                (s.name, s.dtype, s.dims) for s in want
            ]
        assert trt.input_specs[0] == TensorInfo("x", "float32", (-1, 3, 4, 4))  # no symbolic names
        assert trt.output_specs[1].dtype == "int64"


def test_fake_trt_timings_context_manager_and_close(trt_engine):
    from runtime.backends.trt import TrtBackend

    path, cudart = trt_engine
    with TrtBackend(path) as b:
        assert b.last_timings is None
        out = b({"x": _x(3)}, ["y", "labels"])
        np.testing.assert_allclose(out["y"], 2 * _x(3))
        assert out["labels"].dtype == np.int64 and out["labels"].shape == (3, 4, 4)
        t = b.last_timings
        assert all(v is not None and v >= 0.0 for v in (t.h2d, t.compute, t.d2h))
    assert not cudart.memory and not cudart.streams  # the with block freed everything
    with pytest.raises(BackendClosed, match="closed"):
        b({"x": _x()}, ["y"])
    b.close()  # idempotent: nothing left to free, no error


def test_every_backend_has_every_protocol_member(onnx_path, trt_engine):
    from runtime.backends.trt import TrtBackend

    members = [n for n in dir(Backend) if not n.startswith("_")] + ["__enter__", "__exit__"]
    members += list(Backend.__annotations__)
    for b in (OrtBackend(onnx_path, providers=CPU), TrtBackend(trt_engine[0])):
        with b:
            missing = [m for m in members if not hasattr(b, m)]
            assert not missing, f"{type(b).__name__} lacks {missing}"
            assert b.__enter__() is b


def test_only_the_ort_backend_opens_onnxruntime_sessions():
    """Library code runs ONNX through the protocol; tests and the TensorRT fake may not."""
    packages = [p.parent for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"]
    assert {"runtime", "export", "calibration", "benchmarks"} <= {p.name for p in packages}
    offenders = [
        str(f.relative_to(ROOT))
        for pkg in packages
        for f in pkg.rglob("*.py")
        if f != ROOT / "runtime/backends/ort.py" and "InferenceSession(" in f.read_text()
    ]
    assert not offenders, f"use runtime.backends.ort.OrtBackend instead in {offenders}"
