"""benchmarks.latency on the tiny ViT: report structure only, never a speed relation."""

import json

from benchmarks.latency import main

ARGS = [
    "--method",
    "maskclip",
    "--backbone",
    "ovss-tiny-vit",
    "--image-size",
    "224",
    "--runs",
    "3",
    "--warmup",
    "1",
]


def test_latency_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "b.json"
    assert main([*ARGS, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    rows = {r["impl"]: r for r in report["results"]}
    assert sorted(rows) == ["onnxruntime", "pytorch"]
    for r in rows.values():
        assert r["image_size"] == 224 and r["runs"] == 3
        assert 0 < r["median_ms"] <= r["p90_ms"]
        assert r["gflops_per_s"] > 0
    assert report["gflop"] > 0 and report["ratio_pytorch_over_onnxruntime"] > 0
    assert report["weights_random"] is True
    assert report["method"] == "maskclip" and report["backbone"] == "ovss-tiny-vit"
    assert report["threads"] >= 1 and "benchmarks.latency" in report["command"]


def test_unknown_backbone_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "b.json"
    assert main(["--method", "maskclip", "--backbone", "no-such-net", "--json", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: unknown backbone")
    assert not out.exists()
