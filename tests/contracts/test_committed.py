"""The committed contracts equal what the connectors send today."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contracts.generate import CONTRACTS_DIR, PAIRS, generate, pact_file_name
from contracts.workday_soap import REQUEST_TEMPLATE

REGENERATE = "run 'python -m contracts.generate' from the repository root"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("contracts")
    generate(folder)
    return folder


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(pact_file_name(consumer, provider), id=provider)
        for consumer, provider, _ in PAIRS
    ],
)
def test_pact_is_current(regenerated: Path, name: str) -> None:
    committed = json.loads((CONTRACTS_DIR / name).read_text(encoding="utf-8"))
    fresh = json.loads((regenerated / name).read_text(encoding="utf-8"))

    assert fresh == committed, (
        f"contracts/{name} no longer matches the connector's requests; {REGENERATE} "
        "and review the diff."
    )


def test_soap_request_is_current(regenerated: Path) -> None:
    relative = Path("workday-soap") / REQUEST_TEMPLATE
    committed = (CONTRACTS_DIR / relative).read_text(encoding="utf-8")
    fresh = (regenerated / relative).read_text(encoding="utf-8")

    assert fresh == committed, (
        f"contracts/{relative} no longer matches the connector's envelope; "
        f"{REGENERATE} and review the diff."
    )
