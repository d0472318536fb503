"""Facts about the machine a benchmark ran on (torch-free, for the device-side benchmarks)."""

from __future__ import annotations

import json
import shlex

from runtime.fsutil import atomic_write_text

# Report outputs a benchmark may take: checked as writable files before any timing.
REPORT_FLAGS = ("json", "plot", "png")


def check_report_paths(args) -> None:
    """``--json`` / ``--plot`` / ``--png`` (those ``args`` has and sets) can be written as files:
    an existing folder there, a parent that is a file or no permission is one error line
    (``runtime.outputs.OutputPathError``) before the minutes of timing, not after."""
    from runtime.cli_checks import check_outputs

    check_outputs(
        files=[(getattr(args, name, None), f"--{name}") for name in REPORT_FLAGS],
    )


def cpu_model() -> str | None:
    """The CPU's ``model name`` from /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            rows = (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
            return next(rows, None)
    except OSError:
        return None


def publish(report: dict, prog: str, argv: list[str], json_path: str | None) -> None:
    """Record the command that made ``report``, write it to ``json_path`` atomically (if given)
    and print it as one JSON line: the shared ending of the torch-free benchmark CLIs."""
    report["command"] = shlex.join(["python", "-m", prog, *argv])
    if json_path:
        atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


def save_png(fig, path: str) -> None:
    """Write a matplotlib figure as a PNG atomically and free it."""
    import matplotlib.pyplot as plt

    from runtime.fsutil import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def torch_free_main(prog: str, argv: list[str] | None, parse, run, plot) -> int:
    """The body of a torch-free benchmark CLI: parse, log, ``run(args) -> report``, the PNG
    (``plot(report, args.png)`` when ``--png`` is given), then ``publish``."""
    import sys

    from runtime.cli import setup_logging

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    setup_logging(args.verbose)
    check_report_paths(args)
    report = run(args)
    if args.png:
        plot(report, args.png)
    publish(report, prog, argv, args.json)
    return 0
