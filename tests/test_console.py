"""Console commands: a missing extra is one line naming it, and ``ovss-infer`` from a fresh
runtime-only install works from a folder that has its own ``runtime/`` and ``training/``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import console
from runtime.cli import missing_extra

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_is_a_console_script():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(console.COMMANDS)
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert module == "runtime.console" and callable(getattr(console, attr)), name


def test_missing_module_names_its_extra():
    assert "ovss-edge[export]" in missing_extra(ModuleNotFoundError("x", name="torch"))
    assert "ovss-edge[ort]" in missing_extra(ModuleNotFoundError("x", name="onnxruntime"))
    assert missing_extra(ModuleNotFoundError("x", name="not_ours")) is None


def test_command_without_its_extra_is_one_line_exit_2(monkeypatch, capsys):
    def blocked(name):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(console.importlib, "import_module", blocked)
    assert console.run("ovss-export", ["--help"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ovss-export" in err[0] and "ovss-edge[export]" in err[0]


def _fresh_runtime_venv(tmp: Path) -> Path:
    """A new venv with ovss-edge[ort] installed from this tree (not editable); skips when the
    packages cannot be fetched."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    proc = subprocess.run(
        [*pip, f"{ROOT}[ort]"], capture_output=True, text=True, timeout=900
    )  # builds the wheel from this tree
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        if any(s in proc.stderr for s in ("Could not find", "connection", "Network", "resolve")):
            pytest.skip(f"cannot install ovss-edge[ort] into a fresh venv here: {tail}")
        raise AssertionError(f"pip install failed: {proc.stderr[-2000:]}")
    return venv


@pytest.mark.slow
def test_ovss_infer_from_a_folder_with_its_own_packages(tiny_vit_folder, tmp_path):
    venv = _fresh_runtime_venv(tmp_path)
    for banned in ("torch", "open_clip", "cv2"):  # only the runtime extras
        probe = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {banned}"])
        assert probe.returncode != 0, f"{banned} is installed in the runtime-only venv"
    project = tmp_path / "project"  # a user's project with packages of the same names
    for pkg in ("runtime", "training"):
        (project / pkg).mkdir(parents=True)
        (project / pkg / "__init__.py").write_text(f"raise ImportError('the project {pkg}')\n")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((90, 120, 3)) * 255).astype(np.uint8)).save(project / "in.png")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    infer = [str(venv / "bin" / "ovss-infer"), "--model", str(tiny_vit_folder)]
    proc = subprocess.run(
        [*infer, "--image", "in.png", "--out", "o.png"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(project / "o.png") as out:  # the overlay, legend strip below
        assert out.size[0] == 120 and out.size[1] >= 90
    # ``python -m`` from the same folder takes the project's package: why the commands exist
    shadowed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "runtime.infer", "--help"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shadowed.returncode != 0 and "the project runtime" in shadowed.stderr
    # a command whose extra is missing: one line naming it, exit 2
    args = ["--method", "maskclip", "--backbone", "ovss-tiny-vit", "--classes", "a,b"]
    export = subprocess.run(
        [str(venv / "bin" / "ovss-export"), *args, "--output", "x"], cwd=project, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert export.returncode == 2 and "ovss-edge[export]" in export.stderr, export.stderr
    assert len(export.stderr.strip().splitlines()) == 1
