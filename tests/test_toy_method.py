"""A method registered from one file (``tests/toy_method.py``) gets the whole method contract and
the export CLI, with no other file changed."""

from __future__ import annotations

import json

import pytest
import toy_method
from method_contract import MethodContract

from training.methods import METHODS, register, unregister


@pytest.fixture(scope="class")
def method_name():
    register(toy_method.SPEC)
    yield toy_method.NAME
    unregister(toy_method.NAME)


class TestToyMethod(MethodContract):
    def test_export_cli_has_the_toy_flags(self, method_name, tmp_path, capsys):
        from export import build

        assert method_name in METHODS
        rc = build.main(
            [
                "--method",
                method_name,
                "--backbone",
                "ovss-tiny-vit",
                "--classes",
                "a,b,c",
                "--image-size",
                "64",
                "--box",
                "5",
                "--output",
                str(tmp_path / "o"),
            ]
        )
        assert rc == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["method"] == method_name
        from runtime.manifest import load_manifest

        assert load_manifest(tmp_path / "o").method_cfg["box"] == 5

    def test_foreign_flag_is_refused(self, method_name, capsys):
        from export import build

        with pytest.raises(SystemExit) as e:
            build.parse_args(
                [
                    "--method",
                    method_name,
                    "--backbone",
                    "x",
                    "--classes",
                    "a",
                    "--output",
                    "o",
                    "--ks-thresh",
                    "0.5",
                ]
            )
        assert e.value.code == 2 and "--ks-thresh" in capsys.readouterr().err
