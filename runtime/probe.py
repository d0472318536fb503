"""What this machine offers for inference, found without risking the caller's process.

    python -m runtime.probe [--timeout S]   # prints one JSON object, always exits 0

The checks that can crash (CUDA driver calls, importing TensorRT: without a GPU tensorrt-lean
segfaults on engine deserialisation) run in a child interpreter, so a crash there becomes an
``error`` field here. Nothing in this module deserialises an engine.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform as _platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from runtime.cli import ArgumentParser, add_verbose_arg, cli_main, positive_float, setup_logging

log = logging.getLogger(__name__)
CHILD_FLAG = "--child"
JETSON_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device: name, compute capability "major.minor" and memory in MiB."""

    index: int
    name: str
    compute_capability: str
    memory_mib: int


@dataclass(frozen=True)
class ProbeResult:
    """What the probe found.

    Attributes:
        gpus: CUDA devices the driver reports (empty without a GPU or driver).
        cuda_error: why no GPU was found (driver error name, missing cuda-python, child crash).
        cuda_driver, cuda_runtime: versions as integers (e.g. 12040), 0 when unknown.
        tensorrt: TensorRT version string, or "" when no TensorRT module imports.
        tensorrt_module: "tensorrt" (full: builder + runtime) or "tensorrt_lean" (runtime only).
        tensorrt_builder: whether the module can build engines (has Builder and OnnxParser).
        tensorrt_error: why an installed TensorRT module failed to import.
        ort_version, ort_providers: onnxruntime's version and the providers this build offers
            (onnxruntime-gpu lists CUDA / TensorRT even where no GPU exists: see ``gpu_usable``).
        jetson: the board model on a Jetson, else "".
        pycuda: whether pycuda is importable (not used: buffers use cuda-python).
        error: set when the child probe crashed or timed out.
    """

    gpus: tuple[GpuInfo, ...] = ()
    cuda_error: str = ""
    cuda_driver: int = 0
    cuda_runtime: int = 0
    tensorrt: str = ""
    tensorrt_module: str = ""
    tensorrt_builder: bool = False
    tensorrt_error: str = ""
    ort_version: str = ""
    ort_providers: tuple[str, ...] = ()
    jetson: str = ""
    pycuda: bool = False
    platform: str = field(default_factory=_platform.platform)
    python: str = field(default_factory=_platform.python_version)
    error: str = ""

    @property
    def gpu_usable(self) -> bool:
        """True when the CUDA driver reports at least one device."""
        return bool(self.gpus)

    @property
    def tensorrt_usable(self) -> bool:
        """True when a GPU is usable and a TensorRT runtime imports."""
        return self.gpu_usable and bool(self.tensorrt)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with the derived ``gpu_usable`` / ``tensorrt_usable`` flags."""
        return {
            **asdict(self),
            "gpu_usable": self.gpu_usable,
            "tensorrt_usable": self.tensorrt_usable,
        }


def _cuda_facts() -> dict[str, Any]:
    try:
        from runtime.backends.cuda import cudart_module, error_name

        cudart = cudart_module()
    except ImportError as e:
        return {"cuda_error": f"cuda-python is not installed ({e}): pip install 'ovss-edge[trt]'"}
    out: dict[str, Any] = {}
    err, driver = cudart.cudaDriverGetVersion()
    out["cuda_driver"] = int(driver or 0) if int(err) == 0 else 0
    err, rt = cudart.cudaRuntimeGetVersion()
    out["cuda_runtime"] = int(rt or 0) if int(err) == 0 else 0
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        out["cuda_error"] = error_name(err)
        return out
    gpus = []
    for i in range(int(count)):
        err, props = cudart.cudaGetDeviceProperties(i)
        if int(err) != 0:
            out["cuda_error"] = f"device {i}: {error_name(err)}"
            continue
        name = (
            props.name.decode(errors="replace")
            if isinstance(props.name, bytes)
            else str(props.name)
        )
        gpus.append(
            {
                "index": i,
                "name": name.strip("\x00 "),
                "compute_capability": f"{props.major}.{props.minor}",
                "memory_mib": int(props.totalGlobalMem) >> 20,
            }
        )
    out["gpus"] = gpus
    return out


def _tensorrt_facts() -> dict[str, Any]:
    for module in ("tensorrt", "tensorrt_lean"):
        if find_spec(module) is None:
            continue
        try:
            trt = __import__(module)
        except Exception as e:  # a broken install must not stop the probe
            return {"tensorrt_module": module, "tensorrt_error": f"import {module} failed: {e}"}
        return {
            "tensorrt": str(getattr(trt, "__version__", "")),
            "tensorrt_module": module,
            "tensorrt_builder": hasattr(trt, "Builder") and hasattr(trt, "OnnxParser"),
        }
    return {}


def _ort_facts() -> dict[str, Any]:
    if find_spec("onnxruntime") is None:
        return {}
    import onnxruntime

    return {
        "ort_version": onnxruntime.__version__,
        "ort_providers": list(onnxruntime.get_available_providers()),
    }


def _jetson() -> str:
    for path in (DEVICE_TREE_MODEL, JETSON_RELEASE):
        try:
            if path.is_file():
                text = path.read_text(errors="replace").strip("\x00\n ")
                return text.splitlines()[0] if text else "jetson"
        except OSError:
            continue
    return ""


def collect() -> dict[str, Any]:
    """Run every check in this process (the child side). May crash on a broken driver."""
    facts: dict[str, Any] = {"jetson": _jetson(), "pycuda": find_spec("pycuda") is not None}
    facts.update(_ort_facts())
    facts.update(_cuda_facts())
    facts.update(_tensorrt_facts())
    return facts


def result_from_dict(d: dict[str, Any], error: str = "") -> ProbeResult:
    """A ProbeResult from the child's JSON (unknown keys ignored)."""
    gpus = tuple(GpuInfo(**g) for g in d.get("gpus", ()))
    keep = {
        k: d[k]
        for k in (
            "cuda_error",
            "cuda_driver",
            "cuda_runtime",
            "tensorrt",
            "tensorrt_module",
            "tensorrt_builder",
            "tensorrt_error",
            "ort_version",
            "jetson",
            "pycuda",
        )
        if k in d
    }
    return ProbeResult(
        gpus=gpus, ort_providers=tuple(d.get("ort_providers", ())), error=error, **keep
    )


def run_probe(timeout: float = 60.0, command: list[str] | None = None) -> ProbeResult:
    """Probe in a child interpreter; never raises. A crash or timeout is reported in ``error``.

    Args:
        timeout: seconds before the child is killed.
        command: the child's command line (default: this module with ``--child``).
    """
    cmd = command or [sys.executable, "-m", "runtime.probe", CHILD_FLAG]
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except (subprocess.TimeoutExpired, OSError) as e:
        return ProbeResult(cuda_error="probe failed", error=f"probe did not finish: {e}")
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
        why = (
            f"probe child exited with {proc.returncode} (signal {-proc.returncode})"
            if proc.returncode < 0
            else f"probe child exited with {proc.returncode}: {tail[0]}"
        )
        return ProbeResult(cuda_error="probe crashed", error=why)
    try:
        return result_from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError) as e:
        return ProbeResult(cuda_error="probe output unreadable", error=f"bad probe output: {e}")


@functools.lru_cache(maxsize=1)
def cached_probe() -> ProbeResult:
    """``run_probe()`` once per process (backend selection asks for it on every model load)."""
    result = run_probe()
    log.info(
        "probe: gpus=%s tensorrt=%r ort providers=%s%s",
        [g.name for g in result.gpus],
        result.tensorrt,
        list(result.ort_providers),
        f" ({result.error})" if result.error else "",
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m runtime.probe", description=__doc__.splitlines()[0])
    p.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)  # the child side
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        help="seconds before the probing child is killed (default 60)",
    )
    add_verbose_arg(p)
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Probe and print one JSON object; exit 0 whatever the probe finds or suffers (a bad argument
    still exits 2, as in every program)."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(collect()))
        return 0
    setup_logging(args.verbose)
    try:
        print(json.dumps(run_probe(args.timeout).to_dict(), indent=2))
    except Exception as e:  # the probe's promise: never crash, always exit 0
        print(json.dumps({"error": f"probe failed: {e}", "gpu_usable": False}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
