"""Learning-rate schedule of the official configs: linear warm-up, then poly decay to a floor.

Stateless (a function of the iteration), so resuming from a checkpoint needs only the iteration.
Matches mmcv's ``PolyLrUpdaterHook`` with ``warmup='linear'``:
    regular = (base - min_lr) * (1 - it / max_iters) ** power + min_lr
    warm-up (it < warmup_iters): regular * (1 - (1 - it / warmup_iters) * (1 - warmup_ratio))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PolyCfg:
    """Poly decay with linear warm-up; lrs are absolute, per parameter group before multipliers."""

    max_iters: int
    power: float = 0.9
    min_lr: float = 1e-6
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6


def poly_lr(base_lr: float, it: int, cfg: PolyCfg) -> float:
    """Learning rate at iteration ``it`` (0-based) for a group whose initial lr is ``base_lr``."""
    progress = min(it, cfg.max_iters) / max(cfg.max_iters, 1)
    regular = (base_lr - cfg.min_lr) * (1.0 - progress) ** cfg.power + cfg.min_lr
    if it < cfg.warmup_iters:
        k = (1.0 - it / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
        return regular * (1.0 - k)
    return regular


def set_lr(optimizer: torch.optim.Optimizer, it: int, cfg: PolyCfg) -> float:
    """Write every group's lr for iteration ``it`` from its ``initial_lr``; return the first
    group's."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = poly_lr(group["initial_lr"], it, cfg)
    return optimizer.param_groups[0]["lr"]
