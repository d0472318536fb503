"""Every registered method gets the contract tests (``tests/method_contract.py``), and the
registry itself is consistent."""

from __future__ import annotations

import dataclasses

import pytest
from method_contract import MethodContract

from training.methods import METHODS, get_method
from runtime.errors import UnknownNameError


@pytest.fixture(scope="class", params=sorted(METHODS))
def method_name(request) -> str:
    return request.param


class TestEveryMethod(MethodContract):
    pass


@pytest.mark.parametrize("name", sorted(METHODS))
def test_spec_references_resolve_and_defaults_build(name):
    spec = METHODS[name]
    cfg = spec.defaults()
    assert dataclasses.is_dataclass(cfg) and hasattr(cfg, "image_size") and hasattr(cfg, "templates")
    for ref in ("exporter", "model_builder", "wrapper") + (("train_loop",) if spec.trainable else ()):
        assert callable(spec.load(ref)), ref
    assert set(dict(spec.smoke_options)) <= {f.name for f in spec.fields()}


def test_template_names_match_the_template_sets():
    from training.methods.spec import TEMPLATE_NAMES
    from training.text_classifier import TEMPLATE_SETS

    assert TEMPLATE_NAMES == tuple(sorted(TEMPLATE_SETS))
    for spec in METHODS.values():
        assert spec.defaults().templates in TEMPLATE_SETS
    with pytest.raises(ValueError, match="templates must be one of"):
        METHODS["maskclip"].make_config(templates="imagenet81")


def test_unknown_method_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="did you mean sclip"):
        get_method("sclipp")


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="ks_thresh"):
        METHODS["sclip"].make_config(ks_thresh=0.5)
