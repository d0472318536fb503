"""Method name -> exporter, read from the one registry (``training.methods.METHODS``)."""

from __future__ import annotations

from collections.abc import Mapping

from training.methods import METHODS, get_method


class _Exporters(Mapping):
    """``BUILDERS[name](cfg)``: each method's exporter, imported on first use."""

    def __getitem__(self, name: str):
        return get_method(name).load("exporter")

    def __iter__(self):
        return iter(METHODS)

    def __len__(self) -> int:
        return len(METHODS)


BUILDERS = _Exporters()


def build(cfg):
    """Run ``cfg.method``'s exporter on ``cfg`` (an ``export.config.ExportCfg``)."""
    return BUILDERS[cfg.method](cfg)
