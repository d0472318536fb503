"""Build a TensorRT engine for a deployable folder with the TensorRT Python API.

    python -m export.engine DIR [--precision fp32|fp16|int8] [--workspace MB] [--dla N]
        [--version-compatible] [--max-classes N] [--timing-cache FILE] [--force]
        [--print-trtexec]

Precision comes from the graph: ``fp16`` / ``int8`` build the FP16 / explicit Q/DQ INT8 variants
that ``calibration.calibrate`` wrote, as strongly typed networks. Builder precision flags are set
only where TensorRT needs them: DLA on TensorRT 10 (JetPack 6) accepts only weakly typed
networks with the FP16 / INT8 flags. The engine is cached under a key of GPU, compute capability,
TensorRT version, precision, input shapes and ONNX sha256 (``runtime.engine_cache``), and the
timing cache is reused across builds on the same GPU and TensorRT version. Needs a GPU and the
full ``tensorrt`` package (Builder + OnnxParser); exits 2 with one message otherwise
(``runtime.cli``). ``--print-trtexec`` builds nothing and needs neither: it prints the equivalent
``trtexec`` and ``polygraphy convert`` commands (``export.trtexec``) for the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runtime import io_names
from runtime.cli import ArgumentParser, add_verbose_arg, cli_main, setup_logging
from runtime.cli_checks import check_outputs, int_range
from runtime.engine_cache import (
    EngineKey,
    EngineRecord,
    engine_dir,
    find_engine,
    manifest_input_shapes,
    write_record,
)
from runtime.errors import OvssError
from runtime.folder_files import model_file
from runtime.fsutil import atomic_write_bytes, sha256_file
from runtime.manifest import PRECISIONS, Manifest, load_manifest

log = logging.getLogger(__name__)
DEFAULT_WORKSPACE_MB = 4096
DEFAULT_MAX_CLASSES = 256
# Command-line bounds: workspace up to 1 TiB, vocabularies up to 65536 classes (the
# optimisation profile's max), DLA cores -1 (GPU) .. 15.
MAX_WORKSPACE_MB = 1 << 20
MAX_CLASSES_LIMIT = 65536
MAX_DLA_CORE = 15


class EngineBuildError(OvssError, RuntimeError):
    """TensorRT could not parse the ONNX or build an engine, or cannot run here at all."""


@dataclass(frozen=True)
class EngineCfg:
    """How to build one engine (flat; one field per CLI flag)."""

    folder: str
    precision: str = "fp32"
    workspace: int = DEFAULT_WORKSPACE_MB
    dla: int = -1
    version_compatible: bool = False
    max_classes: int = DEFAULT_MAX_CLASSES
    timing_cache: str | None = None
    force: bool = False


@dataclass(frozen=True)
class EngineResult:
    """The engine that serves the folder, and whether it was built now or found in the cache."""

    engine: Path
    record: EngineRecord
    cached: bool
    seconds: float


def trt_major(trt) -> int:
    """TensorRT's major version as an int."""
    return int(str(trt.__version__).split(".")[0])


def parse_version(version: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``: the numeric major, minor and patch."""
    return tuple(int(p) for p in str(version).split(".")[:3] if p.isdigit())


def strongly_typed_network(version: str, dla: int) -> bool:
    """Whether TensorRT ``version`` builds a strongly typed network for DLA core ``dla``.

    TensorRT >= 11: every network is strongly typed (the flag is deprecated there).
    TensorRT 10: strongly typed, except DLA builds, which need a weakly typed network.
    Pure (no TensorRT): ``export.trtexec`` makes the same decision for the command line.
    """
    v = parse_version(version)
    if not v or v[0] < 10:
        raise EngineBuildError(f"TensorRT {version} is too old: TensorRT >= 10 is needed")
    if v[0] >= 11:
        if dla >= 0 and v < (11, 4, 1):
            raise EngineBuildError(
                f"TensorRT {version} has no DLA support (TensorRT 11 "
                "supports DLA from 11.4.1, on Jetson AGX Orin with JetPack 7.2.2+)"
            )
        return True
    return dla < 0


def network_flags(trt, dla: int) -> tuple[int, bool]:
    """(create_network flags, strongly typed?) for this TensorRT and device
    (``strongly_typed_network``; TensorRT >= 11 takes no flag)."""
    strongly_typed = strongly_typed_network(str(trt.__version__), dla)
    if trt_major(trt) >= 11 or not strongly_typed:
        return 0, strongly_typed
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED), True


def builder_flag_names(
    precision: str, strongly_typed: bool, dla: int, version_compatible: bool
) -> list[str]:
    """``trt.BuilderFlag`` names, in the order set: precision flags only for weakly typed (DLA
    on TensorRT 10) networks. Pure (no TensorRT), shared with ``export.trtexec``."""
    if dla >= 0 and precision == "fp32":
        raise EngineBuildError("DLA runs FP16 or INT8 only: build --precision fp16 or int8")
    names = []
    if not strongly_typed:
        names.append("FP16")
        if precision == "int8":
            names.append("INT8")  # explicit Q/DQ: scales come from the graph
    if dla >= 0:
        names.append("GPU_FALLBACK")
    if version_compatible:
        names.append("VERSION_COMPATIBLE")
    return names


def builder_flags(
    trt, precision: str, strongly_typed: bool, dla: int, version_compatible: bool
) -> list:
    """The ``trt.BuilderFlag`` values of ``builder_flag_names``."""
    names = builder_flag_names(precision, strongly_typed, dla, version_compatible)
    return [getattr(trt.BuilderFlag, n) for n in names]


def parse_onnx(trt, network, logger, onnx_path: Path):
    """Parse ``onnx_path`` into ``network``; log every parser error, then raise EngineBuildError."""
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return parser
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    for i, e in enumerate(errors):
        log.error("ONNX parser error %d/%d: %s", i + 1, len(errors), e)
    first = errors[0] if errors else "no error recorded"
    raise EngineBuildError(
        f"TensorRT's ONNX parser rejected {str(onnx_path)!r}: {len(errors)} error(s), "
        f"first: {first}"
    )


def profile_shapes(
    input_dims: dict[str, tuple[int, ...]], n_classes: int, max_classes: int
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """{input: (min, opt, max)} for the dynamic inputs among ``input_dims`` (-1 = dynamic).

    Only the class axis of the text input of vocab-as-input graphs may be dynamic: classes
    from 1 to ``max_classes``, optimised for ``n_classes`` (the manifest's vocabulary size).
    Pure (no TensorRT), shared with ``export.trtexec``.
    """
    shapes = {}
    for name, dims in input_dims.items():
        dims = tuple(dims)
        if -1 not in dims:
            continue
        if name != io_names.TEXT_EMBEDDINGS or dims[1:].count(-1):
            raise EngineBuildError(
                f"input {name!r} has dynamic shape {dims}: only the class axis "
                f"of {io_names.TEXT_EMBEDDINGS!r} may be dynamic"
            )
        opt = min(n_classes, max_classes)
        shapes[name] = ((1,) + dims[1:], (opt,) + dims[1:], (max_classes,) + dims[1:])
    return shapes


def add_profile(trt, builder, network, config, manifest: Manifest, max_classes: int) -> dict:
    """One optimisation profile when an input is dynamic (``profile_shapes``).

    Profiles carry shapes only: dtypes come from the parsed graph, so a uint8 IMAGE
    (``--input-format uint8-*``, static [1,H,W,3] or [1,3,H,W]) needs no profile and is cast to
    float32 by the graph's first node, as TensorRT requires of uint8 network inputs."""
    dims = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims[t.name] = tuple(t.shape)
    shapes = profile_shapes(dims, len(manifest.classes), max_classes)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    return {k: [list(s) for s in v] for k, v in shapes.items()}


def default_timing_cache(gpu_name: str, trt_version: str) -> Path:
    """``$OVSS_CACHE_DIR/trt`` (or ``~/.cache/ovss-edge/trt``) ``/timing-<gpu>-trt<ver>.cache``."""
    root = Path(os.environ.get("OVSS_CACHE_DIR") or Path.home() / ".cache" / "ovss-edge")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return root / "trt" / f"timing-{slug}-trt{trt_version}.cache"


def load_timing_cache(config, path: Path):
    """Attach the timing cache at ``path`` (empty when missing or unreadable) to ``config``."""
    data = b""
    if path.is_file():
        data = path.read_bytes()
        log.info("reusing timing cache %s (%d bytes)", path, len(data))
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)


def save_timing_cache(config, path: Path) -> None:
    """Write the (grown) timing cache back atomically."""
    atomic_write_bytes(path, bytes(memoryview(config.get_timing_cache().serialize())))


def _require_builder(probe):
    if not probe.gpu_usable:
        raise EngineBuildError(
            f"building an engine needs a CUDA GPU; none here "
            f"({probe.cuda_error or probe.error or 'no device'})"
        )
    if not probe.tensorrt_builder:
        raise EngineBuildError(
            "building an engine needs the full tensorrt package (Builder, "
            f"OnnxParser); found {probe.tensorrt_module or 'none'} {probe.tensorrt}"
        )
    from runtime.backends.trt import require_trt

    return require_trt()


def _key(cfg: EngineCfg, manifest: Manifest, probe) -> tuple[EngineKey, Path]:
    sha = manifest.model_for(cfg.precision)[1]
    onnx_path = model_file(cfg.folder, manifest, cfg.precision)  # confined, sha256 checked
    gpu = probe.gpus[0]
    key = EngineKey(
        gpu.name,
        gpu.compute_capability,
        probe.tensorrt,
        cfg.precision,
        manifest_input_shapes(manifest.inputs),
        sha,
        cfg.dla,
        cfg.version_compatible,
    )
    return key, onnx_path


def _cached(cfg: EngineCfg, key: EngineKey) -> EngineRecord | None:
    rec = find_engine(cfg.folder, key)
    if rec is None or rec.key != key or cfg.force:
        return None
    path = engine_dir(cfg.folder) / rec.engine_file
    if path.is_file() and sha256_file(path) == rec.engine_sha256:
        return rec
    log.warning("cached engine %s is missing or modified: rebuilding", path)
    return None


def build_engine(cfg: EngineCfg, probe=None) -> EngineResult:
    """Build (or find in the cache) the engine for ``cfg.folder`` at ``cfg.precision``.

    Args:
        cfg: folder, precision and builder settings.
        probe: a ``runtime.probe.ProbeResult`` (default: probe this machine in a subprocess).
    Raises:
        EngineBuildError: no GPU / no builder here, a parser error, or a failed build.
        ModelFolderError: the folder, manifest or ONNX file is missing or modified.
    """
    t0 = time.perf_counter()
    if cfg.precision not in PRECISIONS:
        raise EngineBuildError(f"unknown precision {cfg.precision!r}; choose from {PRECISIONS}")
    if cfg.workspace <= 0 or cfg.max_classes <= 0:
        raise EngineBuildError("--workspace and --max-classes must be positive")
    manifest = load_manifest(cfg.folder)
    if probe is None:
        from runtime.probe import run_probe

        probe = run_probe()
    trt = _require_builder(probe)
    key, onnx_path = _key(cfg, manifest, probe)
    hit = _cached(cfg, key)
    if hit is not None:
        log.info("engine cache hit: %s", hit.engine_file)
        return EngineResult(
            engine_dir(cfg.folder) / hit.engine_file, hit, True, time.perf_counter() - t0
        )
    record = _build(trt, cfg, manifest, key, onnx_path, probe)
    return EngineResult(
        engine_dir(cfg.folder) / record.engine_file, record, False, time.perf_counter() - t0
    )


def _build(
    trt, cfg: EngineCfg, manifest: Manifest, key: EngineKey, onnx_path: Path, probe
) -> EngineRecord:
    from runtime.backends.trt import make_logger

    t0 = time.perf_counter()
    logger = make_logger(trt, log)
    builder = trt.Builder(logger)
    flags, strongly_typed = network_flags(trt, cfg.dla)
    network = builder.create_network(flags)
    parser = parse_onnx(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace << 20)
    bflags = builder_flags(trt, cfg.precision, strongly_typed, cfg.dla, cfg.version_compatible)
    for flag in bflags:
        config.set_flag(flag)
    if cfg.dla >= 0:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg.dla
    profile = add_profile(trt, builder, network, config, manifest, cfg.max_classes)
    cache_path = (
        Path(cfg.timing_cache)
        if cfg.timing_cache
        else default_timing_cache(key.gpu_name, key.tensorrt_version)
    )
    load_timing_cache(config, cache_path)
    log.info(
        "building a %s TensorRT %s engine for %s on %s (this takes minutes)",
        cfg.precision,
        trt.__version__,
        onnx_path.name,
        key.gpu_name,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build an engine from {str(onnx_path)!r} "
            "(see the TensorRT errors logged above)"
        )
    save_timing_cache(config, cache_path)
    engine_path = engine_dir(cfg.folder) / f"{key.stem()}.engine"
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    del parser
    build = {
        "strongly_typed": strongly_typed,
        "flags": [str(f).split(".")[-1] for f in bflags],
        "workspace_mb": cfg.workspace,
        "profile": profile,
        "timing_cache": str(cache_path),
        "seconds": round(time.perf_counter() - t0, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "jetson": probe.jetson,
    }
    record = EngineRecord(key, engine_path.name, sha256_file(engine_path), build)
    write_record(cfg.folder, record)
    log.info(
        "engine written: %s (%.1f MB, %.1f s)",
        engine_path,
        engine_path.stat().st_size / 1e6,
        build["seconds"],
    )
    return record


def parse_args(argv: list[str] | None = None) -> tuple[EngineCfg, bool, bool]:
    """The EngineCfg for the command line, and whether ``--verbose`` and ``--print-trtexec``
    were given."""
    p = ArgumentParser(prog="python -m export.engine", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="deployable folder (export.build output)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="graph to build from: fp32 (model.onnx) or a calibration.calibrate variant",
    )
    p.add_argument(
        "--workspace",
        type=int_range(1, MAX_WORKSPACE_MB),
        default=DEFAULT_WORKSPACE_MB,
        help="workspace pool, MiB",
    )
    p.add_argument(
        "--dla",
        type=int_range(-1, MAX_DLA_CORE),
        default=-1,
        help="DLA core (Jetson AGX/NX), -1: GPU only; GPU fallback on",
    )
    p.add_argument(
        "--version-compatible",
        action="store_true",
        help="engine runs on later TensorRT versions of the same major, and on the "
        "lean runtime (tensorrt_lean), which runs only such engines",
    )
    p.add_argument(
        "--max-classes",
        type=int_range(1, MAX_CLASSES_LIMIT),
        default=DEFAULT_MAX_CLASSES,
        help="vocabulary-as-input graphs: largest vocabulary the engine accepts",
    )
    p.add_argument(
        "--timing-cache", help="timing cache file (default: one per GPU and TensorRT version)"
    )
    p.add_argument("--force", action="store_true", help="rebuild even when a cached engine fits")
    p.add_argument(
        "--print-trtexec",
        action="store_true",
        help="build nothing: print the equivalent trtexec command (line 1) and polygraphy "
        "convert command (line 2) for TensorRT 10; needs no GPU or TensorRT",
    )
    add_verbose_arg(p)
    args = vars(p.parse_args(argv))
    verbose, print_trtexec = args.pop("verbose"), args.pop("print_trtexec")
    return EngineCfg(**args), verbose, print_trtexec


@cli_main
def main(argv: list[str] | None = None) -> int:
    cfg, verbose, print_trtexec = parse_args(argv)
    setup_logging(verbose)
    check_outputs(files=[(cfg.timing_cache, "--timing-cache")])  # before a minutes-long build
    if print_trtexec:
        from export.trtexec import print_commands

        print_commands(cfg)
        return 0
    result = build_engine(cfg)
    print(
        json.dumps(
            {
                "engine": str(result.engine),
                "cached": result.cached,
                "seconds": round(result.seconds, 1),
                "key": dataclasses.asdict(result.record.key),
                "build": result.record.build,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
