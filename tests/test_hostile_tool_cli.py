"""Hostile arguments to the producing programs (export, engine, triton, deepstream, calibrate,
train, evaluate, benchmarks): every bad value is one stderr line and exit 2, decided before the
expensive work.

Each program's expensive step is replaced by a function that raises ``Reached``: a bad argument
must be refused without reaching it (and without creating the output), and a control case with
good arguments must reach it (so the harness can tell the difference). Inputs are made on the
fly under ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import typing
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_exit_2

from runtime.errors import ConfigError


class Reached(BaseException):
    """The expensive step was called (not an ``Exception``: no error policy catches it)."""


def _reached(*_a, **_k):
    raise Reached


# module -> the attribute its main() calls for the expensive work
EXPENSIVE = {
    "export.build": ("export.registry", "build"),
    "export.engine": ("export.engine", "build_engine"),
    "export.triton": ("export.triton", "write_repository"),
    "export.deepstream": ("export.deepstream", "write_config"),
    "calibration.calibrate": ("calibration.calibrate", "calibrate"),
    "training.train": ("training.train", "run"),
    "training.evaluate": ("training.evaluate", "evaluate_checkpoint"),
    "benchmarks.latency": ("benchmarks.latency", "run_benchmark"),
    "benchmarks.camera": ("benchmarks.camera", "run_benchmark"),
    "benchmarks.cpp_vs_python": ("benchmarks.cpp_vs_python", "run"),
    "benchmarks.host_cost": ("benchmarks.host_cost", "run_benchmark"),
    "benchmarks.methods": ("benchmarks.methods", "run_benchmark"),
    "benchmarks.stages": ("benchmarks.stages", "run_benchmark"),
    "benchmarks.precision": ("benchmarks.precision", "run_benchmark"),
    "benchmarks.students": ("benchmarks.students", "run_benchmark"),
    "benchmarks.zero_shot": ("benchmarks.zero_shot", "_run"),
}


@pytest.fixture
def paths(tmp_path) -> dict[str, str]:
    """Hostile paths: a file, a folder, a path under a file, a missing file, an output that
    must not appear, and random bytes / a truncated zip posing as checkpoints."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    rng = np.random.default_rng(0)
    (tmp_path / "random.pt").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    return {
        "FILE": str(tmp_path / "file"),
        "DIR": str(tmp_path / "dir"),
        "UNDER": str(tmp_path / "file" / "sub"),
        "MISSING": str(tmp_path / "missing.pt"),
        "OUT": str(tmp_path / "out"),
        "RANDOM": str(tmp_path / "random.pt"),
        "TRUNC": str(tmp_path / "truncated.pt"),
    }


def _fill(args: list[str], paths: dict[str, str]) -> list[str]:
    return [paths.get(a, a) for a in args]


def call(module: str, argv: list[str], monkeypatch) -> int:
    """``module.main(argv)`` with its expensive step replaced by ``_reached``; the exit status
    (argparse's SystemExit included)."""
    target, name = EXPENSIVE[module]
    monkeypatch.setattr(importlib.import_module(target), name, _reached)
    main = importlib.import_module(module).main
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


# --------------------------------------------------------------------------- the sweep

BUILD = ["--method", "maskclip", "--backbone", "ovss-tiny-vit", "--classes", "a,b"]
BUILD += ["--image-size", "64", "--output", "OUT"]
NACLIP = ["--method", "naclip", "--backbone", "ovss-tiny-vit", "--classes", "a,b"]
NACLIP += ["--output", "OUT"]
ZEG = ["--method", "zegclip", "--backbone", "ovss-tiny-vit", "--classes", "a,b"]
ZEG += ["--output", "OUT"]
TRAIN = ["--method", "zegclip", "--backbone", "ovss-tiny-vit", "--dataset", "folder"]
TRAIN += ["--images", "DIR", "--masks", "DIR", "--classes", "a,b", "--device", "cpu"]
EVAL = ["--dataset", "folder", "--images", "DIR", "--masks", "DIR", "--classes", "a,b"]
CAL = ["--precision", "int8", "--images", "DIR"]
MODEL = "MISSING"  # a folder the expensive step would read: never reached

CASES = [
    # export.build: general numbers
    ("export.build", [*BUILD, "--opset", "99"], "--opset"),
    ("export.build", [*BUILD, "--opset", "16"], "--opset"),
    ("export.build", [*BUILD, "--opset", "x"], "--opset"),
    ("export.build", [*BUILD, "--image-size", "0"], "--image-size"),
    ("export.build", [*BUILD, "--image-size", "-16"], "--image-size"),
    ("export.build", [*BUILD, "--image-size", "100000"], "--image-size"),
    ("export.build", [*BUILD, "--image-size", "6.4e1"], "--image-size"),
    ("export.build", [*BUILD, "--atol", "nan"], "--atol"),
    ("export.build", [*BUILD, "--atol", "-1"], "--atol"),
    ("export.build", [*BUILD, "--seed", "-1"], "--seed"),
    ("export.build", [*BUILD, "--seed", str(2**40)], "--seed"),
    # export.build: method options
    ("export.build", [*BUILD, "--mean", "nan", "1", "1"], "--mean"),
    ("export.build", [*BUILD, "--std", "0", "1", "1"], "--std"),
    ("export.build", [*BUILD, "--std", "inf", "1", "1"], "--std"),
    ("export.build", [*BUILD, "--ks-thresh", "nan"], "--ks-thresh"),
    ("export.build", [*BUILD, "--pd-thresh", "inf"], "--pd-thresh"),
    ("export.build", [*NACLIP, "--slide-stride", "0"], "--slide-stride"),
    ("export.build", [*NACLIP, "--pamr-steps", "1000"], "--pamr-steps"),
    ("export.build", [*NACLIP, "--pamr-dilations", "8", "0"], "--pamr-dilations"),
    ("export.build", [*NACLIP, "--logit-scale", "0"], "--logit-scale"),
    ("export.build", [*NACLIP, "--gaussian-std", "-1"], "--gaussian-std"),
    ("export.build", [*NACLIP, "--short-side", "-5"], "--short-side"),
    ("export.build", [*NACLIP, "--prob-thd", "1"], "--prob-thd"),
    ("export.build", [*ZEG, "--num-tokens", "-1"], "--num-tokens"),
    ("export.build", [*ZEG, "--decoder-heads", "0"], "--decoder-heads"),
    ("export.build", [*ZEG, "--decoder-layers", "0"], "--decoder-layers"),
    ("export.build", [*ZEG, "--seen-bias", "nan"], "--seen-bias"),
    ("export.build", [*ZEG, "--total-d-layer", "-1"], "--total-d-layer"),
    # export.build: names and paths
    ("export.build", [*BUILD, "--method", "segformer"], "--method"),
    ("export.build", [*BUILD, "--ks-norm", "x"], "--ks-norm"),
    ("export.build", [*BUILD, "--output", "FILE"], "not a folder"),
    ("export.build", [*BUILD, "--output", "UNDER"], "not a folder"),
    ("export.build", [*BUILD, "--cache-dir", "FILE"], "--cache-dir"),
    ("export.build", [*BUILD, "--text-embeddings", "DIR"], "not a file"),
    ("export.build", [*ZEG, "--checkpoint", "DIR"], "not a file"),
    ("export.build", [*ZEG, "--checkpoint", "MISSING"], "does not exist"),
    ("export.build", [*BUILD, "--checkpoint", "RANDOM"], "does not apply"),
    ("export.build", [*BUILD, "--classes", "a,a"], "duplicate"),
    ("export.build", [*BUILD, "--output-size", "0x5", "--postprocess", "graph"], "output size"),
    # export.engine
    ("export.engine", [MODEL, "--workspace", "0"], "--workspace"),
    ("export.engine", [MODEL, "--workspace", str(2**40)], "--workspace"),
    ("export.engine", [MODEL, "--max-classes", "0"], "--max-classes"),
    ("export.engine", [MODEL, "--max-classes", "100000000"], "--max-classes"),
    ("export.engine", [MODEL, "--dla", "99"], "--dla"),
    ("export.engine", [MODEL, "--dla", "-2"], "--dla"),
    ("export.engine", [MODEL, "--precision", "fp64"], "--precision"),
    ("export.engine", [MODEL, "--timing-cache", "DIR"], "--timing-cache"),
    ("export.engine", [MODEL, "--timing-cache", "UNDER"], "--timing-cache"),
    # export.triton
    ("export.triton", [MODEL, "--out", "FILE"], "--out"),
    ("export.triton", [MODEL, "--out", "UNDER"], "--out"),
    ("export.triton", [MODEL, "--out", "OUT", "--instances", "0"], "--instances"),
    ("export.triton", [MODEL, "--out", "OUT", "--instances", "100000"], "--instances"),
    ("export.triton", [MODEL, "--out", "OUT", "--max-batch", "-1"], "--max-batch"),
    ("export.triton", [MODEL, "--out", "OUT", "--max-batch", str(10**8)], "--max-batch"),
    ("export.triton", [MODEL, "--out", "OUT", "--kind", "tpu"], "--kind"),
    # export.deepstream
    ("export.deepstream", [MODEL, "--out", "DIR"], "--out"),
    ("export.deepstream", [MODEL, "--out", "UNDER"], "--out"),
    ("export.deepstream", [MODEL, "--out", "OUT", "--engine", "DIR"], "--engine"),
    ("export.deepstream", [MODEL, "--out", "OUT", "--engine", "a\nnetwork-mode=0"], "control"),
    ("export.deepstream", [MODEL, "--out", "OUT\n[x]"], "control"),
    ("export.deepstream", [MODEL, "--out", "OUT", "--threshold", "nan"], "--threshold"),
    ("export.deepstream", [MODEL, "--out", "OUT", "--threshold", "-1"], "--threshold"),
    # calibration.calibrate
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--num", "0"], "--num"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--num", "10000000"], "--num"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--eval-num", "0"], "--eval-num"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--threads", "0"], "--threads"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--threads", "1000"], "--threads"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--ignore-label", "-1"], "--ignore-label"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--ignore-label", "1e9"], "--ignore-label"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--sensitivity", "-1"], "--sensitivity"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--layout", "x"], "--layout"),
    ("calibration.calibrate", ["--model", "FILE", *CAL], "--model"),
    ("calibration.calibrate", ["--model", "OUT", *CAL, "--cache-dir", "FILE"], "--cache-dir"),
    # training.train
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--max-iters", "0"], "--max-iters"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--lr", "nan"], "--lr"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--lr", "0"], "--lr"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--lr", "-1e-4"], "--lr"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--batch-size", "0"], "--batch-size"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--crop-size", "0"], "--crop-size"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--crop-size", "100000"], "--crop-size"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--num-workers", "-1"], "--num-workers"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--log-interval", "0"], "--log-interval"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--ckpt-interval", "0"], "--ckpt-interval"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--momentum", "inf"], "--momentum"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--momentum", "2"], "--momentum"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--decoder-heads", "0"], "--decoder-heads"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--seed", "-5"], "--seed"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--accum", "0"], "--accum"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--warmup-iters", "-1"], "--warmup-iters"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--weight-decay", "nan"], "--weight-decay"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--dice-weight", "-1"], "--dice-weight"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--max-iters", "1.5"], "--max-iters"),
    ("training.train", [*TRAIN, "--work-dir", "FILE"], "--work-dir"),
    ("training.train", [*TRAIN, "--work-dir", "UNDER"], "--work-dir"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--init-from", "DIR"], "--init-from"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--resume", "MISSING"], "--resume"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--text-embeddings", "DIR"], "not a file"),
    ("training.train", [*TRAIN, "--work-dir", "OUT", "--method", "maskclip"], "no training"),
    # training.evaluate
    ("training.evaluate", ["--checkpoint", "RANDOM", *EVAL, "--json", "DIR"], "--json"),
    ("training.evaluate", ["--checkpoint", "RANDOM", *EVAL, "--json", "UNDER"], "--json"),
    ("training.evaluate", ["--checkpoint", "DIR", *EVAL, "--json", "OUT"], "--checkpoint"),
    ("training.evaluate", ["--checkpoint", "MISSING", *EVAL, "--json", "OUT"], "--checkpoint"),
    (
        "training.evaluate",
        ["--checkpoint", "RANDOM", *EVAL, "--json", "OUT", "--seen-bias", "nan"],
        "--seen-bias",
    ),
    (
        "training.evaluate",
        ["--checkpoint", "RANDOM", *EVAL, "--json", "OUT", "--ignore-label", "-3"],
        "--ignore-label",
    ),
    (
        "training.evaluate",
        ["--checkpoint", "RANDOM", *EVAL, "--json", "OUT", "--stride", "0"],
        "--stride",
    ),
    (
        "training.evaluate",
        ["--checkpoint", "RANDOM", *EVAL, "--json", "OUT", "--stride", "100000000"],
        "--stride",
    ),
    (
        "training.evaluate",
        ["--checkpoint", "RANDOM", *EVAL, "--json", "OUT", "--limit", "-1"],
        "--limit",
    ),
    # benchmarks
    (
        "benchmarks.latency",
        ["--method", "maskclip", "--backbone", "x", "--image-size", "0"],
        "--image-size",
    ),
    ("benchmarks.latency", ["--method", "maskclip", "--backbone", "x", "--runs", "0"], "--runs"),
    (
        "benchmarks.latency",
        ["--method", "maskclip", "--backbone", "x", "--warmup", "-1"],
        "--warmup",
    ),
    (
        "benchmarks.latency",
        ["--method", "maskclip", "--backbone", "x", "--threads", "1000"],
        "--threads",
    ),
    ("benchmarks.latency", ["--method", "maskclip", "--backbone", "x", "--json", "DIR"], "--json"),
    ("benchmarks.camera", ["--model", MODEL, "--frames", "0"], "--frames"),
    ("benchmarks.camera", ["--model", MODEL, "--queue", "1000"], "--queue"),
    ("benchmarks.camera", ["--model", MODEL, "--threads", "0"], "--threads"),
    ("benchmarks.camera", ["--model", MODEL, "--short-side", "-1"], "--short-side"),
    ("benchmarks.camera", ["--model", MODEL, "--size", "100000x100000"], "--size"),
    ("benchmarks.camera", ["--model", MODEL, "--json", "DIR"], "--json"),
    ("benchmarks.camera", ["--model", MODEL, "--plot", "UNDER"], "--plot"),
    ("benchmarks.cpp_vs_python", ["--model", MODEL, "--images", "FILE", "--runs", "0"], "--runs"),
    (
        "benchmarks.cpp_vs_python",
        ["--model", MODEL, "--images", "FILE", "--calls", "-1"],
        "--calls",
    ),
    (
        "benchmarks.cpp_vs_python",
        ["--model", MODEL, "--images", "FILE", "--threads", "999"],
        "--threads",
    ),
    ("benchmarks.cpp_vs_python", ["--model", MODEL, "--images", "FILE", "--json", "DIR"], "--json"),
    ("benchmarks.host_cost", ["--models", MODEL, "--frame-size", "0x5"], "--frame-size"),
    ("benchmarks.host_cost", ["--models", MODEL, "--frame-size", "100000x100000"], "--frame-size"),
    ("benchmarks.host_cost", ["--models", MODEL, "--runs", "0"], "--runs"),
    ("benchmarks.host_cost", ["--models", MODEL, "--json", "DIR"], "--json"),
    ("benchmarks.host_cost", ["--models", MODEL, "--png", "UNDER"], "--png"),
    ("benchmarks.methods", ["--models", "a=x", "--image", "FILE", "--runs", "0"], "--runs"),
    (
        "benchmarks.methods",
        ["--models", "a=x", "--image", "FILE", "--threads", "1000"],
        "--threads",
    ),
    ("benchmarks.methods", ["--models", "a=x", "--image", "FILE", "--json", "DIR"], "--json"),
    ("benchmarks.stages", ["--model", MODEL, "--frames", "0"], "--frames"),
    ("benchmarks.stages", ["--model", MODEL, "--runs", "0"], "--runs"),
    ("benchmarks.stages", ["--model", MODEL, "--png", "DIR"], "--png"),
    ("benchmarks.precision", ["--model", MODEL, "--runs", "0"], "--runs"),
    ("benchmarks.precision", ["--model", MODEL, "--warmup", "-1"], "--warmup"),
    ("benchmarks.precision", ["--model", MODEL, "--threads", "0"], "--threads"),
    ("benchmarks.precision", ["--model", MODEL, "--json", "UNDER"], "--json"),
    ("benchmarks.students", ["--backbone", "x", "--image-size", "0"], "--image-size"),
    ("benchmarks.students", ["--backbone", "x", "--image-size", "8192"], "--image-size"),
    ("benchmarks.students", ["--backbone", "x", "--atol", "0"], "--atol"),
    ("benchmarks.students", ["--backbone", "x", "--atol", "nan"], "--atol"),
    ("benchmarks.students", ["--backbone", "x", "--plot", "DIR"], "--plot"),
    ("benchmarks.zero_shot", ["--backbone", "x", "--image-size", "0"], "--image-size"),
    ("benchmarks.zero_shot", ["--backbone", "x", "--classes", "0"], "--classes"),
    ("benchmarks.zero_shot", ["--backbone", "x", "--classes", "20,100000000"], "--classes"),
    ("benchmarks.zero_shot", ["--backbone", "x", "--atol", "nan"], "--atol"),
    ("benchmarks.zero_shot", ["--backbone", "x", "--seed", "-1"], "--seed"),
    ("benchmarks.zero_shot", ["--backbone", "x", "--json", "DIR"], "--json"),
]


def _id(case) -> str:
    module, args, _ = case
    return f"{module.split('.')[-1]}:{' '.join(args[-2:])}"[:60].replace("\n", "\\n")


@pytest.mark.parametrize("module,args,match", CASES, ids=[_id(c) for c in CASES])
def test_bad_argument_is_one_line_exit_2_before_the_work(
    module, args, match, paths, monkeypatch, capsys
):
    rc = call(module, _fill(args, paths), monkeypatch)  # Reached would propagate: a failure
    captured = capsys.readouterr()
    assert_one_line_exit_2(rc, captured.err, match)
    assert captured.out == ""
    assert not Path(paths["OUT"]).exists()  # nothing created


GOOD = [
    ("export.build", BUILD),
    ("export.engine", [MODEL]),
    ("export.triton", [MODEL, "--out", "OUT"]),
    ("export.deepstream", [MODEL, "--out", "OUT"]),
    ("calibration.calibrate", ["--model", "OUT", *CAL]),
    ("training.train", [*TRAIN, "--work-dir", "OUT"]),
    ("training.evaluate", ["--checkpoint", "RANDOM", *EVAL, "--json", "OUT"]),
    ("benchmarks.latency", ["--method", "maskclip", "--backbone", "x", "--json", "OUT"]),
    ("benchmarks.camera", ["--model", MODEL, "--json", "OUT"]),
    ("benchmarks.cpp_vs_python", ["--model", MODEL, "--images", "FILE", "--json", "OUT"]),
    ("benchmarks.host_cost", ["--models", MODEL, "--png", "OUT"]),
    ("benchmarks.methods", ["--models", "a=x", "--image", "FILE", "--json", "OUT"]),
    ("benchmarks.stages", ["--model", MODEL, "--json", "OUT"]),
    ("benchmarks.precision", ["--model", MODEL, "--json", "OUT"]),
    ("benchmarks.students", ["--backbone", "x", "--plot", "OUT"]),
    ("benchmarks.zero_shot", ["--backbone", "x", "--json", "OUT"]),
]


@pytest.mark.parametrize("module,args", GOOD, ids=[m for m, _ in GOOD])
def test_good_arguments_reach_the_work(module, args, paths, monkeypatch, capsys):
    """The control: with good arguments the replaced expensive step is called, so the sweep's
    'not reached' means refused early, not skipped."""
    with pytest.raises(Reached):
        call(module, _fill(args, paths), monkeypatch)
    assert "error" not in capsys.readouterr().err


# ------------------------------------------- failures found later must stay one clean line


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--method", "zegclip", "--checkpoint", "RANDOM"], "cannot read checkpoint"),
        (["--method", "zegclip", "--checkpoint", "TRUNC"], "cannot read checkpoint"),
        (["--method", "maskclip_plus", "--checkpoint", "TRUNC"], "cannot read checkpoint"),
        (["--pretrained", "RANDOM"], "cannot load checkpoint"),
        (["--pretrained", "TRUNC"], "cannot load checkpoint"),
        (["--backbone", "ViT-Q-99"], "unknown backbone"),
        (["--text-embeddings", "RANDOM"], "text embeddings"),
    ],
)
def test_bad_weights_are_one_error_line(extra, match, paths, capsys):
    from export import build

    rc = build.main(_fill([*BUILD, *extra], paths))
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert rc == 2 and "Traceback" not in err
    assert len(errors) == 1 and errors[0].startswith("error:") and match in errors[0], err
    assert not Path(paths["OUT"]).exists()


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden"])
def test_triton_model_name_is_one_line(name, tiny_vit_folder, paths, capsys):
    from export import triton

    rc = triton.main([str(tiny_vit_folder), "--out", paths["OUT"], "--name", name])
    assert_one_line_exit_2(rc, capsys.readouterr().err, "name")
    assert not Path(paths["OUT"]).exists()


def test_train_failure_leaves_no_work_dir(paths, capsys):
    """A run whose data is unusable (an empty image folder) fails before the work dir is made."""
    from training import train

    rc = train.main(_fill([*TRAIN, "--work-dir", "OUT"], paths))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "no images" in err.splitlines()[-1]
    assert not Path(paths["OUT"]).exists()


def test_console_command_refuses_like_the_module(paths, capsys):
    from runtime.console import run

    with pytest.raises(SystemExit) as e:
        run("ovss-export", _fill([*BUILD, "--opset", "99"], paths))
    assert e.value.code == 2
    assert_one_line_exit_2(2, capsys.readouterr().err, "--opset")


# --------------------------------------------------------------------- the tables stay whole


def test_every_numeric_method_option_has_a_bounded_type():
    from export.build import OPTION_TYPES
    from training.methods import METHODS

    numeric = set()
    for spec in METHODS.values():
        hints = typing.get_type_hints(spec.config)
        for f in dataclasses.fields(spec.config):
            text = str(hints[f.name])
            if "int" in text or "float" in text:
                numeric.add(f.name)
    assert numeric and numeric <= set(OPTION_TYPES), sorted(numeric - set(OPTION_TYPES))


def test_every_numeric_train_field_has_bounds_and_the_api_refuses_them(tmp_path):
    from training.train_config import NUMERIC_BOUNDS, TrainCfg, numeric_fields

    assert set(numeric_fields()) == set(NUMERIC_BOUNDS)
    base = dict(method="zegclip", backbone="ovss-tiny-vit", work_dir=str(tmp_path), dataset="voc")
    for name, value in [
        ("lr", math.nan),
        ("lr", 0.0),
        ("max_iters", 0),
        ("batch_size", 0),
        ("crop_size", 2.5),
        ("momentum", math.inf),
        ("num_workers", -1),
        ("seed", True),
    ]:
        with pytest.raises(ConfigError, match=name):
            TrainCfg(**base, **{name: value})
    assert TrainCfg(**base, lr=1e-4, max_iters=1).lr == 1e-4


def test_export_cfg_refuses_opsets_torch_cannot_write():
    from torch.onnx import _constants

    from export.config import ExportCfg
    from runtime.cli_checks import MAX_OPSET, MIN_OPSET

    assert MAX_OPSET == _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    base = dict(method="maskclip", backbone="x", output="o", classes="a")
    for kw in ({"opset": MIN_OPSET - 1}, {"opset": MAX_OPSET + 1}, {"atol": math.nan}):
        with pytest.raises(ConfigError):
            ExportCfg(**base, **kw)
    assert ExportCfg(**base, opset=MAX_OPSET).opset == MAX_OPSET


def test_deepstream_config_refuses_a_newline_in_any_value():
    from export.deepstream import render

    assert render(["ok"], [("onnx-file", "m.onnx", "")]).endswith("onnx-file=m.onnx\n")
    with pytest.raises(ConfigError, match="control character"):
        render([], [("onnx-file", "m.onnx\n[class-attrs-all]", "")])


@pytest.mark.parametrize("heads", [3, 7, 0])
def test_decoder_heads_must_divide_the_width(heads):
    from training.zegclip import CrossAttention

    with pytest.raises(ConfigError, match="must divide the decoder width"):
        CrossAttention(64, heads)
    assert CrossAttention(64, 8).heads == 8


def test_slide_stride_larger_than_the_image_is_refused(tmp_path, capsys):
    from export.build import main

    out = tmp_path / "out"
    argv = [*NACLIP[:-1], str(out), "--image-size", "64", "--slide-stride", "65"]
    assert_one_line_exit_2(main(argv), capsys.readouterr().err, "--slide-stride 65 is larger")
    assert not out.exists()


def test_a_default_slide_stride_over_a_small_image_is_capped(tmp_path):
    """ClearCLIP's official step is 224; exported at 112 it is capped at the window (the
    runtime's plan), not refused: only a --slide-stride given by hand is."""
    from export.build import main
    from runtime.segmenter import Segmenter

    out = tmp_path / "m"
    argv = ["--method", "clearclip", "--backbone", "ovss-tiny-vit", "--classes", "a,b"]
    assert main([*argv, "--image-size", "112", "--output", str(out)]) == 0
    with Segmenter(out, "onnxruntime", threads=1) as seg:
        assert seg.stride == 224
        assert seg(np.zeros((150, 260, 3), np.uint8)).labels.shape == (150, 260)
    with pytest.raises(ConfigError, match="larger than the model's window"):
        Segmenter(out, "onnxruntime", stride=113)
