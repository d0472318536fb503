"""The machine probe: a child process that may crash, reported without crashing the caller."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.probe import collect, result_from_dict, run_probe
from tests import fake_trt

ROOT = Path(__file__).resolve().parents[1]


def _has_nvidia_device() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def test_probe_cli_reports_and_exits_0():
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["gpu_usable"] == bool(d["gpus"]) and d["tensorrt_usable"] == (
        d["gpu_usable"] and bool(d["tensorrt"])
    )
    assert "CPUExecutionProvider" in d["ort_providers"] and d["error"] == ""
    if not _has_nvidia_device():
        assert d["gpus"] == [] and d["gpu_usable"] is False and d["cuda_error"]


def test_crashing_child_is_reported_not_propagated():
    segfault = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]
    r = run_probe(command=segfault)
    assert not r.gpu_usable and "signal 11" in r.error
    r = run_probe(timeout=0.5, command=[sys.executable, "-c", "import time; time.sleep(5)"])
    assert not r.gpu_usable and "did not finish" in r.error
    r = run_probe(command=[sys.executable, "-c", "print('not json')"])
    assert not r.gpu_usable and "bad probe output" in r.error
    r = run_probe(command=[sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert "exited with 1: boom" in r.error


@pytest.mark.parametrize("devices", [0, 2])
def test_collect_reads_cuda_devices(monkeypatch, devices):
    fake_trt.install(monkeypatch, devices=devices)
    facts = collect()
    r = result_from_dict(json.loads(json.dumps(facts)))
    assert len(r.gpus) == devices and r.gpu_usable == bool(devices)
    if devices:
        assert r.gpus[1].name == "Fake GPU" and r.gpus[1].compute_capability == "8.7"
        assert r.tensorrt == "10.3.0" and r.tensorrt_builder and r.tensorrt_usable
    else:
        assert r.cuda_error == "cudaErrorInsufficientDriver" and not r.tensorrt_usable
