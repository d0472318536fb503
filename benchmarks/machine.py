"""Facts about the machine a benchmark ran on (torch-free, so device-side benchmarks can use them)."""

from __future__ import annotations


def cpu_model() -> str | None:
    """The CPU's ``model name`` from /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            rows = (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
            return next(rows, None)
    except OSError:
        return None
