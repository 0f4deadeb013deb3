"""Load the ``contracts`` tooling from the repository root and keep Pact offline."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pact", reason="pact-python is installed by the [test] extra")

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_contracts() -> None:
    # The contracts folder is tooling at the repository root, not an
    # installed package, so it is imported from its path.
    if "contracts" in sys.modules:
        return
    folder = REPO_ROOT / "contracts"
    spec = importlib.util.spec_from_file_location(
        "contracts", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["contracts"] = module
    spec.loader.exec_module(module)


_load_contracts()


@pytest.fixture(autouse=True)
def _pact_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The Pact core library reports usage over the network unless this is
    # set; monkeypatch restores the variable after each test.
    monkeypatch.setenv("PACT_DO_NOT_TRACK", "true")
    yield
