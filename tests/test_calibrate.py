"""``calibration.calibrate`` end to end on tiny exported folders: the variants land in the folder
and the manifest, the runtime selects them, the report is right, and bad input leaves the folder
as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import export_folder
from PIL import Image

from calibration import calibrate as cal
from calibration.calibrate import CalibrateCfg, calibrate
from calibration.report import HEADER, PCT_FIELDS, AccuracyReport, compare_variant, to_table
from calibration.sensitivity import LayerSensitivity
from calibration.sensitivity import to_table as sens_table
from runtime import infer as infer_cli
from runtime.errors import CalibrationError, ModelFolderError
from runtime.manifest import PreprocessCfg, load_manifest
from runtime.segmenter import Segmenter


def smooth_frames(folder: Path, n: int, size=(72, 96), seed: int = 0) -> Path:
    """``n`` natural-looking frames: blurred colour blobs (not pure noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    for i in range(n):
        img = np.zeros(size + (3,), np.float64)
        for _ in range(4):
            cy, cx, r = rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(10, 40)
            img += (
                rng.uniform(0, 255, 3)
                * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            )
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"f{i:03d}.png")
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file a user sees in ``folder`` (sub-folders such as an ``engines/`` cache
    that a shared fixture folder may have gained included; links followed), by relative path.
    The generation layout's own dot-names (``.current``, ``.gen``) are not part of the view."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")
    )
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture()
def folder(tiny_vit_folder, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_vit_folder, tmp_path / "model"))


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    return smooth_frames(tmp_path_factory.mktemp("frames"), 10)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_variant_recorded_and_selected_by_the_runtime(precision, folder, frames, tmp_path):
    res = calibrate(
        CalibrateCfg(
            model=str(folder),
            precision=precision,
            images=str(frames),
            num=6,
            eval_num=4,
            sensitivity=2,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert res.path == folder / f"model.{precision}.onnx" and res.path.is_file()
    m = load_manifest(folder)
    assert m.variants[precision].file == res.path.name
    assert m.model_for(precision)[1] == hashlib.sha256(res.path.read_bytes()).hexdigest()
    # the variant's trtexec line, folder-relative, beside fp32's
    assert f"--onnx={m.model_for(precision)[0]}" in m.build_commands[precision]["trtexec"]
    assert "fp32" in m.build_commands
    report = json.loads((folder / "precision_report.json").read_text())[precision]
    assert report["images"] == 4 and report["precision"] == precision
    if precision == "int8":  # f000-f005 calibrate, so the 4 held-out frames are f006-f009
        assert report["settings"]["calibration_frames"] == ["f000.png", "f005.png"]
    assert report["label_agreement"] == pytest.approx(res.report.label_agreement)
    if precision == "int8":
        assert report["settings"]["num"] == 6 and report["settings"]["quantized_nodes"] > 0
        assert report["sensitivity"] and len(res.sensitivity) > 0
    rgb = np.asarray(Image.open(frames / "f009.png"))
    with Segmenter(folder) as s32, Segmenter(folder, precision=precision) as sv:
        a, b = s32(rgb), sv(rgb)
    assert a.labels.shape == b.labels.shape == rgb.shape[:2]
    assert not np.array_equal(a.logits, b.logits)  # really another graph
    np.testing.assert_allclose(a.logits, b.logits, atol=0.25 * float(np.ptp(a.logits)) + 1e-3)
    out = tmp_path / "o.png"
    assert (
        infer_cli.main(
            [
                "--model",
                str(folder),
                "--image",
                str(frames / "f009.png"),
                "--out",
                str(out),
                "--precision",
                precision,
            ]
        )
        == 0
    )


def test_runtime_refuses_a_missing_variant(folder, frames, tmp_path, capsys):
    with pytest.raises(ModelFolderError, match="no int8 variant"):
        Segmenter(folder, precision="int8")
    rc = infer_cli.main(
        [
            "--model",
            str(folder),
            "--image",
            str(frames / "f000.png"),
            "--out",
            str(tmp_path / "o.png"),
            "--precision",
            "fp16",
        ]
    )
    assert rc == 2 and "calibration.calibrate" in capsys.readouterr().err


def test_both_variants_coexist_in_the_report(folder, frames):
    for p in ("fp16", "int8"):
        calibrate(
            CalibrateCfg(
                model=str(folder), precision=p, images=str(frames), num=4, eval_num=2, sensitivity=0
            )
        )
    assert set(json.loads((folder / "precision_report.json").read_text())) == {"fp16", "int8"}
    assert set(load_manifest(folder).variants) == {"fp16", "int8"}


def test_labels_give_miou(folder, frames, tmp_path):
    labels = tmp_path / "gt"
    labels.mkdir()
    for i in range(10):
        gt = np.zeros((72, 96), np.uint8)
        gt[:, 48:] = 2
        gt[:8] = 11  # ignored
        Image.fromarray(gt).save(labels / f"f{i:03d}.png")
    res = calibrate(
        CalibrateCfg(
            model=str(folder),
            precision="fp16",
            images=str(frames),
            eval_num=3,
            labels=str(labels),
            ignore_label=11,
        )
    )
    assert res.report.labelled_images == 3
    # FP32 mIoU recomputed independently from the runtime's own labels on the same 3 frames
    tp, union = {0: 0, 2: 0}, {0: 0, 2: 0}  # the ground-truth classes
    with Segmenter(folder) as seg:
        for i in range(3):
            pred = seg(np.asarray(Image.open(frames / f"f{i:03d}.png"))).labels
            gt = np.asarray(Image.open(labels / f"f{i:03d}.png"))
            keep = gt != 11
            for c in tp:
                tp[c] += int(((pred == c) & (gt == c) & keep).sum())
                union[c] += int((((pred == c) | (gt == c)) & keep).sum())
    want = 100 * np.mean([tp[c] / max(union[c], 1) for c in tp])
    assert res.report.miou_fp32 == pytest.approx(want, abs=1e-9)
    assert 0.0 <= res.report.miou_variant <= 100.0


# ---------------------------------------------------------------- bad input


def test_no_readable_images(folder, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    (bad / "notes.txt").write_text("hi")
    before = snapshot(folder)
    with pytest.raises(CalibrationError, match="no readable images"):
        calibrate(CalibrateCfg(model=str(folder), precision="int8", images=str(bad), num=2))
    assert snapshot(folder) == before


def test_fewer_images_than_num(folder, frames):
    before = snapshot(folder)
    with pytest.raises(CalibrationError, match="--num"):
        calibrate(CalibrateCfg(model=str(folder), precision="int8", images=str(frames), num=50))
    assert snapshot(folder) == before


def test_folder_without_fp32_graph(folder, frames):
    (folder / "model.onnx").unlink()
    before = snapshot(folder)
    with pytest.raises(CalibrationError, match="no FP32 graph"):
        calibrate(CalibrateCfg(model=str(folder), precision="fp16", images=str(frames)))
    assert snapshot(folder) == before


def test_unknown_precision_api_and_cli(folder, frames, capsys):
    with pytest.raises(CalibrationError, match="unknown precision"):
        calibrate(CalibrateCfg(model=str(folder), precision="int4", images=str(frames)))
    assert cal.main(["--model", str(folder), "--precision", "int4", "--images", str(frames)]) == 2
    assert "unknown precision 'int4'" in capsys.readouterr().err


def test_failure_after_quantisation_leaves_the_folder_as_it_was(folder, frames, monkeypatch):
    before = snapshot(folder)

    def boom(*a, **k):
        raise CalibrationError("simulated failure while measuring")

    monkeypatch.setattr(cal, "compare_variant", boom)
    with pytest.raises(CalibrationError, match="simulated"):
        calibrate(CalibrateCfg(model=str(folder), precision="int8", images=str(frames), num=4))
    assert snapshot(folder) == before  # no variant, no temp file, manifest untouched


def test_camvid_frames_with_ground_truth(camvid, tmp_path_factory, tmp_path):
    """Real frames and labels: calibrate on CamVid test frames, report on val frames with their
    ground truth (the tiny random model's mIoU is meaningless; the plumbing is what is checked)."""
    folder = export_folder(tmp_path_factory, "camvid_tiny", classes="camvid")
    res = calibrate(
        CalibrateCfg(
            model=str(folder),
            precision="int8",
            images=str(camvid / "test"),
            num=4,
            eval_images=str(camvid / "val"),
            eval_num=3,
            labels=str(camvid / "valannot"),
            ignore_label=11,
            sensitivity=0,
            cache_dir=str(tmp_path),
        )
    )
    assert res.report.images == 3 and res.report.labelled_images == 3
    assert res.report.miou_fp32 is not None and res.report.miou_variant is not None
    assert res.variant.settings["calibration_frames"][0].startswith("0001TP")


def test_int8_layouts(folder, frames):
    """``outputs`` adds Q/DQ after the quantized GEMMs (onnxruntime fuses integer kernels);
    ``inputs`` is TensorRT's placement. Both pass the Q/DQ rules (checked inside calibrate)."""
    import onnx

    counts = {}
    for layout in ("inputs", "outputs"):
        res = calibrate(
            CalibrateCfg(
                model=str(folder),
                precision="int8",
                images=str(frames),
                num=4,
                eval_num=2,
                sensitivity=0,
                layout=layout,
            )
        )
        assert res.variant.settings["layout"] == layout
        assert sum(res.variant.settings["excluded_nodes"].values()) > 0
        model = onnx.load(str(res.path))
        counts[layout] = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert counts["outputs"] > counts["inputs"] > 0
    with pytest.raises(CalibrationError, match="layout"):
        calibrate(CalibrateCfg(model=str(folder), precision="int8", images=str(frames), layout="x"))


def test_failed_record_restores_the_previous_variant(folder, frames, monkeypatch):
    """A variant already in the folder survives a later calibration whose manifest write fails."""
    calibrate(
        CalibrateCfg(
            model=str(folder),
            precision="int8",
            images=str(frames),
            num=4,
            eval_num=2,
            sensitivity=0,
        )
    )
    before = snapshot(folder)

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cal, "_record", boom)
    with pytest.raises(OSError, match="simulated"):
        calibrate(
            CalibrateCfg(
                model=str(folder),
                precision="int8",
                images=str(frames),
                num=5,
                eval_num=2,
                sensitivity=0,
                method="minmax",
            )
        )
    assert snapshot(folder) == before


def test_eval_images_must_differ_from_calibration_images(folder, frames):
    with pytest.raises(CalibrationError, match="held-out"):
        calibrate(
            CalibrateCfg(
                model=str(folder),
                precision="int8",
                images=str(frames),
                num=4,
                eval_images=str(frames),
                sensitivity=0,
            )
        )


# ---------------------------------------------------------------- machine-readable output

REPO = Path(__file__).resolve().parents[1]


def _strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as jq and other strict readers do."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@pytest.fixture(scope="module")
def cli_run(tiny_vit_folder, frames, tmp_path_factory):
    """``python -m calibration.calibrate`` run for real, as a shell would: (folder, process)."""
    folder = Path(shutil.copytree(tiny_vit_folder, tmp_path_factory.mktemp("cli") / "model"))
    cmd = [sys.executable, "-m", "calibration.calibrate", "--model", str(folder)]
    cmd += ["--precision", "int8", "--images", str(frames), "--num", "4", "--eval-num", "2"]
    cmd += ["--sensitivity", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc


def test_cli_stdout_is_one_json_line(cli_run):
    """stdout is exactly one JSON document on one line; the tables (units named) are on stderr."""
    folder, proc = cli_run
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout is not one line: {proc.stdout[:2000]!r}"
    out = _strict_json(lines[0])
    assert out["variant"] == str(folder / "model.int8.onnx") and out["precision"] == "int8"
    assert out["images"] == 2 and 0.0 <= out["label_agreement_pct"] <= 100.0
    assert {f"{k}_pct" for k in PCT_FIELDS} <= set(out)
    assert out["miou_fp32_pct"] is None  # no --labels: not measured
    assert "label agreement (%)" in proc.stderr and "SQNR (dB)" in proc.stderr
    assert "| precision |" not in proc.stdout
    report = _strict_json((folder / "precision_report.json").read_text())["int8"]
    assert report["label_agreement_pct"] == report["label_agreement"] == out["label_agreement_pct"]


def test_cli_stdout_parses_with_jq(cli_run):
    """``python -m calibration.calibrate ... | jq .`` parses, and so does the report file."""
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip(
            "the jq binary is not on PATH (json.loads half: test_cli_stdout_is_one_json_line)"
        )
    folder, proc = cli_run
    got = subprocess.run([jq, "-c", "."], input=proc.stdout, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == json.loads(proc.stdout)
    report = folder / "precision_report.json"
    got = subprocess.run([jq, ".int8.sensitivity | length", str(report)], capture_output=True)
    assert got.returncode == 0 and int(got.stdout) > 0, got.stderr


def _fake_manifest(classes: int = 3) -> SimpleNamespace:
    pre = PreprocessCfg((32, 32), (123.7, 116.3, 103.5), (58.4, 57.1, 57.4), 16)
    return SimpleNamespace(preprocess=pre, classes=tuple(f"c{i}" for i in range(classes)))


def _report(fp32, variant, n: int = 2) -> AccuracyReport:
    frames = [(f"f{i}.png", np.full((24, 40, 3), 40 * i, np.uint8)) for i in range(n)]
    return compare_variant("int8", fp32, variant, frames, _fake_manifest())


def test_nothing_decided_is_na_not_zero():
    """FP32 logits that tie everywhere: no decided cell, so decided agreement is n/a / null."""
    tie = lambda feeds: np.zeros((1, 3, 2, 2), np.float32)  # noqa: E731
    rep = _report(tie, tie)
    assert rep.decided_fraction == 0.0 and rep.decided_agreement is None
    assert rep.label_agreement == 100.0
    row = to_table([rep]).splitlines()[2].split("|")[1:-1]
    header = HEADER.splitlines()[0].split("|")[1:-1]
    cell = dict(zip((h.strip() for h in header), (c.strip() for c in row), strict=True))
    assert cell["decided agreement (%)"] == "n/a" and cell["decided cells (%)"] == "0.00"
    assert cell["mIoU FP32 (%)"] == "n/a"
    js = _strict_json(json.dumps(rep.to_json(), allow_nan=False))
    assert js["decided_agreement"] is None and js["decided_agreement_pct"] is None


def test_decided_agreement_when_cells_are_decided():
    ref = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    flip = ref[:, ::-1].copy()  # every argmax differs
    rep = _report(lambda f: ref, lambda f: flip)
    assert rep.decided_fraction == 100.0 and rep.decided_agreement == 0.0
    assert to_table([rep]).splitlines()[2].split("|")[4].strip() == "0.00"
    assert _report(lambda f: ref, lambda f: ref).decided_agreement == 100.0


def test_report_columns_and_keys_name_their_units():
    header = [h.strip() for h in HEADER.splitlines()[0].split("|")[1:-1]]
    assert header == [
        "precision",
        "images",
        "label agreement (%)",
        "decided agreement (%)",
        "decided cells (%)",
        "mean abs logit err (logit)",
        "max abs logit err (logit)",
        "mIoU FP32 (%)",
        "mIoU variant (%)",
    ]
    rep = AccuracyReport("fp16", 4, 99.5, 99.9, 80.0, 0.01, 0.2, 30.0, 41.25, 41.0, 4)
    assert len(rep.row().split("|")[1:-1]) == len(header)
    js = rep.to_json()
    assert js["miou_fp32_pct"] == js["miou_fp32"] == 41.25  # old key kept for older readers
    assert js["decided_fraction_pct"] == 80.0 and js["label_agreement_pct"] == 99.5


def test_sensitivity_table_units_and_missing_values():
    rows = [LayerSensitivity("n", "MatMul", "t", 31.0, float("nan"), float("nan"))]
    lines = sens_table(rows).splitlines()
    assert "SQNR (dB)" in lines[0] and "weight SQNR (dB)" in lines[0]
    assert lines[2].split("|")[5:8] == [" 31.0 ", " n/a ", " n/a "]
