"""Training checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint holds everything exact resume needs: model and optimizer state, the AMP scaler, the
iteration, and the flat training config. Data order and augmentation are functions of
(seed, sample counter) and the dropout RNG is reseeded per step, so no RNG state is stored.
Layout: {"format": "ovss-train", "method", "iteration", "cfg": dict, "classes", "seen", "unseen",
"state_dict", "optimizer", "scaler", "text" (the [C,D] classifier of ``classes``), "model_cfg"
(``dataclasses.asdict`` of the model config: ZegClipCfg for ZegCLIP / CLIP-RC, StudentCfg for
MaskCLIP+; absent in older checkpoints)}.

Crash safety: every file of a work folder is written to a temp file in the same folder
(``.<name>.<random>.tmp``) and renamed into place, so a kill at any instant leaves the previous
checkpoint whole; the temp file a kill leaves behind is removed by ``remove_stale_temps`` when
the next run starts.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.errors import CheckpointError
from runtime.fsutil import atomic_write

FORMAT = "ovss-train"
log = logging.getLogger(__name__)
# The temp files of the work folder's own outputs (``runtime.fsutil.atomic_write`` and
# ``trainer.link_latest`` name them ``.<name>.<random or pid>.tmp``).
_STALE_TEMP = re.compile(
    r"\.(iter_\d+\.pt|latest\.pt|train_log\.jsonl|eval\.json|eval\.md)\.[^/]+\.tmp"
)


@dataclass(frozen=True)
class TrainState:
    """A loaded training checkpoint."""

    method: str
    iteration: int
    cfg: dict
    classes: tuple[str, ...]
    seen: tuple[int, ...]
    unseen: tuple[int, ...]
    state_dict: dict
    optimizer: dict | None
    scaler: dict | None
    text: torch.Tensor | None = None
    model_cfg: Any = None  # the model config: a dataclass when saving, its dict when loaded


def save_checkpoint(path: str | Path, state: TrainState) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + rename); ``state.model_cfg`` (a
    dataclass or its dict) is stored as a plain dict."""
    model_cfg = state.model_cfg
    if dataclasses.is_dataclass(model_cfg) and not isinstance(model_cfg, type):
        model_cfg = dataclasses.asdict(model_cfg)
    payload = {
        "format": FORMAT,
        "method": state.method,
        "iteration": state.iteration,
        "cfg": state.cfg,
        "classes": list(state.classes),
        "seen": list(state.seen),
        "unseen": list(state.unseen),
        "state_dict": state.state_dict,
        "optimizer": state.optimizer,
        "scaler": state.scaler,
        "text": state.text,
    }
    if model_cfg is not None:
        payload["model_cfg"] = dict(model_cfg)
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_raw(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` or safetensors; clear errors for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return {"state_dict": load_file(str(path))}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decode failure is a corrupt checkpoint
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a dict")
    return obj


def load_checkpoint(path: str | Path) -> TrainState:
    """Read one of our training checkpoints; CheckpointError for anything else."""
    obj = read_raw(path)
    if obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an ovss-edge training checkpoint "
            f"(official checkpoints go through --checkpoint of evaluate/export)"
        )
    return TrainState(
        method=obj["method"],
        iteration=int(obj["iteration"]),
        cfg=dict(obj["cfg"]),
        classes=tuple(obj["classes"]),
        seen=tuple(obj["seen"]),
        unseen=tuple(obj["unseen"]),
        state_dict=obj["state_dict"],
        optimizer=obj.get("optimizer"),
        scaler=obj.get("scaler"),
        text=obj.get("text"),
        model_cfg=obj.get("model_cfg"),
    )


def remove_stale_temps(work_dir: str | Path) -> list[Path]:
    """Remove the temp files a killed run left in ``work_dir`` (``.iter_4.pt.x1y2.tmp``,
    ``.latest.pt.123.tmp``, ``.train_log.jsonl.ab.tmp``, ...); other files, and folders, are
    kept. Call it before the run writes anything (one run per work folder at a time).

    Returns:
        The removed paths.
    """
    work = Path(work_dir)
    if not work.is_dir():
        return []
    removed = []
    for path in sorted(work.iterdir()):
        if _STALE_TEMP.fullmatch(path.name) and (path.is_symlink() or path.is_file()):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.warning(
            "removed %d temp file(s) a killed run left in %s: %s",
            len(removed),
            work,
            ", ".join(p.name for p in removed),
        )
    return removed
