"""The runtime CLI (and the on-device text encoder) in a subprocess where `import torch` (and
`training`) fail."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import export_folder
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BLOCK = (
    "import sys, runpy\n"
    "sys.modules['torch'] = None\n"  # makes `import torch` raise ImportError
    "sys.modules['training'] = None\n"
    "sys.modules['open_clip'] = None\n"
    "module = sys.argv.pop(1)\n"
    "sys.argv = [module] + sys.argv[1:]\n"
    "try:\n"
    "    import torch\n"
    "    raise SystemExit('torch imported')\n"
    "except ImportError:\n"
    "    pass\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def _run(args, cwd, module="runtime.infer"):
    return subprocess.run(
        [sys.executable, "-c", BLOCK, module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_infer_cli_without_torch(tiny_vit_folder, tmp_path):
    img = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    out, labels = tmp_path / "overlay.png", tmp_path / "labels.png"
    proc = _run(
        [
            "--model",
            str(tiny_vit_folder),
            "--image",
            str(tmp_path / "in.png"),
            "--out",
            str(out),
            "--labels-out",
            str(labels),
        ],
        ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["backend"] == "onnxruntime" and line["providers"] == ["CPUExecutionProvider"]
    assert set(line["timings_ms"]) == {"preprocess", "inference", "postprocess"}
    assert line["classes_present"] and line["weights_random"] is True
    shown = np.asarray(Image.open(out))
    assert shown.shape[1:] == (260, 3) and shown.shape[0] > 200  # overlay + legend strip
    assert np.asarray(Image.open(labels)).shape == (200, 260)
    assert np.asarray(Image.open(labels)).max() < 4


def test_infer_cli_bad_input_exits_2(tiny_vit_folder, tmp_path):
    proc = _run(["--model", str(tmp_path / "nothing"), "--image", "x.png", "--out", "o.png"], ROOT)
    assert proc.returncode == 2 and "error:" in proc.stderr
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    proc = _run(
        [
            "--model",
            str(tiny_vit_folder),
            "--image",
            str(tmp_path / "bad.jpg"),
            "--out",
            str(tmp_path / "o.png"),
        ],
        ROOT,
    )
    assert proc.returncode == 2 and "cannot decode image" in proc.stderr
    assert not (tmp_path / "o.png").exists()


IMPORT_ONLY = (
    "import sys\n"
    "for name in ('torch', 'training', 'open_clip'):\n"
    "    sys.modules[name] = None\n"
    "import runtime.tokenizer, runtime.text_encoder, runtime.segmenter, runtime.infer\n"
    "import runtime.camera, runtime.sources, runtime.frame_queue, runtime.video_out\n"
    "import runtime.probe\n"
    "import runtime.engine_cache, runtime.backends.trt, runtime.backends.cuda, benchmarks.stages\n"
    "loaded = [m for m, v in sys.modules.items() if v is not None\n"
    "          and m.split('.')[0] in ('torch', 'training', 'open_clip', 'export')]\n"
    "assert not loaded, loaded\n"
)


def test_runtime_modules_import_without_torch():
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ONLY], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    return export_folder(
        tmp_path_factory, "tiny_vit_text_cli", vocab_mode="input", text_encoder=True
    )


def test_infer_cli_sets_classes_without_torch(text_folder, tiny_vit_input_folder, tmp_path):
    img = (np.random.default_rng(0).random((120, 150, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    names = tmp_path / "classes.txt"
    names.write_text("# my vocabulary\nsky\n\nroad\nfire hydrant\n", encoding="utf-8")
    for spec, count in (("sky,road", 2), (str(names), 3)):
        proc = _run(
            [
                "--model",
                str(text_folder),
                "--image",
                str(tmp_path / "in.png"),
                "--out",
                str(tmp_path / "o.png"),
                "--classes",
                spec,
            ],
            ROOT,
        )
        assert proc.returncode == 0, proc.stderr
        line = json.loads(proc.stdout.strip().splitlines()[-1])
        assert line["classes"] == count
        assert set(line["classes_present"]) <= {"sky", "road", "fire hydrant"}
    proc = _run(
        [
            "--model",
            str(tiny_vit_input_folder),
            "--image",
            str(tmp_path / "in.png"),
            "--out",
            str(tmp_path / "o2.png"),
            "--classes",
            "sky,road",
        ],
        ROOT,
    )
    assert proc.returncode == 2 and "no text encoder" in proc.stderr
    proc = _run(
        [
            "--model",
            str(text_folder),
            "--image",
            str(tmp_path / "in.png"),
            "--out",
            str(tmp_path / "o3.png"),
            "--classes",
            "sky,,road",
        ],
        ROOT,
    )
    assert proc.returncode == 2 and "empty entry between commas" in proc.stderr


def test_camera_cli_sets_classes_without_torch(text_folder, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        Image.fromarray(np.full((96, 128, 3), 40 * i, np.uint8)).save(frames / f"{i:03d}.png")
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    proc = _run(
        [
            "--model",
            str(text_folder),
            "--source",
            str(frames),
            "--out",
            str(out),
            "--classes",
            "sky,road",
            "--max-frames",
            "3",
            "--json",
            str(stats),
        ],
        ROOT,
        "runtime.camera",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(stats.read_text())
    assert (
        report["classes"] == 2
        and report["frames_processed"] == 3
        and report["backend"] == "onnxruntime"
    )
    assert out.stat().st_size > 0
