"""The package's public surface."""

from __future__ import annotations

import importlib

import impactin_core


def test_all_has_no_duplicates() -> None:
    assert len(impactin_core.__all__) == len(set(impactin_core.__all__))


def test_every_public_name_resolves() -> None:
    for name in impactin_core.__all__:
        assert getattr(impactin_core, name) is not None, name


def test_all_matches_lazy_table() -> None:
    module = importlib.import_module("impactin_core")
    lazy = {name for names in module._EXPORTS.values() for name in names}

    assert set(impactin_core.__all__) == lazy


def test_dir_lists_lazy_and_module_names() -> None:
    names = dir(impactin_core)

    assert "__file__" in names
    assert "__path__" in names
    assert "Runtime" in names
