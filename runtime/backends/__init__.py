"""Inference backends behind one small protocol. Backend modules are imported lazily."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from runtime.errors import UnknownNameError

BACKENDS = ("onnxruntime",)


class Backend(Protocol):
    """What every backend offers: named feeds in, named outputs out, and owned resources."""

    name: str

    @property
    def providers(self) -> tuple[str, ...]:
        """Execution providers or devices actually in use."""

    @property
    def input_names(self) -> tuple[str, ...]:
        """Graph input names, in order."""

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph output names, in order."""

    def __call__(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run once. ``feeds`` maps input names to arrays; returns the requested outputs."""

    def close(self) -> None:
        """Release sessions, engines and device memory."""


def make_backend(name: str, model_path: str, **options) -> Backend:
    """Create the backend called ``name`` for ``model_path``.

    Raises:
        UnknownNameError: ``name`` is not one of BACKENDS.
    """
    if name == "onnxruntime":
        from runtime.backends.ort import OrtBackend

        return OrtBackend(model_path, **options)
    raise UnknownNameError(f"unknown backend {name!r}; choose from {list(BACKENDS)}")
