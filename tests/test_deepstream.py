"""export.deepstream: the Gst-nvinfer config against the manifest and the graph, parsed as INI.

UNTESTED ON DEVICE: nothing here runs DeepStream; the float-input graph is checked with
onnxruntime against the folder's uint8 graph.
"""

from __future__ import annotations

import configparser
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.deepstream import NETWORK_MODE, main, write_config
from runtime import io_names
from runtime.engine_cache import engine_dir
from runtime.fsutil import sha256_file
from runtime.manifest import Variant, load_manifest
from tests.conftest import export_folder


def _with_fp16_variant(folder: Path) -> Path:
    """Register a copy of the FP32 graph as the folder's fp16 variant (the config only needs a
    graph file and a manifest entry; calibration needs frames)."""
    m = load_manifest(folder)
    target = folder / "model.fp16.onnx"
    shutil.copyfile(folder / m.model_file, target)
    variant = Variant(file=target.name, sha256=sha256_file(target))
    dataclasses.replace(m, variants={"fp16": variant}).write(folder)
    return folder


@pytest.fixture(scope="module")
def u8_folder(tmp_path_factory) -> Path:
    folder = export_folder(
        tmp_path_factory, "ds_u8", postprocess="graph", input_format="uint8-nchw"
    )
    return _with_fp16_variant(folder)


@pytest.fixture(scope="module")
def nhwc_folder(tmp_path_factory) -> Path:
    return export_folder(tmp_path_factory, "ds_nhwc", input_format="uint8-nhwc")


def _read(config: Path) -> configparser.SectionProxy:
    parser = configparser.RawConfigParser()
    assert parser.read(config) == [str(config)]
    assert parser.sections() == ["property"]
    return parser["property"]


def _resolve(config: Path, value: str) -> Path:
    return config.parent / value  # nvinfer resolves relative paths against the config's folder


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_config_matches_manifest_and_graph(u8_folder, tmp_path, precision):
    out = tmp_path / "nvinfer.txt"
    assert main([str(u8_folder), "--out", str(out), "--precision", precision]) == 0
    p, m = _read(out), load_manifest(u8_folder)
    h, w = m.preprocess.input_size
    assert p["network-type"] == "2" and p["batch-size"] == "1" and p["model-color-format"] == "0"
    assert p["network-mode"] == str(NETWORK_MODE[precision])
    assert int(p["num-detected-classes"]) == len(m.classes)
    assert p["infer-dims"] == f"3;{h};{w}"
    assert float(p["net-scale-factor"]) == 1.0 and p["offsets"] == "0;0;0"
    assert float(p["segmentation-threshold"]) == 0.0
    graph = onnx.load(str(_resolve(out, p["onnx-file"])))
    assert graph.graph.output[0].name == p["output-blob-names"] == io_names.LOGITS
    assert {io_names.LABELS, io_names.SCORES} <= {o.name for o in graph.graph.output}
    image = graph.graph.input[0]
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [1, 3, h, w]
    labels = _resolve(out, p["labelfile-path"]).read_text().splitlines()
    assert tuple(labels) == m.classes
    assert p["model-engine-file"] == f"{p['onnx-file']}_b1_gpu0_{precision}.engine"
    assert "UNTESTED ON DEVICE" in out.read_text()


@pytest.mark.parametrize("fixture", ["u8_folder", "nhwc_folder"])
def test_float_input_graph_equals_the_uint8_graph(request, tmp_path, fixture):
    import onnxruntime as ort

    folder = request.getfixturevalue(fixture)
    m = load_manifest(folder)
    result = write_config(folder=folder, out=tmp_path / "c.txt")
    rgb = np.random.default_rng(0).integers(0, 256, (1, 3, *m.preprocess.input_size), np.uint8)
    feed = rgb.transpose(0, 2, 3, 1) if m.preprocess.input_format == "uint8-nhwc" else rgb

    def logits(path: Path, image: np.ndarray) -> np.ndarray:
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return s.run([io_names.LOGITS], {io_names.IMAGE: image})[0]

    want = logits(folder / m.model_file, np.ascontiguousarray(feed))
    np.testing.assert_array_equal(logits(result.onnx, rgb.astype(np.float32)), want)


def test_float_folder_needs_the_approximation_flag(tiny_vit_folder, tmp_path, capsys):
    out = tmp_path / "c.txt"
    assert main([str(tiny_vit_folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--input-format uint8-nchw" in err and not out.exists()

    assert main([str(tiny_vit_folder), "--out", str(out), "--allow-approx-normalisation"]) == 0
    err = capsys.readouterr().err
    assert "approximate normalisation" in err and "relative error per channel" in err
    p, pre = _read(out), load_manifest(tiny_vit_folder).preprocess
    scale = float(p["net-scale-factor"])
    assert scale == pytest.approx(np.mean(1 / np.asarray(pre.std)), rel=1e-7)
    assert [float(v) for v in p["offsets"].split(";")] == pytest.approx(pre.mean)
    assert "WARNING: approximate normalisation" in out.read_text()
    assert _resolve(out, p["onnx-file"]).resolve() == (tiny_vit_folder / "model.onnx").resolve()


def test_paths_engine_and_threshold(u8_folder, tmp_path):
    engine = tmp_path / "mine.engine"
    out = tmp_path / "c.txt"
    args = [str(u8_folder), "--out", str(out), "--engine", str(engine), "--absolute-paths"]
    assert main([*args, "--threshold", "0.25"]) == 0
    p = _read(out)
    assert Path(p["model-engine-file"]) == engine.resolve()
    assert Path(p["onnx-file"]).is_absolute() and Path(p["onnx-file"]).is_file()
    assert Path(p["labelfile-path"]).is_absolute() and p["segmentation-threshold"] == "0.25"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_errors_exit_2_with_one_line(u8_folder, tiny_vit_input_folder, tmp_path, capsys):
    out = str(tmp_path / "c.txt")
    with pytest.raises(SystemExit) as e:
        main([str(u8_folder), "--out", out, "--precision", "int4"])
    assert e.value.code == 2 and "invalid choice" in _one_error_line(capsys)
    cases = [
        ([str(u8_folder), "--out", out, "--precision", "int8"], "no int8 variant"),
        ([str(tmp_path / "absent"), "--out", out], "does not exist"),
        ([str(tmp_path), "--out", out], "not a deployable folder"),
        ([str(tiny_vit_input_folder), "--out", out], "vocab_mode 'input'"),
        (
            [str(u8_folder), "--out", out, "--engine", str(engine_dir(u8_folder) / "x.engine")],
            "uint8-input graph",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in _one_error_line(capsys)
    assert not Path(out).exists()


def test_a_missing_logits_first_output_is_refused(u8_folder, tmp_path, capsys):
    folder = tmp_path / "reordered"
    shutil.copytree(u8_folder, folder)
    m = load_manifest(folder)
    graph = onnx.load(str(folder / m.model_file))
    outputs = list(graph.graph.output)
    del graph.graph.output[:]
    graph.graph.output.extend(outputs[1:] + outputs[:1])
    onnx.save(graph, str(folder / m.model_file))
    dataclasses.replace(m, model_sha256=sha256_file(folder / m.model_file)).write(folder)
    assert main([str(folder), "--out", str(tmp_path / "c.txt")]) == 2
    assert "first graph output" in _one_error_line(capsys)
