"""MaskCLIP+ end to end on CPU: teacher labels, the self-training switch, what pseudo-labels may
overwrite, exact resume, evaluation, the student export and its ONNX parity, bad input.

Data: the synthetic quadrant folders (``synthetic.py``), a random ``ovss-tiny-vit`` teacher,
ResNet-18 DeepLab-v3+ students at crop 64.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import CLASSES, make_folder, tiny_train_cfg

from export import build as build_cli
from export.builders import build_maskclip_plus
from export.config import ExportCfg
from runtime.errors import ConfigError
from runtime.preprocess import normalize, resize_rgb
from runtime.segmenter import Segmenter
from training import maskclip_plus as mcp
from training import train as train_cli
from training.checkpoint import load_checkpoint
from training.data.config import IGNORE
from training.evaluate import EvalCfg, evaluate_checkpoint
from training.loading import load_trained
from training.train import build_loop, run
from training.train_config import TrainCfg, resolve_defaults
from training.trainer import KeySampler

REPO = Path(__file__).resolve().parents[1]
UNSEEN = (3,)  # yellow


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data6(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("mcp_data6"), 6)


def mcfg(data: Path, work: Path, **kw) -> TrainCfg:
    defaults = {"student": "deeplabv3plus_r18", "max_iters": 4, "templates": "single"}
    return tiny_train_cfg(data, work, "maskclip_plus", **{**defaults, **kw})


class Spy:
    """Records every ``fill_labels`` call of the objective: (label in, target out, cats)."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = mcp.fill_labels

        def spy(label, scores, cats, fill, conf_thresh=0.0):
            out = real(label, scores, cats, fill, conf_thresh)
            self.calls.append((label.clone(), out.clone(), list(cats), fill.clone()))
            return out

        monkeypatch.setattr(mcp, "fill_labels", spy)


# ---------------------------------------------------------------- defaults and labels


def test_official_defaults_per_setting(tmp_path):
    free = resolve_defaults(
        TrainCfg(
            method="maskclip_plus",
            student="deeplabv2_r101",
            backbone="ViT-B-16",
            work_dir="w",
            dataset="voc",
            root="r",
        )
    )
    assert (free.setting, free.optimizer, free.lr, free.weight_decay, free.min_lr) == (
        "annotation_free",
        "sgd",
        0.01,
        5e-4,
        1e-4,
    )
    assert (free.max_iters, free.st_start, free.warmup_iters, free.batch_size) == (2000, None, 0, 4)
    zs = resolve_defaults(
        TrainCfg(
            method="maskclip_plus",
            student="deeplabv3plus_r101",
            backbone="ViT-B-16",
            work_dir="w",
            dataset="context60",
            root="r",
            setting="zero_shot",
        )
    )
    assert (zs.max_iters, zs.st_start, zs.lr, zs.weight_decay) == (40000, 4000, 0.004, 1e-4)
    zeg = resolve_defaults(
        TrainCfg(method="zegclip", backbone="ViT-B-16", work_dir="w", dataset="voc", root="r")
    )
    assert (zeg.setting, zeg.optimizer, zeg.lr, zeg.warmup_iters) == (
        "inductive",
        "adamw",
        2e-5,
        1500,
    )


def test_fill_labels_zero_shot_keeps_seen_and_ignored_pixels():
    label = torch.tensor([[[0, 1, 3, 3], [255, 2, 3, 1]]])  # one image, 2x4
    fill = mcp.unlabeled_mask(label, "zero_shot", UNSEEN)
    assert fill.tolist() == [[[False, False, True, True], [False, False, True, False]]]
    cats = [3, 2]  # scores per candidate; low confidence at column 3
    scores = torch.tensor(
        [
            [
                [[0.9, 0.9, 0.9, 0.1], [0.9, 0.9, 0.2, 0.1]],
                [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.8, 0.2]],
            ]
        ]
    )
    out = mcp.fill_labels(label, scores, cats, fill, conf_thresh=0.5)
    # seen (0,1,2) and ignored pixels keep their labels even where the teacher is unsure
    assert out.tolist() == [[[0, 1, 3, 255], [255, 2, 2, 1]]]
    free = mcp.unlabeled_mask(label, "annotation_free", ())
    assert free.tolist() == (label != IGNORE).tolist()


def test_candidates_and_text_rows_with_background():
    assert mcp.candidates(4, "annotation_free", (), background=True) == [1, 2, 3]
    assert mcp.candidates(4, "zero_shot", (0, 3), background=True) == [3]
    assert mcp.text_rows([1, 3], background=True) == [0, 2]
    with pytest.raises(ConfigError, match="background"):
        mcp.text_classes(("sky", "road"), background=True)


def test_pixel_ce_averages_over_all_pixels_and_is_zero_when_all_ignored():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.full((1, 4, 4), IGNORE)
    assert float(mcp.pixel_ce(logits, target)) == 0.0
    target[0, 0, 0] = 1
    want = torch.nn.functional.cross_entropy(logits[:, :, 0, 0], torch.tensor([1])) / 16
    assert float(mcp.pixel_ce(logits, target)) == pytest.approx(float(want), rel=1e-5)


# ---------------------------------------------------------------- training


def test_zero_shot_phases_switch_and_never_overwrite_labelled_pixels(data6, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    seen_inputs = []
    real_build = mcp.build_teacher

    def spy_teacher(visual, cfg):
        teacher = real_build(visual, cfg)
        teacher.register_forward_hook(lambda m, args, out: seen_inputs.append(args[0].clone()))
        return teacher

    monkeypatch.setattr(mcp, "build_teacher", spy_teacher)  # training.train imports it per call
    cfg = mcfg(data6, tmp_path, setting="zero_shot", unseen="yellow", max_iters=5, st_start=3)
    result = run(cfg)
    assert [r.phase for r in result.records] == ["teacher"] * 3 + ["st"] * 2
    # one schedule across the switch: the lr keeps decaying (no restart)
    lrs = [r.lr for r in result.records]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert len(spy.calls) == 5 and len(seen_inputs) == 3  # the teacher runs in phase 1 only
    for label, target, cats, fill in spy.calls:
        assert cats == [3]
        keep = ~fill
        assert torch.equal(target[keep], label[keep])  # seen and 255 pixels untouched
        assert set(target[fill].unique().tolist()) <= {3}
    # the teacher saw exactly the augmented crops the student trained on
    loop = build_loop(resolve_defaults(cfg), result_info())
    sampler = iter(KeySampler(len(loop.dataset), 2, cfg.seed, 0, 1, 0))
    for step in range(3):
        images = torch.stack([loop.dataset[k].image for k in next(sampler)])
        assert torch.equal(seen_inputs[step], images)


def result_info():
    from training.distributed import init_distributed

    return init_distributed("cpu")


def test_annotation_free_labels_every_non_ignored_pixel(data6, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    result = run(mcfg(data6, tmp_path, setting="annotation_free", max_iters=2))
    assert [r.phase for r in result.records] == ["teacher"] * 2
    for label, target, cats, fill in spy.calls:
        assert cats == [0, 1, 2, 3]
        assert torch.equal(fill, label != IGNORE)
        assert bool((target[label == IGNORE] == IGNORE).all())
        assert bool((target[fill] < 4).all())  # every labelled pixel got a class, GT unused


def test_resume_is_exact_across_the_switch(data6, tmp_path):
    """5 straight steps vs resuming the straight run's iteration-2 checkpoint (switch at 3)."""
    kw = dict(setting="zero_shot", unseen="yellow", max_iters=5, st_start=3, accum=2)
    straight = run(mcfg(data6, tmp_path / "a", ckpt_interval=2, **kw)).records
    resumed = run(
        mcfg(data6, tmp_path / "b", resume=str(tmp_path / "a" / "iter_2.pt"), **kw)
    ).records
    assert [r.phase for r in resumed] == ["teacher", "st", "st"]
    assert [(r.phase, r.lr, r.loss, r.terms) for r in straight[2:]] == [
        (r.phase, r.lr, r.loss, r.terms) for r in resumed
    ]
    a = load_checkpoint(tmp_path / "a" / "iter_5.pt").state_dict
    b = load_checkpoint(tmp_path / "b" / "iter_5.pt").state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # BN stats too


class FixedBatch(torch.utils.data.Dataset):
    """Every training key returns the same augmented sample (overfitting check)."""

    def __init__(self, ds):
        self.ds, self.classes, self.seen, self.unseen = ds, ds.classes, ds.seen, ds.unseen

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        return self.ds[(0, 1)]


def test_student_fits_the_teacher_labels(data6, tmp_path):
    """Annotation-free on one fixed crop: the teacher's labels are fixed, so CE must fall."""
    from training.trainer import train_loop

    cfg = resolve_defaults(mcfg(data6, tmp_path, max_iters=25, lr=0.05))
    loop = build_loop(cfg, result_info())
    loop.dataset = FixedBatch(loop.dataset)
    losses = [r.loss for r in train_loop(loop).records]
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses


@pytest.mark.parametrize("backbone", ["ovss-tiny-vit", "ovss-tiny-rn"])
def test_distillation_term_trains_the_student(backbone, data6, tmp_path):
    """ViT and ResNet MaskCLIP teachers; the distillation term is on and reaches the student."""
    records = run(mcfg(data6, tmp_path, max_iters=2, distill_weight=1.0, backbone=backbone)).records
    assert all(r.terms["distill"] > 0 for r in records)
    assert all(
        r.loss == pytest.approx(r.terms["ce"] + r.terms["distill"], rel=1e-6) for r in records
    )
    # unlike the official (detached) term, the gradient reaches the student features; ignored
    # cells (nearest-resized 255) contribute nothing
    feat = torch.randn(1, 8, 4, 4, requires_grad=True)
    label = torch.zeros(1, 16, 16, dtype=torch.long)
    label[:, :8] = IGNORE
    mcp.distill_l1(feat, torch.randn(1, 8, 2, 2), label).backward()
    assert bool((feat.grad[:, :, 2:] != 0).all()) and bool((feat.grad[:, :, :2] == 0).all())


# ---------------------------------------------------------------- evaluation and export


@pytest.fixture(scope="module")
def trained_ckpt(data6, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("mcp_run")
    return run(
        mcfg(data6, work, setting="zero_shot", unseen="yellow", max_iters=3, st_start=2)
    ).checkpoint


def test_evaluate_whole_image(trained_ckpt, data6, tmp_path):
    out = tmp_path / "eval.json"
    metrics = evaluate_checkpoint(
        EvalCfg(
            checkpoint=str(trained_ckpt),
            dataset="folder",
            images=str(data6 / "img"),
            masks=str(data6 / "ann"),
            classes=CLASSES,
            json=str(out),
            device="cpu",
        )
    )
    res = json.loads(out.read_text())
    assert res["method"] == "maskclip_plus" and res["images"] == 6
    assert [c["name"] for c in res["per_class"]] == CLASSES.split(",")
    assert metrics.miou_unseen is not None  # the training split (yellow unseen) was used
    assert sum(c["gt_pixels"] for c in res["per_class"]) == 6 * 64 * 64


@pytest.mark.parametrize(
    "student",
    [
        "deeplabv3plus_r18",
        "deeplabv3plus_mbv3",
        pytest.param("deeplabv2_r101", marks=pytest.mark.slow),
    ],
)
def test_random_student_export_parity_and_runtime(student, tmp_path):
    res = build_maskclip_plus(
        ExportCfg.create(
            method="maskclip_plus",
            backbone="ovss-tiny-vit",
            output=str(tmp_path / "m"),
            classes="cat,dog,car",
            student=student,
            image_size=64,
            templates="single",
        )
    )
    m = res.manifest
    assert m.parity["decided_label_agreement"] >= 0.999 and m.weights.random
    stride = m.method_cfg["output_stride"]
    assert m.outputs[0].shape == (1, 3, 64 // stride, 64 // stride)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    with Segmenter(tmp_path / "m") as seg:
        out = seg(image)
    assert out.labels.shape == (64, 64) and out.logits.shape == (3, 64 // stride, 64 // stride)


def test_trained_export_matches_pytorch_and_keeps_background(data6, tmp_path):
    data = tmp_path / "bg"
    make_folder(data, 3)
    classes = "background,green,blue,yellow"
    ckpt = run(
        mcfg(
            data,
            tmp_path / "w",
            classes=classes,
            background=True,
            max_iters=1,
            setting="zero_shot",
            unseen="yellow",
        )
    ).checkpoint
    trained = load_trained(ckpt)
    assert trained.background and trained.text.shape[0] == 3
    res = build_maskclip_plus(
        ExportCfg.create(
            method="maskclip_plus",
            backbone="ovss-tiny-vit",
            output=str(tmp_path / "m"),
            classes="green,blue,yellow",
            checkpoint=str(ckpt),
            image_size=64,
        )
    )
    assert res.manifest.classes == ("background", "green", "blue", "yellow")
    assert res.manifest.method_cfg["templates"] == "single"  # the run's own template set
    assert res.manifest.outputs[0].shape[1] == 4
    # a trained student's classes are far apart: the label check covers (almost) every pixel
    assert res.manifest.parity["tie_fraction"] < 0.05
    assert res.manifest.parity["label_agreement"] >= 0.999
    # the deployed graph reproduces the student on a real training image, through the runtime
    rgb = np.asarray(Image.open(next((data / "img").iterdir())).convert("RGB"))
    with Segmenter(tmp_path / "m") as seg:
        out = seg(rgb)
        x = normalize(resize_rgb(rgb, (64, 64)), seg.manifest.preprocess)
    with torch.no_grad():
        ref = trained.model(torch.from_numpy(x), trained.text)[0].numpy()
    assert out.logits.shape == ref.shape == (4, 16, 16)
    np.testing.assert_allclose(out.logits, ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--method", "zegclip", "--student", "deeplabv3plus_r18"], "student"),
        (["--method", "maskclip_plus"], "student"),
        (
            [
                "--method",
                "maskclip_plus",
                "--student",
                "deeplabv3plus_r18",
                "--setting",
                "inductive",
            ],
            "settings",
        ),
        (
            [
                "--method",
                "maskclip_plus",
                "--student",
                "deeplabv3plus_r18",
                "--background",
                "--setting",
                "zero_shot",
            ],
            "background",
        ),
        (
            [
                "--method",
                "maskclip_plus",
                "--student",
                "deeplabv3plus_r18",
                "--background",
                "--classes",
                "background,green,blue,yellow",
            ],
            "zero_shot",
        ),
    ],
    ids=[
        "student_for_zegclip",
        "no_student",
        "bad_setting",
        "background_not_class0",
        "background_annotation_free",
    ],
)
def test_train_cli_config_errors_exit_2(extra, needle, data6, tmp_path, capsys):
    args = [
        "--backbone",
        "ovss-tiny-vit",
        "--dataset",
        "folder",
        "--images",
        str(data6 / "img"),
        "--masks",
        str(data6 / "ann"),
        "--classes",
        CLASSES,
        "--crop-size",
        "64",
        "--max-iters",
        "1",
        "--batch-size",
        "2",
        "--work-dir",
        str(tmp_path / "w"),
        "--num-workers",
        "0",
        "--device",
        "cpu",
        *extra,
    ]
    rc = train_cli.main(args)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err
    assert not list((tmp_path / "w").glob("*.pt"))


def test_export_cli_errors_exit_2(trained_ckpt, tmp_path, capsys):
    base = [
        "--method",
        "maskclip_plus",
        "--backbone",
        "ovss-tiny-vit",
        "--classes",
        "a,b",
        "--output",
        str(tmp_path / "o"),
    ]
    assert build_cli.main(base) == 2 and "--student" in capsys.readouterr().err
    assert (
        build_cli.main(
            base + ["--checkpoint", str(trained_ckpt), "--student", "deeplabv3plus_mbv3"]
        )
        == 2
    )
    assert "deeplabv3plus_r18" in capsys.readouterr().err
    assert build_cli.main(base + ["--student", "deeplabv3plus_r18", "--image-size", "72"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---------------------------------------------------------------- DDP


def test_ddp_two_cpu_processes(data6, tmp_path):
    """torchrun gloo: both ranks train with batch-norm buffers broadcast from rank 0; the saved
    student evaluates."""
    work, logs = tmp_path / "w", tmp_path / "logs"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--log-dir",
        str(logs),
        "--redirects",
        "3",
        "-m",
        "training.train",
        "--method",
        "maskclip_plus",
        "--student",
        "deeplabv3plus_r18",
        "--backbone",
        "ovss-tiny-vit",
        "--dataset",
        "folder",
        "--images",
        str(data6 / "img"),
        "--masks",
        str(data6 / "ann"),
        "--classes",
        CLASSES,
        "--crop-size",
        "64",
        "--max-iters",
        "2",
        "--batch-size",
        "2",
        "--templates",
        "single",
        "--work-dir",
        str(work),
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--eval-after",
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    state = load_checkpoint(work / "iter_2.pt")
    assert state.cfg["world_size"] == 2 and state.method == "maskclip_plus"
    assert json.loads((work / "eval.json").read_text())["images"] == 6
