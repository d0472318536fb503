"""Write a Triton Inference Server model repository for a deployable folder.

    python -m export.triton DIR --out REPO [--name N] [--max-batch B] [--instances K]
        [--kind gpu|cpu] [--precision fp32|fp16|int8] [--force]

writes ``REPO/N/config.pbtxt`` and ``REPO/N/1/model.onnx`` (the folder's graph for the chosen
precision, platform ``onnxruntime_onnx``) and, when the folder holds a TensorRT engine that fits
this machine's GPU and TensorRT (``runtime.engine_cache``, as ``runtime.backends`` picks one),
``REPO/N_trt/config.pbtxt`` and ``REPO/N_trt/1/model.plan`` (platform ``tensorrt_plan``; the
Triton server must run the same TensorRT version, or, for a ``--version-compatible`` engine,
``--backend-config=tensorrt,version-compatible=true``).

Tensors, dtypes and dims come from the manifest; the symbolic ``num_classes`` axis is -1. The
exported graphs have a fixed batch of 1, so ``max_batch_size`` is 0 and the dims include the
batch axis: Triton's batching (``--max-batch`` > 0, ``dynamic_batching``) needs a graph whose
every input and output has a symbolic leading batch axis, and is refused otherwise. Each model
directory is staged next to its target and renamed into place whole; an existing non-empty one is
refused unless ``--force``. Torch-free; no TensorRT import (the probe runs in a subprocess, only
when the folder has engine records). Prints one JSON line; errors are one line, exit 2.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.cli import ArgumentParser, add_verbose_arg, cli_main, setup_logging
from runtime.cli_checks import MAX_BATCH, check_outputs, int_range
from runtime.engine_cache import (
    EngineKey,
    engine_dir,
    engine_path,
    find_engine,
    manifest_input_shapes,
)
from runtime.errors import ConfigError, ModelFolderError
from runtime.folder_files import model_file
from runtime.fsutil import atomic_write, sha256_file
from runtime.manifest import PRECISIONS, Manifest, TensorSpec, load_manifest

log = logging.getLogger(__name__)
# numpy / manifest dtype -> Triton ModelConfig DataType.
TRITON_DTYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ONNX = ("onnxruntime_onnx", "onnxruntime", "model.onnx")  # platform, backend, file in 1/
TENSORRT = ("tensorrt_plan", "tensorrt", "model.plan")
TRT_SUFFIX = "_trt"
VERSION = "1"
MAX_INSTANCES = 64  # instance_group count: each instance holds a copy of the model
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonCfg:
    """What to write.

    Attributes:
        folder: deployable folder (``export.build`` output).
        out: model repository folder (created if missing).
        name: model name (None: the folder's name, other characters than ``A-Za-z0-9_.-`` as _).
        max_batch: Triton ``max_batch_size``; > 0 only for graphs with a symbolic batch axis.
        instances: ``instance_group`` count.
        kind: ``gpu`` or ``cpu``: the ONNX model's instance kind (the engine's is always GPU).
        precision: which graph of the folder: ``fp32`` or a calibration variant.
        force: replace existing non-empty model directories.
    """

    folder: str
    out: str
    name: str | None = None
    max_batch: int = 0
    instances: int = 1
    kind: str = "gpu"
    precision: str = "fp32"
    force: bool = False


@dataclass(frozen=True)
class TritonModel:
    """One written model entry: its name, platform and directory (``dir/1/<file>``)."""

    name: str
    platform: str
    dir: Path


@dataclass(frozen=True)
class TritonResult:
    """The written repository: its models, ``max_batch_size`` and ``engine_note``: why no
    TensorRT entry was written, "version-compatible" for such an engine, else ""."""

    repository: Path
    models: tuple[TritonModel, ...]
    max_batch_size: int
    engine_note: str


def has_batch_axis(manifest: Manifest) -> bool:
    """True when every input and output has a symbolic (named) leading axis."""
    specs = (*manifest.inputs, *manifest.outputs)
    return all(s.shape and isinstance(s.shape[0], str) for s in specs)


def _dims(spec: TensorSpec, batched: bool) -> str:
    dims = [d if isinstance(d, int) else -1 for d in spec.shape[1 if batched else 0 :]]
    return ", ".join(str(d) for d in dims)


def _tensor(spec: TensorSpec, batched: bool) -> str:
    if spec.dtype not in TRITON_DTYPES:
        raise ModelFolderError(f"tensor {spec.name!r} has dtype {spec.dtype!r}: no Triton type")
    return (
        f'  {{\n    name: "{spec.name}"\n    data_type: {TRITON_DTYPES[spec.dtype]}\n'
        f"    dims: [ {_dims(spec, batched)} ]\n  }}"
    )


def model_config(
    name: str,
    platform: tuple[str, str, str],
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    *,
    max_batch: int = 0,
    instances: int = 1,
    kind: str = "gpu",
    comment: str = "",
) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``).

    Args:
        name: model name (its directory's name).
        platform: (platform, backend, default file), ``ONNX`` or ``TENSORRT``.
        inputs, outputs: the manifest's specs; named axes become -1.
        max_batch: 0 (dims include the batch axis) or > 0 (the leading axis is Triton's batch:
            left out of dims, and ``dynamic_batching`` on).
        instances: ``instance_group`` count, >= 1.
        kind: ``gpu`` or ``cpu``.
        comment: a ``#`` line at the top (e.g. where the model came from).
    """
    assert instances >= 1 and max_batch >= 0, (instances, max_batch)
    batched = max_batch > 0
    lines = [f"# {comment}"] if comment else []
    lines += [f'name: "{name}"', f'platform: "{platform[0]}"', f'backend: "{platform[1]}"']
    lines.append(f"max_batch_size: {max_batch}")
    for key, specs in (("input", inputs), ("output", outputs)):
        lines.append(f"{key} [\n" + ",\n".join(_tensor(s, batched) for s in specs) + "\n]")
    group = f"  {{\n    count: {instances}\n    kind: {KINDS[kind]}\n  }}"
    lines.append(f"instance_group [\n{group}\n]")
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def fitting_engine(folder: Path, manifest: Manifest, precision: str, probe=None):
    """(engine path or None, note): the folder's engine for this GPU and TensorRT, if any.

    ``probe`` (a ``runtime.probe.ProbeResult``) is run in a subprocess only when the folder has
    engine records of ``precision`` and none is given. The note says why no engine was taken,
    or "version-compatible" for such an engine.
    """
    edir = engine_dir(folder)
    if not any(edir.glob(f"{precision}-*.json")):
        return None, f"no {precision} engine in {str(edir)!r}"
    if probe is None:
        from runtime.probe import run_probe

        probe = run_probe()
    if not probe.tensorrt_usable:
        why = probe.cuda_error or probe.error or "TensorRT not installed"
        return None, f"no GPU with TensorRT here to match the engines against ({why})"
    gpu = probe.gpus[0]
    sha = manifest.model_for(precision)[1]
    shapes = manifest_input_shapes(manifest.inputs)
    key = EngineKey(gpu.name, gpu.compute_capability, probe.tensorrt, precision, shapes, sha)
    record = find_engine(folder, key)
    if record is None:
        return None, f"no {precision} engine fits {gpu.name} and TensorRT {probe.tensorrt}"
    try:
        path = engine_path(folder, record)
    except ModelFolderError as e:
        return None, str(e)
    if not path.is_file() or sha256_file(path) != record.engine_sha256:
        return None, f"engine {str(path)!r} is missing or modified"
    return path, "version-compatible" if record.key.version_compatible else ""


def _copy(src: Path) -> Callable[[str], None]:
    return lambda tmp: shutil.copyfile(src, tmp)


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def write_model_dir(target: Path, files: dict[str, Callable[[str], None]], force: bool) -> Path:
    """Write a model directory whole: its files staged in a sibling folder (each atomically),
    which then replaces ``target``.

    Args:
        target: ``REPO/NAME``.
        files: {relative path: ``write(tmp_path)``}.
        force: replace a non-empty ``target``; without it that is a ConfigError.
    """
    if _non_empty(target) and not force:
        raise ConfigError(f"{str(target)!r} exists and is not empty: pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    old = stage.with_suffix(".old")
    stage.mkdir()
    try:
        for rel, write in files.items():
            atomic_write(stage / rel, write)
        if target.exists():
            os.replace(target, old)
        os.replace(stage, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def _check_cfg(cfg: TritonCfg, manifest: Manifest, name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"model name {name!r}: use letters, digits, '_', '.', '-'")
    if cfg.kind not in KINDS:
        raise ConfigError(f"--kind must be one of {sorted(KINDS)}, got {cfg.kind!r}")
    if cfg.instances < 1 or cfg.max_batch < 0:
        raise ConfigError("--instances must be >= 1 and --max-batch >= 0")
    if cfg.max_batch > 0 and not has_batch_axis(manifest):
        specs = (*manifest.inputs, *manifest.outputs)
        shapes = ", ".join(f"{s.name} {list(s.shape)}" for s in specs)
        raise ConfigError(
            f"--max-batch {cfg.max_batch}: this graph has no batch axis on every tensor "
            f"({shapes}); Triton batching needs a batch-dynamic graph: use --max-batch 0"
        )


def _onnx_source(folder: Path, manifest: Manifest, precision: str) -> Path:
    """The graph of ``precision``: confined to the folder, its sha256 checked
    (``runtime.folder_files.model_file``)."""
    return model_file(folder, manifest, precision)


def write_repository(cfg: TritonCfg, probe=None) -> TritonResult:
    """Write the Triton model repository for ``cfg.folder`` (see the module docstring).

    Args:
        cfg: folder, repository and model settings.
        probe: a ``runtime.probe.ProbeResult`` to match engines against (default: probe this
            machine, only when the folder has engine records).
    Raises:
        ModelFolderError: bad folder, missing variant or graph, a graph that does not match.
        ConfigError: bad name / options, --max-batch on a fixed-batch graph, an existing
            non-empty model directory without ``force``.
    """
    folder, repo = Path(cfg.folder), Path(cfg.out)
    manifest = load_manifest(folder)
    if cfg.name == "":
        raise ConfigError("--name is empty: give a model name, or leave it out (the folder's)")
    name = cfg.name or re.sub(r"[^A-Za-z0-9_.-]", "_", folder.resolve().name).lstrip(".")
    _check_cfg(cfg, manifest, name)
    source = _onnx_source(folder, manifest, cfg.precision)
    engine, note = fitting_engine(folder, manifest, cfg.precision, probe)
    what = f"{manifest.method} {manifest.backbone} {cfg.precision}, from {folder.resolve()}"
    io = (manifest.inputs, manifest.outputs)
    entries = [(name, ONNX, source, cfg.kind)]
    if engine is not None:
        entries.append((name + TRT_SUFFIX, TENSORRT, engine, "gpu"))
    models = []
    for model_name, platform, src, kind in entries:
        text = model_config(
            model_name,
            platform,
            *io,
            max_batch=cfg.max_batch,
            instances=cfg.instances,
            kind=kind,
            comment=f"python -m export.triton: {what}",
        )
        files = {"config.pbtxt": lambda tmp, t=text: Path(tmp).write_text(t, encoding="utf-8")}
        files[f"{VERSION}/{platform[2]}"] = _copy(src)
        write_model_dir(repo / model_name, files, cfg.force)
        models.append(TritonModel(model_name, platform[0], repo / model_name))
    _stale_engine_entry(repo / (name + TRT_SUFFIX), engine is None, cfg.force)
    return TritonResult(repo, tuple(models), cfg.max_batch, note)


def _stale_engine_entry(path: Path, no_engine: bool, force: bool) -> None:
    """An engine entry left by an earlier run when no engine fits now: removed with ``force``
    (it may hold an engine of another graph), else a warning."""
    if not (no_engine and path.exists()):
        return
    if force:
        log.info("removing %s: no engine fits this folder and machine now", path)
        shutil.rmtree(path)
    else:
        log.warning("%s is from an earlier run and no engine fits now: remove it", path)


def parse_args(argv: list[str] | None = None) -> tuple[TritonCfg, bool]:
    """The TritonCfg for the command line, and whether ``--verbose`` was given."""
    p = ArgumentParser(prog="python -m export.triton", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="deployable folder (export.build output)")
    p.add_argument("--out", required=True, help="model repository folder (created if missing)")
    p.add_argument("--name", help="model name (default: the folder's name)")
    p.add_argument(
        "--max-batch",
        type=int_range(0, MAX_BATCH),
        default=0,
        help="Triton max_batch_size (default 0: the graphs have a fixed batch of 1)",
    )
    p.add_argument(
        "--instances",
        type=int_range(1, MAX_INSTANCES),
        default=1,
        help=f"instance_group count (1..{MAX_INSTANCES})",
    )
    p.add_argument(
        "--kind", default="gpu", choices=sorted(KINDS), help="ONNX model instances: GPU or CPU"
    )
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="graph of the folder")
    p.add_argument("--force", action="store_true", help="replace non-empty model directories")
    add_verbose_arg(p)
    args = vars(p.parse_args(argv))
    verbose = args.pop("verbose")
    return TritonCfg(**args), verbose


@cli_main
def main(argv: list[str] | None = None) -> int:
    cfg, verbose = parse_args(argv)
    setup_logging(verbose)
    check_outputs(dirs=[(cfg.out, "--out")])
    result = write_repository(cfg)
    models = [{"name": m.name, "platform": m.platform, "dir": str(m.dir)} for m in result.models]
    print(
        json.dumps(
            {
                "repository": str(result.repository),
                "models": models,
                "max_batch_size": result.max_batch_size,
                "engine_note": result.engine_note,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
