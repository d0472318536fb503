"""Our TensorRT runtime calls against the REAL TensorRT bindings, where tensorrt-lean is installed.

Without a GPU nothing may be deserialised (it crashes the process), so this checks the API surface
that runtime/backends/trt.py uses, our ILogger subclass, and that the real stack falls back to
onnxruntime instead of touching TensorRT when the probe finds no GPU. Engine building needs the
full ``tensorrt`` package and a GPU: see tests/test_engine.py (a fake) and the README.
"""

from __future__ import annotations

import logging

import pytest

from runtime.backends import ModelRef, open_backend
from runtime.backends.trt import make_logger
from runtime.engine_cache import manifest_input_shapes
from runtime.manifest import load_manifest
from runtime.probe import run_probe

trt = pytest.importorskip("tensorrt_lean", reason="tensorrt-lean is not installed")

ENGINE = (
    "num_io_tensors",
    "get_tensor_name",
    "get_tensor_mode",
    "get_tensor_shape",
    "get_tensor_dtype",
    "get_tensor_profile_shape",
    "create_execution_context",
)
CONTEXT = ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3")


def test_runtime_api_surface_exists():
    assert all(hasattr(trt.ICudaEngine, m) for m in ENGINE), [
        m for m in ENGINE if not hasattr(trt.ICudaEngine, m)
    ]
    assert all(hasattr(trt.IExecutionContext, m) for m in CONTEXT)
    assert hasattr(trt.Runtime, "deserialize_cuda_engine") and hasattr(
        trt.Runtime, "engine_host_code_allowed"
    )
    assert trt.TensorIOMode.INPUT != trt.TensorIOMode.OUTPUT
    assert trt.nptype(trt.DataType.HALF).__name__ == "float16"


def test_logger_subclass_forwards_to_logging(caplog):
    logger = make_logger(trt, logging.getLogger("trt-test"))
    assert isinstance(logger, trt.ILogger)
    with caplog.at_level(logging.DEBUG, "trt-test"):
        logger.log(trt.ILogger.Severity.ERROR, "boom")
        logger.log(trt.ILogger.Severity.INFO, "chatter")
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels == {"TensorRT: boom": logging.ERROR, "TensorRT: chatter": logging.DEBUG}


def test_real_stack_without_gpu_falls_back_to_onnxruntime(tiny_vit_folder):
    probe = run_probe()
    if probe.gpu_usable:
        pytest.skip("this machine has a GPU")
    assert probe.tensorrt and probe.tensorrt_module in ("tensorrt", "tensorrt_lean")
    assert not probe.tensorrt_usable
    m = load_manifest(tiny_vit_folder)
    ref = ModelRef(
        tiny_vit_folder / m.model_file,
        tiny_vit_folder,
        "fp32",
        m.model_sha256,
        manifest_input_shapes(m.inputs),
    )
    opened = open_backend("auto", ref, probe=probe)
    assert opened.backend.name == "onnxruntime" and "no usable CUDA GPU" in opened.reasons[0]
