"""Provider side: every contract replayed against the simulators on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contracts import workday_soap
from contracts.generate import CONTRACTS_DIR, PAIRS, pact_file_name, write_json
from contracts.provider import verify_pact, verify_soap


@pytest.mark.parametrize(
    ("consumer", "provider"),
    [pytest.param(consumer, provider, id=provider) for consumer, provider, _ in PAIRS],
)
def test_simulator_honours_pact(consumer: str, provider: str) -> None:
    result = verify_pact(provider, CONTRACTS_DIR / pact_file_name(consumer, provider))

    assert result.passed, result.output


def test_verification_detects_drift(tmp_path: Path) -> None:
    name = pact_file_name("impactin-goodera", "goodera")
    document = json.loads((CONTRACTS_DIR / name).read_text(encoding="utf-8"))
    for interaction in document["interactions"]:
        if interaction["description"] == "an event with a wrong API key":
            interaction["response"]["status"] = 401
    write_json(tmp_path / name, document)

    result = verify_pact("goodera", tmp_path / name)

    assert not result.passed
    assert "an event with a wrong API key" in result.output


def test_simulator_honours_soap_contract() -> None:
    assert verify_soap() == []


def test_soap_verification_detects_drift(tmp_path: Path) -> None:
    for source in workday_soap.CONTRACT_DIR.iterdir():
        (tmp_path / source.name).write_bytes(source.read_bytes())
    fault = tmp_path / "authentication-fault.xml"
    fault.write_text(
        fault.read_text(encoding="utf-8").replace(
            "Client.authenticationError", "Client.credentialsError"
        ),
        encoding="utf-8",
    )

    problems = verify_soap(tmp_path)

    assert len(problems) == 1
    assert "faultcode" in problems[0]
