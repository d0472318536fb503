"""benchmarks.zero_shot on the tiny ViT: report structure only, never a speed relation."""

import importlib.util
import itertools
import json

from benchmarks.zero_shot import main
from training.methods import METHODS

ZERO_SHOT = sorted(n for n, s in METHODS.items() if s.kind == "zero_shot")
ARGS = [
    "--backbone",
    "ovss-tiny-vit",
    "--image-size",
    "64",
    "--methods",
    ",".join(ZERO_SHOT),
    "--classes",
    "3,7",
    "--parts",
    "full,decoder",
    "--runs",
    "3",
    "--warmup",
    "1",
    "--threads",
    "1",
]  # one thread: eager PyTorch on 2 threads stalls on a busy machine
CASES = set(itertools.product(ZERO_SHOT, ["full", "decoder"], [3, 7]))


def test_zero_shot_report(tmp_path, capsys):
    out = tmp_path / "zs.json"
    assert main([*ARGS, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    rows = {(r["method"], r["part"], r["num_classes"], r["impl"]): r for r in report["results"]}
    assert set(rows) == {(*c, impl) for c in CASES for impl in ("pytorch", "onnxruntime")}
    assert len(rows) == len(report["results"])
    for r in rows.values():
        assert r["runs"] == 3 and 0 < r["median_ms"] <= r["p90_ms"]
    cases = {(c["method"], c["part"], c["num_classes"]): c for c in report["cases"]}
    assert set(cases) == CASES and len(cases) == len(report["cases"])
    for c in cases.values():
        assert c["ratio_pytorch_over_onnxruntime"] > 0 and c["ratio_paired_median"] > 0
        p = c["parity"]
        assert p["passed"] and p["atol"] == 1e-3
        assert p["max_abs_diff"] <= p["atol"] + p["rtol"]  # scores lie in [-0.1, 1]
    assert report["weights_random"] is True
    assert report["backbone"] == "ovss-tiny-vit" and report["image_size"] == 64
    assert report["threads"] == 1 and report["cpu_count"] >= 1
    assert len(report["loadavg_start"]) == 3 and len(report["loadavg_end"]) == 3
    assert report["command"].startswith("python -m benchmarks.zero_shot --backbone ovss-tiny-vit")
    png = out.with_suffix(".png")
    assert report["plot"] in (None, str(png)) and png.exists() == (report["plot"] is not None)
    if importlib.util.find_spec("matplotlib") is not None:  # the bench extra, installed by make
        assert report["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_method_exits_2(tmp_path, capsys):
    out = tmp_path / "zs.json"
    argv = ["--backbone", "ovss-tiny-vit", "--methods", "zegclip,nope", "--json", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: unknown method")
    assert not out.exists() and not out.with_suffix(".png").exists()
