"""Shared fixtures: offline hub, a private text cache, tiny exported folders, CamVid if there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CAMVID = SHARED / "data" / "camvid"


@pytest.fixture(scope="session", autouse=True)
def _text_cache(tmp_path_factory):
    os.environ["OVSS_CACHE_DIR"] = str(tmp_path_factory.mktemp("ovss_cache"))


@pytest.fixture(scope="session")
def camvid() -> Path:
    """The CamVid folder from ../shared, or skip."""
    if not (CAMVID / "test").is_dir():
        pytest.skip("../shared/data/camvid is absent")
    return CAMVID


def export_folder(tmp_path_factory, name: str, **overrides) -> Path:
    """Export a tiny MaskCLIP with the real builder and return the folder."""
    from export.builders import build_maskclip
    from export.config import ExportCfg

    out = tmp_path_factory.mktemp(name)
    kw = dict(
        method="maskclip",
        backbone="ovss-tiny-vit",
        output=str(out),
        classes="cat,dog,car,tree",
        image_size=224,
        templates="single",
    )
    kw.update(overrides)
    build_maskclip(ExportCfg.create(**kw))
    return out


@pytest.fixture(scope="session")
def tiny_vit_folder(tmp_path_factory) -> Path:
    return export_folder(tmp_path_factory, "tiny_vit")


@pytest.fixture(scope="session")
def tiny_vit_input_folder(tmp_path_factory) -> Path:
    return export_folder(tmp_path_factory, "tiny_vit_input", vocab_mode="input")


@pytest.fixture(scope="session")
def tiny_rn_folder(tmp_path_factory) -> Path:
    return export_folder(tmp_path_factory, "tiny_rn", backbone="ovss-tiny-rn")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (about 6x the CPU time with 2 threads)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_one_line_exit_2(rc, err: str, match: str) -> None:
    """A program's refusal: exit 2 and stderr one ``error:`` line (no traceback) with ``match``."""
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") or ": error: " in lines[0], lines[0]
    assert match in lines[0], lines[0]
