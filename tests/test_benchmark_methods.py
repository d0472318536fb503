"""benchmarks.methods: report structure and errors only, never a speed relation."""

from __future__ import annotations

import json

from method_contract import export_method

from benchmarks.methods import main


def test_report_has_every_model_and_the_baseline_ratio(tiny_vit_folder, tmp_path, capsys):
    sclip = export_method("sclip", tmp_path / "sclip")
    out, png = tmp_path / "m.json", tmp_path / "m.png"
    argv = [
        "--models",
        f"maskclip={tiny_vit_folder},sclip={sclip}",
        "--image",
        "sample:astronaut",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--json",
        str(out),
        "--png",
        str(png),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) == {"maskclip", "sclip"} and report["baseline"] == "maskclip"
    assert rows["maskclip"]["ratio_to_baseline"] == 1.0 and rows["sclip"]["method"] == "sclip"
    assert all(r["median_ms"] > 0 and r["providers"] for r in rows.values())
    assert "benchmarks.methods" in report["command"] and png.read_bytes()[:4] == b"\x89PNG"


def test_bad_models_and_baseline_exit_2(tiny_vit_folder, capsys):
    base = ["--image", "sample:astronaut", "--runs", "1"]
    assert main(["--models", "maskclip", *base]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["--models", f"a={tiny_vit_folder}", "--baseline", "b", *base]) == 2
    assert "--baseline 'b'" in capsys.readouterr().err
