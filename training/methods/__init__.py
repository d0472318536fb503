"""The one registry: method name -> ``MethodSpec`` (its config, defaults, builders, loop kind).

``export.build``, ``training.train``, ``training.evaluate``, the benchmarks and the tests read
``METHODS``. Adding a method is one module that calls ``register``; importing this package is
torch-free.
"""

from __future__ import annotations

import difflib

from runtime.errors import UnknownNameError
from training.methods.spec import MethodSpec, Published, option

METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` under ``spec.name`` (re-registering the same spec is a no-op)."""
    known = METHODS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"method {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy one)."""
    METHODS.pop(name, None)


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``; UnknownNameError with the closest names otherwise."""
    if name in METHODS:
        return METHODS[name]
    close = difflib.get_close_matches(name, sorted(METHODS), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise UnknownNameError(f"unknown method {name!r}{hint} (registered: {sorted(METHODS)})")


def trainable() -> list[str]:
    """Names of the methods with a training loop."""
    return sorted(n for n, s in METHODS.items() if s.trainable)


# The built-in methods register themselves on import (after the names above exist).
from training.methods import clearclip, cliprc, maskclip, maskclip_plus, naclip, sclip, zegclip  # noqa: E402,F401

__all__ = [
    "METHODS",
    "MethodSpec",
    "Published",
    "get_method",
    "option",
    "register",
    "trainable",
    "unregister",
]
