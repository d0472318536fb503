"""The exporter names the baked text classifier, and ``calibration.graph`` finds the nodes every
reduced-precision variant keeps in FP32, for every method's deployed graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from calibration import graph
from export.config import ExportCfg
from export.onnx_export import name_text_classifier
from export.registry import BUILDERS
from runtime import io_names
from runtime.errors import ModelFolderError
from training.methods import METHODS

# Every registered method with its smoke options on the tiny ViT, and MaskCLIP on the tiny ResNet.
CASES = {
    name: dict(method=name, templates="single", **dict(spec.smoke_options))
    for name, spec in METHODS.items()
}
CASES["maskclip_rn"] = dict(method="maskclip", backbone="ovss-tiny-rn", templates="single")


@pytest.fixture(scope="module", params=sorted(CASES))
def deployed(request, tmp_path_factory) -> tuple[str, onnx.ModelProto]:
    kw = dict(
        backbone="ovss-tiny-vit",
        classes="cat,dog,car",
        image_size=64,
        output=str(tmp_path_factory.mktemp(request.param)),
    )
    kw.update(CASES[request.param])
    BUILDERS[kw["method"]](ExportCfg.create(**kw))
    return request.param, onnx.load(str(Path(kw["output"]) / "model.onnx"))


def test_text_classifier_is_named_and_heads_end_in_the_logits(deployed):
    name, model = deployed
    assert any(i.name == io_names.TEXT_CLASSIFIER for i in model.graph.initializer), name
    head = graph.head_nodes(model)
    producers = {o for n in head for o in n.output}
    assert io_names.LOGITS in producers  # the final similarity reaches the output
    zero_shot = METHODS[CASES[name]["method"]].kind == "zero_shot"
    assert all(
        n.op_type not in ("LayerNormalization",) or zero_shot for n in head
    )  # only the zero-shot decoders carry LayerNorms after the text


def test_fp32_nodes_cover_the_rules(deployed):
    _, model = deployed
    keep = set(graph.fp32_nodes(model))
    assert all(
        n.name in keep
        for n in model.graph.node
        if n.op_type in ("LayerNormalization", "Softmax", "ReduceL2")
    )
    # the node computing the output and the one reading the text classifier stay FP32
    assert next(n.name for n in model.graph.node if io_names.LOGITS in n.output) in keep
    assert all(
        n.name in keep
        for n in model.graph.node
        if any(i.startswith(io_names.TEXT_CLASSIFIER) for i in n.input)
    )
    # the backbone's weight-carrying ops are NOT all kept: there is something to convert
    heavy = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert any(n.name not in keep for n in heavy)


def test_input_vocabulary_graph_uses_the_text_input(tiny_vit_input_folder):
    model = onnx.load(str(tiny_vit_input_folder / "model.onnx"))
    assert graph.text_sources(model.graph) == {io_names.TEXT_EMBEDDINGS}
    assert graph.head_nodes(model)


def test_graph_without_text_classifier_is_refused(tiny_vit_folder):
    model = onnx.load(str(tiny_vit_folder / "model.onnx"))
    for init in model.graph.initializer:
        if init.name.startswith(io_names.TEXT_CLASSIFIER):
            init.name = "anonymous"
    for node in model.graph.node:
        for i, x in enumerate(node.input):
            if x.startswith(io_names.TEXT_CLASSIFIER):
                node.input[i] = "anonymous"
    with pytest.raises(ModelFolderError, match="re-export"):
        graph.head_nodes(model)


def test_name_text_classifier_matches_transposed_and_conv_layouts():
    text = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    inits = [
        onnx.numpy_helper.from_array(text.T.copy(), "a"),
        onnx.numpy_helper.from_array(text[:, :, None, None].copy(), "b"),
        onnx.numpy_helper.from_array(text[::-1].copy(), "c"),
    ]  # same shape, other values
    nodes = [onnx.helper.make_node("Identity", [n], [n + "_out"]) for n in "abc"]
    g = onnx.helper.make_graph(
        nodes,
        "g",
        [],
        [
            onnx.helper.make_tensor_value_info(n + "_out", onnx.TensorProto.FLOAT, None)
            for n in "abc"
        ],
        inits,
    )
    model = onnx.helper.make_model(g)
    assert name_text_classifier(model, text) == 2
    assert [i.name for i in model.graph.initializer] == [
        "text_classifier",
        "text_classifier.1",
        "c",
    ]
    assert [n.input[0] for n in model.graph.node] == ["text_classifier", "text_classifier.1", "c"]
