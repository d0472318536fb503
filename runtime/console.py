"""Console commands (``[project.scripts]`` in pyproject): ``ovss-infer``, ``ovss-export``, ...

Each command imports its program only when run, so a command whose extra is not installed says
which one to install (one ``error:`` line, exit 2) instead of a traceback. A console script
puts its own bin folder, not the current directory, first on ``sys.path``: run from a project
that has its own ``runtime/`` or ``training/`` package, it still runs ovss-edge's (where
``python -m runtime.infer`` would pick up the project's).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from runtime.cli import EXIT_USER_ERROR, missing_extra

# command -> (module with main(argv) -> int, the extra it needs)
COMMANDS = {
    "ovss-export": ("export.build", "export"),
    "ovss-infer": ("runtime.infer", "ort"),
    "ovss-camera": ("runtime.camera", "ort,camera"),
    "ovss-calibrate": ("calibration.calibrate", "calib,ort"),
    "ovss-engine": ("export.engine", "calib,trt"),
    "ovss-train": ("training.train", "export,train"),
    "ovss-evaluate": ("training.evaluate", "export,train"),
    "ovss-probe": ("runtime.probe", "ort"),
    "ovss-bench": ("benchmarks.latency", "export,ort,bench"),
}


def run(command: str, argv: list[str] | None = None) -> int:
    """Run ``command``'s program; exit status 2 with one line when its extra is missing."""
    module, extra = COMMANDS[command]
    try:
        program = importlib.import_module(module)
    except ImportError as e:
        hint = missing_extra(e) or f"{e}"
        print(
            f"error: {command} needs the {extra!r} extra(s): {hint}"
            f" (pip install 'ovss-edge[{extra}]')",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    return program.main(argv)


def _entry(command: str) -> Callable[[], int]:
    def entry() -> int:
        return run(command)

    entry.__name__ = entry.__qualname__ = command.replace("-", "_")
    return entry


export = _entry("ovss-export")
infer = _entry("ovss-infer")
camera = _entry("ovss-camera")
calibrate = _entry("ovss-calibrate")
engine = _entry("ovss-engine")
train = _entry("ovss-train")
evaluate = _entry("ovss-evaluate")
probe = _entry("ovss-probe")
bench = _entry("ovss-bench")
