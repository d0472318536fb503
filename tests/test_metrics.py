"""training.metrics: hand-computed confusion matrices, mmseg NaN rule, ignore 255, gloo reduce."""

from __future__ import annotations

import json
import math

import pytest
import torch

from training.metrics import ClassIoU, ConfusionMatrix, SegMetrics, summarize

CLASSES = ("road", "car", "tree")

# (gt, pred) -> count. Rows (gt): road [3, 1, 0], car [1, 2, 1], tree [0, 0, 2].
PAIRS = {(0, 0): 3, (0, 1): 1, (1, 0): 1, (1, 1): 2, (1, 2): 1, (2, 2): 2}
EXPECTED = torch.tensor([[3, 1, 0], [1, 2, 1], [0, 0, 2]])
# TP 3/2/2, GT 4/4/2, Pred 4/3/3 -> IoU 3/5, 2/5, 2/3; Acc 3/4, 2/4, 2/2.
IOU = (60.0, 40.0, 200.0 / 3)
ACC = (75.0, 50.0, 100.0)


def _tensors(pairs: dict, n_ignored: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (pred, label) with ``n_ignored`` extra label-255 pixels whose prediction is garbage."""
    gt = [g for (g, _), n in pairs.items() for _ in range(n)] + [255] * n_ignored
    pr = [p for (_, p), n in pairs.items() for _ in range(n)] + [99] * n_ignored
    perm = torch.randperm(len(gt), generator=torch.Generator().manual_seed(0))
    return torch.tensor(pr)[perm], torch.tensor(gt)[perm]


def _cm() -> ConfusionMatrix:
    cm = ConfusionMatrix(3)
    pred, label = _tensors(PAIRS, n_ignored=6)
    cm.update(pred.reshape(2, -1), label.reshape(2, -1))  # any shape works
    return cm


def test_update_builds_matrix_and_ignores_255():
    cm = _cm()
    assert cm.matrix.dtype == torch.int64
    assert torch.equal(cm.matrix, EXPECTED)
    cm.update(*_tensors(PAIRS))  # accumulates
    assert torch.equal(cm.matrix, 2 * EXPECTED)
    cm.reset()
    assert cm.matrix.sum() == 0


def test_summarize_every_field():
    m = summarize(_cm().matrix, CLASSES, unseen=[2])
    assert isinstance(m, SegMetrics)
    assert m.miou == pytest.approx(sum(IOU) / 3)  # 55.56
    assert m.miou_seen == pytest.approx(50.0)  # (60 + 40) / 2
    assert m.miou_unseen == pytest.approx(200.0 / 3)
    assert m.hiou == pytest.approx(400.0 / 7)  # 2·50·66.67 / 116.67 = 57.14
    assert m.pacc == pytest.approx(70.0)  # 7 correct / 10 non-ignored
    assert m.macc == pytest.approx(75.0)  # (75 + 50 + 100) / 3
    assert [c.name for c in m.per_class] == list(CLASSES)
    assert [c.iou for c in m.per_class] == pytest.approx(IOU)
    assert [c.acc for c in m.per_class] == pytest.approx(ACC)
    assert [c.seen for c in m.per_class] == [True, True, False]
    assert [c.gt_pixels for c in m.per_class] == [4, 4, 2]
    assert isinstance(m.per_class[0], ClassIoU)


def test_no_unseen_gives_none_and_numpy_input():
    m = summarize(EXPECTED.numpy(), CLASSES, unseen=())
    assert m.miou_unseen is None and m.hiou is None
    assert m.miou_seen == pytest.approx(m.miou)
    assert all(c.seen for c in m.per_class)


def test_nan_rule_absent_class_excluded_predicted_only_counts_zero():
    # road: TP 2, GT 3, Pred 2 -> 66.67. car: predicted, never in GT -> 0. tree: nothing -> NaN.
    m = summarize(torch.tensor([[2, 1, 0], [0, 0, 0], [0, 0, 0]]), CLASSES, unseen=[2])
    iou = [c.iou for c in m.per_class]
    assert iou[0] == pytest.approx(200.0 / 3) and iou[1] == 0.0 and math.isnan(iou[2])
    assert math.isnan(m.per_class[1].acc)  # no GT -> accuracy undefined
    assert m.miou == pytest.approx(100.0 / 3)  # nanmean(66.67, 0)
    assert m.miou_seen == pytest.approx(100.0 / 3)
    assert math.isnan(m.miou_unseen) and math.isnan(m.hiou)
    assert m.macc == pytest.approx(200.0 / 3)
    d = m.to_dict()
    assert d["miou_unseen"] is None and d["hiou"] is None and d["per_class"][2]["iou"] is None
    json.dumps(d, allow_nan=False)


def test_hiou_zero_when_both_zero():
    m = summarize(torch.tensor([[0, 5], [5, 0]]), ("a", "b"), unseen=[1])
    assert m.miou_seen == 0.0 and m.miou_unseen == 0.0 and m.hiou == 0.0


@pytest.mark.parametrize(
    "pred,label",
    [([0, 1], [0, 3]), ([0, 1], [-1, 1]), ([0, 3], [0, 1]), ([-2, 0], [1, 1])],
    ids=["label-high", "label-negative", "pred-high", "pred-negative"],
)
def test_out_of_range_raises(pred, label):
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(3).update(torch.tensor(pred), torch.tensor(label))


def test_bad_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="differ"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        cm.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))


def test_to_dict_and_markdown():
    m = summarize(EXPECTED, CLASSES, unseen=[2])
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["hiou"] == pytest.approx(400.0 / 7)
    assert d["per_class"][2] == {
        "name": "tree",
        "iou": pytest.approx(200.0 / 3),
        "acc": 100.0,
        "seen": False,
        "gt_pixels": 2,
    }
    md = m.to_markdown()
    assert "| mIoU(S) | mIoU(U) | hIoU | mIoU | pAcc | mAcc |" in md
    assert "| 50.00 | 66.67 | 57.14 | 55.56 | 70.00 | 75.00 |" in md
    assert "| road | seen | 60.00 | 75.00 | 4 |" in md
    assert "| car | seen | 40.00 | 50.00 | 4 |" in md
    assert "| tree | unseen | 66.67 | 100.00 | 2 |" in md
    no_unseen = summarize(EXPECTED, CLASSES, unseen=()).to_markdown()
    assert "| 55.56 | – | – | 55.56 | 70.00 | 75.00 |" in no_unseen


def test_all_reduce_is_noop_without_process_group():
    cm = _cm()
    cm.all_reduce()
    assert torch.equal(cm.matrix, EXPECTED)


def _reduce_worker(rank: int, tmp: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", world_size=2, rank=rank)
    try:
        cm = ConfusionMatrix(3)
        pred, label = _tensors(PAIRS, n_ignored=3)
        if rank == 1:  # rank 1 sees every pixel twice, plus one extra (gt tree, pred road)
            pred = torch.cat([pred, pred, torch.tensor([0])])
            label = torch.cat([label, label, torch.tensor([2])])
        cm.update(pred, label)
        cm.all_reduce()
        torch.save(cm.matrix, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_gloo_two_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_reduce_worker, args=(str(tmp_path),), nprocs=2, join=True)
    want = 3 * EXPECTED
    want[2, 0] += 1
    for rank in (0, 1):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), want)
