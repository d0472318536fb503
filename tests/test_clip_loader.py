"""CLIP loading: random init, local checkpoints, and the errors for bad ones."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from runtime.errors import CheckpointError, UnknownNameError
from training.clip_loader import load_clip


@pytest.fixture(scope="module")
def tiny():
    return load_clip("ovss-tiny-vit", seed=1)


def test_random_init_is_seeded_and_flagged(tiny):
    assert tiny.random and tiny.source == "random-init (seed 1)" and tiny.kind == "vit"
    assert load_clip("ovss-tiny-vit", seed=1).weights_sha256 == tiny.weights_sha256
    assert load_clip("ovss-tiny-vit", seed=2).weights_sha256 != tiny.weights_sha256
    assert load_clip("ovss-tiny-rn").kind == "resnet"


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "wrapped"])
def test_checkpoint_round_trip(tiny, tmp_path, fmt):
    sd = {k: v.contiguous() for k, v in tiny.model.state_dict().items()}
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pt'}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save(
            {"state_dict": {f"module.{k}": v for k, v in sd.items()}} if fmt == "wrapped" else sd,
            path,
        )
    loaded = load_clip("ovss-tiny-vit", str(path), seed=9)
    assert not loaded.random and loaded.source.startswith("file:")
    assert loaded.weights_sha256 == tiny.weights_sha256


def test_unknown_backbone_and_tag():
    with pytest.raises(UnknownNameError, match="unknown backbone"):
        load_clip("ViT-Q-99")
    with pytest.raises(UnknownNameError, match="no pretrained tag"):
        load_clip("ViT-B-16", "not-a-tag")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_clip("ovss-tiny-vit", str(tmp_path / "nope.pt"))


def test_checkpoint_with_wrong_keys(tmp_path):
    rn = load_clip("ovss-tiny-rn")
    path = tmp_path / "rn.pt"
    torch.save(rn.model.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit|cannot load"):
        load_clip("ovss-tiny-vit", str(path))
    partial = {
        k: v for k, v in load_clip("ovss-tiny-vit").model.state_dict().items() if "visual" in k
    }
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_clip("ovss-tiny-vit", str(tmp_path / "partial.pt"))


def test_corrupt_and_unsafe_checkpoints(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_clip("ovss-tiny-vit", str(tmp_path / "junk.pt"))
    (tmp_path / "junk.safetensors").write_bytes(b"{}garbage")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_clip("ovss-tiny-vit", str(tmp_path / "junk.safetensors"))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_clip("ovss-tiny-vit", str(tmp_path / "evil.pt"))


def test_unreachable_hub_fails_fast_with_a_clear_error(monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(
        constants, "HF_HUB_OFFLINE", False
    )  # as on a user's machine without the env var
    monkeypatch.setattr(
        constants, "ENDPOINT", "https://127.0.0.1:9"
    )  # nothing listens on the discard port
    t0 = time.perf_counter()
    with pytest.raises(
        CheckpointError, match="cannot obtain pretrained weights ovss|cannot obtain"
    ):
        load_clip("ViT-B-32", "openai")
    assert time.perf_counter() - t0 < 30
    assert constants.HF_HUB_OFFLINE is False  # offline mode was scoped to the load
