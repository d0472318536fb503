"""Training checkpoints carry the model config (``model_cfg``): loading rebuilds the model from it,
not from the training schedule defaults; checkpoints without it still load (older runs).

Data: the synthetic quadrant folders, the ``ovss-tiny-vit`` backbone with random weights, crop 64.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from synthetic import make_folder, tiny_train_cfg

from training import loading
from training.checkpoint import FORMAT, load_checkpoint, read_raw, save_checkpoint
from training.loading import load_trained
from training.methods.zegclip import ZegClipCfg
from training.students import StudentCfg
from training.train import run
from training.train_config import TrainCfg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("ckpt_cfg_data"), 2)


def _cfg(data: Path, work: Path, method: str, **kw) -> TrainCfg:
    defaults = {"max_iters": 1, "warmup_iters": 1, "unseen": "yellow"}
    return tiny_train_cfg(data, work, method, **{**defaults, **kw})


@pytest.fixture(scope="module")
def zeg_ckpt(data, tmp_path_factory) -> Path:
    # num_tokens 3 and 2 decoder layers: not the schedule's defaults (10, 3), so a load that
    # resolved the schedule instead of reading model_cfg would build another model
    work = tmp_path_factory.mktemp("zeg")
    return run(_cfg(data, work, "zegclip", num_tokens=3, decoder_layers=2)).checkpoint


@pytest.fixture(scope="module")
def student_ckpt(data, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("student")
    return run(
        _cfg(
            data,
            work,
            "maskclip_plus",
            student="deeplabv3plus_mbv3",
            templates="single",
            unseen=None,
        )
    ).checkpoint


def _no_schedule(monkeypatch):
    """Make any use of the training-schedule resolver during loading an error."""

    def boom(*_a, **_k):
        raise AssertionError("loading resolved the training schedule despite model_cfg")

    monkeypatch.setattr(loading, "resolve_defaults", boom)
    monkeypatch.setattr(loading, "model_cfg_of", boom)


def test_zero_shot_checkpoint_holds_its_model_config(zeg_ckpt):
    raw = read_raw(zeg_ckpt)
    assert raw["format"] == FORMAT and raw["method"] == "zegclip"
    want = dataclasses.asdict(
        ZegClipCfg(
            image_size=64,
            num_tokens=3,
            decoder_layers=2,
            decoder_heads=8,
            seen_bias=0.1,
            templates="zegclip",
        )
    )
    assert raw["model_cfg"] == want
    assert load_checkpoint(zeg_ckpt).model_cfg == want


def test_loading_uses_the_stored_model_config(zeg_ckpt, monkeypatch):
    saved = ZegClipCfg(**read_raw(zeg_ckpt)["model_cfg"])
    _no_schedule(monkeypatch)
    trained = load_trained(zeg_ckpt, "zegclip")
    assert trained.model_cfg == saved
    assert trained.crop_size == 64 and trained.templates == "zegclip"
    assert load_trained(zeg_ckpt, "zegclip", seen_bias=0.0).model_cfg == dataclasses.replace(
        saved, seen_bias=0.0
    )


def test_stored_config_wins_over_the_training_config(zeg_ckpt, tmp_path, monkeypatch):
    """A model_cfg that differs from what the training config would give is the one used."""
    state = load_checkpoint(zeg_ckpt)
    edited = tmp_path / "edited.pt"
    save_checkpoint(
        edited, dataclasses.replace(state, model_cfg={**state.model_cfg, "seen_bias": 0.25})
    )
    _no_schedule(monkeypatch)
    assert load_trained(edited).model_cfg.seen_bias == 0.25


def test_checkpoint_without_model_config_still_loads(zeg_ckpt, tmp_path):
    raw = read_raw(zeg_ckpt)
    want = ZegClipCfg(**raw.pop("model_cfg"))
    old = tmp_path / "old.pt"
    torch.save(raw, old)
    assert "model_cfg" not in read_raw(old)
    trained = load_trained(old)
    assert trained.model_cfg == want
    new = load_trained(zeg_ckpt).model.state_dict()
    torch.testing.assert_close(trained.model.state_dict(), new)


def test_unknown_stored_keys_are_ignored(zeg_ckpt, tmp_path, monkeypatch):
    state = load_checkpoint(zeg_ckpt)
    newer = tmp_path / "newer.pt"
    save_checkpoint(
        newer, dataclasses.replace(state, model_cfg={**state.model_cfg, "from_the_future": 1})
    )
    _no_schedule(monkeypatch)
    assert load_trained(newer).model_cfg == ZegClipCfg(**state.model_cfg)


def test_student_checkpoint_holds_and_uses_its_config(student_ckpt, tmp_path, monkeypatch):
    raw = read_raw(student_ckpt)
    stored = raw["model_cfg"]
    assert stored["name"] == "deeplabv3plus_mbv3" and stored["dropout"] == 0.0
    assert set(stored) == {f.name for f in dataclasses.fields(StudentCfg)}
    _no_schedule(monkeypatch)
    trained = load_trained(student_ckpt, "maskclip_plus")
    assert trained.model_cfg == StudentCfg(**{**stored, "weights": "none"})
    # without the key (an older run), the student is rebuilt from the training config
    monkeypatch.undo()
    raw.pop("model_cfg")
    old = tmp_path / "old_student.pt"
    torch.save(raw, old)
    assert load_trained(old).model_cfg == trained.model_cfg


def test_export_refuses_shape_options_that_contradict_the_checkpoint(zeg_ckpt, tmp_path):
    """A checkpoint fixes the network: --num-tokens / --decoder-layers cannot be applied to it, so
    a value that differs is refused rather than silently dropped; the same value is accepted."""
    from export.builders import build_zegclip
    from export.config import ExportCfg
    from runtime.errors import ConfigError
    from runtime.manifest import load_manifest

    base = dict(
        method="zegclip",
        backbone="ovss-tiny-vit",
        classes="red,green,yellow",
        checkpoint=str(zeg_ckpt),
        templates="single",
    )
    with pytest.raises(ConfigError, match="num-tokens 5: .* trained with 3"):
        build_zegclip(ExportCfg.create(**base, output=str(tmp_path / "a"), num_tokens=5))
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    build_zegclip(ExportCfg.create(**base, output=str(out), num_tokens=3, decoder_layers=2))
    m = load_manifest(out).method_cfg
    assert (m["num_tokens"], m["decoder_layers"], m["templates"]) == (3, 2, "single")
