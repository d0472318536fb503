"""ZegCLIP / CLIP-RC training end to end on CPU: learning, exact resume, the transductive phase,
2-process gloo DDP, the evaluate CLI and bad inputs.

Data: tiny synthetic folder datasets (64x64 images of four coloured quadrants, the colour set by
the class), the ``ovss-tiny-vit`` backbone with random weights, crop 64.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import CLASSES, make_folder, tiny_train_cfg

from runtime.errors import CheckpointError
from training import evaluate as evaluate_cli
from training import objectives as objectives_mod
from training import train as train_cli
from training.distributed import init_distributed
from training.evaluate import slide_scores, window_starts
from training.labels import pseudo_label, seen_only
from training.loading import load_trained
from training.losses import one_hot_targets
from training.train import build_loop, run
from training.train_config import TrainCfg, resolve_defaults
from training.trainer import KeySampler, train_loop

REPO = Path(__file__).resolve().parents[1]
METHODS = ["zegclip", "cliprc"]


# ---------------------------------------------------------------- data and configs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data6(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data6"), 6)


@pytest.fixture(scope="module")
def data1(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data1"), 1, seed=5)


def tcfg(data: Path, work: Path, method: str, **kw) -> TrainCfg:
    return tiny_train_cfg(data, work, method, **{"max_iters": 6, "warmup_iters": 2, **kw})


def cli_args(data: Path, work: Path, method: str = "zegclip", **kw) -> list[str]:
    args = {
        "method": method,
        "backbone": "ovss-tiny-vit",
        "dataset": "folder",
        "images": str(data / "img"),
        "masks": str(data / "ann"),
        "classes": CLASSES,
        "crop-size": "64",
        "max-iters": "2",
        "batch-size": "2",
        "warmup-iters": "1",
        "work-dir": str(work),
        "num-workers": "0",
        "device": "cpu",
    }
    for k, v in kw.items():  # None drops a flag
        if v is None:
            args.pop(k.replace("_", "-"), None)
        else:
            args[k.replace("_", "-")] = str(v)
    return [x for k, v in args.items() for x in (f"--{k}", v)]


def _losses(result) -> list[float]:
    return [r.loss for r in result.records]


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("method", METHODS)
def test_loss_falls(method, data6, tmp_path):
    result = run(tcfg(data6, tmp_path / "w", method, max_iters=30, lr=3e-4, seed=0))
    losses = _losses(result)
    assert [r.iteration for r in result.records] == list(range(1, 31))
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.75 * first, (first, last, losses)
    assert result.checkpoint == tmp_path / "w" / "iter_30.pt" and result.checkpoint.is_file()
    log = (tmp_path / "w" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["loss"] for ln in log] == losses


class FixedBatch:
    """Every training key returns the same un-augmented sample: the same batch every step."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        return self.ds[0]


@pytest.mark.parametrize("method,lr", [("zegclip", 2e-3), ("cliprc", 1e-3)])
def test_overfits_one_batch(method, lr, data1, tmp_path):
    cfg = resolve_defaults(tcfg(data1, tmp_path, method, max_iters=30, lr=lr))
    loop = build_loop(cfg, init_distributed("cpu"))
    loop.dataset = FixedBatch(loop.dataset)
    # distinct class embeddings: the random text tower maps the four names to near-parallel rows
    g = torch.Generator().manual_seed(0)
    loop.text = torch.linalg.qr(torch.randn(loop.text.shape[1], 4, generator=g))[0].T.contiguous()
    losses = _losses(train_loop(loop))
    assert np.mean(losses[-3:]) < 0.3 * losses[0], losses


# ---------------------------------------------------------------- exact resume


@pytest.mark.parametrize("method,how", [("zegclip", "auto"), ("cliprc", "path")])
def test_resume_reproduces_the_next_steps_exactly(method, how, data6, tmp_path):
    """Straight N+M steps vs N steps (checkpoint) then a fresh run for M more: identical records.
    Accumulation 2, transductive with st_start between N and N+M (phase switch after resume)."""
    kw = dict(
        setting="transductive",
        st_start=3,
        accum=2,
        max_iters=5,
        lr=3e-4,
        unseen="blue,yellow",
        ckpt_interval=2,
    )
    straight = run(tcfg(data6, tmp_path / "a", method, **kw)).records
    assert [r.phase for r in straight] == ["inductive"] * 3 + ["st"] * 2
    ckpt = tmp_path / "a" / "iter_2.pt"
    if how == "auto":
        (tmp_path / "b").mkdir()
        shutil.copy(ckpt, tmp_path / "b" / "latest.pt")
        resumed = run(tcfg(data6, tmp_path / "b", method, resume="auto", **kw)).records
    else:
        resumed = run(tcfg(data6, tmp_path / "b", method, resume=str(ckpt), **kw)).records
    assert [r.iteration for r in resumed] == [3, 4, 5]
    assert resumed == straight[2:]  # dataclass ==: every float bit-identical
    assert len({r.loss for r in straight}) == len(straight)  # the steps really differ


def test_resume_refuses_another_method_checkpoint(data6, tmp_path):
    run(tcfg(data6, tmp_path / "z", "zegclip", max_iters=1))
    cfg = tcfg(
        data6, tmp_path / "c", "cliprc", max_iters=2, resume=str(tmp_path / "z" / "iter_1.pt")
    )
    with pytest.raises(CheckpointError, match="zegclip"):
        run(cfg)


# ---------------------------------------------------------------- transductive


def _poly(base, it, max_iters, warmup, power=0.9, min_lr=1e-6, ratio=1e-6):
    regular = (base - min_lr) * (1 - it / max_iters) ** power + min_lr
    return regular * (1 - (1 - it / warmup) * (1 - ratio)) if it < warmup else regular


def test_transductive_phase_lr_restart_and_targets(data6, tmp_path, monkeypatch):
    """Seen = green, yellow (1, 3); unseen = red, blue (0, 2). Inductive steps see 2 text rows and
    seen-list targets; from st_start on, all 4 rows and pseudo-labelled targets."""
    calls, pseudo_out = [], []
    real_loss, real_pseudo = objectives_mod.mask_loss, objectives_mod.pseudo_label

    def spy_loss(logits, target, weights, recovery=None):
        calls.append((logits.shape[1], target.clone(), weights))
        return real_loss(logits, target, weights, recovery)

    def spy_pseudo(label, logits, seen, unseen):
        out = real_pseudo(label, logits, seen, unseen)
        pseudo_out.append((label.clone(), out.clone(), tuple(seen), tuple(unseen)))
        return out

    monkeypatch.setattr(objectives_mod, "mask_loss", spy_loss)
    monkeypatch.setattr(objectives_mod, "pseudo_label", spy_pseudo)
    cfg = tcfg(
        data6,
        tmp_path,
        "zegclip",
        setting="transductive",
        st_start=3,
        max_iters=7,
        warmup_iters=2,
        lr=1e-4,
        unseen="red,blue",
    )
    records = run(cfg).records
    assert [r.phase for r in records] == ["inductive"] * 3 + ["st"] * 4
    base = 1e-4 * 10  # lr * lr_mult
    for r in records:
        it = r.iteration - 1
        want = _poly(base, it, 7, 2) if it < 3 else _poly(base, it - 3, 4, 2)
        assert r.lr == pytest.approx(want, rel=1e-9), r
    assert records[3].lr == pytest.approx(records[0].lr) and records[3].lr < 1e-8  # warm-up again
    assert records[3].lr < records[2].lr and records[4].lr > records[3].lr
    # inductive: 2 seen channels, targets in seen-list ids (green -> 0, yellow -> 1), unseen -> 255
    assert [c[0] for c in calls] == [2, 2, 2, 4, 4, 4, 4]
    for _, target, weights in calls[:3]:
        assert set(target.unique().tolist()) <= {0, 1, 255}
        assert weights.focal == 100.0
    # self-training: pseudo labels only on unseen pixels, only unseen classes, seen/255 untouched
    assert len(pseudo_out) == 4
    for (label, out, seen, unseen), (_, target, weights) in zip(pseudo_out, calls[3:]):
        assert (seen, unseen) == ((1, 3), (0, 2))
        assert torch.equal(target, out)
        keep = (label == 1) | (label == 3) | (label == 255)
        assert torch.equal(out[keep], label[keep])
        assert set(out[~keep].unique().tolist()) <= {0, 2}
        assert weights.focal == 20.0  # ZegCLIP VOC ST config: mask weight 20


def test_seen_only_maps_to_seen_list_index():
    label = torch.tensor([[0, 1, 2, 3, 4, 255]])
    assert seen_only(label, [1, 3]).tolist() == [[255, 0, 255, 1, 255, 255]]
    assert seen_only(label, [4, 0, 2]).tolist() == [[1, 255, 2, 255, 0, 255]]  # list order
    assert seen_only(label, []).tolist() == [[255] * 6]


def test_pseudo_label_only_fills_unseen_pixels_with_unseen_classes():
    g = torch.Generator().manual_seed(0)
    seen, unseen = (1, 3), (0, 2, 4)
    label = torch.randint(0, 5, (3, 12, 12), generator=g)
    label[:, :2] = 255
    logits = torch.randn(3, 5, 12, 12, generator=g)
    logits[:, list(seen)] += 50.0  # seen classes would win everywhere if they were allowed to
    before_label, before_logits = label.clone(), logits.clone()
    out = pseudo_label(label, logits, seen, unseen)
    assert torch.equal(label, before_label) and torch.equal(logits, before_logits)
    is_unseen = (label == 0) | (label == 2) | (label == 4)
    assert torch.equal(out[~is_unseen], label[~is_unseen])
    want = torch.tensor(unseen)[logits[:, list(unseen)].argmax(1)]  # official argmax
    assert torch.equal(out[is_unseen], want[is_unseen])
    assert set(out[is_unseen].unique().tolist()) == set(unseen)
    assert out.dtype == label.dtype


def test_pseudo_label_upsamples_low_resolution_logits():
    g = torch.Generator().manual_seed(1)
    label = torch.full((2, 16, 16), 2, dtype=torch.long)
    label[:, :, :4] = 0  # seen
    logits = torch.randn(2, 3, 4, 4, generator=g)
    out = pseudo_label(label, logits, [0], [1, 2])
    up = torch.nn.functional.interpolate(
        logits, size=(16, 16), mode="bilinear", align_corners=False
    )
    want = torch.tensor([1, 2])[up[:, 1:].argmax(1)]
    assert torch.equal(out[:, :, 4:], want[:, :, 4:]) and out[:, :, :4].eq(0).all()
    assert torch.equal(pseudo_label(label, logits, [0, 1, 2], []), label)


# ---------------------------------------------------------------- evaluation


def _mmseg_windows(size, crop, stride):
    """mmseg slide_inference grid, written out."""
    grids = max(size - crop + stride - 1, 0) // stride + 1
    starts = []
    for i in range(grids):
        y1 = i * stride
        y2 = min(y1 + crop, size)
        starts.append(max(y2 - crop, 0))
    return starts


@pytest.mark.parametrize(
    "size,crop,stride",
    [
        (683, 512, 426),
        (512, 512, 426),
        (1000, 512, 426),
        (2048, 512, 426),
        (300, 512, 426),
        (64, 64, 53),
        (100, 64, 53),
    ],
)
def test_window_starts_match_mmseg(size, crop, stride):
    assert window_starts(size, crop, stride) == _mmseg_windows(size, crop, stride)


def test_window_starts_683():
    assert window_starts(683, 512, 426) == [0, 171]


class _TileModel(torch.nn.Module):
    """Mask logits constant over a tile, equal to the tile's first pixel (its x offset)."""

    def forward(self, tile, text):
        v = tile[:, :1, :1, :1]
        return v.expand(1, text.shape[0], tile.shape[2] // 16, tile.shape[3] // 16).clone()


def test_slide_scores_average_overlapping_windows():
    w = 683
    image = torch.arange(w, dtype=torch.float32).expand(1, 3, 512, w).clone()
    text, bias = torch.zeros(2, 8), torch.tensor([0.1, 0.0])
    out = slide_scores(_TileModel(), image, text, bias, crop=512, stride=426)
    s0, s1 = torch.sigmoid(torch.tensor(0.0)), torch.sigmoid(torch.tensor(171.0))
    assert torch.allclose(out[0, 1, :, :171], s0)
    assert torch.allclose(out[0, 1, :, 171:512], (s0 + s1) / 2)
    assert torch.allclose(out[0, 1, :, 512:], s1)
    assert torch.allclose(out[0, 0], out[0, 1] - 0.1)  # seen bias subtracted per window


@pytest.fixture(scope="module")
def zeg_ckpt(data6, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("zeg_ckpt")
    return run(tcfg(data6, work, "zegclip", max_iters=3, lr=3e-4, unseen="yellow")).checkpoint


def _labelled_pixels(data: Path) -> int:
    return sum(int((np.asarray(Image.open(p)) != 255).sum()) for p in (data / "ann").glob("*.png"))


def test_evaluate_cli_writes_json_and_markdown(zeg_ckpt, data6, tmp_path):
    out = tmp_path / "res" / "eval.json"
    rc = evaluate_cli.main(
        [
            "--checkpoint",
            str(zeg_ckpt),
            "--dataset",
            "folder",
            "--images",
            str(data6 / "img"),
            "--masks",
            str(data6 / "ann"),
            "--classes",
            CLASSES,
            "--unseen",
            "yellow",
            "--json",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    for key in ("miou_seen", "miou_unseen", "hiou", "pacc", "per_class", "miou"):
        assert key in res, key
    assert res["method"] == "zegclip" and res["images"] == 6 and res["crop"] == 64
    assert [c["name"] for c in res["per_class"]] == CLASSES.split(",")
    assert [c["seen"] for c in res["per_class"]] == [True, True, True, False]
    assert sum(c["gt_pixels"] for c in res["per_class"]) == _labelled_pixels(data6)
    assert res["seen_bias"] == pytest.approx(0.1)
    s, u = res["miou_seen"], res["miou_unseen"]
    assert res["hiou"] == pytest.approx(0.0 if s + u == 0 else 2 * s * u / (s + u))
    md = out.with_suffix(".md").read_text()
    assert "mIoU(S)" in md and "yellow" in md and "unseen" in md


def test_checkpoint_of_other_method_is_refused(zeg_ckpt):
    with pytest.raises(CheckpointError) as err:
        load_trained(zeg_ckpt, method="cliprc")
    assert "zegclip" in str(err.value) and "cliprc" in str(err.value)
    assert load_trained(zeg_ckpt, method="zegclip").method == "zegclip"


def test_corrupt_checkpoint_is_refused(tmp_path, data6, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_trained(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_trained(tmp_path / "missing.pt")
    rc = evaluate_cli.main(
        [
            "--checkpoint",
            str(bad),
            "--dataset",
            "folder",
            "--images",
            str(data6 / "img"),
            "--masks",
            str(data6 / "ann"),
            "--classes",
            CLASSES,
            "--json",
            str(tmp_path / "e.json"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


# ---------------------------------------------------------------- bad input via the train CLI


def _bad_size(root: Path) -> dict:
    make_folder(root, 2)
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "ann" / "s1.png")
    return {}


def _bad_label(root: Path) -> dict:
    make_folder(root, 2)
    for p in (root / "ann").glob("*.png"):
        Image.fromarray(np.full((64, 64), 7, np.uint8)).save(p)
    return {}


def _bad_unseen(root: Path) -> dict:
    make_folder(root, 2)
    return {"unseen": "zebra"}


def _voc_empty(root: Path) -> dict:
    (root / "voc").mkdir(parents=True)
    return {
        "dataset": "voc",
        "root": str(root / "voc"),
        "images": None,
        "masks": None,
        "classes": None,
    }


@pytest.mark.parametrize(
    "make,needle",
    [
        (_bad_size, "size"),
        (_bad_label, "outside"),
        (_bad_unseen, "zebra"),
        (_voc_empty, "voc root"),
    ],
)
def test_train_cli_dataset_errors_exit_2(make, needle, tmp_path, capsys):
    rc = train_cli.main(cli_args(tmp_path / "d", tmp_path / "w", **make(tmp_path / "d")))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error:" in err and needle in err
    assert not list((tmp_path / "w").glob("iter_*.pt"))


@pytest.mark.parametrize(
    "extra",
    [
        {"setting": "transductive", "st_start": 9},  # st_start >= max_iters (2)
        {"accum": 0},
        {"method": "cliprc", "crop_size": 48},  # 3x3 patch grid: not divisible by 4 regions
    ],
    ids=["st_start", "accum", "cliprc_crop"],
)
def test_train_cli_config_errors_exit_2(extra, data6, tmp_path, capsys):
    try:  # argparse refuses bounded flags itself (SystemExit), the config the rest
        rc = train_cli.main(cli_args(data6, tmp_path / "w", **extra))
    except SystemExit as e:
        rc = e.code
    assert rc == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_train_cli_missing_resume_checkpoint_exits_2(data6, tmp_path, capsys):
    rc = train_cli.main(cli_args(data6, tmp_path / "w", resume="auto"))
    assert rc == 2 and "latest.pt" in capsys.readouterr().err


def test_amp_on_cpu_trains_in_bfloat16(data6, tmp_path):
    result = run(tcfg(data6, tmp_path, "cliprc", max_iters=2, amp="on"))
    assert all(np.isfinite(r.loss) and r.loss > 0 for r in result.records)
    assert load_trained(result.checkpoint).method == "cliprc"


def test_init_from_official_file_encodes_vocabulary_with_its_text_tower(data6, tmp_path):
    from training.clip_loader import load_clip
    from training.models import build_model
    from training.official import text_tower_state
    from training.text_classifier import build_text_classifier
    from training.zegclip import ZegClipCfg

    other = load_clip("ovss-tiny-vit", "none", seed=123)  # weights unlike the run's seed-0 tower
    model = build_model("zegclip", other, ZegClipCfg(image_size=64))
    sd = {
        **model.state_dict(),
        **{"text_encoder." + k: v for k, v in text_tower_state(other.model).items()},
    }
    path = tmp_path / "official.pth"
    torch.save({"meta": {}, "state_dict": sd, "optimizer": {}}, path)
    cfg = resolve_defaults(tcfg(data6, tmp_path / "w", "zegclip", init_from=str(path)))
    (tmp_path / "w").mkdir()
    loop = build_loop(cfg, init_distributed("cpu"))
    assert torch.equal(loop.model.decode_head.q_proj.weight, model.decode_head.q_proj.weight)
    # The official text encoder is OpenAI CLIP's, so the import switches it to QuickGELU.
    from training.vpt import QuickGELU

    for block in other.model.transformer.resblocks:
        block.mlp.gelu = QuickGELU()
    want = build_text_classifier(other, tuple(CLASSES.split(",")), "zegclip")
    torch.testing.assert_close(loop.text, want)


# ---------------------------------------------------------------- DDP (2 CPU processes, gloo)


def _rank_logs(log_dir: Path, rank: int) -> str:
    """stderr of local rank ``rank`` from torchrun's --log-dir/--redirects layout."""
    files = list(log_dir.glob(f"*/attempt_0/{rank}/stderr.log"))
    assert len(files) == 1, files
    return files[0].read_text()


def _logged_losses(text: str) -> dict[int, float]:
    """iteration -> loss from the trainer's 'iter N [phase] lr .. loss X' lines."""
    out = {}
    for ln in text.splitlines():
        m = re.search(r"iter (\d+) \[\w+\] lr \S+ loss (\S+)", ln)
        if m:
            out[int(m.group(1))] = float(m.group(2))
    return out


def test_ddp_two_processes_train_and_evaluate(data6, tmp_path):
    """torchrun, 2 CPU processes (gloo): both ranks train on their own samples (rank r takes
    samples (m*2 + r)*batch + b), the loss normaliser is averaged over ranks, the final checkpoint
    is written once, and the evaluation sums both ranks' shards."""
    work, logs, iters = tmp_path / "ddp", tmp_path / "logs", 3
    common = dict(max_iters=iters, lr=3e-4, unseen="yellow", log_interval=1)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--log-dir",
        str(logs),
        "--redirects",
        "3",
        "-m",
        "training.train",
        *cli_args(data6, work, **common),
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
    ckpt = work / f"iter_{iters}.pt"
    assert ckpt.is_file()
    rank_logs = [_rank_logs(logs, r) for r in (0, 1)]
    assert f"done: {iters} iterations" in rank_logs[0], rank_logs[0][-3000:]
    # runtime.cli.setup_logging: under torchrun only rank 0 logs at INFO
    assert "done:" not in rank_logs[1] and not _logged_losses(rank_logs[1]), rank_logs[1][-3000:]
    losses = [_logged_losses(rank_logs[0])]
    assert sorted(losses[0]) == list(range(1, iters + 1))
    logged = [json.loads(ln)["loss"] for ln in (work / "train_log.jsonl").read_text().splitlines()]
    assert [round(x, 4) for x in logged] == [losses[0][i] for i in range(1, iters + 1)]

    # rank 0's first step = a single-process run's first step (same samples, same dropout
    # stream), rescaled by the rank-averaged number of present (image, class) masks
    cfg = resolve_defaults(
        tcfg(data6, tmp_path / "single", "zegclip", batch_size=2, warmup_iters=1, **common)
    )
    single = run(cfg).records
    ds = build_loop(cfg, init_distributed("cpu")).dataset
    n, firsts = [], []
    for rank in (0, 1):
        sampler = KeySampler(len(ds), 2, cfg.seed, rank, 2, 0)
        firsts.append(next(iter(sampler)))
        labels = torch.stack([ds[key].label for key in firsts[-1]])
        n.append(float(one_hot_targets(seen_only(labels, ds.seen), len(ds.seen))[1]))
    # the ranks' first micro-batches are different samples (rank 1's own evidence is its share
    # n[1] in rank 0's loss normaliser below: rank 1 logs warnings only)
    assert {k[0] for k in firsts[0]}.isdisjoint({k[0] for k in firsts[1]})
    assert losses[0][1] == pytest.approx(single[0].loss * n[0] / ((n[0] + n[1]) / 2), abs=2e-4)

    res = json.loads((work / "eval.json").read_text())
    for key in ("miou_seen", "miou_unseen", "hiou", "pacc", "per_class"):
        assert key in res
    assert res["images"] == 6
    # the confusion matrix holds both ranks' shards: every labelled pixel of the val set ...
    assert sum(c["gt_pixels"] for c in res["per_class"]) == _labelled_pixels(data6)
    # ... and matches a single-process evaluation of the same checkpoint
    ref = evaluate_cli.evaluate_checkpoint(
        evaluate_cli.EvalCfg(
            checkpoint=str(ckpt),
            dataset="folder",
            images=str(data6 / "img"),
            masks=str(data6 / "ann"),
            classes=CLASSES,
            unseen="yellow",
            json=str(tmp_path / "single.json"),
            device="cpu",
        )
    )
    assert [c["gt_pixels"] for c in res["per_class"]] == [c.gt_pixels for c in ref.per_class]
    assert res["pacc"] == pytest.approx(ref.pacc, abs=0.05)
    for got, want in zip(res["per_class"], ref.per_class):
        assert (got["iou"] or 0.0) == pytest.approx(
            want.iou if want.iou == want.iou else 0.0, abs=0.5
        )


def test_checkpoint_without_its_clip_weights(data6, tmp_path):
    """Visual weights live in the checkpoint: the run's own vocabulary still evaluates/exports when
    the CLIP weights it was trained from are gone; a new vocabulary is refused clearly."""
    from runtime.errors import VocabularyError
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.loading import class_text

    result = run(tcfg(data6, tmp_path / "w", "zegclip", max_iters=1))
    state = load_checkpoint(result.checkpoint)
    moved = tmp_path / "moved.pt"
    save_checkpoint(
        moved,
        dataclasses.replace(state, cfg={**state.cfg, "pretrained": str(tmp_path / "gone.pt")}),
    )
    trained = load_trained(moved)
    assert not trained.text_tower
    torch.testing.assert_close(class_text(trained, trained.classes), state.text)
    with pytest.raises(VocabularyError, match="text-embeddings"):
        class_text(trained, ("cat", "dog"))


def test_self_training_starts_a_fresh_optimizer(data6, tmp_path):
    """Official ST runs load weights only: AdamW's moments and step count restart at st_start."""
    from training.checkpoint import load_checkpoint

    result = run(
        tcfg(
            data6,
            tmp_path / "w",
            "zegclip",
            max_iters=5,
            setting="transductive",
            st_start=3,
            unseen="yellow",
        )
    )
    steps = {
        float(v["step"]) for v in load_checkpoint(result.checkpoint).optimizer["state"].values()
    }
    assert steps == {2.0}  # iterations 3 and 4 only, not 5
