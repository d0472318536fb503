"""Where TensorRT engines live in a deployable folder, and which one fits this machine.

An engine is only valid for the GPU model, TensorRT version, precision, input shapes and exact
ONNX graph it was built from, so it is stored under a key of all six:

    DIR/engines/<precision>-<digest>.engine   the serialised engine
    DIR/engines/<precision>-<digest>.json     its EngineRecord (key, build settings, sha256)

No TensorRT import here: the exporter writes records, the runtime reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ModelFolderError
from runtime.fsutil import atomic_write_text

log = logging.getLogger(__name__)
ENGINE_DIR = "engines"


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for.

    Attributes:
        gpu_name: CUDA device name, e.g. "NVIDIA H100 80GB HBM3" or "Orin".
        compute_capability: "major.minor", e.g. "8.7".
        tensorrt_version: TensorRT version that built it, e.g. "10.3.0".
        precision: "fp32", "fp16" or "int8": which graph of the folder it was built from.
        input_shapes: {input name: shape}; -1 marks an axis given by an optimisation profile.
        onnx_sha256: sha256 of the exact ONNX file it was built from.
        dla_core: DLA core it runs on, -1 for the GPU.
        version_compatible: built with VERSION_COMPATIBLE (runs on later TensorRT, same major).
    """

    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    input_shapes: dict[str, list[int]]
    onnx_sha256: str
    dla_core: int = -1
    version_compatible: bool = False

    def digest(self) -> str:
        """16 hex digits of the sha256 of the key's canonical JSON."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def stem(self) -> str:
        """File name stem, ``<precision>-<digest>``."""
        return f"{self.precision}-{self.digest()}"


@dataclass(frozen=True)
class EngineRecord:
    """An engine file, its key, its hash and how it was built (workspace, profile, flags, time)."""

    key: EngineKey
    engine_file: str
    engine_sha256: str
    build: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


def engine_dir(folder: str | Path) -> Path:
    """``folder/engines``."""
    return Path(folder) / ENGINE_DIR


def record_path(folder: str | Path, key: EngineKey) -> Path:
    """Where the record (JSON) of ``key`` lives."""
    return engine_dir(folder) / f"{key.stem()}.json"


def write_record(folder: str | Path, record: EngineRecord) -> Path:
    """Write the record atomically (after the engine file itself is in place)."""
    return atomic_write_text(record_path(folder, record.key), record.to_json())


def read_record(path: str | Path) -> EngineRecord:
    """Parse one record file.

    Raises:
        ModelFolderError: unreadable JSON or missing fields.
    """
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        key = EngineKey(**d["key"])
        return EngineRecord(
            key, str(d["engine_file"]), str(d["engine_sha256"]), dict(d.get("build", {}))
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFolderError(f"engine record {str(path)!r} is unreadable: {e}") from e


def _major(version: str) -> str:
    return version.split(".")[0]


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def fits(record: EngineKey, wanted: EngineKey) -> bool:
    """True when an engine built for ``record`` can serve ``wanted`` on this machine.

    Everything must be equal, except that a version-compatible engine also serves a later
    TensorRT of the same major version.
    """
    same = (
        dataclasses.replace(
            record,
            tensorrt_version=wanted.tensorrt_version,
            version_compatible=wanted.version_compatible,
        )
        == wanted
    )
    if not same:
        return False
    if record.tensorrt_version == wanted.tensorrt_version:
        return True
    return (
        record.version_compatible
        and _major(record.tensorrt_version) == _major(wanted.tensorrt_version)
        and _version_tuple(record.tensorrt_version) <= _version_tuple(wanted.tensorrt_version)
    )


def find_engine(
    folder: str | Path, wanted: EngineKey, version_compatible_only: bool = False
) -> EngineRecord | None:
    """The record of an engine in ``folder/engines`` that fits ``wanted``, or None.

    The exact key is preferred; otherwise the newest version-compatible fit. Unreadable
    records are logged and skipped. ``version_compatible_only``: for the lean runtime, which
    runs nothing else.
    """
    exact = record_path(folder, wanted)
    candidates = [exact] if exact.is_file() else []
    candidates += sorted(
        p for p in engine_dir(folder).glob(f"{wanted.precision}-*.json") if p != exact
    )
    best = None
    for path in candidates:
        try:
            rec = read_record(path)
        except ModelFolderError as e:
            log.warning("%s", e)
            continue
        if not fits(rec.key, wanted) or (
            version_compatible_only and not rec.key.version_compatible
        ):
            continue
        if rec.key == wanted:
            return rec
        if best is None or _version_tuple(rec.key.tensorrt_version) > _version_tuple(
            best.key.tensorrt_version
        ):
            best = rec
    return best


def manifest_input_shapes(inputs) -> dict[str, list[int]]:
    """{name: shape} of the manifest's input specs, with named (dynamic) axes as -1."""
    return {t.name: [d if isinstance(d, int) else -1 for d in t.shape] for t in inputs}
