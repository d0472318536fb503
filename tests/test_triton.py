"""export.triton: the written config.pbtxt parse with Triton's own ModelConfig proto and match the
ONNX graph's tensors; the CLI's errors; the TensorRT entry for a fitting engine (a fake record and
probe); examples/triton_client.py against a stand-in server.

No Triton server runs here (none is installable on this machine): the client test serves the
written ``REPO/N/1/model.onnx`` with onnxruntime behind a small stand-in for the KServe v2 JSON
inference endpoint (``POST /v2/models/N/infer``), in a thread. What it checks is the client side
and the repository's graph, not Triton's loading of the config.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from export.triton import ONNX, TritonCfg, main, model_config, write_repository
from runtime.engine_cache import EngineKey, EngineRecord, manifest_input_shapes, write_record
from runtime.fsutil import sha256_file
from runtime.manifest import TensorSpec, load_manifest
from runtime.probe import GpuInfo, ProbeResult
from tests.conftest import export_folder

onnx = pytest.importorskip("onnx")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "triton_client.py"
ONNX_TYPES = {  # onnx TensorProto elem_type -> Triton DataType name
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT32: "TYPE_INT32",
}
FOLDERS = ["tiny_vit_folder", "tiny_vit_input_folder", "tiny_zegclip_folder", "tiny_u8_folder"]


@pytest.fixture(scope="module")
def tiny_zegclip_folder(tmp_path_factory) -> Path:
    from export.builders import build_zegclip
    from export.config import ExportCfg

    out = tmp_path_factory.mktemp("tiny_zegclip_triton")
    cfg = ExportCfg.create(
        method="zegclip", backbone="ovss-tiny-vit", output=str(out), classes="cat,dog,car",
        image_size=64,
    )  # fmt: skip
    build_zegclip(cfg)
    return out


@pytest.fixture(scope="module")
def tiny_u8_folder(tmp_path_factory) -> Path:
    """uint8 NHWC input and in-graph labels (a uint8 ``labels`` output)."""
    return export_folder(
        tmp_path_factory, "tiny_u8", input_format="uint8-nhwc", postprocess="graph", image_size=64
    )


def parse(path: Path):
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def type_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def graph_tensors(values) -> list[tuple[str, str, list[int]]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out.append((v.name, ONNX_TYPES[t.elem_type], dims))
    return out


def config_tensors(items) -> list[tuple[str, str, list[int]]]:
    return [(t.name, type_name(t.data_type), list(t.dims)) for t in items]


@pytest.mark.parametrize("fixture", FOLDERS)
def test_config_parses_and_matches_the_graph(request, tmp_path, fixture):
    folder = request.getfixturevalue(fixture)
    repo = tmp_path / "repo"
    result = write_repository(TritonCfg(str(folder), str(repo), name="m", instances=2))
    assert [m.name for m in result.models] == ["m"] and not (repo / "m_trt").exists()
    assert "no fp32 engine" in result.engine_note
    cfg = parse(repo / "m" / "config.pbtxt")
    assert (cfg.name, cfg.platform, cfg.backend) == ("m", "onnxruntime_onnx", "onnxruntime")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert [(g.count, g.kind) for g in cfg.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_GPU)
    ]
    copied = repo / "m" / "1" / "model.onnx"
    assert copied.read_bytes() == (folder / "model.onnx").read_bytes()
    graph = onnx.load(str(copied)).graph
    assert config_tensors(cfg.input) == graph_tensors(graph.input)
    assert config_tensors(cfg.output) == graph_tensors(graph.output)


def test_folder_kinds_have_their_tensors(request, tmp_path):
    """The kinds differ where they should: text input, mask logits, uint8 image and labels."""
    kinds = {}
    for fixture in FOLDERS:
        repo = tmp_path / fixture
        write_repository(TritonCfg(str(request.getfixturevalue(fixture)), str(repo), name="m"))
        cfg = parse(repo / "m" / "config.pbtxt")
        kinds[fixture] = config_tensors(cfg.input) + config_tensors(cfg.output)
    names = {k: {t[0] for t in v} for k, v in kinds.items()}
    assert "text_embeddings" in names["tiny_vit_input_folder"]
    assert ("logits", "TYPE_FP32", [1, -1, 14, 14]) in kinds["tiny_vit_input_folder"]
    assert "mask_logits" in names["tiny_zegclip_folder"]
    assert ("image", "TYPE_UINT8", [1, 64, 64, 3]) in kinds["tiny_u8_folder"]
    assert ("labels", "TYPE_UINT8", [1, 64, 64]) in kinds["tiny_u8_folder"]


def test_cli_json_force_and_one_line_errors(tiny_vit_folder, tmp_path, capsys):
    repo = tmp_path / "repo"
    args = [str(tiny_vit_folder), "--out", str(repo), "--name", "seg"]
    assert main(args + ["--kind", "cpu", "--instances", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["models"][0]["name"] == "seg" and line["max_batch_size"] == 0
    cfg = parse(repo / "seg" / "config.pbtxt")
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert cfg.instance_group[0].count == 3
    for bad, words in (
        (args, "pass --force"),
        (args + ["--max-batch", "4", "--force"], "batch-dynamic graph"),
        (args + ["--precision", "int8", "--force"], "no int8 variant"),
        (args[:-1] + ["a/b"], "model name"),
    ):
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert main(args + ["--force"]) == 0
    assert parse(repo / "seg" / "config.pbtxt").instance_group[0].count == 1
    assert sorted(p.name for p in repo.iterdir()) == ["seg"]  # no staging folder left behind


def _fake_engine(folder: Path, probe: ProbeResult) -> bytes:
    manifest, gpu = load_manifest(folder), probe.gpus[0]
    key = EngineKey(
        gpu.name,
        gpu.compute_capability,
        probe.tensorrt,
        "fp32",
        manifest_input_shapes(manifest.inputs),
        manifest.model_sha256,
    )
    blob = b"not a real engine, only bytes to copy"
    (folder / "engines").mkdir()
    (folder / "engines" / f"{key.stem()}.engine").write_bytes(blob)
    sha = sha256_file(folder / "engines" / f"{key.stem()}.engine")
    write_record(folder, EngineRecord(key, f"{key.stem()}.engine", sha))
    return blob


def test_tensorrt_entry_for_a_fitting_engine(tiny_vit_input_folder, tmp_path):
    folder = Path(shutil.copytree(tiny_vit_input_folder, tmp_path / "folder"))
    probe = ProbeResult(gpus=(GpuInfo(0, "NVIDIA Test GPU", "8.7", 8192),), tensorrt="10.3.0")
    blob = _fake_engine(folder, probe)
    repo = tmp_path / "repo"
    result = write_repository(TritonCfg(str(folder), str(repo), name="m", kind="cpu"), probe)
    assert [(m.name, m.platform) for m in result.models] == [
        ("m", "onnxruntime_onnx"),
        ("m_trt", "tensorrt_plan"),
    ]
    assert (repo / "m_trt" / "1" / "model.plan").read_bytes() == blob
    onnx_cfg, trt_cfg = parse(repo / "m" / "config.pbtxt"), parse(repo / "m_trt" / "config.pbtxt")
    assert (trt_cfg.platform, trt_cfg.backend) == ("tensorrt_plan", "tensorrt")
    assert trt_cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config_tensors(trt_cfg.input) == config_tensors(onnx_cfg.input)
    assert config_tensors(trt_cfg.output) == config_tensors(onnx_cfg.output)
    other = dataclasses.replace(probe, tensorrt="10.4.0")  # not version-compatible: no entry
    again = write_repository(TritonCfg(str(folder), str(repo), name="m", force=True), other)
    assert [m.name for m in again.models] == ["m"] and not (repo / "m_trt").exists()
    assert "no fp32 engine fits" in again.engine_note


def test_batched_config_drops_the_batch_axis():
    """--max-batch > 0 for a batch-dynamic graph (none is exported yet): Triton's batch axis."""
    image = TensorSpec("image", "float32", ("batch", 3, 64, 64), "")
    logits = TensorSpec("logits", "float32", ("batch", "num_classes", 4, 4), "")
    text = model_config("b", ONNX, (image,), (logits,), max_batch=8, kind="cpu")
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert cfg.max_batch_size == 8 and cfg.HasField("dynamic_batching")
    assert config_tensors(cfg.input) == [("image", "TYPE_FP32", [3, 64, 64])]
    assert config_tensors(cfg.output) == [("logits", "TYPE_FP32", [-1, 4, 4])]


# --- the client example against a stand-in KServe v2 endpoint --------------------------------

V2_DTYPES = {"FP32": np.float32, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64}
V2_NAMES = {np.dtype(v).name: k for k, v in V2_DTYPES.items()}


def stand_in_server(name: str, model_path: Path) -> ThreadingHTTPServer:
    """``POST /v2/models/<name>/infer`` with JSON tensors, run by onnxruntime (one thread)."""
    from runtime.backends.ort import OrtBackend

    backend = OrtBackend(model_path, providers=["CPUExecutionProvider"], threads=1)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            if self.path != f"/v2/models/{name}/infer":
                return self._reply(404, {"error": f"unknown path {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            feeds = {
                t["name"]: np.asarray(t["data"], V2_DTYPES[t["datatype"]]).reshape(t["shape"])
                for t in body["inputs"]
            }
            names = [o["name"] for o in body.get("outputs", [])]
            with lock:
                out = backend(feeds, names)
            tensors = [
                {
                    "name": n,
                    "datatype": V2_NAMES[out[n].dtype.name],
                    "shape": list(out[n].shape),
                    "data": out[n].ravel().tolist(),
                }
                for n in names
            ]
            self._reply(200, {"model_name": name, "outputs": tensors})

        def _reply(self, code: int, payload: dict):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def load_example():
    spec = importlib.util.spec_from_file_location("triton_client", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fixture", ["tiny_vit_folder", "tiny_vit_input_folder", "tiny_u8_folder"])
def test_client_labels_equal_the_local_segmenter(request, tmp_path, fixture):
    pytest.importorskip("tritonclient.http")
    import tritonclient.http as httpclient

    from runtime.segmenter import Segmenter
    from tests.method_contract import smooth_image

    folder = request.getfixturevalue(fixture)
    repo = tmp_path / "repo"
    write_repository(TritonCfg(str(folder), str(repo), name="seg"))
    server = stand_in_server("seg", repo / "seg" / "1" / "model.onnx")
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.server_address[1]}")
    example = load_example()
    try:
        seg, found = Segmenter(folder, "onnxruntime", mode="whole", threads=1), set()
        for seed, hw in ((0, (96, 160)), (1, (50, 40))):
            rgb = smooth_image(hw, seed=seed)
            got = example.segment(client, "seg", folder, rgb)
            ref = seg(rgb)
            assert ref.mode == "whole" and got.labels.shape == hw
            np.testing.assert_array_equal(got.labels, ref.labels)
            found.update(np.unique(got.labels).tolist())
        assert len(found) > 1  # not a trivial one-class map
    finally:
        client.close()
        server.shutdown()
        server.server_close()
