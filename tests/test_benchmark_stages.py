"""benchmarks.stages on this machine (auto picks onnxruntime CPU here): report fields and PNG."""

from __future__ import annotations

import json

from benchmarks import stages


def test_stages_cli_writes_report_and_png(tiny_vit_folder, tmp_path, camvid):
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    rc = stages.main(
        [
            "--model",
            str(tiny_vit_folder),
            "--backends",
            "auto,onnxruntime",
            "--images",
            str(camvid / "test"),
            "--frames",
            "3",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
            str(out),
            "--png",
            str(png),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert [r["config"] for r in report["results"]] == ["auto/fp32", "onnxruntime/fp32"]
    auto = report["results"][0]
    assert auto["backend"] == "onnxruntime" and auto["runs"] == 3 and report["frames"] == 3
    med = auto["median_ms"]
    assert med["h2d"] is None and med["d2h"] is None
    # every frame's total covers each of its stages, so the medians keep that order (medians of
    # the stages are not additive: their sum may exceed the median total)
    assert med["total"] >= max(med["preprocess"], med["compute"], med["postprocess"]) > 0
    assert report["command"].startswith("python -m benchmarks.stages") and report["weights_random"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stages_bad_arguments_exit_2(tiny_vit_folder, capsys):
    assert stages.main(["--model", str(tiny_vit_folder), "--backends", "tflite"]) == 2
    assert "unknown backends" in capsys.readouterr().err
    assert (
        stages.main(["--model", str(tiny_vit_folder), "--precisions", "int8", "--runs", "1"]) == 2
    )
    assert "no int8 variant" in capsys.readouterr().err
