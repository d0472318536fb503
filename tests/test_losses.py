"""Losses and the lr schedule against hand / loop references of the official formulas
(research notes sections 4 and 6.2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    LossWeights,
    dice,
    mask_loss,
    one_hot_targets,
    recovery_l1,
    sigmoid_focal,
)
from training.schedule import PolyCfg, poly_lr, set_lr


def _labels() -> torch.Tensor:
    """[3,6,8] labels over C=4: image 0 has classes 0,1,3 and ignore; image 1 only class 2;
    image 2 is all ignore (no class present)."""
    label = torch.full((3, 6, 8), 255, dtype=torch.long)
    label[0, :3, :4], label[0, :3, 4:], label[0, 3:, :5] = 0, 1, 3
    label[1] = 2
    label[1, 0, 0] = 255
    return label


def _focal_ref(x: float, t: float) -> float:
    """Per-pixel sigmoid focal, alpha 0.25, gamma 2, written out in scalars."""
    p = 1.0 / (1.0 + math.exp(-x))
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = 0.25 * t + 0.75 * (1 - t)
    return alpha_t * ce * (1 - p_t) ** 2


def _reference(logits: torch.Tensor, label: torch.Tensor, w_focal: float, w_dice: float):
    """Official SegPlusCriterion, one (image, class) mask at a time (notes 4.1-4.3)."""
    b, c = logits.shape[:2]
    present = [(i, k) for i in range(b) for k in range(c) if bool((label[i] == k).any())]
    num_masks = max(len(present), 1)
    focal = 0.0
    for i in range(b):
        for k in range(c):  # every mask, absent classes included; 255 pixels are negatives
            xs, ts = logits[i, k].flatten().tolist(), (label[i] == k).flatten().float().tolist()
            focal += sum(_focal_ref(x, t) for x, t in zip(xs, ts)) / len(xs)
    dice_sum = 0.0
    for i, k in present:  # dice only over present pairs; 255 pixels count in sum(p)
        p = torch.sigmoid(logits[i, k].double()).flatten()
        t = (label[i] == k).flatten().double()
        dice_sum += 1 - (2 * (p * t).sum().item() + 1) / (p.sum().item() + t.sum().item() + 1)
    return w_focal * focal / num_masks, w_dice * dice_sum / num_masks, num_masks


def test_focal_and_dice_match_loop_reference():
    label = _labels()
    logits = torch.randn(3, 4, 6, 8, generator=torch.Generator().manual_seed(0)) * 3
    terms = mask_loss(logits, label, LossWeights(focal=100.0, dice=1.0))
    focal, dice_ref, n = _reference(logits, label, 100.0, 1.0)
    assert n == 4  # (0,0) (0,1) (0,3) (1,2)
    assert terms.focal.item() == pytest.approx(focal, rel=1e-5)
    assert terms.dice.item() == pytest.approx(dice_ref, rel=1e-5)
    assert terms.recovery.item() == 0.0
    assert terms.total.item() == pytest.approx(focal + dice_ref, rel=1e-5)


def test_ignore_pixels_are_negatives_for_every_class():
    """Raising the logit of a 255 pixel raises focal (it is a negative) for every class, and
    raises dice for a present class (its probability counts in sum(p))."""
    label = _labels()
    assert label[0, 5, 7] == 255 and label[2, 0, 0] == 255
    logits = torch.zeros(3, 4, 6, 8)
    base = mask_loss(logits, label, LossWeights(1.0, 1.0))
    for k in range(4):
        bumped = logits.clone()
        bumped[2, k, 0, 0] = 5.0  # image 2 is all ignore: every channel is absent there
        assert mask_loss(bumped, label, LossWeights(1.0, 1.0)).focal > base.focal
    bumped = logits.clone()
    bumped[0, 0, 5, 7] = 5.0  # ignore pixel of image 0, class 0 present in image 0
    after = mask_loss(bumped, label, LossWeights(1.0, 1.0))
    assert after.focal > base.focal and after.dice > base.dice


def test_low_resolution_logits_are_upsampled_bilinearly():
    label = _labels()
    low = torch.randn(3, 4, 3, 4, generator=torch.Generator().manual_seed(1))
    up = F.interpolate(low, size=(6, 8), mode="bilinear", align_corners=False)
    a = mask_loss(low, label, LossWeights(7.0, 2.0))
    b = mask_loss(up, label, LossWeights(7.0, 2.0))
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-6)
    focal, dice_ref, _ = _reference(up, label, 7.0, 2.0)
    assert a.focal.item() == pytest.approx(focal, rel=1e-5)
    assert a.dice.item() == pytest.approx(dice_ref, rel=1e-5)


def test_all_ignore_batch_divides_by_one():
    label = torch.full((2, 4, 4), 255, dtype=torch.long)
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    terms = mask_loss(logits, label, LossWeights(1.0, 1.0))
    focal, _, n = _reference(logits, label, 1.0, 1.0)
    assert n == 1
    assert terms.focal.item() == pytest.approx(focal, rel=1e-5)
    assert terms.dice.item() == 0.0


def test_recovery_term_is_weighted_and_added():
    label = _labels()
    logits = torch.randn(3, 4, 6, 8, generator=torch.Generator().manual_seed(3))
    plain = mask_loss(logits, label, LossWeights(100.0, 1.0, 2.0))
    rec = mask_loss(logits, label, LossWeights(100.0, 1.0, 2.0), recovery=torch.tensor(0.75))
    assert rec.recovery.item() == pytest.approx(1.5)
    assert rec.total.item() == pytest.approx(plain.total.item() + 1.5, rel=1e-6)


def test_sigmoid_focal_and_dice_building_blocks():
    x = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    t = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    want = sum(
        sum(_focal_ref(a, b) for a, b in zip(xr, tr)) / 3 for xr, tr in zip(x.tolist(), t.tolist())
    )
    assert sigmoid_focal(x, t).item() == pytest.approx(want, rel=1e-6)
    p = torch.sigmoid(x)
    want_dice = sum(
        1 - (2 * (pr * tr).sum() + 1) / (pr.sum() + tr.sum() + 1) for pr, tr in zip(p, t)
    )
    assert dice(x, t).item() == pytest.approx(want_dice.item(), rel=1e-6)


def test_one_hot_targets_and_num_masks():
    label = _labels()
    targets, n = one_hot_targets(label, 4)
    assert targets.shape == (3, 4, 6, 8) and n.item() == 4
    assert torch.equal(targets.argmax(1)[label != 255], label[label != 255])
    assert targets.sum(1)[label == 255].eq(0).all()
    assert targets.sum(1)[label != 255].eq(1).all()


@pytest.mark.parametrize("bad", [4, 7, -1, 254])
def test_one_hot_targets_rejects_out_of_range_labels(bad):
    label = _labels()
    label[0, 0, 0] = bad
    with pytest.raises(ValueError, match=str(bad)):
        one_hot_targets(label, 4)
    with pytest.raises(ValueError):
        mask_loss(torch.zeros(3, 4, 6, 8), label, LossWeights())


def test_recovery_l1_is_mean_abs_and_does_not_train_targets():
    g = torch.Generator().manual_seed(4)
    pq = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    tq = torch.randn(2, 5, 8, generator=g)
    pv = torch.randn(2, 9, 4, generator=g, requires_grad=True)
    tv = torch.randn(2, 9, 4, generator=g)
    tq.requires_grad_(True)
    tv.requires_grad_(True)
    loss = recovery_l1(pq, tq, pv, tv)
    want = (pq - tq).abs().sum() / pq.numel() + (pv - tv).abs().sum() / pv.numel()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()
    assert tq.grad is None and tv.grad is None
    assert pq.grad is not None and pq.grad.abs().sum() > 0


# ---------------------------------------------------------------- poly lr with linear warm-up


def _mmcv_poly(base, it, max_iters, warmup, power=0.9, min_lr=1e-6, ratio=1e-6):
    """mmcv PolyLrUpdaterHook + linear warm-up (training/schedule.py docstring), by hand."""
    regular = (base - min_lr) * (1 - it / max_iters) ** power + min_lr
    if it < warmup:
        return regular * (1 - (1 - it / warmup) * (1 - ratio))
    return regular


@pytest.mark.parametrize("it", [0, 1, 7, 9, 10, 11, 55, 99, 100])
def test_poly_lr_matches_formula(it):
    cfg = PolyCfg(max_iters=100, warmup_iters=10)
    assert poly_lr(2e-4, it, cfg) == pytest.approx(_mmcv_poly(2e-4, it, 100, 10), rel=1e-12)


def test_poly_lr_landmarks():
    cfg = PolyCfg(max_iters=100, warmup_iters=10)
    assert poly_lr(2e-4, 0, cfg) == pytest.approx(2e-4 * 1e-6, rel=1e-6)  # warm-up starts at ~0
    assert poly_lr(2e-4, 10, cfg) == pytest.approx((2e-4 - 1e-6) * 0.9**0.9 + 1e-6)
    assert poly_lr(2e-4, 100, cfg) == pytest.approx(1e-6)  # floor at max_iters
    assert poly_lr(2e-4, 150, cfg) == pytest.approx(1e-6)  # and after it
    after = [poly_lr(2e-4, i, cfg) for i in range(10, 101)]
    assert all(a > b for a, b in zip(after, after[1:]))  # strictly decaying after warm-up
    warm = [poly_lr(2e-4, i, cfg) for i in range(11)]
    assert all(a < b for a, b in zip(warm, warm[1:]))  # rising during warm-up


def test_set_lr_scales_every_group_from_its_initial_lr():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}])
    cfg = PolyCfg(max_iters=20, warmup_iters=4)
    for it in (0, 3, 4, 12, 3):  # any order: stateless
        first = set_lr(opt, it, cfg)
        assert first == pytest.approx(_mmcv_poly(1e-3, it, 20, 4))
        assert opt.param_groups[1]["lr"] == pytest.approx(_mmcv_poly(1e-4, it, 20, 4))
