"""Consumer side: each connector's real requests against the Pact mock server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from contracts import workday_soap
from contracts._common import Scenario
from contracts.generate import PAIRS, pact_file_name, run_scenario

from impactin_core import AuthenticationError, PermanentError, SendOutcome

CASES = [
    pytest.param(consumer, provider, scenario, id=f"{provider}-{scenario.name}")
    for consumer, provider, scenarios in PAIRS
    for scenario in scenarios
]

SOAP_OUTCOMES: dict[str, type[Any]] = {
    "success": SendOutcome,
    "AuthenticationError": AuthenticationError,
    "PermanentError": PermanentError,
}


@pytest.mark.parametrize(("consumer", "provider", "scenario"), CASES)
def test_scenario_matches_mock(
    consumer: str, provider: str, scenario: Scenario, tmp_path: Path
) -> None:
    raised = run_scenario(scenario, consumer, provider, tmp_path)

    if scenario.expected is None:
        assert raised is None
    else:
        assert isinstance(raised, scenario.expected)
    assert (tmp_path / pact_file_name(consumer, provider)).is_file()


@pytest.mark.parametrize(
    "interaction",
    [
        pytest.param(item, id=item["description"])
        for item in workday_soap.load_contract()["interactions"]
    ],
)
def test_soap_request_and_outcome(interaction: dict[str, Any]) -> None:
    contract = workday_soap.load_contract()
    template = (workday_soap.CONTRACT_DIR / workday_soap.REQUEST_TEMPLATE).read_text(
        encoding="utf-8"
    )

    exchange, outcome = workday_soap.run_consumer(interaction)

    (path, headers, body) = exchange.requests[0]
    expected_path = workday_soap.fill(contract["request"]["path"], contract["examples"])
    assert path == expected_path
    assert headers["content-type"] == contract["request"]["headers"]["Content-Type"]
    assert headers["soapaction"] == contract["request"]["headers"]["SOAPAction"]
    problems = workday_soap.mismatches(
        template, body, contract["markers"], allow_extra=False
    )
    assert problems == []
    assert isinstance(outcome, SOAP_OUTCOMES[interaction["outcome"]])


def test_soap_checker_reports_changes() -> None:
    contract = workday_soap.load_contract()
    template = (workday_soap.CONTRACT_DIR / workday_soap.REQUEST_TEMPLATE).read_text(
        encoding="utf-8"
    )
    values = {**contract["examples"], "username": "isu@tenant", "password": "secret"}
    document = workday_soap.fill(template, values)
    renamed = document.replace("Activity_Type>", "Kind>")

    problems = workday_soap.mismatches(
        template, renamed.encode(), contract["markers"], allow_extra=False
    )

    assert (
        workday_soap.mismatches(
            template, document.encode(), contract["markers"], allow_extra=False
        )
        == []
    )
    assert len(problems) == 1
    assert "Activity_Type" in problems[0]
