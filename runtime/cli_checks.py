"""Argument checks shared by the producing programs (export, engine, calibrate, train, evaluate,
benchmarks): bounded numbers refused by argparse (one line, exit 2) and path checks done before
the expensive work. Torch-free; imports nothing heavy.

Refused here:
    - integers outside their range (``--threads`` 1..256, ``--image-size`` 1..4096, ``--opset``
      17..20, ``--seed`` 0..2**32-1, counts below 1 or 0, ...);
    - floats that are not finite (``nan``, ``inf``) or outside their range;
    - output paths that cannot be written (``runtime.outputs``), input files that are missing
      or are folders, before any model is built.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from runtime.cli import (  # noqa: F401  (re-exported: one set of bounded types for all programs)
    MAX_THREADS,
    nonneg_float,
    parse_number,
    positive_float,
    short_side_int,
    threads_int,
    unit_float,
)
from runtime.cli import bounded_int as int_range
from runtime.errors import ConfigError
from runtime.outputs import check_output_dir, check_output_file

# Largest square input side / crop / stride a program accepts, pixels (a 4096x4096 ViT-B/16 input
# is 65536 tokens: already far past what any device runs).
MAX_IMAGE_SIDE = 4096
# ONNX opsets the TorchScript exporter writes (torch.onnx ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
# and that LayerNormalization needs (17); a test checks the upper bound against torch.
MIN_OPSET, MAX_OPSET = 17, 20
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_COUNT = 1_000_000  # runs, frames, iterations between logs, ...
MAX_BATCH = 4096
MAX_LABEL = 65535  # 16-bit label PNGs


def float_range(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[str], float]:
    """argparse type factory: a finite number in the range (``nan`` and ``inf`` always refused);
    ``lo_open`` / ``hi_open`` exclude the bound itself."""
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    what = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(text: str) -> float:
        value = parse_number(text, float, what)
        low_bad = lo is not None and (value <= lo if lo_open else value < lo)
        high_bad = hi is not None and (value >= hi if hi_open else value > hi)
        if low_bad or high_bad:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    check.__name__ = "float_range"
    return check


finite_float = float_range()
open_unit_float = float_range(0.0, 1.0, hi_open=True)  # a probability threshold, [0, 1)
threads_arg = threads_int
image_side = int_range(1, MAX_IMAGE_SIDE)
short_side = short_side_int  # 0: no rescaling
opset_arg = int_range(MIN_OPSET, MAX_OPSET)
seed_arg = int_range(0, MAX_SEED)
count_arg = int_range(1, MAX_COUNT)  # runs, frames, iterations, intervals
nonneg_count = int_range(0, MAX_COUNT)  # warm-up rounds, limits (0: none)
batch_arg = int_range(1, MAX_BATCH)
label_arg = int_range(0, MAX_LABEL)


def check_outputs(
    files: Iterable[tuple[str | os.PathLike | None, str]] = (),
    dirs: Iterable[tuple[str | os.PathLike | None, str]] = (),
) -> None:
    """Check output files and folders (``(path, what)``, None skipped) before the work.

    Raises:
        runtime.outputs.OutputPathError: a folder where a file goes (or the reverse), an
            ancestor that is a file, or no permission to write.
    """
    for path, what in files:
        if path is not None:
            check_output_file(path, what)
    for path, what in dirs:
        if path is not None:
            check_output_dir(path, what)


def check_input_file(path: str | os.PathLike | None, what: str) -> None:
    """``path`` (None skipped) is an existing regular file (not a folder).

    Raises:
        ConfigError: it does not exist, or is not a file.
    """
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} is not a file")
