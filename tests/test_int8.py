"""Explicit Q/DQ INT8 (``calibration.int8``) and its per-layer sensitivity report, on tiny
exported folders (MaskCLIP ViT fixed and input vocabulary, MaskCLIP RN, ZegCLIP).

Calibration and held-out inputs are smooth random colour fields (bicubic upsampled 1/16-scale
noise plus mild pixel noise) normalised with the folder's mean/std: image-like statistics,
deterministic, and no dataset needed. Held-out inputs use another seed than calibration.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from calibration import graph
from calibration.int8 import WEIGHTED_OPS, Int8Cfg, check_qdq_rules, quantize_int8
from calibration.sensitivity import sensitivity, to_table
from runtime import io_names
from runtime.errors import CalibrationError
from runtime.manifest import load_manifest
from runtime.preprocess import normalize

ort = pytest.importorskip("onnxruntime")


@dataclass(frozen=True)
class Bound:
    """Agreement with FP32 on held-out inputs (measured values in the comments of MODELS).

    rel_logit_err: max of mean|int8 - fp32| / std(fp32 logits).
    agreement: min label agreement on decided pixels (FP32 top-2 margin >= DECIDED x the
        image's logit spread), or None where random weights leave no decided pixel.
    """

    rel_logit_err: float
    agreement: float | None


DECIDED = 0.05
# Measured (4 calibration / 6 held-out fields, minmax and percentile, two seeds):
# ViT rel 0.011-0.013, agreement 1.0 (~900 decided pixels); RN rel 0.052-0.064, every pixel a tie
# (the random text tower embeds the classes alike); ZegCLIP rel 0.012, agreement 1.0 (~75 pixels).
MODELS = {
    "tiny_vit_folder": Bound(0.03, 0.98),
    "tiny_vit_input_folder": Bound(0.03, 0.98),
    "tiny_rn_folder": Bound(0.12, None),
    "tiny_zegclip_folder": Bound(0.03, 0.98),
}


@pytest.fixture(scope="module")
def tiny_zegclip_folder(tmp_path_factory):
    from export.builders import build_zegclip
    from export.config import ExportCfg

    out = tmp_path_factory.mktemp("tiny_zegclip")
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


def smooth_feeds(folder, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` feeds of smooth random colour fields at the folder's input size (see module doc)."""
    manifest = load_manifest(folder)
    h, w = manifest.preprocess.input_size
    text = {}
    if manifest.text_embeddings_file:
        text[io_names.TEXT_EMBEDDINGS] = np.load(folder / manifest.text_embeddings_file)
    rng, feeds = np.random.default_rng(seed), []
    for _ in range(n):
        low = rng.uniform(0, 255, (max(h // 16, 2), max(w // 16, 2), 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), np.float32)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        feeds.append({io_names.IMAGE: normalize(img, manifest.preprocess), **text})
    return feeds


@pytest.fixture(scope="module", params=sorted(MODELS))
def quantized(request):
    folder = request.getfixturevalue(request.param)
    before = sorted(os.listdir(folder))
    result = quantize_int8(
        folder / "model.onnx", smooth_feeds(folder, 4, seed=0), Int8Cfg(method="percentile")
    )
    assert sorted(os.listdir(folder)) == before, "quantize_int8 wrote next to its input"
    return request.param, folder, result


def _session(model, quantized: bool = False):
    """A CPU session with the runtime's options; ``quantized`` for Q/DQ graphs, as the runtime
    opens an INT8 variant (``runtime.backends.ort.session_options``)."""
    from runtime.backends.ort import session_options

    blob = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(
        blob, session_options(ort, None, quantized=quantized), providers=["CPUExecutionProvider"]
    )


def _index(model: onnx.ModelProto):
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return producer, consumers, inits


def _reads_dq(node, producer) -> bool:
    return any(i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input)


def test_int8_graph_is_valid_runs_and_quantizes_the_weighted_ops(quantized):
    name, folder, result = quantized
    onnx.checker.check_model(result.model)
    assert check_qdq_rules(result.model) == []
    producer, _, _ = _index(result.model)
    walked = [
        n.name
        for n in result.model.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and _reads_dq(n, producer)
    ]
    assert walked == list(result.quantized_nodes) and len(walked) > 0, name
    ops = {n.name: n.op_type for n in result.model.graph.node}
    assert {ops[n] for n in walked} <= set(WEIGHTED_OPS)
    assert result.excluded_nodes["head"] and result.seconds > 0
    feed = smooth_feeds(folder, 1, seed=5)[0]
    fp32 = _session(open(folder / "model.onnx", "rb").read()).run(None, feed)[0]
    int8 = _session(result.model, quantized=True).run(None, feed)[0]
    assert int8.shape == fp32.shape and np.isfinite(int8).all()


def test_qdq_placement_walked_directly(quantized):
    """Independently of check_qdq_rules: int8 zero points equal to 0, per-channel weight scales on
    the output axis, and no Q/DQ around LayerNormalization, Softmax and the head."""
    name, _, result = quantized
    model = result.model
    producer, consumers, inits = _index(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zp = inits[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), node.name
    weights = 0
    for dq in (n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in inits):
        w, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        for c in consumers[dq.output[0]]:
            if c.op_type == "Conv":
                want = 0
            elif c.op_type == "Gemm":
                want = 0 if any(a.name == "transB" and a.i for a in c.attribute) else 1
            else:
                want = w.ndim - 1 if list(c.input).index(dq.output[0]) == 1 else w.ndim - 2
            assert axis == want and scale.shape == (w.shape[want],), (name, dq.name)
            weights += 1
    assert weights == len(result.quantized_nodes)
    quantized = set(result.quantized_nodes)
    head = {n.name for n in graph.head_nodes(model)} - {n.name for n in qdq}
    for node in model.graph.node:
        if node.name in head or node.op_type in graph.FP32_OP_TYPES:
            assert not _reads_dq(node, producer), (name, node.name)
        q_after = [c for o in node.output for c in consumers[o] if c.op_type == "QuantizeLinear"]
        if node.name in head or node.op_type == "Softmax":
            assert not q_after, (name, node.name)
        for q in q_after:  # a LayerNormalization output is quantized only as a GEMM input
            users = [u for d in consumers[q.output[0]] for u in consumers[d.output[0]]]
            assert users and all(u.name in quantized for u in users), (name, node.name)
    for node in model.graph.node:  # attention MatMuls: no input is a weight (or its DQ)
        weight = [
            i in inits
            or (
                i in producer
                and producer[i].op_type == "DequantizeLinear"
                and producer[i].input[0] in inits
            )
            for i in node.input
        ]
        if node.op_type == "MatMul" and not any(weight):
            assert not _reads_dq(node, producer), (name, "attention MatMul quantized", node.name)


def test_int8_agrees_with_fp32_on_held_out_inputs(quantized):
    name, folder, result = quantized
    bound = MODELS[name]
    fp32 = _session(open(folder / "model.onnx", "rb").read())
    int8 = _session(result.model, quantized=True)
    held = smooth_feeds(folder, 6, seed=1)
    a = np.concatenate([fp32.run(None, f)[0] for f in held])
    b = np.concatenate([int8.run(None, f)[0] for f in held])
    rel = float(np.abs(a - b).mean() / a.std())
    assert rel <= bound.rel_logit_err, (name, rel)
    if bound.agreement is not None:
        top2 = np.sort(a, axis=1)[:, -2:]
        spread = (a.max(axis=(1, 2, 3)) - a.min(axis=(1, 2, 3)))[:, None, None]
        decided = top2[:, 1] - top2[:, 0] >= DECIDED * spread
        agree = float((a.argmax(1) == b.argmax(1))[decided].mean()) if decided.any() else 0.0
        assert decided.sum() >= 10 and agree >= bound.agreement, (name, int(decided.sum()), agree)


def _handmade(uint8_zp=False, nonzero_zp=False, per_tensor=False, dq_into_softmax=False):
    """x[1,4] -> Q/DQ -> MatMul(DQ(int8 W[4,3])) -> (Q/DQ ->) Softmax -> y; opset 17, IR 10."""
    zp8 = numpy_helper.from_array(np.array(0, np.uint8 if uint8_zp else np.int8), "x_zp")
    wscale = np.full((), 0.1, np.float32) if per_tensor else np.full((3,), 0.1, np.float32)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        zp8,
        numpy_helper.from_array(np.arange(12, dtype=np.int8).reshape(4, 3), "w_quantized"),
        numpy_helper.from_array(wscale, "w_scale"),
        numpy_helper.from_array(np.zeros(wscale.shape, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.02, np.float32), "m_scale"),
        numpy_helper.from_array(np.array(3 if nonzero_zp else 0, np.int8), "m_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="x_q"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="x_dq"),
        helper.make_node(
            "DequantizeLinear",
            ["w_quantized", "w_scale", "w_zp"],
            ["wd"],
            name="w_dq",
            **({} if per_tensor else {"axis": 1}),
        ),
        helper.make_node("MatMul", ["xd", "wd"], ["m"], name="mm"),
    ]
    soft_in = "m"
    if dq_into_softmax or nonzero_zp:
        nodes += [
            helper.make_node("QuantizeLinear", ["m", "m_scale", "m_zp"], ["mq"], name="m_q"),
            helper.make_node("DequantizeLinear", ["mq", "m_scale", "m_zp"], ["md"], name="m_dq"),
        ]
        soft_in = "md"
    nodes.append(helper.make_node("Softmax", [soft_in], ["y"], name="soft", axis=-1))
    g = helper.make_graph(
        nodes,
        "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def test_check_qdq_rules_catches_each_violation():
    clean = _handmade()
    assert check_qdq_rules(clean) == []
    # the clean graph is runnable
    _session(clean, quantized=True).run(None, {"x": np.ones((1, 4), np.float32)})
    cases = {
        "uint8_zp": ("x_q", "zero point dtype uint8"),
        "nonzero_zp": ("m_q", "non-zero zero point"),
        "per_tensor": ("mm", "per-tensor scale"),
        "dq_into_softmax": ("soft", "reads a DequantizeLinear output"),
    }
    for flag, (node, text) in cases.items():
        problems = check_qdq_rules(_handmade(**{flag: True}))
        assert any(p.startswith(node) and text in p for p in problems), (flag, problems)
    assert check_qdq_rules(_handmade(per_tensor=True), per_channel=False) == []


def test_config_and_feed_errors(tiny_vit_folder):
    with pytest.raises(CalibrationError, match="unknown INT8 calibration method"):
        Int8Cfg(method="kl")
    with pytest.raises(CalibrationError, match="percentile"):
        Int8Cfg(method="percentile", percentile=0.0)
    with pytest.raises(CalibrationError, match="op_types"):
        Int8Cfg(op_types=())
    feeds = smooth_feeds(tiny_vit_folder, 1, seed=0)
    with pytest.raises(CalibrationError, match="shape"):
        quantize_int8(tiny_vit_folder / "model.onnx", [{"image": feeds[0]["image"][..., :-16]}])
    with pytest.raises(CalibrationError, match="non-empty"):
        quantize_int8(tiny_vit_folder / "model.onnx", [])
    with pytest.raises(CalibrationError, match="not a node"):
        quantize_int8(
            tiny_vit_folder / "model.onnx",
            feeds,
            Int8Cfg(method="minmax", exclude_nodes=("no_such_node",)),
        )


def test_user_exclusions_are_honoured_and_the_input_is_untouched(tiny_vit_folder):
    proto = onnx.load(str(tiny_vit_folder / "model.onnx"))
    blob = proto.SerializeToString()
    feeds = smooth_feeds(tiny_vit_folder, 2, seed=0)
    base = quantize_int8(proto, feeds, Int8Cfg(method="minmax"))
    assert proto.SerializeToString() == blob
    ops = {n.name: n.op_type for n in base.model.graph.node}
    gemm = next(n for n in base.quantized_nodes if ops[n] == "Gemm")
    cut = quantize_int8(
        proto, feeds, Int8Cfg(method="minmax", exclude_nodes=(gemm,), exclude_op_types=("Conv",))
    )
    assert gemm not in cut.quantized_nodes and gemm in cut.excluded_nodes["user"]
    assert not any(ops.get(n) == "Conv" for n in cut.quantized_nodes)
    assert cut.excluded_nodes["user_op_type"]
    assert len(cut.quantized_nodes) == len(base.quantized_nodes) - 2
    producer, _, _ = _index(cut.model)
    node = next(n for n in cut.model.graph.node if n.name == gemm)
    assert not _reads_dq(node, producer)


def _activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[0]: float(inits[n.input[1]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }


def test_the_three_methods_run_and_clip_differently(tiny_vit_folder):
    """minmax keeps the full range; entropy (2048-bin KL) and percentile clip some tensors."""
    feeds = smooth_feeds(tiny_vit_folder, 3, seed=0)
    scales = {}
    for method in ("minmax", "percentile", "entropy"):
        result = quantize_int8(tiny_vit_folder / "model.onnx", feeds, Int8Cfg(method=method))
        assert check_qdq_rules(result.model) == [] and result.quantized_nodes
        scales[method] = _activation_scales(result.model)
    for method, clipped in (("percentile", 0.999), ("entropy", 0.95)):
        assert scales[method].keys() == scales["minmax"].keys()
        ratio = [scales[method][t] / scales["minmax"][t] for t in scales["minmax"]]
        assert max(ratio) <= 1 + 1e-5 and min(ratio) < clipped, (method, ratio)


def test_attention_matmuls_quantized_only_when_asked(tiny_vit_folder):
    feeds = smooth_feeds(tiny_vit_folder, 2, seed=0)
    result = quantize_int8(
        tiny_vit_folder / "model.onnx", feeds, Int8Cfg(method="minmax", keep_attention=False)
    )
    assert check_qdq_rules(result.model, keep_attention=False) == []
    problems = check_qdq_rules(result.model)
    assert any("attention MatMul" in p for p in problems), problems
    assert "/model/dense/resblocks.0/attn/MatMul_1" in result.quantized_nodes


def test_sensitivity_has_one_finite_row_per_quantized_node(tiny_vit_folder):
    feeds = smooth_feeds(tiny_vit_folder, 2, seed=0)
    result = quantize_int8(tiny_vit_folder / "model.onnx", feeds, Int8Cfg(method="minmax"))
    held = smooth_feeds(tiny_vit_folder, 2, seed=1)
    rows = sensitivity(tiny_vit_folder / "model.onnx", result.model, held)
    assert sorted(r.node for r in rows) == sorted(result.quantized_nodes)
    sqnr = [r.sqnr_db for r in rows]
    assert sqnr == sorted(sqnr)
    for r in rows:
        assert np.isfinite([r.sqnr_db, r.xmodel_db, r.weight_sqnr_db]).all(), r
        assert 10 < r.sqnr_db < 80 and r.tensor, r  # 8-bit: ~6 dB per bit, minus clipping
    table = to_table(rows, top=3)
    assert table.count("\n") == 4 and rows[0].node in table


@pytest.mark.parametrize("fixture", ["tiny_vit_folder", "tiny_zegclip_folder"])
def test_quantize_outputs_keeps_the_float_rules(fixture, request):
    """onnxruntime's layout (GEMM outputs quantized too) still leaves the head, LayerNormalization
    and Softmax reading float tensors, and stays as close to FP32."""
    folder = request.getfixturevalue(fixture)
    result = quantize_int8(
        folder / "model.onnx",
        smooth_feeds(folder, 3, seed=0),
        Int8Cfg(method="minmax", quantize_outputs=True),
    )
    assert check_qdq_rules(result.model) == []
    _, consumers, _ = _index(result.model)
    quantized = set(result.quantized_nodes)
    outputs_quantized = [
        n.name
        for n in result.model.graph.node
        if n.name in quantized
        and any(c.op_type == "QuantizeLinear" for c in consumers[n.output[0]])
    ]
    assert outputs_quantized, fixture
    fp32 = _session(open(folder / "model.onnx", "rb").read())
    int8 = _session(result.model, quantized=True)
    held = smooth_feeds(folder, 3, seed=1)
    a = np.concatenate([fp32.run(None, f)[0] for f in held])
    b = np.concatenate([int8.run(None, f)[0] for f in held])
    assert np.abs(a - b).mean() / a.std() <= MODELS[fixture].rel_logit_err


def test_ort_scratch_folders_go_under_the_workdir(tiny_vit_folder, tmp_path, monkeypatch):
    """quant_pre_process makes its own temp folder: it must land under the caller's workdir
    (the folder's staging generation), not in the global temp folder."""
    import tempfile

    from calibration import int8

    q = int8.require_quantization()
    real, seen = q.quant_pre_process, []

    def spy(*a, **k):
        seen.append(tempfile.gettempdir())
        return real(*a, **k)

    monkeypatch.setattr(q, "quant_pre_process", spy)
    model = onnx.load(str(tiny_vit_folder / load_manifest(tiny_vit_folder).model_file))
    out = int8.preprocess(model, tmp_path)
    assert out.is_file() and seen == [str(tmp_path)]
    assert tempfile.gettempdir() != str(tmp_path)  # restored
