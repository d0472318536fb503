"""The tests every registered method gets. ``tests/test_methods.py`` runs them over the whole
registry; a new method's own test file can subclass ``MethodContract`` and provide a
``method_name`` fixture (see ``tests/test_toy_method.py``), with no other file changed.

Each method is exported on the tiny test ViT with its ``smoke_options``, fixed and as a text
input, and checked for: parity recorded by the exporter, the runtime (whole and slide) against a
direct backend run, a vocabulary change through the text input (class permutation), FP16 and INT8
variants that the runtime selects, and ``runtime.infer`` with torch blocked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("cat", "dog", "car", "tree")
ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = (
    "import sys, runpy\n"
    "sys.modules['torch'] = None\n"
    "sys.modules['training'] = None\n"
    "sys.modules['open_clip'] = None\n"
    "module = sys.argv.pop(1)\n"
    "sys.argv = [module] + sys.argv[1:]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def export_method(name: str, out: Path, **overrides) -> Path:
    """Export ``name`` on the tiny ViT with its smoke options (+ ``overrides``) into ``out``."""
    from export.config import ExportCfg
    from export.registry import build
    from training.methods import get_method

    kw = dict(
        method=name,
        backbone="ovss-tiny-vit",
        output=str(out),
        classes=",".join(CLASSES),
        templates="single",
        **dict(get_method(name).smoke_options),
    )
    kw.update(overrides)
    build(ExportCfg.create(**kw))
    return out


def smooth_image(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """HxWx3 uint8: a few blurred colour blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    img = np.zeros(hw + (3,))
    for _ in range(5):
        cy, cx, r = rng.uniform(0, hw[0]), rng.uniform(0, hw[1]), rng.uniform(8, 30)
        img += (
            rng.uniform(0, 255, 3)
            * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        )
    return np.clip(img, 0, 255).astype(np.uint8)


class MethodContract:
    """Subclasses provide a ``method_name`` fixture (module or class scope)."""

    @pytest.fixture(scope="class")
    @classmethod
    def fixed(cls, method_name, tmp_path_factory) -> Path:
        return export_method(method_name, tmp_path_factory.mktemp(f"{method_name}_fixed"))

    @pytest.fixture(scope="class")
    @classmethod
    def text_input(cls, method_name, tmp_path_factory) -> Path:
        return export_method(
            method_name, tmp_path_factory.mktemp(f"{method_name}_input"), vocab_mode="input"
        )

    def test_export_records_parity(self, method_name, fixed, text_input):
        from runtime.manifest import load_manifest
        from training.methods import get_method

        spec = get_method(method_name)
        for folder in (fixed, text_input):
            m = load_manifest(folder)
            assert m.method == method_name and m.classes == CLASSES
            assert m.parity["max_abs_diff"] <= m.parity["atol"] <= 1e-4
            assert m.parity["label_agreement"] >= 0.999
            assert m.method_cfg["templates"] == "single"
            assert m.preprocess.input_size == (dict(spec.smoke_options)["image_size"],) * 2

    def test_runtime_whole_matches_a_direct_backend_run(self, fixed):
        from runtime.backends.ort import OrtBackend
        from runtime.preprocess import normalize
        from runtime.segmenter import Segmenter

        # short_side 0: no rescaling (the method's own short side would resize the image)
        with Segmenter(fixed, backend="onnxruntime", mode="whole", short_side=0) as seg:
            size = seg.manifest.preprocess.input_size
            img = smooth_image(size)
            res = seg(img)
            pre = seg.manifest.preprocess
        with OrtBackend(str(fixed / "model.onnx")) as ort:
            ref = ort({"image": normalize(img, pre)}, ["logits"])["logits"][0]
        assert res.mode == "whole" and res.windows == 1 and res.labels.shape == size
        np.testing.assert_allclose(res.logits, ref, rtol=1e-5, atol=1e-5)
        assert set(np.unique(res.labels)) <= set(range(len(CLASSES)))

    @pytest.mark.parametrize("edge", ["flush", "grid"])
    def test_runtime_slide(self, fixed, edge):
        """One row of windows over a wide image: where only the first window reaches, the
        stitched logits are that window's own (a direct backend run on the crop; upsampled to
        the window for the official ``flush`` plan, averaged at full resolution)."""
        from runtime.backends.ort import OrtBackend
        from runtime.label_map import upsample
        from runtime.preprocess import normalize
        from runtime.segmenter import Segmenter
        from runtime.windows import plan_windows

        with Segmenter(fixed, backend="onnxruntime", mode="slide", short_side=0,
                       slide_edge=edge) as seg:  # fmt: skip
            pre = seg.manifest.preprocess
            s, p = pre.input_size[0], pre.feature_stride
            img = smooth_image((s, 2 * s + 20), seed=1)
            res = seg(img)
            plan = plan_windows(img.shape[:2], s, seg.stride, p, edge)
        assert res.mode == "slide" and res.windows == len(plan.boxes) >= 3
        assert res.labels.shape == img.shape[:2] and np.isfinite(res.logits).all()
        outputs = [o.name for o in seg.manifest.outputs]
        with OrtBackend(str(fixed / "model.onnx")) as ort:
            feed = {"image": normalize(img[:, :s], pre)}
            crop = ort(feed, ["logits"])["logits"][0]
            if edge == "flush" and "mask_logits" in outputs:  # the sigmoid after upsampling
                bias = np.asarray(seg.manifest.method_cfg["seen_bias"], np.float32)
                up = upsample(ort(feed, ["mask_logits"])["mask_logits"][0], (s, s))
                crop = 1.0 / (1.0 + np.exp(-up)) - bias[:, None, None]
        if edge == "flush":
            assert res.logits.shape[1:] == img.shape[:2]
            only_first = plan.boxes[1][1]
            crop = crop if crop.shape[1:] == (s, s) else upsample(crop, (s, s))
        else:
            only_first = plan.boxes[1][1] // p  # feature columns before the second window
        np.testing.assert_allclose(
            res.logits[:, :, :only_first], crop[:, :, :only_first], rtol=1e-5, atol=1e-5
        )

    def test_vocabulary_change_through_the_text_input(self, text_input):
        from runtime.segmenter import Segmenter

        rows = np.load(text_input / "text_embeddings.npy")
        img = smooth_image((48, 72), seed=2)
        with Segmenter(text_input, backend="onnxruntime") as seg:
            before = seg(img)
            seg.set_vocabulary(list(CLASSES[::-1]), rows[::-1].copy())
            after = seg(img)
        assert after.classes == CLASSES[::-1]
        np.testing.assert_allclose(after.logits, before.logits[::-1], rtol=1e-4, atol=1e-4)
        assert not np.allclose(before.logits[0], before.logits[-1])  # the permutation shows

    @pytest.mark.parametrize("precision", ["fp16", "int8"])
    def test_precision_variant(self, method_name, fixed, precision, tmp_path):
        import shutil

        from PIL import Image

        from calibration.calibrate import CalibrateCfg, calibrate
        from runtime.segmenter import Segmenter

        folder = Path(shutil.copytree(fixed, tmp_path / "m"))
        frames = tmp_path / "frames"
        frames.mkdir()
        for i in range(6):
            Image.fromarray(smooth_image((72, 96), seed=10 + i)).save(frames / f"f{i}.png")
        res = calibrate(
            CalibrateCfg(
                model=str(folder),
                precision=precision,
                images=str(frames),
                num=4,
                eval_num=2,
                sensitivity=0,
                cache_dir=str(tmp_path / "cache"),
            )
        )
        # percentages; FP16 must agree almost everywhere, INT8 of a random tiny net need not
        assert (95.0 if precision == "fp16" else 0.0) <= res.report.label_agreement <= 100.0
        img = smooth_image((72, 96), seed=3)
        with (
            Segmenter(folder, backend="onnxruntime") as s32,
            Segmenter(folder, precision=precision, backend="onnxruntime") as sv,
        ):
            a, b = s32(img), sv(img)
        assert b.labels.shape == (72, 96) and np.isfinite(b.logits).all()
        assert not np.array_equal(a.logits, b.logits)  # really another graph
        np.testing.assert_allclose(a.logits, b.logits, atol=0.25 * float(np.ptp(a.logits)) + 1e-3)

    def test_triton_config_matches_the_graph(self, method_name, fixed, text_input, tmp_path):
        """The method's folders as a Triton model: the config parses with Triton's own
        ModelConfig proto and names the graph's tensors, dtypes and dims."""
        pytest.importorskip("tritonclient.grpc.model_config_pb2")
        import onnx

        from export.triton import TritonCfg, write_repository
        from tests.test_triton import config_tensors, graph_tensors, parse

        for kind, folder in (("fixed", fixed), ("input", text_input)):
            repo = tmp_path / kind
            write_repository(TritonCfg(str(folder), str(repo), name="m"))
            cfg = parse(repo / "m" / "config.pbtxt")
            graph = onnx.load(str(repo / "m" / "1" / "model.onnx")).graph
            assert config_tensors(cfg.input) == graph_tensors(graph.input), (method_name, kind)
            assert config_tensors(cfg.output) == graph_tensors(graph.output), (method_name, kind)

    def test_infer_without_torch(self, fixed, tmp_path):
        from PIL import Image

        Image.fromarray(smooth_image((60, 80))).save(tmp_path / "in.png")
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                NO_TORCH,
                "runtime.infer",
                "--model",
                str(fixed),
                "--image",
                str(tmp_path / "in.png"),
                "--out",
                str(tmp_path / "o.png"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        line = json.loads(proc.stdout.strip().splitlines()[-1])
        assert line["classes"] == len(CLASSES) and (tmp_path / "o.png").is_file()
