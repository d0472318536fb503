"""The trtexec / polygraphy commands of export.trtexec, checked against what export.engine sets on
the fake TensorRT builder (tests/fake_trt.py) for the same settings. Nothing here runs TensorRT."""

from __future__ import annotations

import dataclasses
import shlex
import shutil

import pytest

from export.engine import EngineBuildError, EngineCfg, build_engine
from export.engine import main as engine_main
from export.trtexec import (
    FLAG_ARGS,
    build_commands,
    build_plan,
    polygraphy_command,
    trtexec_command,
)
from runtime import io_names
from runtime.errors import ModelFolderError
from runtime.manifest import Variant, load_manifest
from runtime.probe import GpuInfo, ProbeResult
from tests import fake_trt

GPU = ProbeResult(
    gpus=(GpuInfo(0, "Fake GPU", "8.7", 8192),),
    tensorrt="10.3.0",
    tensorrt_module="tensorrt",
    tensorrt_builder=True,
)


def _folder(src, tmp_path, variants=()):
    """A copy of ``src`` whose manifest lists model.onnx as the given variants (as
    tests/test_engine.py fakes a DLA-ready graph)."""
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    m = load_manifest(dst)
    if variants:
        v = Variant(m.model_file, m.model_sha256)
        dataclasses.replace(m, variants={p: v for p in variants}).write(dst)
    return dst


def _cmds(folder, precision="fp32", **kw):
    cfg = EngineCfg(str(folder), precision=precision, **kw)
    m = load_manifest(folder)
    return trtexec_command(m, folder, precision, cfg), polygraphy_command(m, folder, precision, cfg)


def test_fixed_vocab_fp32(tiny_vit_folder):
    trtexec, poly = _cmds(tiny_vit_folder)
    engines = tiny_vit_folder / "engines"
    assert trtexec == [
        "trtexec",
        f"--onnx={tiny_vit_folder / 'model.onnx'}",
        f"--saveEngine={engines / 'fp32.engine'}",
        "--stronglyTyped",
        "--memPoolSize=workspace:4096M",
        f"--timingCacheFile={engines / 'timing.cache'}",
        "--skipInference",
    ]
    cache = str(engines / "timing.cache")
    assert poly == [
        "polygraphy",
        "convert",
        str(tiny_vit_folder / "model.onnx"),
        "--convert-to",
        "trt",
        "--strongly-typed",
        "--pool-limit",
        "workspace:4096M",
        "--load-timing-cache",
        cache,
        "--save-timing-cache",
        cache,
        "-o",
        str(engines / "fp32.engine"),
    ]


def test_input_vocab_has_class_profile(tiny_vit_input_folder):
    trtexec, poly = _cmds(tiny_vit_input_folder, max_classes=16)
    m = load_manifest(tiny_vit_input_folder)
    dim, n = m.input(io_names.TEXT_EMBEDDINGS).shape[1], len(m.classes)
    t = io_names.TEXT_EMBEDDINGS
    assert f"--minShapes={t}:1x{dim}" in trtexec
    assert f"--optShapes={t}:{n}x{dim}" in trtexec and f"--maxShapes={t}:16x{dim}" in trtexec
    i = poly.index("--trt-min-shapes")
    assert poly[i : i + 6] == [
        "--trt-min-shapes",
        f"{t}:[1,{dim}]",
        "--trt-opt-shapes",
        f"{t}:[{n},{dim}]",
        "--trt-max-shapes",
        f"{t}:[16,{dim}]",
    ]
    # opt never exceeds max, as in export.engine
    assert f"--optShapes={t}:2x{dim}" in _cmds(tiny_vit_input_folder, max_classes=2)[0]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_variants_are_strongly_typed_without_precision_flags(tiny_vit_folder, tmp_path, precision):
    folder = _folder(tiny_vit_folder, tmp_path, ("fp16", "int8"))
    trtexec, poly = _cmds(folder, precision, version_compatible=True, workspace=512)
    assert "--stronglyTyped" in trtexec and "--strongly-typed" in poly
    assert not {"--fp16", "--int8"} & set(trtexec + poly)
    assert f"--saveEngine={folder / 'engines' / f'{precision}.engine'}" in trtexec
    assert "--versionCompatible" in trtexec and "--version-compatible" in poly
    assert "--memPoolSize=workspace:512M" in trtexec and "workspace:512M" in poly


@pytest.mark.parametrize("precision, flags", [("fp16", ["--fp16"]), ("int8", ["--fp16", "--int8"])])
def test_dla_is_weakly_typed_with_precision_flags(tiny_vit_folder, tmp_path, precision, flags):
    folder = _folder(tiny_vit_folder, tmp_path, ("fp16", "int8"))
    trtexec, poly = _cmds(folder, precision, dla=0)
    assert "--stronglyTyped" not in trtexec and "--strongly-typed" not in poly
    assert [a for a in trtexec if a in ("--fp16", "--int8")] == flags
    assert "--useDLACore=0" in trtexec and "--allowGPUFallback" in trtexec
    assert {"--use-dla", "--allow-gpu-fallback", *flags} <= set(poly)
    assert trtexec[2] == f"--saveEngine={folder / 'engines' / f'{precision}-dla0.engine'}"
    trtexec1, poly1 = _cmds(folder, precision, dla=1)
    assert "--useDLACore=1" in trtexec1 and poly1 is None  # polygraphy: DLA core 0 only


def test_tensorrt_11_dla_is_strongly_typed(tiny_vit_folder, tmp_path):
    folder = _folder(tiny_vit_folder, tmp_path, ("fp16",))
    m, cfg = load_manifest(folder), EngineCfg(str(folder), dla=0)
    cmd = trtexec_command(m, folder, "fp16", cfg, tensorrt_version="11.4.1")
    assert "--stronglyTyped" in cmd and "--fp16" not in cmd and "--allowGPUFallback" in cmd
    with pytest.raises(EngineBuildError, match="no DLA support"):
        trtexec_command(m, folder, "fp16", cfg, tensorrt_version="11.4.0")


def test_refusals_match_export_engine(tiny_vit_folder):
    m = load_manifest(tiny_vit_folder)
    with pytest.raises(EngineBuildError, match="DLA runs FP16 or INT8"):
        build_plan(m, tiny_vit_folder, "fp32", EngineCfg(str(tiny_vit_folder), dla=0))
    with pytest.raises(ModelFolderError, match="no fp16 variant"):
        build_plan(m, tiny_vit_folder, "fp16", EngineCfg(str(tiny_vit_folder)))


def test_timing_cache_and_quoting(tiny_vit_folder, tmp_path):
    cache = tmp_path / "my cache" / "t.cache"
    cfg = EngineCfg(str(tiny_vit_folder), timing_cache=str(cache))
    cmds = build_commands(load_manifest(tiny_vit_folder), tiny_vit_folder, "fp32", cfg)
    assert f"--timingCacheFile={cache}" in shlex.split(cmds.trtexec)
    poly = shlex.split(cmds.polygraphy)
    assert poly[poly.index("--load-timing-cache") + 1] == str(cache)
    assert poly[poly.index("--save-timing-cache") + 1] == str(cache)


# ------------------------------------------------------------------ the same as the fake builder
@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    return fake_trt.install(monkeypatch)


def _calls(name):
    return [c for c in fake_trt.CALLS if c[0] == name]


CASES = [
    ("tiny_vit_folder", "fp32", {}),
    ("tiny_vit_folder", "fp16", {"version_compatible": True}),
    ("tiny_vit_folder", "int8", {"workspace": 256}),
    ("tiny_vit_folder", "fp16", {"dla": 0}),
    ("tiny_vit_folder", "int8", {"dla": 1, "version_compatible": True}),
    ("tiny_vit_input_folder", "fp32", {"max_classes": 16}),
]


@pytest.mark.parametrize("fixture, precision, kw", CASES)
def test_commands_match_the_fake_builder(fake, request, tmp_path, fixture, precision, kw):
    folder = _folder(request.getfixturevalue(fixture), tmp_path, ("fp16", "int8"))
    cfg = EngineCfg(str(folder), precision=precision, **kw)
    built = build_engine(cfg, probe=GPU).record.build
    trtexec, poly = _cmds(folder, precision, **kw)
    net_flags = _calls("Builder.create_network")[0][1]
    assert ("--stronglyTyped" in trtexec) == built["strongly_typed"] == bool(net_flags)
    set_flags = [c[1] for c in _calls("config.set_flag")]
    assert set_flags == built["flags"]
    assert [a for a in trtexec if a in {v[0] for v in FLAG_ARGS.values()}] == [
        FLAG_ARGS[f][0] for f in set_flags
    ]
    if poly is not None:
        assert [a for a in poly if a in {v[1] for v in FLAG_ARGS.values()}] == [
            FLAG_ARGS[f][1] for f in set_flags
        ]
    assert f"--memPoolSize=workspace:{built['workspace_mb']}M" in trtexec
    dla = cfg.dla
    assert any(a == f"--useDLACore={dla}" for a in trtexec) == (dla >= 0)
    assert fake_trt.CALLS and (fake_trt.RUNTIMES == [])  # built, nothing run
    shapes = [(c[1], c[2], c[3], c[4]) for c in _calls("profile.set_shape")]
    want = [
        (name, lo, opt, hi) for name, (lo, opt, hi) in build_plan_shapes(folder, precision, cfg)
    ]
    assert shapes == want
    for name, lo, opt, hi in shapes:
        for flag, dims in (("--minShapes", lo), ("--optShapes", opt), ("--maxShapes", hi)):
            assert f"{flag}={name}:{'x'.join(map(str, dims))}" in trtexec


def build_plan_shapes(folder, precision, cfg):
    return build_plan(load_manifest(folder), folder, precision, cfg).shapes.items()


def test_cli_prints_two_lines_without_tensorrt(tiny_vit_folder, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)  # import would fail
    assert engine_main([str(tiny_vit_folder), "--print-trtexec", "--workspace", "1024"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("trtexec --onnx=") and "workspace:1024M" in lines[0]
    assert lines[1].startswith("polygraphy convert ")
    cfg = EngineCfg(str(tiny_vit_folder), workspace=1024)
    cmds = build_commands(load_manifest(tiny_vit_folder), tiny_vit_folder, "fp32", cfg)
    assert lines == [cmds.trtexec, cmds.polygraphy]


def test_cli_dla_core_1_and_errors(tiny_vit_folder, tmp_path, capsys):
    folder = _folder(tiny_vit_folder, tmp_path, ("int8",))
    args = [str(folder), "--print-trtexec", "--precision", "int8", "--dla", "1"]
    assert engine_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "--useDLACore=1" in lines[0] and lines[1].startswith("# polygraphy")
    assert engine_main([str(folder), "--print-trtexec", "--dla", "0"]) == 2
    assert "DLA runs FP16 or INT8" in capsys.readouterr().err


def test_the_manifest_records_the_commands(tiny_vit_input_folder, tmp_path):
    """export.build writes the default build lines into the manifest, folder-relative: the
    --print-trtexec lines of the default settings with the folder prefix dropped; a variant
    gets its own."""
    import json
    import shutil

    from export.engine import EngineCfg
    from export.trtexec import build_commands, folder_commands
    from runtime.manifest import Variant, load_manifest

    stored = json.loads((tiny_vit_input_folder / "manifest.json").read_text())["build_commands"]
    m = load_manifest(tiny_vit_input_folder)
    assert m.build_commands == stored and set(stored) == {"fp32"}
    line = stored["fp32"]["trtexec"]
    assert line.startswith("trtexec --onnx=model.onnx --saveEngine=engines/fp32.engine")
    assert str(tiny_vit_input_folder) not in line and "--maxShapes=text_embeddings:256x" in line
    here = build_commands(m, tiny_vit_input_folder, "fp32", EngineCfg(folder="x"))
    assert here.trtexec.replace(f"{tiny_vit_input_folder}/", "") == line
    folder = shutil.copytree(tiny_vit_input_folder, tmp_path / "m")
    (folder / "model.fp16.onnx").write_bytes((folder / "model.onnx").read_bytes())
    with_fp16 = m.__class__(**{**m.__dict__, "variants": {"fp16": Variant("model.fp16.onnx", "")}})
    got = folder_commands(with_fp16, folder)
    assert set(got) == {"fp32", "fp16"} and got["fp32"]["trtexec"] == line
    assert "--onnx=model.fp16.onnx" in got["fp16"]["trtexec"]
