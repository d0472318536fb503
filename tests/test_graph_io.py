"""Device graph I/O (``export.graph_io``): in-graph labels and scores equal the host's
post-processing, uint8 input equals the host's normalisation, and the manifest fields that
describe them round-trip, default for old manifests and are validated.

Random weights embed every class name alike, so the exports here bake well-separated random
unit text embeddings (``--text-embeddings``): the graphs under test are unchanged by that.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from method_contract import smooth_image
from onnx import TensorProto, helper

from export import build
from export.config import ExportCfg
from export.device_check import host_scores, image_feed
from export.graph_io import add_input_format, add_postprocess, check_graph, labels_dtype
from runtime import io_names
from runtime.backends.ort import OrtBackend
from runtime.errors import ConfigError, ModelFolderError
from runtime.manifest import (
    METADATA_KEY,
    SCORE_KINDS,
    PostprocessCfg,
    PreprocessCfg,
    load_manifest,
    manifest_from_dict,
)
from runtime.postprocess import bilinear_matrix, upsample_argmax
from training.methods import METHODS
from training.methods import spec as method_spec

CLASSES = "cat,dog,car,tree,sky,road"
# Host top-2 gaps below TIE_RTOL * max(1, max|logit|) are near ties: float32 Resize (graph) and
# float64 matrices (host) round differently there, so either class is right.
TIE_RTOL = 1e-5
MAX_TIE_DISAGREEMENT = 1e-3  # of all pixels
SCORE_ATOL = 1e-5


def _rows(path: Path, n: int = 6, dim: int = 64, seed: int = 3) -> str:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    np.save(path, rows / np.linalg.norm(rows, axis=1, keepdims=True))
    return str(path)


def _export(out: Path, method: str, size: int, rows: str, **kw) -> Path:
    from export.registry import build as run_build

    cfg = ExportCfg.create(
        method=method,
        backbone="ovss-tiny-vit",
        output=str(out),
        classes=CLASSES,
        templates="single",
        image_size=size,
        text_embeddings=rows,
        **kw,
    )
    run_build(cfg)
    return out


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> str:
    return _rows(tmp_path_factory.mktemp("rows") / "rows.npy")


# (method, input size, --output-size): a softmax and a probability method, both output sizes.
GRAPH_CASES = {
    "maskclip-120x200": ("maskclip", 224, (120, 200)),
    "maskclip-input-size": ("maskclip", 224, None),
    "zegclip-input-size": ("zegclip", 128, None),
    "zegclip-120x200": ("zegclip", 128, (120, 200)),
    "maskclip-cosine": ("maskclip", 224, (120, 200), {"key_smoothing": False}),
}


@pytest.fixture(scope="module")
def graph_folder(request, rows, tmp_path_factory) -> Path:
    method, size, out_hw, *options = GRAPH_CASES[request.param]
    out = tmp_path_factory.mktemp(request.param)
    kw = options[0] if options else {}
    return _export(out, method, size, rows, postprocess="graph", output_size=out_hw, **kw)


def _run(folder: Path, rgb: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    m = load_manifest(folder)
    with OrtBackend(folder / m.model_file, providers=["CPUExecutionProvider"]) as backend:
        return backend({io_names.IMAGE: image_feed(rgb, m.preprocess)}, names)


@pytest.mark.parametrize("graph_folder", sorted(GRAPH_CASES), indirect=True)
def test_in_graph_labels_and_scores_equal_the_host(graph_folder):
    m = load_manifest(graph_folder)
    post = m.postprocess
    assert post is not None and (m.score, m.score_scale) == METHODS[m.method].score_of(m.method_cfg)
    hw = post.output_hw
    names = [io_names.LOGITS, io_names.LABELS, io_names.SCORES]
    near = differ = pixels = 0
    for seed in (0, 1):
        rgb = smooth_image(m.preprocess.input_size, seed=seed)
        got = _run(graph_folder, rgb, names)
        labels, scores = got[io_names.LABELS], got[io_names.SCORES]
        assert labels.dtype == np.dtype(post.labels_dtype) == np.uint8 and labels.shape == (1, *hw)
        assert scores.dtype == np.float32 and scores.shape == (1, *hw)
        logits = got[io_names.LOGITS][0]
        host = upsample_argmax(logits, hw)
        up = _host_upsample(logits, hw)
        top2 = np.sort(up, axis=0)[-2:]
        tied = (top2[1] - top2[0]) < TIE_RTOL * max(1.0, float(np.abs(logits).max()))
        wrong = labels[0] != host
        assert not (wrong & ~tied).any(), f"{int((wrong & ~tied).sum())} decided pixels differ"
        near, differ, pixels = (
            near + int(tied.sum()),
            differ + int(wrong.sum()),
            pixels + wrong.size,
        )
        want = _host_top_score(up, m.score, m.score_scale)
        np.testing.assert_allclose(scores[0], want, atol=SCORE_ATOL, rtol=0)
        assert len(np.unique(host)) > 1  # the labels under test are not one constant class
    print(f"{m.method} {hw}: {differ} of {pixels} pixels differ, {near} near ties")  # pytest -s
    assert differ / pixels < MAX_TIE_DISAGREEMENT


def _host_upsample(logits: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """float64 [C,H,W]: the host's bilinear sampling (``bilinear_matrix``)."""
    a_h = bilinear_matrix(hw[0], logits.shape[1], dtype=np.float64)
    a_w = bilinear_matrix(hw[1], logits.shape[2], dtype=np.float64)
    return np.einsum("hi,cij,wj->chw", a_h, logits.astype(np.float64), a_w)


def _host_top_score(up: np.ndarray, score: str, scale: float = 1.0) -> np.ndarray:
    if score == "probability":
        return up.max(axis=0)
    e = np.exp(scale * (up - up.max(axis=0, keepdims=True)))
    return (e / e.sum(axis=0, keepdims=True)).max(axis=0)


@pytest.fixture(scope="module")
def formats(rows, tmp_path_factory) -> dict[str, Path]:
    """The same model (seed 0, same text rows) exported with each input format."""
    return {
        fmt: _export(tmp_path_factory.mktemp(fmt), "maskclip", 224, rows, input_format=fmt)
        for fmt in ("float32-nchw", "uint8-nhwc", "uint8-nchw")
    }


@pytest.mark.parametrize("fmt", ["uint8-nhwc", "uint8-nchw"])
def test_uint8_input_equals_host_normalisation(formats, fmt):
    m = load_manifest(formats[fmt])
    assert m.preprocess.input_format == fmt and m.postprocess is None
    spec = m.input(io_names.IMAGE)
    assert spec.dtype == "uint8" and spec.shape == m.preprocess.image_shape
    graph_input = onnx.load(str(formats[fmt] / m.model_file)).graph.input[0]
    assert graph_input.type.tensor_type.elem_type == TensorProto.UINT8
    for seed in (0, 1):
        rgb = smooth_image((224, 224), seed=seed)
        ref = _run(formats["float32-nchw"], rgb, [io_names.LOGITS])[io_names.LOGITS]
        got = _run(formats[fmt], rgb, [io_names.LOGITS])[io_names.LOGITS]
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_both_options_combine_with_an_input_vocabulary(rows, tmp_path):
    out = _export(
        tmp_path / "m",
        "zegclip",
        64,
        rows,
        postprocess="graph",
        input_format="uint8-nhwc",
        vocab_mode="input",
        output_size=(40, 30),
    )
    m = load_manifest(out)
    assert m.postprocess == PostprocessCfg((40, 30), "int32") and m.score == "probability"
    rgb = smooth_image((64, 64), seed=2)
    text = np.load(out / m.text_embeddings_file)[:4]  # a smaller vocabulary than exported
    with OrtBackend(out / m.model_file, providers=["CPUExecutionProvider"]) as backend:
        got = backend(
            {io_names.IMAGE: rgb[None], io_names.TEXT_EMBEDDINGS: text},
            [io_names.LOGITS, io_names.LABELS, io_names.SCORES],
        )
    assert got[io_names.LABELS].dtype == np.int32 and got[io_names.LABELS].shape == (1, 40, 30)
    assert got[io_names.LABELS].max() < 4
    host = host_scores(got[io_names.LOGITS][0], (40, 30), "probability")
    np.testing.assert_allclose(got[io_names.SCORES][0], host.scores, atol=SCORE_ATOL)


# --- the graph edits on a toy graph (torch-free) ------------------------------------------------


def _toy(opset: int, classes: int | str) -> onnx.ModelProto:
    """image [1,3,28,28] -> logits [1,C,7,7] = einsum(avgpool(image), text [C,3])."""
    x = helper.make_tensor_value_info(io_names.IMAGE, TensorProto.FLOAT, [1, 3, 28, 28])
    y = helper.make_tensor_value_info(io_names.LOGITS, TensorProto.FLOAT, [1, classes, 7, 7])
    pool = helper.make_node(
        "AveragePool", [io_names.IMAGE], ["p"], kernel_shape=[4, 4], strides=[4, 4]
    )
    text = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    inputs, inits = [x], []
    if isinstance(classes, str):
        inputs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [classes, 3]))
    else:
        inits.append(onnx.numpy_helper.from_array(text, "t"))
    mix = helper.make_node("Einsum", ["p", "t"], [io_names.LOGITS], equation="bchw,kc->bkhw")
    graph = helper.make_graph([pool, mix], "toy", inputs, [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("classes", [5, "num_classes"])
@pytest.mark.parametrize("hw", [(30, 50), (3, 5), (1, 1)])
def test_toy_graph_edits(opset, classes, hw):
    pre = PreprocessCfg((28, 28), (120.0, 110.0, 100.0), (60.0, 50.0, 70.0), 4, "uint8-nhwc")
    dtype = labels_dtype("fixed" if classes == 5 else "input", 5)
    base = _toy(opset, classes)
    model = add_postprocess(add_input_format(base, pre), hw, dtype, "softmax")
    check_graph(model)
    rgb = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    text = {} if classes == 5 else {"t": np.random.default_rng(1).standard_normal((5, 3))}
    text = {k: v.astype(np.float32) for k, v in text.items()}
    with OrtBackend(model.SerializeToString(), providers=["CPUExecutionProvider"]) as b:
        got = b(
            {io_names.IMAGE: rgb[None], **text}, [io_names.LOGITS, io_names.LABELS, io_names.SCORES]
        )
    host_pre = dataclasses.replace(pre, input_format="float32-nchw")
    with OrtBackend(base.SerializeToString(), providers=["CPUExecutionProvider"]) as b:
        ref = b({io_names.IMAGE: image_feed(rgb, host_pre), **text}, [io_names.LOGITS])
    np.testing.assert_array_equal(got[io_names.LOGITS], ref[io_names.LOGITS])
    logits = got[io_names.LOGITS][0]
    np.testing.assert_array_equal(got[io_names.LABELS][0], upsample_argmax(logits, hw))
    want = _host_top_score(_host_upsample(logits, hw), "softmax")
    np.testing.assert_allclose(got[io_names.SCORES][0], want, atol=SCORE_ATOL, rtol=0)


def test_labels_dtype_rule():
    assert labels_dtype("fixed", 255) == "uint8"
    assert labels_dtype("fixed", 256) == "int32" and labels_dtype("input", 3) == "int32"


# --- manifest ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def combined(rows, tmp_path_factory) -> Path:
    return _export(
        tmp_path_factory.mktemp("combined"),
        "maskclip",
        64,
        rows,
        postprocess="graph",
        input_format="uint8-nchw",
        output_size=(48, 80),
    )


def test_manifest_round_trip_and_metadata_copy(combined):
    m = load_manifest(combined)
    assert m.preprocess.input_format == "uint8-nchw" and m.preprocess.image_shape == (1, 3, 64, 64)
    assert (m.score, m.score_scale) == ("softmax", 1.0)
    assert m.postprocess == PostprocessCfg((48, 80), "uint8")
    assert [o.name for o in m.outputs] == [io_names.LOGITS, io_names.LABELS, io_names.SCORES]
    assert m.output(io_names.LABELS).dtype == "uint8"
    assert manifest_from_dict(json.loads(m.to_json())) == m
    proto = onnx.load(str(combined / m.model_file))
    assert [o.name for o in proto.graph.output] == [o.name for o in m.outputs]
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    embedded = manifest_from_dict(meta)
    assert embedded == dataclasses.replace(m, model_sha256="")
    assert m.parity["device_max_abs_diff"] <= 1e-4


def _dict(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize(
    "method,smoothing,score,scale",
    [
        ("maskclip", True, "softmax", 1.0),
        ("maskclip", False, "softmax", 100.0),
        ("sclip", False, "softmax", 1.0),
        ("zegclip", False, "probability", 1.0),
    ],
)
def test_old_manifest_loads_with_inferred_defaults(formats, method, smoothing, score, scale):
    d = _dict(formats["float32-nchw"])
    for key in ("score", "score_scale", "postprocess"):
        d.pop(key)
    d["preprocess"].pop("input_format")
    d["method"] = method
    d["method_cfg"]["key_smoothing"] = smoothing
    m = manifest_from_dict(d)
    assert (m.score, m.score_scale) == (score, scale) and m.postprocess is None
    assert m.preprocess.input_format == "float32-nchw"


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d["preprocess"].update(input_format="rgb565"), "input_format 'rgb565'"),
        (lambda d: d["preprocess"].update(input_format="float32-nchw"), "needs float32"),
        (lambda d: d.update(score="logits"), "score 'logits'"),
        (lambda d: d["postprocess"].update(labels_dtype="int64"), "labels_dtype 'int64'"),
        (lambda d: d["postprocess"].update(output_hw=[0, 5]), "output_hw"),
        (lambda d: d["postprocess"].update(output_hw=[48, 81]), "'labels'"),
        (lambda d: d.update(outputs=d["outputs"][:2]), "'scores'"),
        (lambda d: d.update(classes=[f"c{i}" for i in range(300)]), "<= 255 classes"),
    ],
)
def test_invalid_device_fields_are_refused(combined, mutate, match):
    d = _dict(combined)
    mutate(d)
    with pytest.raises(ModelFolderError, match=match):
        manifest_from_dict(d)


def test_score_kinds_agree_and_follow_the_methods():
    assert method_spec.SCORE_KINDS == SCORE_KINDS
    probability = {n for n, s in METHODS.items() if s.score == "probability"}
    assert probability == {"zegclip", "cliprc"}


# --- flags and config --------------------------------------------------------------------------

ARGS = ["--method", "maskclip", "--backbone", "x", "--classes", "a,b", "--output", "o"]


@pytest.mark.parametrize("size", ["0x5", "abc", "12x", "3x4x5", "-2x4"])
def test_bad_output_size_exits_2_with_one_line(size, capsys):
    with pytest.raises(SystemExit) as e:
        build.parse_args([*ARGS, "--postprocess", "graph", "--output-size", size])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--output-size" in err[0], err


def test_device_flags_parse():
    args = build.parse_args(
        [
            *ARGS,
            "--postprocess",
            "graph",
            "--output-size",
            "120x200",
            "--input-format",
            "uint8-nhwc",
        ]
    )
    assert (args.postprocess, args.output_size, args.input_format) == (
        "graph",
        (120, 200),
        "uint8-nhwc",
    )
    default = build.parse_args(ARGS)
    assert (default.postprocess, default.output_size, default.input_format) == (
        "host",
        None,
        "float32-nchw",
    )


def test_output_size_without_graph_postprocess_exits_2(tmp_path, capsys):
    args = ["--method", "maskclip", "--backbone", "ovss-tiny-vit", "--classes", "a,b"]
    rc = build.main([*args, "--output", str(tmp_path / "o"), "--output-size", "8x8"])
    assert rc == 2 and "--postprocess graph" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"postprocess": "device"}, "postprocess"),
        ({"input_format": "bgr"}, "input_format"),
        ({"postprocess": "graph", "output_size": (0, 4)}, "output_size"),
    ],
)
def test_export_cfg_refuses_bad_device_fields(kw, match):
    with pytest.raises(ConfigError, match=match):
        ExportCfg(method="maskclip", backbone="x", output="o", classes="a", **kw)


def test_calibration_variants_of_a_graph_postprocess_folder(graph_folder_for_calib, tmp_path):
    """fp16 and int8 variants of a ``--postprocess graph`` (float input) folder keep its outputs."""
    from test_calibrate import smooth_frames

    from calibration.calibrate import CalibrateCfg, calibrate

    frames = smooth_frames(tmp_path / "frames", 8)
    for precision in ("fp16", "int8"):
        res = calibrate(
            CalibrateCfg(
                model=str(graph_folder_for_calib),
                precision=precision,
                images=str(frames),
                num=4,
                eval_num=4,
                sensitivity=0,
            )
        )
        outputs = [o.name for o in onnx.load(str(res.path)).graph.output]
        assert outputs == [io_names.LOGITS, io_names.LABELS, io_names.SCORES]
        assert load_manifest(graph_folder_for_calib).variants[precision].file == res.path.name


@pytest.fixture()
def graph_folder_for_calib(rows, tmp_path) -> Path:
    return _export(tmp_path / "g", "maskclip", 64, rows, postprocess="graph")


# --- the runtime on device-I/O folders -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["uint8-nhwc", "uint8-nchw"])
@pytest.mark.parametrize("mode,hw", [("whole", (180, 260)), ("slide", (300, 410))])
def test_segmenter_feeds_uint8_folders(formats, fmt, mode, hw):
    """The Segmenter feeds uint8 (host resize only): logits = the float folder's within 1e-4
    (slide padding: the rounded mean colour, within half a grey level of the float mean)."""
    from runtime.segmenter import Segmenter

    rgb = smooth_image(hw, seed=3)
    with (
        Segmenter(formats["float32-nchw"], mode=mode, threads=1) as ref,
        Segmenter(formats[fmt], mode=mode, threads=1) as seg,
    ):
        want, got = ref(rgb), seg(rgb)
    # slide: the padded bottom/right edge moves logits by < 0.1 % of their range
    atol = 1e-4 if mode == "whole" else 1e-3 * float(np.abs(want.logits).max())
    np.testing.assert_allclose(got.logits, want.logits, atol=atol, rtol=0)
    if mode == "whole":
        np.testing.assert_array_equal(got.labels, want.labels)


@pytest.mark.parametrize("graph_folder", ["zegclip-120x200", "maskclip-cosine"], indirect=True)
def test_segmenter_uses_in_graph_labels_at_their_size(graph_folder):
    from runtime.segmenter import Segmenter

    hw = load_manifest(graph_folder).postprocess.output_hw
    rgb = smooth_image(hw, seed=4)
    with (
        Segmenter(graph_folder, mode="whole", threads=1) as seg,
        Segmenter(graph_folder, mode="whole", threads=1, graph_labels=False) as host,
    ):
        got, want = seg(rgb, scores=True), host(rgb, scores=True)
        assert got.postprocess == "graph" and got.logits is None and want.postprocess == "host"
        assert seg(smooth_image((hw[0] + 2, hw[1]))).postprocess == "host"  # another size
        seg.score_threshold = host.score_threshold = float(np.median(want.scores))
        got_t, want_t = seg(rgb), host(rgb)
    # float32 Resize/Softmax on the device vs float64 on the host: equal but at near ties
    assert (got.labels == want.labels).mean() > 0.999
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    clear = np.abs(want.scores - seg.score_threshold) > 1e-5
    np.testing.assert_array_equal((got_t.labels == 255)[clear], (want_t.labels == 255)[clear])
    assert 0.2 < got_t.unknown < 0.8


def test_calibration_refuses_uint8_input_folders(formats, tmp_path, capsys):
    from test_calibrate import smooth_frames

    from calibration import calibrate as calib

    frames = smooth_frames(tmp_path / "frames", 2)
    before = sorted(p.name for p in formats["uint8-nhwc"].iterdir())
    args = ["--model", str(formats["uint8-nhwc"]), "--precision", "fp16", "--images", str(frames)]
    rc = calib.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "uint8-nhwc input" in err[-1] and "--input-format" in err[-1]
    assert sorted(p.name for p in formats["uint8-nhwc"].iterdir()) == before
