"""runtime.cli: the error policy, logging, argparse types and Segmenter flags the programs share."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import export_folder
from PIL import Image

from runtime import cli
from runtime.class_names import VOC
from runtime.errors import ModelFolderError

ROOT = Path(__file__).resolve().parents[1]


def _python(args: list[str], env: dict | None = None, code: str | None = None):
    cmd = [sys.executable, *(["-c", code] if code else ["-m"]), *args]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "error: " in lines[0]
    return lines[0]


# --- error policy ----------------------------------------------------------------------------


def _raising(exc):
    def main(argv):
        raise exc

    return main


@pytest.mark.parametrize(
    "exc,status",
    [
        (ModelFolderError("no manifest.json\n  in /x"), 2),
        (ImportError("needs the text extra"), 2),
        (argparse.ArgumentTypeError("bad"), 2),
        (FileNotFoundError(2, "No such file or directory", "/proc/x/o.png"), 2),
        (KeyboardInterrupt(), 130),
    ],
)
def test_run_main_policy(exc, status, capsys):
    assert cli.run_main(_raising(exc)) == status
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    if status == 2:
        assert err.startswith("error: ") and "Traceback" not in err
    if isinstance(exc, ModelFolderError):
        assert err == "error: no manifest.json; in /x\n"


def test_run_main_status_and_bugs():
    assert cli.run_main(lambda argv: None) == 0
    assert cli.run_main(lambda argv: 3) == 3
    assert cli.cli_main(lambda argv: len(argv))(["a", "b"]) == 2
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli.run_main(lambda argv: 1 / 0)


def test_traceback_env_reraises(monkeypatch):
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(ModelFolderError):
        cli.run_main(_raising(ModelFolderError("x")))


def test_argparse_errors_are_one_line(capsys):
    p = cli.ArgumentParser(prog="prog")
    p.add_argument("--n", type=cli.positive_int, required=True)
    for argv, message in [
        (["--n", "0"], "argument --n: must be an integer > 0, got '0'"),
        ([], "the following arguments are required: --n"),
        (["--n", "1", "--x"], "unrecognized arguments: --x"),
    ]:
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        assert e.value.code == 2 and capsys.readouterr().err == f"prog: error: {message}\n"


# --- argparse types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn,good,bad",
    [
        (cli.positive_int, {"1": 1, "64": 64}, ["0", "-1", "1.5", "x", ""]),
        (cli.nonneg_int, {"0": 0, "3": 3}, ["-1", "x"]),
        (cli.positive_float, {"0.5": 0.5, "2": 2.0}, ["0", "-1", "nan", "inf", "x"]),
        (cli.nonneg_float, {"0": 0.0, "1.5": 1.5}, ["-0.1", "nan"]),
        (cli.unit_float, {"0": 0.0, "1": 1.0, "0.25": 0.25}, ["2", "-0.1", "1.01", "nan", "x"]),
        (cli.multiple_of(32), {"32": 32, "448": 448}, ["0", "100", "-32", "x"]),
    ],
)
def test_types(fn, good, bad):
    for text, value in good.items():
        assert fn(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"must be .*got {text!r}"):
            fn(text)


def test_multiple_of_names_itself():
    assert cli.multiple_of(14).__name__ == "multiple_of_14"
    with pytest.raises(ValueError):
        cli.multiple_of(0)


# --- Segmenter flags -------------------------------------------------------------------------


def test_segmenter_args_and_kwargs():
    p = cli.ArgumentParser()
    cli.add_segmenter_args(p)
    args = p.parse_args(["--model", "m", "--classes", "voc", "--threads", "2", "--cuda-graph"])
    assert args.classes == VOC
    assert cli.segmenter_kwargs(args) == dict(
        folder="m",
        backend="auto",
        mode="auto",
        stride=None,
        slide_edge=None,
        short_side=None,
        precision="fp32",
        threads=2,
        score_threshold=0.0,
        cuda_graph=True,
    )
    args = p.parse_args(["--model", "m", "--score-threshold", "0.3", "--slide-edge", "grid"])
    assert cli.segmenter_kwargs(args)["score_threshold"] == 0.3
    assert cli.segmenter_kwargs(args)["slide_edge"] == "grid"
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "m", "--slide-edge", "middle"])
    for bad in ("1", "-0.1", "x"):
        with pytest.raises(SystemExit):
            p.parse_args(["--model", "m", "--score-threshold", bad])
    q = cli.ArgumentParser()
    cli.add_segmenter_args(q, skip={"--backend", "--classes"}, help={"--threads": "custom"})
    args = q.parse_args(["--model", "m"])
    assert not hasattr(args, "backend") and not hasattr(args, "classes")
    assert "cuda_graph" not in cli.segmenter_kwargs(args)
    assert cli.segmenter_kwargs(args, backend="tensorrt")["backend"] == "tensorrt"
    with pytest.raises(ValueError, match="not Segmenter flags"):
        cli.add_segmenter_args(cli.ArgumentParser(), skip={"--bogus"})


# --- the programs ----------------------------------------------------------------------------


def test_infer_misspelt_vocabulary_fails_before_loading_the_model(tmp_path):
    line = _one_error_line(
        _python(
            [
                "runtime.infer",
                "--model",
                str(tmp_path / "no-such-folder"),
                "--image",
                "sample:astronaut",
                "--out",
                str(tmp_path / "o.png"),
                "--classes",
                "camvidd",
            ]
        )
    )
    assert "did you mean camvid?" in line and "no-such-folder" not in line


def test_infer_alpha_out_of_range(tmp_path):
    line = _one_error_line(
        _python(
            [
                "runtime.infer",
                "--model",
                str(tmp_path),
                "--image",
                "x.png",
                "--out",
                "o.png",
                "--alpha",
                "2",
            ]
        )
    )
    assert "--alpha: must be a number in [0, 1], got '2'" in line


def test_infer_bad_input_is_one_line(tmp_path):
    line = _one_error_line(
        _python(
            [
                "runtime.infer",
                "--model",
                str(tmp_path / "nothing"),
                "--image",
                "x.png",
                "--out",
                "o.png",
            ]
        )
    )
    assert line.startswith("error: ")


@pytest.mark.parametrize(
    "module,args",
    [
        ("runtime.camera", ["--model", "m", "--source", "0", "--queue", "0"]),
        ("runtime.camera", ["--model", "m", "--source", "0", "--classes", "vocc"]),
        ("benchmarks.stages", ["--model", "m", "--runs", "0"]),
        ("benchmarks.stages", ["--model", "m", "--threads", "-1"]),
        ("export.engine", ["folder", "--max-classes", "0"]),
        ("runtime.probe", ["--timeout", "-1"]),
    ],
)
def test_programs_refuse_bad_arguments_in_one_line(module, args):
    _one_error_line(_python([module, *args]))


def test_cli_modules_import_without_torch():
    code = (
        "import sys\n"
        "for name in ('torch', 'training', 'open_clip'):\n"
        "    sys.modules[name] = None\n"
        "import runtime.cli, runtime.vocab, runtime.class_names\n"
        "import runtime.infer, runtime.camera, runtime.probe\n"
        "loaded = [m for m, v in sys.modules.items() if v is not None\n"
        "          and m.split('.')[0] in ('torch', 'training', 'open_clip', 'export')]\n"
        "assert not loaded, loaded\n"
    )
    proc = _python([], code=code)
    assert proc.returncode == 0, proc.stderr


# --- logging ---------------------------------------------------------------------------------

LOG_CODE = (
    "import logging\n"
    "from runtime.cli import setup_logging\n"
    "setup_logging()\n"
    "logging.getLogger('runtime.x').info('info-line')\n"
    "logging.getLogger('export.y').warning('warning-line')\n"
    "logging.getLogger('somelib').info('third-party-info')\n"
)


@pytest.mark.parametrize(
    "env,info,prefix",
    [
        ({}, True, ""),
        ({"RANK": "0"}, True, ""),
        ({"RANK": "1"}, False, "[rank 1] "),
        ({"LOCAL_RANK": "3"}, False, "[rank 3] "),
    ],
)
def test_only_rank_0_logs_info(env, info, prefix):
    clean = {"RANK": "", "LOCAL_RANK": "", **env}
    proc = _python([], env=clean, code=LOG_CODE)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert ("info-line" in proc.stderr) == info and "third-party-info" not in proc.stderr
    warning = [ln for ln in lines if "warning-line" in ln]
    assert len(warning) == 1 and warning[0].startswith(prefix)
    assert "WARNING export.y: warning-line" in warning[0]


def test_setup_logging_is_idempotent_and_verbose():
    root = logging.getLogger()
    before = {n: logging.getLogger(n).level for n in cli.LOG_PACKAGES}
    root_level = root.level
    try:
        assert cli.setup_logging(verbose=True) == logging.DEBUG
        assert cli.setup_logging() == logging.INFO
        assert sum(isinstance(h, cli._Handler) for h in root.handlers) == 1
    finally:
        for h in [h for h in root.handlers if isinstance(h, cli._Handler)]:
            root.removeHandler(h)
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)
        root.setLevel(root_level)


# --- --classes voc on a folder with the on-device text encoder --------------------------------


@pytest.fixture(scope="module")
def te_folder(tmp_path_factory, one_thread):
    """The folder tests/test_text_encoder.py uses: vocabulary as input, text encoder on board."""
    return export_folder(
        tmp_path_factory, "tiny_vit_text_cli_layer", vocab_mode="input", text_encoder=True
    )


def test_infer_classes_voc_segments_with_the_20_voc_names(te_folder, tmp_path, capsys):
    from runtime import infer
    from runtime.segmenter import Segmenter

    image = (np.random.default_rng(0).random((160, 200, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    labels_png = tmp_path / "labels.png"
    rc = infer.main(
        [
            "--model",
            str(te_folder),
            "--image",
            str(tmp_path / "in.png"),
            "--out",
            str(tmp_path / "o.png"),
            "--labels-out",
            str(labels_png),
            "--classes",
            "voc",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["classes"] == 20 and line["classes_present"]
    assert set(line["classes_present"]) <= set(VOC)
    with Segmenter(te_folder, threads=1) as seg:
        seg.set_classes(VOC)
        want = seg(np.asarray(Image.open(tmp_path / "in.png").convert("RGB")))
    assert want.classes == VOC and list(want.classes_present) == line["classes_present"]
    np.testing.assert_array_equal(np.asarray(Image.open(labels_png)), want.labels)


PROGRAMS = (
    "export.build",
    "export.engine",
    "export.triton",
    "export.deepstream",
    "training.train",
    "training.evaluate",
    "calibration.calibrate",
    "runtime.infer",
    "runtime.camera",
    "runtime.probe",
    "runtime.serve",
    "benchmarks.latency",
    "benchmarks.host_cost",
    "benchmarks.precision",
    "benchmarks.students",
    "benchmarks.zero_shot",
    "benchmarks.methods",
    "benchmarks.stages",
    "benchmarks.camera",
    "benchmarks.cpp_vs_python",
)


@pytest.mark.parametrize("module", PROGRAMS)
def test_help_never_imports_torch(module):
    """Every program answers --help (and argument errors) before importing torch."""
    code = (
        "import runpy, sys\n"
        "sys.modules['torch'] = None\n"
        f"sys.argv = [{module!r}, '--help']\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
