"""Deployed graphs say what they are: the manifest's I/O shapes (``num_classes`` on every class
axis of a vocabulary-as-input graph), ``graph.name``, ``doc_string``; text encoders carry their
tokenizer, context length and width."""

from __future__ import annotations

import onnx
import pytest
from conftest import export_folder
from method_contract import export_method

from runtime import io_names
from runtime.manifest import load_manifest
from training.methods import METHODS


def _dims(value: onnx.ValueInfoProto) -> list:
    return [
        d.dim_value if d.HasField("dim_value") else d.dim_param
        for d in value.type.tensor_type.shape.dim
    ]


def _graph(folder) -> tuple[onnx.ModelProto, dict[str, list]]:
    proto = onnx.load(str(folder / "model.onnx"))
    return proto, {v.name: _dims(v) for v in [*proto.graph.input, *proto.graph.output]}


def _check_documented(proto: onnx.ModelProto, method: str, classes: int) -> None:
    assert proto.graph.name == f"ovss_{method}_ovss_tiny_vit"
    doc = proto.graph.doc_string
    assert doc == proto.doc_string and method in doc and f"{classes} export classes" in doc
    for name in [v.name for v in [*proto.graph.input, *proto.graph.output]]:
        assert f"  {name} " in doc
    assert io_names.MEANINGS[io_names.LOGITS] in doc


@pytest.mark.parametrize("method", sorted(METHODS))
def test_input_vocabulary_graphs_name_the_class_axis(method, tmp_path):
    folder = export_method(method, tmp_path / method, vocab_mode="input")
    proto, dims = _graph(folder)
    m = load_manifest(folder)
    assert dims[io_names.TEXT_EMBEDDINGS][0] == "num_classes"
    assert dims[io_names.LOGITS][:2] == [1, "num_classes"]
    assert {s.name: list(s.shape) for s in (*m.inputs, *m.outputs)} == dims
    inside = {d.dim_param for v in proto.graph.value_info for d in v.type.tensor_type.shape.dim}
    assert not [p for p in inside if "logits" in p.lower()]  # the simplifier's names are gone
    onnx.checker.check_model(proto, full_check=True)
    _check_documented(proto, method, len(m.classes))


def test_postprocessed_uint8_graph_keeps_the_manifest_shapes(tmp_path):
    folder = export_method(
        "maskclip",
        tmp_path / "pp",
        vocab_mode="input",
        postprocess="graph",
        output_size=(40, 48),
        input_format="uint8-nhwc",
    )
    proto, dims = _graph(folder)
    assert dims[io_names.IMAGE] == [1, 64, 64, 3]
    assert dims[io_names.LOGITS][:2] == [1, "num_classes"]
    assert dims[io_names.LABELS] == dims[io_names.SCORES] == [1, 40, 48]  # no class axis
    _check_documented(proto, "maskclip", 4)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fixed_vocabulary_graphs_are_named_and_documented(method, tmp_path):
    folder = export_method(method, tmp_path / method)
    proto, dims = _graph(folder)
    m = load_manifest(folder)
    assert {s.name: list(s.shape) for s in (*m.inputs, *m.outputs)} == dims
    assert dims[io_names.LOGITS][:2] == [1, len(m.classes)]
    _check_documented(proto, method, len(m.classes))
    assert "fixed vocabulary" in proto.graph.doc_string


def test_text_encoder_carries_its_tokenizer_and_sizes(tmp_path_factory):
    folder = export_folder(tmp_path_factory, "names_te", vocab_mode="input", text_encoder=True)
    info = load_manifest(folder).text_encoder
    proto = onnx.load(str(folder / info.file))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["tokenizer"] == "clip-bpe"
    assert meta["context_length"] == str(info.context_length) == "77"
    assert meta["embed_dim"] == str(info.embed_dim)
    assert proto.graph.name == "ovss_maskclip_ovss_tiny_vit_text_encoder"
    assert io_names.MEANINGS[io_names.TEXT_TOKENS] in proto.graph.doc_string
    onnx.checker.check_model(proto, full_check=True)
