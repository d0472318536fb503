"""The training loop shared by every trainable method: two phases (the second one self-training),
AMP, accumulation, exact resume, TensorBoard, DDP. What a micro-batch computes is the method's
``objective`` (``training.objectives``); the loop only schedules, steps and records.

Determinism: micro-batch m of rank r draws samples g = (m*world + r)*batch + b; sample g is
``perm(seed, g // N)[g % N]`` augmented with a seed derived from (seed, g), and the dropout RNG is
reseeded from (seed, iteration, rank) every step. Resuming therefore needs only the iteration.

Crash and resume: checkpoints are written atomically (``training.checkpoint``); a run starts by
removing the temp files a killed run left and by cutting ``train_log.jsonl`` (and TensorBoard's
events) back to the iteration it starts from, so the log of a resumed run holds each iteration
once, in order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from runtime.errors import CheckpointError
from runtime.fsutil import atomic_write_text
from training.checkpoint import TrainState, load_checkpoint, remove_stale_temps, save_checkpoint
from training.distributed import DistInfo
from training.schedule import PolyCfg, set_lr
from training.train_config import TrainCfg

log = logging.getLogger(__name__)


def sample_seed(seed: int, counter: int) -> int:
    """Augmentation seed of global sample ``counter``."""
    return int(np.random.SeedSequence([seed, counter]).generate_state(1)[0])


class KeySampler(Sampler):
    """Endless micro-batches of (dataset index, augmentation seed) keys for one rank."""

    def __init__(self, n: int, batch: int, seed: int, rank: int, world: int, start: int):
        self.n, self.batch, self.seed, self.rank, self.world, self.start = (
            n,
            batch,
            seed,
            rank,
            world,
            start,
        )
        self._epoch, self._perm = -1, None

    def key(self, g: int) -> tuple[int, int]:
        epoch, pos = divmod(g, self.n)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(self._perm[pos]), sample_seed(self.seed, g)

    def __iter__(self):
        m = self.start
        while True:
            base = (m * self.world + self.rank) * self.batch
            yield [self.key(base + b) for b in range(self.batch)]
            m += 1


class Terms(Protocol):
    """What an objective returns: the total loss and its named, weighted parts (scalars)."""

    total: torch.Tensor

    def parts(self) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class StepRecord:
    """One optimiser step: iteration (1-based), phase, lr, the loss and its named parts (means
    over the micro-batches)."""

    iteration: int
    phase: str
    lr: float
    loss: float
    terms: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    """What a call to ``train_loop`` did."""

    work_dir: Path
    checkpoint: Path
    records: tuple[StepRecord, ...]
    seconds: float


class _Forward(nn.Module):
    """Routes DDP's forward to the model's training outputs (e.g. mask logits and recovery term)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image, text):
        return self.model.train_outputs(image, text)


@dataclass
class Loop:
    """Everything the loop mutates or reads; built by ``training.train``.

    Attributes:
        text: [C,D] classifier of the classes the model scores (all dataset classes; MaskCLIP+
            with a background embedding: all but class 0).
        objective: (loop, forward module, batch, phase) -> Terms for one micro-batch.
        first_phase: name of the phase before ``st_start`` ("inductive", "teacher").
        restart_at_st: the self-training phase is a new run (ZegCLIP / CLIP-RC: the official ST
            config loads weights only): fresh optimizer state and a fresh lr schedule.
        teacher: frozen model the objective may use (MaskCLIP+'s MaskCLIP); not trained, not saved.
        model_cfg: the dataclass ``model`` was built from (ZegClipCfg, StudentCfg); saved in every
            checkpoint, so loading rebuilds the model without the training schedule.
    """

    cfg: TrainCfg
    model: nn.Module
    dataset: object
    text: torch.Tensor
    seen: tuple[int, ...]
    unseen: tuple[int, ...]
    classes: tuple[str, ...]
    info: DistInfo
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    objective: Callable[[Any, nn.Module, Any, str], Terms]
    first_phase: str = "inductive"
    restart_at_st: bool = True
    teacher: nn.Module | None = None
    start: int = 0
    model_cfg: Any = None


def phase_of(loop: Loop, it: int) -> str:
    st = loop.cfg.st_start
    return "st" if st is not None and it >= st else loop.first_phase


def lr_at(loop: Loop, it: int) -> float:
    cfg = loop.cfg
    if loop.restart_at_st and phase_of(loop, it) == "st":  # the ST run restarts its schedule
        poly = PolyCfg(cfg.max_iters - cfg.st_start, cfg.power, cfg.min_lr, cfg.warmup_iters)
        return set_lr(loop.optimizer, it - cfg.st_start, poly)
    return set_lr(
        loop.optimizer, it, PolyCfg(cfg.max_iters, cfg.power, cfg.min_lr, cfg.warmup_iters)
    )


def autocast(loop: Loop):
    """The AMP context of the loop's device and dtype (a no-op without AMP)."""
    dev = loop.info.device
    return torch.autocast(dev.type, dtype=loop.amp_dtype) if loop.amp_dtype else nullcontext()


def _save(loop: Loop, it: int) -> Path:
    work = Path(loop.cfg.work_dir)
    cfg = {**dataclasses.asdict(loop.cfg), "world_size": loop.info.world_size}
    state = TrainState(
        method=loop.cfg.method,
        iteration=it,
        cfg=cfg,
        classes=loop.classes,
        seen=loop.seen,
        unseen=loop.unseen,
        state_dict=loop.model.state_dict(),
        optimizer=loop.optimizer.state_dict(),
        scaler=loop.scaler.state_dict(),
        text=loop.text.detach().cpu(),
        model_cfg=loop.model_cfg,
    )
    path = save_checkpoint(work / f"iter_{it}.pt", state)
    link_latest(path, work / "latest.pt")
    return path


def link_latest(path: Path, latest: Path) -> None:
    """Point ``latest`` at ``path`` atomically: a hard link (no second copy) renamed into place;
    on any failure the temp link is removed and ``latest`` is left as it was."""
    tmp = latest.with_name(f".{latest.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # no hard links on this file system: copy instead
            shutil.copyfile(path, tmp)
        os.replace(tmp, latest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


LOG_NAME = "train_log.jsonl"


def trim_log(path: Path, last: int) -> int:
    """Cut the JSONL training log at ``path`` back to iterations ``<= last`` (the iteration the
    run starts from), atomically; a missing log is left missing.

    Refused (dropped): lines past ``last`` (steps of a run that died before its next checkpoint),
    lines that are not a JSON object with an integer ``iteration`` (a line cut by a kill), and
    all but the last copy of an iteration (logs of older versions, which appended after resume).
    The lines kept are written in iteration order.

    Returns:
        How many lines were dropped.
    """
    if not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    kept: dict[int, str] = {}
    for line in lines:
        it = _log_iteration(line)
        if it is not None and it <= last:
            kept[it] = line  # the later copy wins: it led to the checkpoint resumed from
    new = "".join(kept[i] + "\n" for i in sorted(kept))
    if new != text:  # also a last line without its newline (appending would glue the next)
        atomic_write_text(path, new)
    dropped = len(lines) - len(kept)
    if dropped:
        log.warning(
            "%s: dropped %d line(s) past iteration %d or unreadable (a run that stopped "
            "before its next checkpoint)",
            path,
            dropped,
            last,
        )
    return dropped


def _log_iteration(line: str) -> int | None:
    """The ``iteration`` of one log line; None for a line that is not a log record."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    it = rec.get("iteration") if isinstance(rec, dict) else None
    return it if isinstance(it, int) and not isinstance(it, bool) and it > 0 else None


def prepare_work_dir(loop: Loop) -> None:
    """Before the first step (main rank): remove a killed run's temp files and cut the log back
    to ``loop.start``, the iteration this run resumes from (0: a fresh run, an empty log)."""
    work = Path(loop.cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(work)
    trim_log(work / LOG_NAME, loop.start)


def resume(loop: Loop, path: str | Path) -> None:
    """Restore model, optimizer, scaler and the iteration from one of our checkpoints."""
    state = load_checkpoint(path)
    if state.method != loop.cfg.method or state.classes != loop.classes:
        raise CheckpointError(
            f"{path} was written by a {state.method} run on {len(state.classes)} "
            f"classes; this run is {loop.cfg.method} on {len(loop.classes)}"
        )
    keys = (
        "setting",
        "st_start",
        "max_iters",
        "batch_size",
        "accum",
        "seed",
        "optimizer",
        "lr",
        "lr_mult",
        "world_size",
    )
    was = {
        k: state.cfg.get(k, "adamw" if k == "optimizer" else None) for k in keys
    }  # older runs: AdamW
    now = {**{k: getattr(loop.cfg, k) for k in keys[:-1]}, "world_size": loop.info.world_size}
    if state.unseen != loop.unseen or was != now:
        raise CheckpointError(
            f"{path} was written with unseen {list(state.unseen)} and {was}; this "
            f"run has unseen {list(loop.unseen)} and {now}: resume would not be exact"
        )
    if state.text is not None and not torch.equal(state.text, loop.text.cpu()):
        raise CheckpointError(
            f"{path} was trained with other text embeddings (templates or "
            "--text-embeddings changed): resume would not be exact"
        )
    loop.model.load_state_dict(state.state_dict)
    loop.optimizer.load_state_dict(state.optimizer)
    if state.scaler:
        loop.scaler.load_state_dict(state.scaler)
    loop.start = state.iteration
    log.info("resumed from %s at iteration %d", path, state.iteration)


def _writer(loop: Loop):
    if not loop.info.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: no TensorBoard logs (pip install '.[train]')")
        return None
    # purge_step: events of steps > start (written by a run that died before its next
    # checkpoint) are hidden, as the log's lines past it are dropped
    return SummaryWriter(str(Path(loop.cfg.work_dir) / "tb"), purge_step=loop.start + 1)


def _record(loop: Loop, rec: StepRecord, writer, log_file) -> None:
    if writer is not None:
        for key, value in {"loss": rec.loss, "lr": rec.lr, **rec.terms}.items():
            writer.add_scalar(f"train/{key}", value, rec.iteration)
    if log_file is not None:
        log_file.write(json.dumps(dataclasses.asdict(rec)) + "\n")
        log_file.flush()
    if rec.iteration % loop.cfg.log_interval == 0:
        parts = " ".join(f"{k} {v:.4f}" for k, v in rec.terms.items())
        log.info(
            "iter %d [%s] lr %.3g loss %.4f (%s)", rec.iteration, rec.phase, rec.lr, rec.loss, parts
        )


def train_loop(loop: Loop) -> TrainResult:
    """Run from ``loop.start`` to ``cfg.max_iters``; checkpoint every ``ckpt_interval`` and at
    the end."""
    cfg, info, t0 = loop.cfg, loop.info, time.perf_counter()
    fwd: nn.Module = _Forward(loop.model)
    if info.world_size > 1:
        ids = [info.device.index] if info.device.type == "cuda" else None
        # Batch-norm statistics (MaskCLIP+ students on CPU) follow rank 0; ZegCLIP / CLIP-RC have
        # no batch norm and only constant buffers.
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in loop.model.modules())
        fwd = DistributedDataParallel(
            fwd, device_ids=ids, find_unused_parameters=True, broadcast_buffers=has_bn
        )
    sampler = KeySampler(
        len(loop.dataset),
        cfg.batch_size,
        cfg.seed,
        info.rank,
        info.world_size,
        loop.start * cfg.accum,
    )
    loader = iter(
        DataLoader(
            loop.dataset,
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=info.device.type == "cuda",
        )
    )
    if info.is_main:
        prepare_work_dir(loop)
    writer = _writer(loop)
    log_file = open(Path(cfg.work_dir) / LOG_NAME, "a", encoding="utf-8") if info.is_main else None
    records, last = [], Path(cfg.work_dir) / "latest.pt"
    loop.model.train()
    bar = tqdm(range(loop.start, cfg.max_iters), disable=not info.is_main, desc=cfg.method)
    try:
        for it in bar:
            if loop.restart_at_st and it == cfg.st_start and it > 0:
                # The official self-training run loads weights only (--load-from): AdamW starts
                # afresh. Resume stays exact: checkpoints after this point hold the reset state.
                loop.optimizer.state.clear()
            phase, lr = phase_of(loop, it), lr_at(loop, it)
            torch.manual_seed(sample_seed(cfg.seed, (it * info.world_size + info.rank) * 7919 + 1))
            total, sums = 0.0, {}
            for a in range(cfg.accum):
                sync = a == cfg.accum - 1 or not isinstance(fwd, DistributedDataParallel)
                with nullcontext() if sync else fwd.no_sync():
                    terms = loop.objective(loop, fwd, next(loader), phase)
                    loop.scaler.scale(terms.total / cfg.accum).backward()
                total += terms.total.item() / cfg.accum
                for k, v in terms.parts().items():
                    sums[k] = sums.get(k, 0.0) + v.item() / cfg.accum
            loop.scaler.step(loop.optimizer)
            loop.scaler.update()
            loop.optimizer.zero_grad(set_to_none=True)
            rec = StepRecord(it + 1, phase, lr, float(total), sums)
            records.append(rec)
            bar.set_postfix(loss=f"{rec.loss:.4f}", phase=phase)
            _record(loop, rec, writer, log_file)
            if info.is_main and ((it + 1) % cfg.ckpt_interval == 0 or it + 1 == cfg.max_iters):
                last = _save(loop, it + 1)
    finally:
        if log_file is not None:
            log_file.close()
        if writer is not None:
            writer.close()
    return TrainResult(Path(cfg.work_dir), last, tuple(records), time.perf_counter() - t0)
