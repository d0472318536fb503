"""export.build: dispatch, folder contents, metadata, and errors that leave nothing behind."""

import json

import onnx
import pytest

from export import build
from runtime.fsutil import sha256_file
from runtime.manifest import METADATA_KEY, load_manifest


def test_folder_contents(tiny_vit_folder, tiny_vit_input_folder):
    m = load_manifest(tiny_vit_folder)
    assert m.method == "maskclip" and m.backbone == "ovss-tiny-vit" and m.weights.random
    assert m.classes == ("cat", "dog", "car", "tree") and m.opset >= 17
    assert m.model_sha256 == sha256_file(tiny_vit_folder / "model.onnx")
    assert m.preprocess.input_size == (224, 224) and m.preprocess.feature_stride == 16
    assert m.parity["max_abs_diff"] <= 1e-4 and m.parity["label_agreement"] >= 0.999
    proto = onnx.load(str(tiny_vit_folder / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    embedded = json.loads(meta[METADATA_KEY])
    assert embedded["classes"] == list(m.classes) and embedded["model_sha256"] == ""
    # LABELS is parity-checked at export but pruned from the deployed graph (the runtime reads
    # LOGITS).
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert [o.name for o in m.outputs] == ["logits"]
    mi = load_manifest(tiny_vit_input_folder)
    assert mi.vocab_mode == "input" and (tiny_vit_input_folder / mi.text_embeddings_file).is_file()
    assert mi.input("text_embeddings").shape == ("num_classes", 64)


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "m"
    rc = build.main(
        [
            "--method",
            "maskclip",
            "--backbone",
            "ovss-tiny-rn",
            "--classes",
            "camvid",
            "--image-size",
            "224",
            "--templates",
            "single",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["weights_random"] is True and line["classes"] == 11
    assert load_manifest(out).preprocess.feature_stride == 32


def test_unknown_method_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        build.parse_args(
            ["--method", "segformer", "--backbone", "x", "--classes", "a", "--output", "o"]
        )
    assert e.value.code == 2 and "invalid choice: 'segformer'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,match",
    [
        (["--backbone", "ViT-Q-99", "--classes", "a,b"], "unknown backbone"),
        (["--backbone", "ovss-tiny-vit", "--classes", "a,a"], "duplicate"),
        (["--backbone", "ovss-tiny-vit", "--classes", ""], "empty"),
        (
            ["--backbone", "ovss-tiny-vit", "--classes", "a", "--pretrained", "/no/such.pt"],
            "does not exist",
        ),
    ],
)
def test_bad_requests_exit_2_and_write_nothing(tmp_path, capsys, args, match):
    out = tmp_path / "m"
    rc = build.main(["--method", "maskclip", "--image-size", "224", "--output", str(out), *args])
    assert rc == 2 and match in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_fallback_random(tmp_path, capsys):
    rc = build.main(
        [
            "--method",
            "maskclip",
            "--backbone",
            "ovss-tiny-vit",
            "--classes",
            "a,b",
            "--pretrained",
            str(tmp_path / "absent.safetensors"),
            "--fallback-random",
            "--image-size",
            "224",
            "--templates",
            "single",
            "--output",
            str(tmp_path / "m"),
        ]
    )
    assert rc == 0 and load_manifest(tmp_path / "m").weights.random


def _run_build(args, block_torch=False):
    import subprocess
    import sys
    from pathlib import Path

    pre = "import sys; sys.modules['torch'] = None\n" if block_torch else "import sys\n"
    code = pre + "from export.build import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )


def test_help_and_argument_errors_never_import_torch():
    proc = _run_build(["--help"], block_torch=True)
    assert proc.returncode == 0 and "--logit-scale" in proc.stdout and "sclip" in proc.stdout
    proc = _run_build(
        [
            "--method",
            "sclip",
            "--backbone",
            "x",
            "--classes",
            "camvidd",
            "--output",
            "/nonexistent/o",
        ],
        block_torch=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown vocabulary 'camvidd': did you mean camvid? (for a 1-class vocabulary of "
        "that name, put it in a class file)"
    ]


@pytest.mark.parametrize("method", ["maskclip", "sclip"])
def test_image_size_not_a_multiple_of_the_patch_exits_2_with_one_line(method, tmp_path):
    proc = _run_build(
        [
            "--method",
            method,
            "--backbone",
            "ovss-tiny-vit",
            "--classes",
            "a,b",
            "--image-size",
            "225",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [errors[-1]] and "225" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_option_of_another_method_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        build.parse_args(
            [
                "--method",
                "sclip",
                "--backbone",
                "x",
                "--classes",
                "a",
                "--output",
                "o",
                "--ks-thresh",
                "0.5",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--ks-thresh" in err and "--logit-scale" in err


def test_one_class_vocabulary_names_the_text_classifier(tmp_path, capsys):
    out = tmp_path / "one"
    assert (
        build.main(
            [
                "--method",
                "maskclip",
                "--backbone",
                "ovss-tiny-vit",
                "--classes",
                "person",
                "--image-size",
                "64",
                "--templates",
                "single",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    names = [i.name for i in onnx.load(str(out / "model.onnx")).graph.initializer]
    assert "text_classifier" in names


def test_inputs_a_method_does_not_take_are_refused(tmp_path):
    proc = _run_build(
        [
            "--method",
            "sclip",
            "--backbone",
            "ovss-tiny-vit",
            "--classes",
            "a,b",
            "--checkpoint",
            "/nonexistent.pt",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert proc.returncode == 2 and not (tmp_path / "o").exists()
    assert proc.stderr.strip().splitlines() == [
        "error: --checkpoint does not apply to --method sclip (it takes --text-embeddings)"
    ]


@pytest.mark.parametrize("method", ["maskclip", "sclip"])
def test_text_embeddings_are_baked_as_given(method, tmp_path, capsys):
    import numpy as np

    rows = np.random.default_rng(3).standard_normal((3, 64)).astype(np.float32)  # not unit rows
    np.save(tmp_path / "rows.npy", rows)
    out = tmp_path / "m"
    assert (
        build.main(
            [
                "--method",
                method,
                "--backbone",
                "ovss-tiny-vit",
                "--classes",
                "a,b,c",
                "--image-size",
                "64",
                "--text-embeddings",
                str(tmp_path / "rows.npy"),
                "--output",
                str(out),
                *(["--slide-stride", "32"] if method == "sclip" else []),
            ]
        )
        == 0
    )
    baked = [
        onnx.numpy_helper.to_array(i)
        for i in onnx.load(str(out / "model.onnx")).graph.initializer
        if i.name == "text_classifier"
    ]
    assert len(baked) == 1
    np.testing.assert_array_equal(baked[0].reshape(rows.shape), rows)
