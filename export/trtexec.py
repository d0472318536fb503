"""The ``trtexec`` and ``polygraphy convert`` commands equivalent to ``export.engine``'s build.

    python -m export.engine DIR --print-trtexec [--precision ...] [--dla N] [--workspace MB] ...

prints two lines: the ``trtexec`` command, then the ``polygraphy convert`` command (or a ``#``
comment where Polygraphy cannot express the build), each shell-quoted, so a Jetson with only
TensorRT can build the engine without our Python. Pure functions, no TensorRT import: every
decision (strongly typed or not, builder flags, profile shapes) comes from the same functions
``export.engine`` applies to the TensorRT builder, here fed from the manifest's input shapes.

For TensorRT 10 (JetPack 6) unless told otherwise. Differences from ``export.engine``, by need:
the engine is written to ``engines/<precision>[-dla<N>].engine`` with no cache record (the
``ovss-*`` runtime does not pick it up; load it with your own TensorRT code), and the timing
cache defaults to ``engines/timing.cache`` (``export.engine`` keys its default by GPU name,
which only the target knows). ``--timing-cache FILE`` sets both to FILE.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path

from export.engine import (
    EngineBuildError,
    EngineCfg,
    builder_flag_names,
    profile_shapes,
    strongly_typed_network,
)
from runtime.engine_cache import engine_dir, manifest_input_shapes
from runtime.errors import ModelFolderError
from runtime.manifest import Manifest, load_manifest

TENSORRT_VERSION = "10"  # JetPack 6: the DLA builds need weakly typed networks
TIMING_CACHE_FILE = "timing.cache"
# trt.BuilderFlag name -> (trtexec flag, polygraphy flag)
FLAG_ARGS = {
    "FP16": ("--fp16", "--fp16"),
    "INT8": ("--int8", "--int8"),
    "GPU_FALLBACK": ("--allowGPUFallback", "--allow-gpu-fallback"),
    "VERSION_COMPATIBLE": ("--versionCompatible", "--version-compatible"),
}

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


@dataclass(frozen=True)
class BuildPlan:
    """What ``export.engine`` would set on the builder, as data.

    Attributes:
        onnx, engine, timing_cache: the graph to parse, the engine and timing cache to write.
        strongly_typed: a strongly typed network (precision from the graph's dtypes / Q/DQ).
        flags: ``trt.BuilderFlag`` names, in ``export.engine``'s order.
        shapes: {input: (min, opt, max)} of the one profile; empty for static graphs.
        workspace_mb: the workspace pool limit, MiB.
        dla: the DLA core, -1 for the GPU.
    """

    onnx: Path
    engine: Path
    timing_cache: Path
    strongly_typed: bool
    flags: tuple[str, ...]
    shapes: Shapes
    workspace_mb: int
    dla: int


@dataclass(frozen=True)
class BuildCommands:
    """The two command lines, shell-quoted; ``polygraphy`` is None where it cannot express
    the build (a DLA core other than 0)."""

    trtexec: str
    polygraphy: str | None


def build_plan(
    manifest: Manifest,
    folder: str | Path,
    precision: str,
    cfg: EngineCfg,
    tensorrt_version: str = TENSORRT_VERSION,
    check_file: bool = True,
) -> BuildPlan:
    """The build of ``folder``'s ``precision`` graph with ``cfg``'s builder settings.

    Args:
        manifest: the folder's manifest (its input shapes and vocabulary size).
        folder: the deployable folder; ``cfg.folder`` and ``cfg.precision`` are not used, so one
            cfg serves every variant.
        precision: "fp32", "fp16" or "int8" (a variant the manifest lists).
        cfg: workspace, dla, version_compatible, max_classes and timing_cache.
        tensorrt_version: the target's TensorRT, e.g. "10.3" (decides strong typing for DLA).
        check_file: refuse a graph file missing from ``folder`` (off for a manifest whose
            folder is still being written).
    Raises:
        EngineBuildError: settings ``export.engine`` refuses (DLA with fp32, bad sizes).
        ModelFolderError: no such variant, or its graph file is missing.
    """
    if cfg.workspace <= 0 or cfg.max_classes <= 0:
        raise EngineBuildError("--workspace and --max-classes must be positive")
    name, _ = manifest.model_for(precision)
    onnx = Path(folder) / name
    if check_file and not onnx.is_file():
        raise ModelFolderError(f"{str(onnx)!r} named by the manifest is missing")
    strongly_typed = strongly_typed_network(tensorrt_version, cfg.dla)
    flags = builder_flag_names(precision, strongly_typed, cfg.dla, cfg.version_compatible)
    dims = {k: tuple(v) for k, v in manifest_input_shapes(manifest.inputs).items()}
    stem = precision if cfg.dla < 0 else f"{precision}-dla{cfg.dla}"
    engines = engine_dir(folder)
    return BuildPlan(
        onnx=onnx,
        engine=engines / f"{stem}.engine",
        timing_cache=Path(cfg.timing_cache) if cfg.timing_cache else engines / TIMING_CACHE_FILE,
        strongly_typed=strongly_typed,
        flags=tuple(flags),
        shapes=profile_shapes(dims, len(manifest.classes), cfg.max_classes),
        workspace_mb=cfg.workspace,
        dla=cfg.dla,
    )


def _dims(shape: tuple[int, ...], sep: str) -> str:
    return sep.join(str(d) for d in shape)


def plan_trtexec(plan: BuildPlan) -> list[str]:
    """argv of the ``trtexec`` build of ``plan`` (TensorRT 10 flags; build only)."""
    cmd = ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={plan.engine}"]
    if plan.strongly_typed:
        cmd.append("--stronglyTyped")
    if plan.dla >= 0:
        cmd.append(f"--useDLACore={plan.dla}")
    cmd += [FLAG_ARGS[f][0] for f in plan.flags]
    cmd.append(f"--memPoolSize=workspace:{plan.workspace_mb}M")
    for i, opt in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
        if plan.shapes:
            cmd.append(
                f"{opt}=" + ",".join(f"{k}:{_dims(v[i], 'x')}" for k, v in plan.shapes.items())
            )
    cmd += [f"--timingCacheFile={plan.timing_cache}", "--skipInference"]
    return cmd


def plan_polygraphy(plan: BuildPlan) -> list[str] | None:
    """argv of the ``polygraphy convert`` build of ``plan``; None for a DLA core other than 0
    (``--use-dla`` builds for core 0 only)."""
    if plan.dla > 0:
        return None
    cmd = ["polygraphy", "convert", str(plan.onnx), "--convert-to", "trt"]
    if plan.strongly_typed:
        cmd.append("--strongly-typed")
    if plan.dla == 0:
        cmd.append("--use-dla")
    cmd += [FLAG_ARGS[f][1] for f in plan.flags]
    cmd += ["--pool-limit", f"workspace:{plan.workspace_mb}M"]
    for i, opt in enumerate(("--trt-min-shapes", "--trt-opt-shapes", "--trt-max-shapes")):
        if plan.shapes:
            cmd += [opt, *(f"{k}:[{_dims(v[i], ',')}]" for k, v in plan.shapes.items())]
    cache = str(plan.timing_cache)
    cmd += ["--load-timing-cache", cache, "--save-timing-cache", cache, "-o", str(plan.engine)]
    return cmd


def trtexec_command(
    manifest: Manifest, folder: str | Path, precision: str, cfg: EngineCfg, **kw
) -> list[str]:
    """argv of the ``trtexec`` command equivalent to ``export.engine``'s build (``build_plan``
    takes the same arguments)."""
    return plan_trtexec(build_plan(manifest, folder, precision, cfg, **kw))


def polygraphy_command(
    manifest: Manifest, folder: str | Path, precision: str, cfg: EngineCfg, **kw
) -> list[str] | None:
    """argv of the ``polygraphy convert`` command equivalent to ``export.engine``'s build, or
    None where Polygraphy cannot select the DLA core (``build_plan`` takes the same arguments)."""
    return plan_polygraphy(build_plan(manifest, folder, precision, cfg, **kw))


def build_commands(
    manifest: Manifest, folder: str | Path, precision: str, cfg: EngineCfg, **kw
) -> BuildCommands:
    """Both commands as shell-quoted strings (``shlex.join``)."""
    plan = build_plan(manifest, folder, precision, cfg, **kw)
    poly = plan_polygraphy(plan)
    return BuildCommands(shlex.join(plan_trtexec(plan)), shlex.join(poly) if poly else None)


def folder_commands(manifest: Manifest, folder: str | Path = ".") -> dict[str, dict[str, str]]:
    """What the manifest records (``build_commands``): for fp32 and every variant, the
    ``trtexec`` (and ``polygraphy``, where it can express the build) line with the default
    builder settings (no DLA, the default workspace and class range), paths relative to the
    folder: run them inside it, on the target, after ``mkdir -p engines``. Needs only the
    manifest (file names, input shapes, vocabulary size), not the files."""
    root = Path(folder)
    out = {}
    for precision in ("fp32", *sorted(manifest.variants)):
        cfg = EngineCfg(folder=str(root))
        plan = build_plan(manifest, root, precision, cfg, check_file=False)
        rel = dataclasses.replace(
            plan,
            onnx=plan.onnx.relative_to(root),
            engine=plan.engine.relative_to(root),
            timing_cache=plan.timing_cache.relative_to(root),
        )
        poly = plan_polygraphy(rel)
        out[precision] = {"trtexec": shlex.join(plan_trtexec(rel))}
        if poly:
            out[precision]["polygraphy"] = shlex.join(poly)
    return out


def print_commands(cfg: EngineCfg) -> BuildCommands:
    """Print the two lines for ``cfg`` (``--print-trtexec``): trtexec, then polygraphy or a
    ``#`` comment saying why there is none."""
    cmds = build_commands(load_manifest(cfg.folder), cfg.folder, cfg.precision, cfg)
    print(cmds.trtexec)
    print(
        cmds.polygraphy
        or f"# polygraphy convert --use-dla builds for DLA core 0 only: use trtexec for core "
        f"{cfg.dla}"
    )
    return cmds
