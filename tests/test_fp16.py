"""FP16 variant: graph structure (what stays FP32, casts, IO), onnxruntime runs, FP32 agreement.

The tiny folders have random text towers that embed every class alike (all pixels tie), so the
agreement tests replace the baked ``text_classifier`` by random unit rows (or feed them, for the
input-vocabulary graph): the graph under test is the same.

Thresholds (measured on onnxruntime 1.31 CPU, text seed 0, synthetic images seeds 0-2 / CamVid):
- max |FP16 - FP32 logit| <= REL_TOL * (max - min of the FP32 logits), REL_TOL = 2e-3 = about 4
  FP16 unit roundoffs (2^-11). Relative, because MaskCLIP's key-smoothed scores are unbounded (range
  15-60 on the tiny ViT, ~500 on the tiny RN) while ZegCLIP's are ~0.01. Measured worst: ViT 5.7e-4,
  ViT input-vocabulary 4.8e-4, RN 3.2e-5, ZegCLIP 6.7e-4. The converter's output without the
  removal of float32->float16->float32 round trips gives 2.5e-2 on ZegCLIP.
- label agreement (argmax over classes at feature resolution) >= 0.99 over the pixels of all images
  of a case whose FP32 top-2 margin exceeds 1e-3. Measured: 1.0 everywhere except the ViT
  input-vocabulary graph on one synthetic image (0.990: 2 of 196 pixels with margins of ~1e-2).
  The tiny RN's key smoothing averages every pixel to one label (random keys), so its check is weak.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.fp16 import float_types, node_float_types, to_fp16, type_problems
from calibration.graph import fp32_nodes
from export.onnx_export import parity_image
from runtime import io_names
from runtime.errors import CalibrationError
from runtime.manifest import load_manifest

ort = pytest.importorskip("onnxruntime")

REL_TOL, AGREEMENT, MARGIN = 2e-3, 0.99, 1e-3
FOLDERS = ("tiny_vit_folder", "tiny_vit_input_folder", "tiny_rn_folder", "tiny_zeg_folder")
COMPUTE_OPS = ("MatMul", "Conv", "Gemm")
FP32, FP16 = TensorProto.FLOAT, TensorProto.FLOAT16


@pytest.fixture(scope="session")
def tiny_zeg_folder(tmp_path_factory) -> Path:
    from export.builders import build_zegclip
    from export.config import ExportCfg

    out = tmp_path_factory.mktemp("tiny_zeg_fp16")
    build_zegclip(
        ExportCfg.create(
            method="zegclip",
            backbone="ovss-tiny-vit",
            output=str(out),
            classes="cat,dog,car",
            image_size=64,
        )
    )
    return out


class Case(NamedTuple):
    fp32: onnx.ModelProto
    fp16: onnx.ModelProto
    fp32_bytes: bytes
    extra_feeds: dict
    manifest: object


def _unit_rows(shape, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return r / np.linalg.norm(r, axis=-1, keepdims=True)


@functools.cache
def _case(folder: str) -> Case:
    manifest = load_manifest(folder)
    model = onnx.load(str(Path(folder) / manifest.model_file))
    for init in model.graph.initializer:
        if init.name.startswith(io_names.TEXT_CLASSIFIER):
            init.CopyFrom(numpy_helper.from_array(_unit_rows(tuple(init.dims), 0), init.name))
    extra = {}
    if manifest.vocab_mode == "input":
        dim = manifest.input(io_names.TEXT_EMBEDDINGS).shape[-1]
        extra[io_names.TEXT_EMBEDDINGS] = _unit_rows((5, dim), 1)  # 5 classes: C is dynamic
    fp32_nodes(model)  # names nodes in place, as to_fp16 does on its copy
    before = model.SerializeToString()
    return Case(model, to_fp16(model), before, extra, manifest)


def _get(request, fixture: str) -> Case:
    return _case(str(request.getfixturevalue(fixture)))


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([io_names.LOGITS], feeds)[0]


def _images(case: Case, source: str, request) -> list[np.ndarray]:
    pre = case.manifest.preprocess
    if source == "synthetic":
        size = pre.input_size[0]
        return [parity_image(size, pre.mean, pre.std, seed=s).numpy() for s in range(3)]
    from calibration.data import calibration_batch

    camvid = request.getfixturevalue("camvid")
    batch = calibration_batch(camvid / "test", pre, 3)
    return [batch.tensors[i : i + 1] for i in range(3)]


@pytest.mark.parametrize("source", ["synthetic", "camvid"])
@pytest.mark.parametrize("fixture", FOLDERS)
def test_agrees_with_fp32(fixture, source, request):
    case = _get(request, fixture)
    agree = decided = 0
    for x in _images(case, source, request):
        feeds = {io_names.IMAGE: x, **case.extra_feeds}
        ref, got = _run(case.fp32, feeds), _run(case.fp16, feeds)
        assert got.shape == ref.shape and got.dtype == np.float32 and np.all(np.isfinite(got))
        span = float(ref.max() - ref.min())
        diff = float(np.abs(got - ref).max())
        assert span > 0 and diff <= REL_TOL * span, f"max |diff| {diff} > {REL_TOL} * range {span}"
        top2 = np.sort(ref[0], axis=0)[-2:]
        mask = top2[1] - top2[0] > MARGIN
        agree += int((ref[0].argmax(0) == got[0].argmax(0))[mask].sum())
        decided += int(mask.sum())
    assert decided > 0, "no decided pixel: the label check would be vacuous"
    assert agree / decided >= AGREEMENT, f"label agreement {agree / decided:.4f}, {decided} pixels"


@pytest.mark.parametrize("fixture", FOLDERS)
def test_graph_structure(fixture, request):
    case = _get(request, fixture)
    fp32, fp16 = case.fp32, case.fp16
    assert fp32.SerializeToString() == case.fp32_bytes, "to_fp16 modified its input"
    onnx.checker.check_model(fp16, full_check=True)
    io = [(v.name, v.type.tensor_type.elem_type) for v in (*fp16.graph.input, *fp16.graph.output)]
    want = [(v.name, v.type.tensor_type.elem_type) for v in (*fp32.graph.input, *fp32.graph.output)]
    assert io == want
    assert all(t == FP32 for _, t in io)

    keep = set(fp32_nodes(fp32))
    types = float_types(fp16)
    nodes = {n.name: n for n in fp16.graph.node}
    assert keep <= set(nodes), "FP32 nodes lost their names"
    for name in keep:
        ins, outs = node_float_types(nodes[name], types)
        assert ins | outs <= {FP32}, f"{name} ({nodes[name].op_type}) computes in {ins | outs}"
    norms = [n for n in fp16.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert norms and all(node_float_types(n, types)[0] == {FP32} for n in norms)
    half = [n for n in fp16.graph.node if n.op_type in COMPUTE_OPS and n.name not in keep]
    assert half, "no FP16 compute node"
    for n in half:
        ins, outs = node_float_types(n, types)
        assert ins == outs == {FP16}, f"{n.name} ({n.op_type}) is not FP16: {ins | outs}"
    assert type_problems(fp16, keep) == []


@pytest.mark.parametrize("fixture", FOLDERS)
def test_casts_only_at_boundaries(fixture, request):
    """Every Cast changes the type, no value makes a float32 -> float16 -> float32 round trip, and
    no weight is cast (each initializer is stored in the precision its readers compute in)."""
    fp16 = _get(request, fixture).fp16
    types = float_types(fp16)
    inits = {t.name for t in fp16.graph.initializer}
    producer = {o: n for n in fp16.graph.node for o in n.output}
    casts = [n for n in fp16.graph.node if n.op_type == "Cast"]
    assert casts
    for n in casts:
        assert types[n.input[0]] != types[n.output[0]], f"useless cast {n.name}"
        assert n.input[0] not in inits, f"{n.name} casts the weight {n.input[0]}"
        first = producer.get(n.input[0])
        if types[n.output[0]] == FP32 and first is not None and first.op_type == "Cast":
            assert types[first.input[0]] != FP32, f"round trip through {first.name} and {n.name}"


def test_already_fp16_is_rejected(request):
    with pytest.raises(CalibrationError, match="not FP32"):
        to_fp16(_get(request, "tiny_vit_folder").fp16)


def _tiny(nodes, inits, with_text=True) -> onnx.ModelProto:
    """image [1,4] -> ... -> logits [1,3]; ir_version/opset pinned for onnxruntime."""
    inits = dict(inits)
    if with_text:
        inits[io_names.TEXT_CLASSIFIER] = _unit_rows((3, 4), 0).T.copy()
        sim = helper.make_node("MatMul", ["h", io_names.TEXT_CLASSIFIER], ["logits"], name="sim")
        nodes = nodes + [sim]
    else:
        nodes = nodes + [helper.make_node("MatMul", ["h", "w2"], ["logits"], name="sim")]
        inits["w2"] = _unit_rows((4, 3), 1)
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", FP32, [1, 4])],
        [helper.make_tensor_value_info("logits", FP32, [1, 3])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_default_op_block_list_not_applied():
    """onnxruntime's default block list would keep Max in FP32; our rules alone decide."""
    model = _tiny(
        [
            helper.make_node("MatMul", ["image", "w"], ["a"], name="proj"),
            helper.make_node("Max", ["a", "zero"], ["h"], name="relu_max"),
        ],
        {"w": _unit_rows((4, 4), 2), "zero": np.zeros(4)},
    )
    out = to_fp16(model)
    types = float_types(out)
    nodes = {n.name: n for n in out.graph.node}
    assert node_float_types(nodes["relu_max"], types) == ({FP16}, {FP16})
    assert node_float_types(nodes["sim"], types) == ({FP32}, {FP32})
    x = {"image": np.ones((1, 4), np.float32)}
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=2e-3, atol=2e-3)


def test_rejections():
    with pytest.raises(CalibrationError, match="text_classifier"):
        to_fp16(
            _tiny(
                [helper.make_node("MatMul", ["image", "w"], ["h"], name="proj")],
                {"w": np.eye(4)},
                with_text=False,
            )
        )
    ranged = _tiny(
        [
            helper.make_node("Range", ["s", "l", "d"], ["r"], name="range"),
            helper.make_node("Add", ["image", "r"], ["h"], name="add"),
        ],
        {"s": np.float32(0), "l": np.float32(4), "d": np.float32(1)},
    )
    with pytest.raises(CalibrationError, match="no float16 version.*Range"):
        to_fp16(ranged)


def test_type_problems_flags_mixed_and_reduced_kept_nodes():
    graph = helper.make_graph(
        [
            helper.make_node("Pow", ["x", "e"], ["p"], name="pow"),
            helper.make_node("Softmax", ["p"], ["y16"], name="sm"),
            helper.make_node("Cast", ["y16"], ["y"], to=FP32, name="out"),
        ],
        "mixed",
        [helper.make_tensor_value_info("x", FP16, [2, 3])],
        [helper.make_tensor_value_info("y", FP32, [2, 3])],
        [numpy_helper.from_array(np.float32(2.0), "e")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    problems = type_problems(model, {"sm"})
    assert any("pow" in p and "mixed" in p for p in problems)
    assert any("sm" in p and "float32" in p for p in problems)
    assert len(problems) == 3  # pow, sm, and the float16 graph input x
