"""benchmarks.students on the tiny ViT: report structure only, never a speed relation."""

import importlib.util
import json

import pytest

from benchmarks.students import main

STUDENTS = ["deeplabv3plus_r18", "deeplabv3plus_mbv3"]
ARGS = [
    "--backbone",
    "ovss-tiny-vit",
    "--image-size",
    "64",
    "--students",
    ",".join(STUDENTS),
    "--runs",
    "2",
    "--warmup",
    "1",
    "--threads",
    "1",
]
# 64 px: tiny ViT patch 16 -> 4x4 MaskCLIP logits; v3+ students at stride 4 -> 16x16; CamVid C=11.
SHAPES = {"maskclip": [1, 11, 4, 4], **{s: [1, 11, 16, 16] for s in STUDENTS}}
STRIDES = {"maskclip": 16, **{s: 4 for s in STUDENTS}}


def test_students_report(tmp_path, capsys):
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    assert main([*ARGS, "--json", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    rows = report["results"]
    assert [r["model"] for r in rows] == ["maskclip", *STUDENTS]
    base = rows[0]["median_ms"]
    for r in rows:
        assert r["runs"] == 2 and 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["ratio_vs_maskclip"] == round(base / r["median_ms"], 3)
        assert r["ratio_paired_median"] > 0
        assert r["gflop"] > 0 and r["params"] > 0 and r["onnx_mb"] > 0
        assert r["logits_shape"] == SHAPES[r["model"]]
        assert r["output_stride"] == STRIDES[r["model"]]
        assert r["max_abs_logit_diff_eager_vs_ort"] < 1e-3  # the counted twin is the timed graph
        assert r["export_parity_max_abs_diff"] <= 1e-4 and r["max_abs_logit"] > 0
    assert rows[0]["ratio_vs_maskclip"] == 1.0 and rows[0]["method"] == "maskclip"
    assert {r["method"] for r in rows[1:]} == {"maskclip_plus"}
    assert report["weights"] == "random" and report["weights_random"] is True
    assert report["num_classes"] == 11 and report["export_atol"] == 1e-4
    assert report["backbone"] == "ovss-tiny-vit" and report["image_size"] == 64
    assert report["runs"] == 2 and report["threads"] == 1 and report["onnxruntime_version"]
    assert report["command"].startswith("python -m benchmarks.students --backbone ovss-tiny-vit")
    assert report["plot"] in (None, str(png)) and png.exists() == (report["plot"] is not None)
    if importlib.util.find_spec("matplotlib") is not None:  # the bench extra, installed by make
        assert report["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--students", "deeplabv3plus_r18,nope"], "error: unknown student"),
        (
            ["--students", "deeplabv3plus_r18", "--image-size", "72"],
            "not a positive multiple of 32",
        ),
    ],
    ids=["unknown_student", "size_72"],
)
def test_bad_input_exits_2(extra, message, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["--backbone", "ovss-tiny-vit", *extra, "--json", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_zero_runs_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--backbone", "ovss-tiny-vit", "--runs", "0"])
    assert exc.value.code == 2 and "--runs" in capsys.readouterr().err
