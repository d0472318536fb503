"""Training outputs after a crash, a kill and a resume: no orphan temp files, the previous
checkpoint always whole, checkpoints readable with ``torch.load(weights_only=True)``, and a
JSONL log that holds each iteration once, in order, whatever happened before.

Data: the tiny synthetic folder dataset and the ``ovss-tiny-vit`` ZegCLIP of test_training.py
(a 6-step run takes about a second on one CPU thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from synthetic import make_folder, tiny_train_cfg

from training import checkpoint as checkpoint_mod
from training import trainer as trainer_mod
from training.checkpoint import load_checkpoint, remove_stale_temps
from training.distributed import init_distributed
from training.train import build_loop, run
from training.train_config import resolve_defaults
from training.trainer import link_latest, train_loop, trim_log

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data6(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("hostile_data6"), 6)


def tcfg(data: Path, work: Path, **kw):
    base = {"max_iters": 6, "warmup_iters": 2, "ckpt_interval": 2, "lr": 3e-4}
    return tiny_train_cfg(data, work, "zegclip", **{**base, **kw})


def log_records(work: Path) -> list[dict]:
    return [json.loads(ln) for ln in (work / "train_log.jsonl").read_text().splitlines()]


def temps(work: Path) -> list[str]:
    return sorted(p.name for p in work.rglob("*.tmp"))


class Crash(RuntimeError):
    """The injected failure."""


def crash_at(loop, iteration: int):
    """Make the objective of step ``iteration`` (1-based, accumulation 1) raise ``Crash``."""
    objective, calls = loop.objective, [0]

    def wrapped(*args):
        calls[0] += 1
        if calls[0] == iteration:
            raise Crash(f"injected at iteration {iteration}")
        return objective(*args)

    loop.objective = wrapped


def run_until_crash(cfg, iteration: int) -> None:
    loop = build_loop(resolve_defaults(cfg), init_distributed("cpu"))
    crash_at(loop, iteration)
    with pytest.raises(Crash):
        train_loop(loop)


@pytest.fixture(scope="module")
def straight(data6, tmp_path_factory) -> list[dict]:
    """The log of an uninterrupted 6-step run: what every interrupted run must end up with."""
    work = tmp_path_factory.mktemp("straight")
    run(tcfg(data6, work))
    records = log_records(work)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5, 6]
    return records


# ---------------------------------------------------------------- the log after a resume


def test_crash_past_a_checkpoint_then_resume_logs_each_iteration_once(data6, tmp_path, straight):
    """Crash in step 6 (steps 5 logged after the iteration-4 checkpoint), and a kill that cut
    a line in half; resume: steps 1..6 once each, in order, identical to the straight run."""
    work = tmp_path / "w"
    run_until_crash(tcfg(data6, work), iteration=6)
    assert [r["iteration"] for r in log_records(work)] == [1, 2, 3, 4, 5]
    assert load_checkpoint(work / "latest.pt").iteration == 4
    with open(work / "train_log.jsonl", "a") as f:
        f.write('{"iteration": 6, "phase": "induc')  # the kill cut the last line
    result = run(tcfg(data6, work, resume="auto"))
    assert [r.iteration for r in result.records] == [5, 6]
    assert log_records(work) == straight  # each step once, in order, every value exact
    assert temps(work) == []


def test_resume_from_an_earlier_checkpoint_cuts_the_log_back(data6, tmp_path, straight):
    """A finished run resumed from its iteration-2 checkpoint: the log keeps steps 1..2 and the
    new run appends 3..6 (not 1..6 then 3..6)."""
    work = tmp_path / "w"
    run(tcfg(data6, work))
    run(tcfg(data6, work, resume=str(work / "iter_2.pt")))
    assert log_records(work) == straight


def test_a_fresh_run_in_a_used_work_dir_starts_a_fresh_log(data6, tmp_path, straight):
    work = tmp_path / "w"
    run(tcfg(data6, work, max_iters=3))
    run(tcfg(data6, work))
    assert log_records(work) == straight


def test_trim_log_keeps_the_last_copy_in_order_and_drops_broken_lines(tmp_path):
    """A log of an older version that appended after resume (1..5, 3..4), plus lines that are
    not records: cut back to 4, the later copies of 3 and 4 win."""
    path = tmp_path / "train_log.jsonl"
    rows = [{"iteration": i, "loss": float(i)} for i in range(1, 6)]
    rows += [{"iteration": i, "loss": 10.0 + i} for i in (3, 4)]
    junk = ["", "not json", "[1, 2]", '{"iteration": "3"}', '{"iteration": true}', '{"loss": 1}']
    path.write_text("\n".join([json.dumps(r) for r in rows] + junk) + "\n")
    assert trim_log(path, 4) == len(junk) + 3  # 5, the first 3 and 4, and the junk
    got = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert got == [rows[0], rows[1], rows[5], rows[6]]
    assert trim_log(path, 4) == 0 and trim_log(path, 2) == 2 and len(path.read_text()) > 0
    assert trim_log(path, 0) == 2 and path.read_text() == ""


def test_trim_log_completes_a_last_line_without_newline(tmp_path):
    path = tmp_path / "train_log.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}')
    assert trim_log(path, 5) == 0
    assert path.read_text() == '{"iteration": 1}\n{"iteration": 2}\n'
    assert trim_log(tmp_path / "missing.jsonl", 3) == 0
    assert not (tmp_path / "missing.jsonl").exists()


# ---------------------------------------------------------------- temp files and checkpoints


def test_checkpoints_load_with_weights_only(data6, tmp_path):
    work = tmp_path / "w"
    run(tcfg(data6, work, max_iters=2))
    for name in ("iter_2.pt", "latest.pt"):
        obj = torch.load(work / name, map_location="cpu", weights_only=True)
        assert obj["format"] == "ovss-train" and obj["iteration"] == 2
    assert os.path.samefile(work / "iter_2.pt", work / "latest.pt")


def test_stale_temps_are_removed_at_start_and_nothing_else(data6, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    stale = [
        ".iter_4.pt.k2j3h4.tmp",
        ".latest.pt.4242.tmp",
        ".train_log.jsonl.a1b2.tmp",
        ".eval.json.zz.tmp",
    ]
    kept = ["notes.tmp", ".other.x.tmp", ".iter_4.pt.tmp", "iter_4.pt.x.tmp"]
    for name in stale + kept:
        (work / name).write_bytes(b"half a checkpoint")
    (work / ".latest.pt.1.tmp").mkdir()  # a folder is not ours to remove
    run(tcfg(data6, work, max_iters=2))
    assert sorted(p.name for p in work.iterdir() if p.name.endswith(".tmp")) == sorted(
        kept + [".latest.pt.1.tmp"]
    )
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp(data6, tmp_path, monkeypatch):
    """The second checkpoint's write fails half-way (disk full): the error comes out, the
    first checkpoint is whole, latest.pt still points at it, and no temp file is left."""
    work, real_save, saves = tmp_path / "w", torch.save, [0]

    def failing_save(obj, f, *a, **kw):
        saves[0] += 1
        if saves[0] == 2:
            Path(f).write_bytes(b"PK\x03\x04 half")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint_mod.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        run(tcfg(data6, work))
    assert temps(work) == [] and not (work / "iter_4.pt").exists()
    assert load_checkpoint(work / "latest.pt").iteration == 2


def test_link_latest_failure_leaves_latest_and_no_temp(tmp_path, monkeypatch):
    old, new, latest = tmp_path / "iter_2.pt", tmp_path / "iter_4.pt", tmp_path / "latest.pt"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    link_latest(old, latest)

    def refuse(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(trainer_mod.os, "replace", refuse)
    with pytest.raises(OSError):
        link_latest(new, latest)
    assert latest.read_bytes() == b"old" and temps(tmp_path) == []


KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    sys.path.insert(0, "tests")
    import torch
    from synthetic import tiny_train_cfg
    from training import checkpoint
    from training.train import run

    torch.set_num_threads(1)
    real_save, saves = torch.save, [0]

    def save(obj, f, *a, **kw):
        saves[0] += 1
        if saves[0] == 2:  # the iteration-4 checkpoint: half written, then SIGKILL-like
            Path(f).write_bytes(b"PK half a checkpoint")
            os._exit(137)
        return real_save(obj, f, *a, **kw)

    checkpoint.torch.save = save
    data, work = Path(sys.argv[1]), Path(sys.argv[2])
    run(tiny_train_cfg(data, work, "zegclip", max_iters=6, warmup_iters=2, ckpt_interval=2,
                       lr=3e-4))
    """
)


def test_a_kill_during_a_save_then_resume(data6, tmp_path, straight):
    """A process killed while writing the iteration-4 checkpoint leaves the iteration-2 one
    loadable and its temp file; the resumed run removes the temp file and logs 1..6 once."""
    work = tmp_path / "w"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, str(data6), str(work)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert [t.split(".")[1] for t in temps(work)] == ["iter_4"]  # the kill left its temp file
    assert load_checkpoint(work / "latest.pt").iteration == 2
    assert [r["iteration"] for r in log_records(work)] == [1, 2, 3, 4]
    run(tcfg(data6, work, resume="auto"))
    assert temps(work) == []
    assert log_records(work) == straight
    assert load_checkpoint(work / "latest.pt").iteration == 6
