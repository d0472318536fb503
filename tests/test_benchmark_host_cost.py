"""benchmarks.host_cost: report structure, ratios that follow from the medians, bad arguments."""

from __future__ import annotations

import json

import pytest

from benchmarks import host_cost


def test_host_cost_report(tiny_vit_folder, tiny_vit_input_folder, tmp_path, capsys):
    out, png = tmp_path / "h.json", tmp_path / "h.png"
    args = ["--models", f"{tiny_vit_folder},{tiny_vit_input_folder}", "--frame-size", "160x96"]
    args += ["--runs", "3", "--warmup", "1", "--threads", "1", "--mode", "whole"]
    assert host_cost.main([*args, "--json", str(out), "--png", str(png)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    rows = report["results"]
    assert [(r["classes"], r["label_method"]) for r in rows] == [
        (4, "fast"),
        (4, "exact"),
        (4, "fast"),
        (4, "exact"),
    ]
    assert report["frame_hw"] == [96, 160] and report["weights_random"] is True
    assert rows[0]["postprocess_vs_first"] == 1.0 and all(r["mode"] == "whole" for r in rows)
    for r in rows:
        med = r["median_ms"]
        assert min(med.values()) > 0 and r["host_vs_inference"] > 0
    assert png.stat().st_size > 0 and "host_cost" in report["command"]


def _rc(argv: list[str]) -> int:
    """The exit status of a call: argparse errors raise SystemExit, the rest return."""
    try:
        return host_cost.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--frame-size", "0x5"], "frame size must be positive"),
        (["--frame-size", "big"], "expected WxH"),
        (["--label-methods", "fast,quick"], "bad --label-methods"),
    ],
)
def test_host_cost_bad_arguments(tiny_vit_folder, extra, message, capsys):
    assert _rc(["--models", str(tiny_vit_folder), "--runs", "1", *extra]) == 2
    assert message in capsys.readouterr().err
