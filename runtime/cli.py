"""The command-line layer every Python program shares: one error policy, one logging setup, typed
argparse helpers and the Segmenter flags, defined once. Torch-free; imports nothing heavy.

Use::

    from runtime.cli import ArgumentParser, cli_main, positive_int, setup_logging

    def parse_args(argv=None):
        p = ArgumentParser(prog="python -m pkg.tool", description="...")
        p.add_argument("--runs", type=positive_int, default=20)
        add_verbose_arg(p)
        return p.parse_args(argv)

    @cli_main
    def main(argv: list[str] | None = None) -> int:
        args = parse_args(argv)
        setup_logging(args.verbose)
        ...           # raise an OvssError for bad input; never print a traceback for it
        return 0

    if __name__ == "__main__":
        sys.exit(main())

Error policy (``run_main`` / ``cli_main``), the same for every program:
    - argument errors: exit 2 with one line ``PROG: error: MESSAGE`` on stderr (no usage block);
    - ``OvssError`` (bad input, ``runtime.errors``), ``ImportError`` (a missing extra),
      ``argparse.ArgumentTypeError`` and ``OSError`` (an unreadable or unwritable path): exit 2
      with one line ``error: MESSAGE`` on stderr;
    - ``KeyboardInterrupt``: exit 130 with one line ``interrupted`` on stderr;
    - ``BrokenPipeError`` (stdout closed early, ``| head``): exit 141, silently;
    - anything else is a bug and keeps its traceback. ``OVSS_TRACEBACK=1`` in the environment
      re-raises the errors above too, to see where they came from.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable

from runtime.errors import OvssError

# OSError: a path the user gave cannot be read or written (missing parent, no permission, a
# folder where a file should be); its message names the path.
USER_ERRORS: tuple[type[BaseException], ...] = (
    OvssError,
    ImportError,
    argparse.ArgumentTypeError,
    OSError,
)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_PACKAGES = ("runtime", "export", "training", "calibration", "benchmarks", "__main__")
TRACEBACK_ENV = "OVSS_TRACEBACK"
MainFn = Callable[[list[str] | None], "int | None"]


# --- error policy ----------------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE``, exit 2.

    Subparsers made with ``add_subparsers()`` are of this class too (argparse's default).
    """

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {one_line(message)}\n")


# Third-party module (top-level name) -> the ovss-edge extra that installs it.
EXTRA_OF_MODULE = {
    "torch": "export",
    "torchvision": "export",
    "open_clip": "export",
    "onnxscript": "export",
    "onnxslim": "export",
    "safetensors": "export",
    "onnx": "export",  # calib has it too
    "onnxruntime": "ort",
    "cv2": "camera",
    "numba": "fast",
    "regex": "text",
    "ftfy": "text",
    "matplotlib": "bench",
    "tensorboard": "train",
    "tqdm": "export",
    "cuda": "trt",
}


def missing_extra(e: ImportError) -> str | None:
    """For an import of a module an extra provides: "pip install 'ovss-edge[EXTRA]'" advice."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(name)
    if extra is None:
        return None
    return f"the {name!r} module is missing: pip install 'ovss-edge[{extra}]'"


def one_line(message: object) -> str:
    """``message`` as one line: its non-blank lines stripped and joined with "; "."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(lines)


def run_main(
    main_fn: MainFn,
    argv: list[str] | None = None,
    *,
    user_errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> int:
    """Call ``main_fn(argv)`` under the error policy; returns the exit status.

    Args:
        main_fn: the program, ``main(argv) -> int | None`` (None counts as 0).
        argv: arguments without the program name (None: ``sys.argv[1:]``, as argparse reads it).
        user_errors: exception types reported as one ``error:`` line with exit 2.
    Returns:
        ``main_fn``'s status; 2 after a user error; 130 after KeyboardInterrupt; 141 when stdout
        was closed early.
    ``SystemExit`` (argparse errors, ``--help``) passes through unchanged.
    """
    try:
        status = main_fn(argv)
    except BrokenPipeError:  # stdout closed early (``| head``): quiet, as a shell tool would be
        try:  # point stdout at /dev/null, so the flush at interpreter exit cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # no real file descriptor (a test's capture)
            pass
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors as e:
        if os.environ.get(TRACEBACK_ENV):
            raise
        hint = missing_extra(e) if isinstance(e, ImportError) else None
        print(f"error: {hint or one_line(e) or type(e).__name__}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0 if status is None else int(status)


def cli_main(main_fn: MainFn) -> Callable[[list[str] | None], int]:
    """Decorator: ``main(argv=None) -> int`` runs under :func:`run_main`'s error policy."""

    @functools.wraps(main_fn)
    def wrapped(argv: list[str] | None = None) -> int:
        return run_main(main_fn, argv)

    return wrapped


# --- logging ---------------------------------------------------------------------------------


class _Handler(logging.StreamHandler):
    """The handler ``setup_logging`` installs (found again and replaced on a second call). It
    writes to whatever ``sys.stderr`` is at the time of the record, so a replaced stderr (a test's
    capture, a redirect) never leaves it writing to a closed stream."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def process_rank() -> int:
    """This process's rank under torchrun (``RANK``, else ``LOCAL_RANK``); 0 when not distributed
    or when the variable is not an integer."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def setup_logging(verbose: bool = False) -> int:
    """One logging setup for every program: one stderr format, this project's loggers at INFO
    (DEBUG with ``verbose``), other libraries at WARNING. Under torchrun only rank 0 logs at
    INFO; the other ranks log warnings and errors only, prefixed ``[rank N]``.

    Safe to call again (it replaces its own handler and leaves other handlers alone).

    Args:
        verbose: DEBUG instead of INFO for this project's loggers (rank 0 only).
    Returns:
        the level set on this project's loggers.
    """
    rank = process_rank()
    level = logging.WARNING if rank != 0 else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(h)
    handler = _Handler()
    prefix = f"[rank {rank}] " if rank != 0 else ""
    handler.setFormatter(logging.Formatter(prefix + LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in LOG_PACKAGES:
        logging.getLogger(name).setLevel(level)
    return level


def add_verbose_arg(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose``: DEBUG logging (pass ``args.verbose`` to :func:`setup_logging`)."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


# --- argparse types --------------------------------------------------------------------------


def parse_number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _checked(text: str, kind: type, what: str, ok: Callable[[float], bool]):
    value = parse_number(text, kind, what)
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    return _checked(text, int, "an integer > 0", lambda v: v > 0)


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _checked(text, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _checked(text, float, "a number > 0", lambda v: v > 0)


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _checked(text, float, "a number >= 0", lambda v: v >= 0)


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    return _checked(text, float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)


def threshold_float(text: str) -> float:
    """argparse type: a number in [0, 1) (a probability threshold)."""
    return _checked(text, float, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)


def bounded_int(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type factory: an integer in [lo, hi] (``hi`` None: no upper bound). Refuses
    floats ("1.5"), NaN, inf and anything out of range, naming the range."""
    what = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def check(text: str) -> int:
        return _checked(text, int, what, lambda v: v >= lo and (hi is None or v <= hi))

    check.__name__ = f"int_{lo}_{hi}"
    return check


MAX_THREADS = 256  # intra-op threads: more is a typo, and onnxruntime would spawn them all
MAX_SHORT_SIDE = 16384  # a rescale target beyond this is a typo (and gigabytes of scores)
threads_int = bounded_int(1, MAX_THREADS)
threads_int.__doc__ = f"argparse type: a thread count in [1, {MAX_THREADS}]."
short_side_int = bounded_int(0, MAX_SHORT_SIDE)
short_side_int.__doc__ = f"argparse type: a short-side length in [0, {MAX_SHORT_SIDE}] (0: off)."


def check_int_setting(name: str, value, lo: int, hi: int | None = None, *, none_ok: bool = True):
    """A setting that is not from argparse (a config file, an API call) is an int in [lo, hi].

    Raises:
        ConfigError: a bool, a float, a string, or a value out of range (naming ``name``).
    """
    from runtime.errors import ConfigError

    if value is None and none_ok:
        return None
    in_range = value >= lo and (hi is None or value <= hi) if _is_int(value) else False
    if not in_range:
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _is_int(value) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def multiple_of(n: int) -> Callable[[str], int]:
    """argparse type factory: a positive integer multiple of ``n`` (e.g. a patch size)."""
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"multiple_of needs a positive integer, got {n!r}")
    what = f"a positive multiple of {n}"

    def check(text: str) -> int:
        return _checked(text, int, what, lambda v: v > 0 and v % n == 0)

    check.__name__ = f"multiple_of_{n}"
    return check


def vocabulary(text: str) -> tuple[str, ...]:
    """argparse type: a ``--classes`` spec parsed by ``runtime.vocab.parse_vocabulary`` (a list
    name, a class file or 'a,b,c'), so a bad vocabulary fails before any model is loaded."""
    from runtime.errors import VocabularyError
    from runtime.vocab import parse_vocabulary

    try:
        return parse_vocabulary(text)
    except VocabularyError as e:  # a ValueError, which argparse would report as "invalid value"
        raise argparse.ArgumentTypeError(str(e)) from None


def add_max_pixels_arg(parser: argparse.ArgumentParser, *, dest: str = "max_pixels") -> None:
    """``--max-pixels N``: refuse decoded images over N pixels (H*W) before decoding them;
    default ``runtime.image.DEFAULT_MAX_PIXELS``, 0 = no limit. Pass ``args.max_pixels`` to
    ``runtime.image.load_image(path, max_pixels=...)``."""
    from runtime.image import DEFAULT_MAX_PIXELS

    parser.add_argument(
        "--max-pixels",
        dest=dest,
        type=nonneg_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images over N pixels (width x height), read from the header before "
        f"decoding (default {DEFAULT_MAX_PIXELS:,}; 0: no limit)",
    )


# --- the Segmenter flags ---------------------------------------------------------------------

SEGMENTER_FLAGS = (
    "--model",
    "--backend",
    "--cuda-graph",
    "--precision",
    "--mode",
    "--stride",
    "--slide-edge",
    "--short-side",
    "--threads",
    "--score-threshold",
    "--classes",
)
CLASSES_HELP = (
    "vocabulary, encoded on the device: a list name (voc, context, coco_stuff, ade20k, "
    "cityscapes, camvid), a text file (one class per line, # comments) or 'a,b,c'; "
    "needs a folder exported with --vocab-mode input --text-encoder"
)


def add_segmenter_args(
    parser: argparse.ArgumentParser, *, skip: Iterable[str] = (), help: dict[str, str] | None = None
) -> None:
    """Add the ``runtime.segmenter.Segmenter`` flags, the same in every program.

    Flags (dest in brackets): ``--model DIR`` (required), ``--backend {auto,onnxruntime,tensorrt}``,
    ``--cuda-graph``, ``--precision {fp32,fp16,int8}``, ``--mode {auto,whole,slide}``,
    ``--stride PX``, ``--slide-edge {flush,grid}``, ``--short-side PX``, ``--threads N``
    (positive ints or None),
    ``--score-threshold T`` (in [0, 1), default 0),
    ``--classes SPEC`` (parsed to a tuple of names, or None). Map them to the Segmenter's keyword
    arguments with :func:`segmenter_kwargs`.

    Args:
        parser: the program's parser.
        skip: flags this program defines itself or does not take, e.g. ``{"--backend"}``.
        help: per-flag help text replacing the default one.
    """
    from runtime.backends import BACKENDS
    from runtime.manifest import PRECISIONS
    from runtime.segmenter import MODES
    from runtime.windows import EDGES

    skip, help = set(skip), help or {}
    unknown = skip.union(help) - set(SEGMENTER_FLAGS)
    if unknown:
        raise ValueError(f"not Segmenter flags: {sorted(unknown)}; they are {SEGMENTER_FLAGS}")
    flags = {
        "--model": dict(required=True, help="deployable folder (manifest.json + model.onnx)"),
        "--backend": dict(
            default="auto",
            choices=BACKENDS,
            help="auto: a TensorRT engine that fits this GPU, else onnxruntime "
            "(GPU providers only where the probe finds a GPU)",
        ),
        "--cuda-graph": dict(action="store_true", help="TensorRT: replay a captured CUDA graph"),
        "--precision": dict(
            default="fp32",
            choices=PRECISIONS,
            help="graph variant: fp32, or fp16 / int8 made by calibration.calibrate",
        ),
        "--mode": dict(
            default="auto",
            choices=MODES,
            help="whole: resize to the input; slide: sliding windows; auto: whole if it fits",
        ),
        "--stride": dict(type=positive_int, help="slide step in pixels (default: from the model)"),
        "--slide-edge": dict(
            choices=EDGES,
            help="slide windows: flush = the official placement (last window flush with the "
            "edge, averaged at full resolution; default); grid = feature-grid windows on a "
            "padded image, averaged at feature resolution (faster, seams can differ)",
        ),
        "--short-side": dict(
            type=short_side_int,
            help="rescale so the short side has this length first (default: the method's, "
            "from the manifest; 0: no rescaling)",
        ),
        "--threads": dict(
            type=threads_int, help=f"intra-op threads, 1..{MAX_THREADS} (default: all cores)"
        ),
        "--score-threshold": dict(
            type=threshold_float,
            default=0.0,
            metavar="T",
            help="open-set output: pixels whose top-class probability (the method's softmax, or "
            "ZegCLIP / CLIP-RC's sigmoid score) is below T get label 255, 'unknown' "
            "(default 0: off)",
        ),
        "--classes": dict(type=vocabulary, metavar="SPEC", help=CLASSES_HELP),
    }
    for flag, options in flags.items():
        if flag not in skip:
            if flag in help:
                options = {**options, "help": help[flag]}
            parser.add_argument(flag, **options)


def segmenter_kwargs(args: argparse.Namespace, **overrides) -> dict:
    """``Segmenter(**segmenter_kwargs(args))`` for the flags of :func:`add_segmenter_args` that
    ``args`` has (``--classes`` is not a constructor argument: call ``seg.set_classes``).

    ``cuda_graph`` is passed only when set, since only the TensorRT backend takes it.
    ``overrides`` replace or add keyword arguments (e.g. ``backend=`` per benchmark config).
    """
    names = {
        "model": "folder",
        "backend": "backend",
        "mode": "mode",
        "stride": "stride",
        "slide_edge": "slide_edge",
        "short_side": "short_side",
        "precision": "precision",
        "threads": "threads",
        "score_threshold": "score_threshold",
    }
    kwargs = {key: getattr(args, dest) for dest, key in names.items() if hasattr(args, dest)}
    if getattr(args, "cuda_graph", False):
        kwargs["cuda_graph"] = True
    kwargs.update(overrides)
    return check_segmenter_kwargs(kwargs)


# keyword -> (lo, hi) of the integer Segmenter settings the backends do not check themselves
SEGMENTER_INT_BOUNDS = {
    "threads": (1, MAX_THREADS),
    "stride": (1, None),
    "short_side": (0, MAX_SHORT_SIDE),
}


def check_segmenter_kwargs(kwargs: dict) -> dict:
    """Refuse out-of-range Segmenter settings that did not come through argparse (overrides, a
    benchmark config): ``threads`` in [1, MAX_THREADS], ``stride`` >= 1, ``short_side`` in
    [0, MAX_SHORT_SIDE] (None: the default), ``score_threshold`` in [0, 1).

    Returns:
        ``kwargs`` unchanged.
    Raises:
        ConfigError: naming the setting and the range.
    """
    from runtime.errors import ConfigError

    for key, (lo, hi) in SEGMENTER_INT_BOUNDS.items():
        if key in kwargs:
            check_int_setting(key, kwargs[key], lo, hi)
    t = kwargs.get("score_threshold")
    if t is not None and not (
        isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t < 1.0
    ):
        raise ConfigError(f"score_threshold must be a number in [0, 1), got {t!r}")
    return kwargs
