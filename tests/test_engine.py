"""Engine building, engine cache keys and the TensorRT backend, run against tests/fake_trt.py.

The fake records the TensorRT / cuda-python calls and simulates them on the CPU; these tests
check our orchestration (flags, profiles, caches, buffers, addresses, copies, fallbacks), NOT
TensorRT itself, which never runs here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest

from export.engine import EngineBuildError, EngineCfg, build_engine
from export.engine import main as engine_main
from runtime import io_names
from runtime.backends import BackendUnavailable, ModelRef, _ort_providers, open_backend
from runtime.engine_cache import (
    EngineKey,
    engine_dir,
    find_engine,
    fits,
    manifest_input_shapes,
    read_record,
)
from runtime.errors import ModelFolderError, UnknownNameError
from runtime.manifest import load_manifest
from runtime.probe import GpuInfo, ProbeResult
from tests import fake_trt

GPU = ProbeResult(
    gpus=(GpuInfo(0, "Fake GPU", "8.7", 8192),),
    tensorrt="10.3.0",
    tensorrt_module="tensorrt",
    tensorrt_builder=True,
)
NO_GPU = ProbeResult(cuda_error="cudaErrorInsufficientDriver")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    return fake_trt.install(monkeypatch)


def _copy(folder, tmp_path, name="m"):
    dst = tmp_path / name
    shutil.copytree(folder, dst)
    return dst


def _ref(folder, precision="fp32") -> ModelRef:
    m = load_manifest(folder)
    name, sha = m.model_for(precision)
    return ModelRef(folder / name, folder, precision, sha, manifest_input_shapes(m.inputs))


def _calls(name):
    return [c for c in fake_trt.CALLS if c[0] == name]


def _key(**kw):
    base = dict(
        gpu_name="Orin",
        compute_capability="8.7",
        tensorrt_version="10.3.0",
        precision="fp16",
        input_shapes={"image": [1, 3, 448, 448]},
        onnx_sha256="ab" * 32,
    )
    return EngineKey(**{**base, **kw})


# ----------------------------------------------------------------------------- keys
def test_engine_key_digest_changes_with_every_field():
    base = _key()
    variants = [
        _key(gpu_name="NVIDIA H100"),
        _key(compute_capability="9.0"),
        _key(tensorrt_version="10.4.0"),
        _key(precision="int8"),
        _key(input_shapes={"image": [1, 3, 224, 224]}),
        _key(onnx_sha256="cd" * 32),
        _key(dla_core=0),
        _key(version_compatible=True),
    ]
    digests = {v.digest() for v in variants}
    assert len(digests) == len(variants) and base.digest() not in digests
    assert base.digest() == _key().digest() and base.stem() == f"fp16-{base.digest()}"


@pytest.mark.parametrize(
    "built, running, ok",
    [
        (_key(), _key(), True),
        (_key(tensorrt_version="10.3.0"), _key(tensorrt_version="10.4.0"), False),
        (
            _key(tensorrt_version="10.3.0", version_compatible=True),
            _key(tensorrt_version="10.4.0"),
            True,
        ),
        (
            _key(tensorrt_version="10.4.0", version_compatible=True),
            _key(tensorrt_version="10.3.0"),
            False,
        ),
        (
            _key(tensorrt_version="10.3.0", version_compatible=True),
            _key(tensorrt_version="11.0.0"),
            False,
        ),
        (_key(gpu_name="NVIDIA A100"), _key(), False),
        (_key(onnx_sha256="00" * 32), _key(), False),
        (_key(dla_core=0), _key(), False),
    ],
)
def test_engine_fits_only_where_it_can_run(built, running, ok):
    assert fits(built, running) is ok


def test_find_engine_prefers_exact_and_skips_bad_records(tmp_path, caplog):
    from runtime.engine_cache import EngineRecord, write_record

    old = EngineRecord(
        _key(tensorrt_version="10.1.0", version_compatible=True), "a.engine", "a" * 64
    )
    exact = EngineRecord(_key(tensorrt_version="10.3.0"), "b.engine", "b" * 64)
    write_record(tmp_path, old)
    (engine_dir(tmp_path) / "fp16-broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert find_engine(tmp_path, _key(tensorrt_version="10.3.0")).engine_file == "a.engine"
    assert "unreadable" in caplog.text
    write_record(tmp_path, exact)
    assert find_engine(tmp_path, _key(tensorrt_version="10.3.0")).engine_file == "b.engine"
    assert find_engine(tmp_path, _key(precision="int8")) is None


# ----------------------------------------------------------------------------- building
def test_build_strongly_typed_engine_with_timing_cache(fake, tiny_vit_folder, tmp_path):
    folder = _copy(tiny_vit_folder, tmp_path)
    first = build_engine(EngineCfg(str(folder)), probe=GPU)
    assert not first.cached and first.engine.is_file()
    rec = read_record(engine_dir(folder) / f"{first.record.key.stem()}.json")
    assert rec.key.onnx_sha256 == load_manifest(folder).model_sha256
    assert rec.key.input_shapes == {"image": [1, 3, 224, 224]} and rec.key.gpu_name == "Fake GPU"
    assert rec.build["strongly_typed"] and rec.build["flags"] == []
    assert _calls("Builder.create_network") == [
        ("Builder.create_network", 1 << 1)
    ]  # STRONGLY_TYPED = 1
    assert not _calls("config.set_flag")  # precision comes from the graph, not flags
    assert _calls("config.create_timing_cache") == [("config.create_timing_cache", 0)]
    cache = tmp_path / "cache" / "trt" / "timing-fake-gpu-trt10.3.0.cache"
    assert cache.is_file()

    fake_trt.CALLS.clear()
    again = build_engine(EngineCfg(str(folder)), probe=GPU)
    assert (
        again.cached
        and again.engine == first.engine
        and not _calls("Builder.build_serialized_network")
    )

    fake_trt.CALLS.clear()
    forced = build_engine(EngineCfg(str(folder), force=True), probe=GPU)
    assert not forced.cached
    assert (
        _calls("config.create_timing_cache")[0][1] == cache.stat().st_size - 1
    )  # reused, then grown


def test_vocab_input_engine_has_a_class_profile(fake, tiny_vit_input_folder, tmp_path):
    folder = _copy(tiny_vit_input_folder, tmp_path)
    result = build_engine(EngineCfg(str(folder), max_classes=16), probe=GPU)
    dim = load_manifest(folder).input(io_names.TEXT_EMBEDDINGS).shape[1]
    assert _calls("profile.set_shape") == [
        ("profile.set_shape", io_names.TEXT_EMBEDDINGS, (1, dim), (4, dim), (16, dim))
    ]
    assert result.record.key.input_shapes[io_names.TEXT_EMBEDDINGS] == [-1, dim]


def test_parser_errors_are_all_logged_then_one_error(fake, tiny_vit_folder, tmp_path, caplog):
    folder = _copy(tiny_vit_folder, tmp_path)
    fake_trt.OnnxParser.reject = ["Unsupported op Foo", "bad shape"]
    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(EngineBuildError, match="2 error.*Unsupported op Foo"),
    ):
        build_engine(EngineCfg(str(folder)), probe=GPU)
    assert "1/2" in caplog.text and "2/2" in caplog.text and "bad shape" in caplog.text
    assert not engine_dir(folder).exists() or not list(engine_dir(folder).iterdir())


def test_failed_build_leaves_no_engine(fake, tiny_vit_folder, tmp_path):
    folder = _copy(tiny_vit_folder, tmp_path)
    fake_trt.Builder.fail_build = True
    with pytest.raises(EngineBuildError, match="could not build"):
        build_engine(EngineCfg(str(folder)), probe=GPU)
    assert not list(engine_dir(folder).glob("*.engine")) if engine_dir(folder).exists() else True


@pytest.mark.parametrize(
    "version, dla, precision, network_flags, flags",
    [
        ("10.3.0", 0, "fp16", 0, {"FP16", "GPU_FALLBACK"}),
        ("10.3.0", 0, "int8", 0, {"FP16", "INT8", "GPU_FALLBACK"}),
        ("11.4.0", -1, "fp32", 0, set()),
        ("11.4.1", 0, "fp16", 0, {"GPU_FALLBACK"}),
    ],
)
def test_builder_flags_only_where_needed(version, dla, precision, network_flags, flags):
    from export.engine import builder_flags
    from export.engine import network_flags as net_flags

    trt = fake_trt.tensorrt_module(version)
    got_net, strongly = net_flags(trt, dla)
    assert got_net == network_flags and strongly == (not (version.startswith("10") and dla >= 0))
    assert {f.name for f in builder_flags(trt, precision, strongly, dla, False)} == flags


def test_dla_fp32_and_old_tensorrt_are_refused():
    from export.engine import builder_flags, network_flags

    for version, strongly in (("10.3.0", False), ("11.4.1", True)):
        with pytest.raises(EngineBuildError, match="DLA runs FP16 or INT8"):
            builder_flags(fake_trt.tensorrt_module(version), "fp32", strongly, 0, False)
    with pytest.raises(EngineBuildError, match="no DLA support"):
        network_flags(fake_trt.tensorrt_module("11.4.0"), 0)
    with pytest.raises(EngineBuildError, match=">= 10"):
        network_flags(fake_trt.tensorrt_module("8.6.1"), -1)


def test_build_needs_gpu_and_full_tensorrt(tiny_vit_folder):
    with pytest.raises(EngineBuildError, match="needs a CUDA GPU.*InsufficientDriver"):
        build_engine(EngineCfg(str(tiny_vit_folder)), probe=NO_GPU)
    lean = dataclasses.replace(GPU, tensorrt_module="tensorrt_lean", tensorrt_builder=False)
    with pytest.raises(EngineBuildError, match="full tensorrt package"):
        build_engine(EngineCfg(str(tiny_vit_folder)), probe=lean)
    with pytest.raises(EngineBuildError, match="unknown precision"):
        build_engine(EngineCfg(str(tiny_vit_folder), precision="bf16"), probe=GPU)


def test_engine_cli_without_gpu_exits_2(tiny_vit_folder, capsys):
    """The real probe (a subprocess) on this machine: no GPU, so one clear error and exit 2."""
    from runtime.probe import run_probe

    if run_probe().gpu_usable:
        pytest.skip("this machine has a GPU")
    assert engine_main([str(tiny_vit_folder), "--precision", "fp32"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_build_refuses_modified_onnx(fake, tiny_vit_folder, tmp_path):
    folder = _copy(tiny_vit_folder, tmp_path)
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelFolderError, match="sha256"):
        build_engine(EngineCfg(str(folder)), probe=GPU)


# ----------------------------------------------------------------------------- runtime
def _image(size, seed=0):
    return np.random.default_rng(seed).normal(size=(1, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_backend_matches_onnxruntime(fake, tiny_vit_folder, tmp_path, cuda_graph):
    folder = _copy(tiny_vit_folder, tmp_path)
    build_engine(EngineCfg(str(folder)), probe=GPU)
    opened = open_backend("auto", _ref(folder), probe=GPU, cuda_graph=cuda_graph)
    ort = open_backend("onnxruntime", _ref(folder)).backend
    trt = opened.backend
    assert trt.name == "tensorrt" and opened.reasons == ()
    assert trt.providers == ("TensorRT 10.3.0", "Fake GPU")
    assert trt.input_names == (io_names.IMAGE,) and io_names.LOGITS in trt.output_names
    for seed in range(3):
        x = _image(224, seed)
        got = trt({io_names.IMAGE: x}, [io_names.LOGITS])[io_names.LOGITS]
        want = ort({io_names.IMAGE: x}, [io_names.LOGITS])[io_names.LOGITS]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    t = trt.last_timings
    assert min(t.h2d, t.compute, t.d2h) >= 0
    kinds = [c[1] for c in _calls("cudaMemcpyAsync")]
    assert kinds == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"] * 3
    assert len(_calls("cudaStreamSynchronize")) == 3  # one sync per call
    launches, plain = len(_calls("cudaGraphLaunch")), len(_calls("context.execute_async_v3"))
    # with graphs: call 1 runs plainly and captures (2 launches), calls 2-3 replay the graph
    assert (launches, plain) == ((2, 2) if cuda_graph else (0, 3))
    trt.close()
    assert not fake.memory and not fake.streams  # every buffer and the stream freed


def test_tensorrt_backend_vocabulary_sizes(fake, tiny_vit_input_folder, tmp_path):
    from runtime.backends.trt import TrtError

    folder = _copy(tiny_vit_input_folder, tmp_path)
    build_engine(EngineCfg(str(folder), max_classes=8), probe=GPU)
    trt = open_backend("tensorrt", _ref(folder), probe=GPU, cuda_graph=True).backend
    ort = open_backend("onnxruntime", _ref(folder)).backend
    dim = load_manifest(folder).input(io_names.TEXT_EMBEDDINGS).shape[1]
    x = _image(224)
    for c in (3, 3, 8, 1, 1):
        text = np.random.default_rng(c).normal(size=(c, dim)).astype(np.float32)
        feeds = {io_names.IMAGE: x, io_names.TEXT_EMBEDDINGS: text}
        got = trt(feeds, [io_names.LOGITS])[io_names.LOGITS]
        assert got.shape[1] == c
        np.testing.assert_allclose(
            got, ort(feeds, [io_names.LOGITS])[io_names.LOGITS], rtol=1e-5, atol=1e-6
        )
    assert (
        len(_calls("cudaStreamBeginCapture")) == 3
    )  # re-captured only when the class count changed
    assert len(_calls("cudaGraphLaunch")) == 2  # the two repeats; each new shape runs plainly
    with pytest.raises(TrtError, match="accepts"):
        trt(
            {io_names.IMAGE: x, io_names.TEXT_EMBEDDINGS: np.zeros((9, dim), np.float32)},
            [io_names.LOGITS],
        )
    with pytest.raises(TrtError, match="no outputs"):
        trt({io_names.IMAGE: x}, ["labels"])
    trt.close()


def test_auto_falls_back_in_order(fake, tiny_vit_folder, tmp_path):
    folder = _copy(tiny_vit_folder, tmp_path)
    no_gpu = open_backend("auto", _ref(folder), probe=NO_GPU)
    assert no_gpu.backend.name == "onnxruntime" and no_gpu.backend.providers == (
        "CPUExecutionProvider",
    )
    assert "no usable CUDA GPU" in no_gpu.reasons[0]
    no_trt = open_backend("auto", _ref(folder), probe=dataclasses.replace(GPU, tensorrt=""))
    assert "TensorRT is not installed" in no_trt.reasons[0]
    no_engine = open_backend("auto", _ref(folder), probe=GPU)
    assert (
        no_engine.backend.name == "onnxruntime"
        and "python -m export.engine" in no_engine.reasons[0]
    )
    build_engine(EngineCfg(str(folder)), probe=GPU)
    assert open_backend("auto", _ref(folder), probe=GPU).backend.name == "tensorrt"
    other_gpu = dataclasses.replace(GPU, gpus=(GpuInfo(0, "Other GPU", "9.0", 1),))
    assert open_backend("auto", _ref(folder), probe=other_gpu).backend.name == "onnxruntime"
    engine = next(engine_dir(folder).glob("*.engine"))
    engine.write_bytes(engine.read_bytes()[:-10])  # corrupt: the record's sha256 no longer matches
    corrupt = open_backend("auto", _ref(folder), probe=GPU)
    assert corrupt.backend.name == "onnxruntime" and "corrupt" in corrupt.reasons[0]
    with pytest.raises(ModelFolderError, match="corrupt"):
        open_backend("tensorrt", _ref(folder), probe=GPU)


def test_engine_from_another_tensorrt_version(fake, tiny_vit_folder, tmp_path, monkeypatch):
    folder = _copy(tiny_vit_folder, tmp_path)
    build_engine(EngineCfg(str(folder), version_compatible=True), probe=GPU)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", fake_trt.tensorrt_module("10.4.0"))
    newer = dataclasses.replace(GPU, tensorrt="10.4.0")
    opened = open_backend("auto", _ref(folder), probe=newer)
    assert opened.backend.name == "tensorrt"  # version-compatible: host code allowed, runs
    opened.backend.close()


def test_explicit_tensorrt_without_gpu_and_unknown_backend(tiny_vit_folder):
    with pytest.raises(BackendUnavailable, match="no usable CUDA GPU"):
        open_backend("tensorrt", _ref(tiny_vit_folder), probe=NO_GPU)
    with pytest.raises(UnknownNameError, match="unknown backend"):
        open_backend("tflite", _ref(tiny_vit_folder), probe=NO_GPU)


def test_ort_provider_order(tiny_vit_folder):
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    ref = _ref(tiny_vit_folder)
    names = [p[0] if isinstance(p, tuple) else p for p in _ort_providers(ref, GPU, every)]
    assert names == every
    trt_opts = _ort_providers(ref, GPU, every)[0][1]
    assert trt_opts["trt_engine_cache_enable"] and trt_opts["trt_engine_cache_path"].endswith(
        "ort_trt"
    )
    assert _ort_providers(ref, NO_GPU, every) == ["CPUExecutionProvider"]  # listed is not usable
    assert _ort_providers(ref, GPU, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_engine_record_is_json_with_build_settings(fake, tiny_vit_folder, tmp_path):
    folder = _copy(tiny_vit_folder, tmp_path)
    result = build_engine(EngineCfg(str(folder), workspace=512), probe=GPU)
    d = json.loads((engine_dir(folder) / f"{result.record.key.stem()}.json").read_text())
    assert d["build"]["workspace_mb"] == 512 and d["engine_file"] == result.engine.name
    assert len(d["engine_sha256"]) == 64


def test_segmenter_on_tensorrt_matches_onnxruntime(fake, tiny_vit_folder, tmp_path):
    from runtime.segmenter import Segmenter

    folder = _copy(tiny_vit_folder, tmp_path)
    build_engine(EngineCfg(str(folder)), probe=GPU)
    image = np.random.default_rng(0).integers(
        0, 256, (300, 500, 3), dtype=np.uint8
    )  # slide: 3 windows
    with (
        Segmenter(folder, "auto", probe=GPU, cuda_graph=True) as trt_seg,
        Segmenter(folder, "onnxruntime") as ort_seg,
    ):
        got, want = trt_seg(image), ort_seg(image)
    assert (
        got.backend == "tensorrt"
        and trt_seg.backend_reasons == ()
        and got.windows == want.windows > 1
    )
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    assert (got.labels == want.labels).mean() > 0.999


def test_stages_benchmark_splits_tensorrt_copies(fake, tiny_vit_folder, tmp_path, monkeypatch):
    import runtime.probe
    from benchmarks import stages

    folder = _copy(tiny_vit_folder, tmp_path)
    build_engine(EngineCfg(str(folder)), probe=GPU)
    monkeypatch.setattr(runtime.probe, "cached_probe", lambda: GPU)
    args = stages.parse_args(
        [
            "--model",
            str(folder),
            "--backends",
            "tensorrt,onnxruntime",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--images",
            "sample:astronaut",
        ]
    )
    report = stages.run_benchmark(args)
    rows = {r["config"]: r for r in report["results"]}
    trt_row, ort_row = rows["tensorrt/fp32"], rows["onnxruntime/fp32"]
    assert trt_row["backend"] == "tensorrt" and trt_row["median_ms"]["h2d"] >= 0
    assert ort_row["median_ms"]["h2d"] is None and ort_row["median_ms"]["compute"] > 0
    assert report["gpus"] == ["Fake GPU"] and report["peak_rss_mib"] > 0


def test_failed_cuda_graph_capture_falls_back_to_plain_launches(
    fake, tiny_vit_folder, tmp_path, caplog
):
    folder = _copy(tiny_vit_folder, tmp_path)
    build_engine(EngineCfg(str(folder)), probe=GPU)
    fake_trt._Context.fail_in_capture = True
    trt = open_backend("tensorrt", _ref(folder), probe=GPU, cuda_graph=True).backend
    ort = open_backend("onnxruntime", _ref(folder)).backend
    x = _image(224)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            got = trt({io_names.IMAGE: x}, [io_names.LOGITS])[io_names.LOGITS]
            np.testing.assert_allclose(
                got,
                ort({io_names.IMAGE: x}, [io_names.LOGITS])[io_names.LOGITS],
                rtol=1e-5,
                atol=1e-6,
            )
    assert "without CUDA graphs" in caplog.text and not trt.use_graph
    assert len(_calls("cudaStreamEndCapture")) == 1 and not _calls(
        "cudaGraphLaunch"
    )  # capture mode left
    trt.close()


def test_close_frees_everything_despite_cuda_errors(fake, tiny_vit_folder, tmp_path, caplog):
    folder = _copy(tiny_vit_folder, tmp_path)
    build_engine(EngineCfg(str(folder)), probe=GPU)
    trt = open_backend("tensorrt", _ref(folder), probe=GPU).backend
    fake.fail_free = 1
    with caplog.at_level(logging.WARNING):
        trt.close()
    assert "releasing TensorRT resources" in caplog.text
    assert len(fake.memory) == 1 and not fake.streams  # only the buffer whose free failed is left


def test_lean_runtime_needs_version_compatible_engines(fake, tiny_vit_folder, tmp_path):
    folder = _copy(tiny_vit_folder, tmp_path)
    lean = dataclasses.replace(GPU, tensorrt_module="tensorrt_lean", tensorrt_builder=False)
    build_engine(EngineCfg(str(folder)), probe=GPU)
    opened = open_backend("auto", _ref(folder), probe=lean)
    assert opened.backend.name == "onnxruntime" and "--version-compatible" in opened.reasons[0]
    build_engine(EngineCfg(str(folder), version_compatible=True), probe=GPU)
    assert open_backend("auto", _ref(folder), probe=lean).backend.name == "tensorrt"


def test_dla_engine_runs_on_its_core(fake, tiny_vit_folder, tmp_path):
    folder = _copy(tiny_vit_folder, tmp_path)
    m = load_manifest(folder)
    # a DLA build needs an FP16 / INT8 graph: register model.onnx as the fp16 variant for the fake
    from runtime.manifest import Variant

    m = dataclasses.replace(m, variants={"fp16": Variant(m.model_file, m.model_sha256)})
    m.write(folder)
    build_engine(EngineCfg(str(folder), precision="fp16", dla=0), probe=GPU)
    assert {c[1] for c in _calls("config.set_flag")} == {"FP16", "GPU_FALLBACK"}
    assert (
        open_backend("auto", _ref(folder, "fp16"), probe=GPU).backend.name == "onnxruntime"
    )  # GPU wanted
    trt = open_backend("auto", _ref(folder, "fp16"), probe=GPU, dla_core=0).backend
    assert trt.name == "tensorrt" and fake_trt.RUNTIMES[-1].DLA_core == 0
    trt.close()


def test_ort_tensorrt_cache_folder_is_created(tiny_vit_folder, tmp_path):
    folder = _copy(tiny_vit_folder, tmp_path)
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = _ort_providers(_ref(folder), GPU, every)[0][1]
    assert (folder / "engines" / "ort_trt").is_dir() and opts["trt_engine_cache_path"] == str(
        folder / "engines" / "ort_trt"
    )
