"""Where TensorRT engines live in a deployable folder, and which one fits this machine.

An engine is only valid for the GPU model, TensorRT version, precision, input shapes and exact
ONNX graph it was built from, so it is stored under a key of all six:

    DIR/engines/<precision>-<digest>.engine   the serialised engine
    DIR/engines/<precision>-<digest>.json     its EngineRecord (key, build settings, sha256)

No TensorRT import here: the exporter writes records, the runtime reads them.

Records are untrusted input like manifests: a record's ``engine_file`` must be a plain file
name (no ``/``, ``\\``, ``..``), its ``engine_sha256`` 64 hex digits and its key fields of their
types, and both the record and the engine file must resolve (symlinks followed) inside
``DIR/engines``; ``find_engine`` logs and skips records that fail, ``engine_path`` refuses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ModelFolderError
from runtime.folder_files import check_name, check_sha256, resolve_in_folder
from runtime.fsutil import atomic_write_text

log = logging.getLogger(__name__)
ENGINE_DIR = "engines"
MAX_RECORD_BYTES = 1 << 20  # an engine record is a few hundred bytes
# EngineKey field -> the JSON types it may have (bool is not an int).
_KEY_TYPES = {
    "gpu_name": str,
    "compute_capability": str,
    "tensorrt_version": str,
    "precision": str,
    "input_shapes": dict,
    "onnx_sha256": str,
    "dla_core": int,
    "version_compatible": bool,
}


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


def _check_key(d: Any) -> EngineKey:
    """An EngineKey from JSON, each field of its type (else TypeError)."""
    if not isinstance(d, dict):
        raise TypeError("'key' must be an object")
    for name, value in d.items():
        want = _KEY_TYPES.get(name)
        if want is None:
            raise TypeError(f"unknown key field {name!r}")
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise TypeError(f"key field {name!r} must be {want.__name__}")
    return EngineKey(**d)


def read_record(path: str | Path) -> EngineRecord:
    """Parse one record file.

    Raises:
        ModelFolderError: unreadable, over ``MAX_RECORD_BYTES``, not JSON, missing or mistyped
            fields, an ``engine_file`` that is not a plain file name, or a bad sha256.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECORD_BYTES + 1)
        if len(raw) > MAX_RECORD_BYTES:
            raise ValueError(f"over {MAX_RECORD_BYTES} bytes")
        d = json.loads(raw.decode("utf-8"))
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        key = _check_key(d["key"])
        name = check_name(d["engine_file"], "engine_file")
        if "/" in name or "\\" in name:
            raise ValueError(f"engine_file {name!r} must be a file name in {ENGINE_DIR}/")
        sha = check_sha256(d["engine_sha256"], "engine_sha256")
        build = d.get("build", {})
        if not isinstance(build, dict):
            raise ValueError("'build' must be an object")
        return EngineRecord(key, name, sha, build)
    except (OSError, ValueError, KeyError, TypeError, RecursionError, ModelFolderError) as e:
        raise ModelFolderError(f"engine record {str(path)!r} is unreadable: {e}") from e


def _inside_engines(folder: str | Path, path: str | Path) -> Path:
    """The real path of ``path``, refused unless it lies inside the real ``folder/engines``
    (which itself must lie inside the folder)."""
    edir = resolve_in_folder(folder, ENGINE_DIR, ENGINE_DIR)
    real = os.path.realpath(path)
    if os.path.commonpath([str(edir), real]) != str(edir) or real == str(edir):
        raise ModelFolderError(
            f"{str(path)!r} resolves to {real!r}, outside {str(edir)!r} (a symlink leading out "
            "of the engines folder is refused)"
        )
    return Path(real)


def engine_path(folder: str | Path, record: EngineRecord) -> Path:
    """The checked real path of the engine file a record names: inside ``folder/engines``.

    Raises:
        ModelFolderError: a bad name, or a file that resolves outside ``folder/engines``.
    """
    name = check_name(record.engine_file, "engine_file")
    if "/" in name or "\\" in name:
        raise ModelFolderError(f"engine_file {name!r} must be a file name in {ENGINE_DIR}/")
    return _inside_engines(folder, engine_dir(folder) / name)


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
            rec = read_record(_inside_engines(folder, path))
            engine_path(folder, rec)
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
