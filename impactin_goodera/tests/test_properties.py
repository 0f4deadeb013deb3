"""Generated valid records map to requests the simulator accepts."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impactin_core import ImpactRecord
from impactin_core.sandbox import SandboxServer, Simulator
from impactin_goodera._state import reset_ledgers
from impactin_goodera.simulator import create_simulator

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Pacific/Auckland"]

records = st.builds(
    ImpactRecord,
    source_id=st.text("abcdef0123456789-", min_size=1, max_size=20),
    tenant=st.just("acme"),
    kind=st.just("volunteer_time"),
    activity_date=st.dates(dt.date(2000, 1, 1), dt.date(2100, 12, 31)),
    employee_id=st.just("psn_0123456789abcdef"),
    employee_email=st.emails(),
    hours=st.floats(min_value=0.01, max_value=24.0, allow_nan=False),
    organization_id=st.one_of(
        st.none(),
        st.text("0123456789abcdef", min_size=24, max_size=24),
        st.text(
            st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30
        ),
    ),
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Simulator, str]]:
    simulator = create_simulator()
    with SandboxServer(simulator.app) as server:
        yield simulator, server.url


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(record=records, zone=st.sampled_from(ZONES))
def test_generated_records_are_accepted(
    served: tuple[Simulator, str],
    make_settings: Any,
    send_with: Any,
    record: ImpactRecord,
    zone: str,
) -> None:
    simulator, url = served
    # Examples reuse source ids, so each starts without remembered steps.
    reset_ledgers()
    tenant_settings = make_settings(
        url, timezone=zone, opportunity_id="610cc05de85e70001106f7d9"
    )

    async def deliver() -> Any:
        async with httpx.AsyncClient() as client:
            return await send_with(client, tenant_settings, record)

    outcome = asyncio.run(deliver())
    accepted = [
        entry["body"]["email"]
        for entry in simulator.journal.snapshot()["entries"]
        if entry["kind"] == "participation"
    ]
    assert outcome.status_code == 200
    assert outcome.response_id is not None
    assert record.employee_email in accepted
