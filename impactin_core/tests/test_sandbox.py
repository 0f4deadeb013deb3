"""The simulator harness: fault plans and their admin route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from impactin_core.sandbox import FaultPlan, Journal, SandboxServer, build_sandbox_app


async def _empty_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param({"error_rate": 5}, "error_rate is 5.0", id="rate-above-one"),
        pytest.param({"script": ["wat"]}, "script holds 'wat'", id="unknown-outcome"),
        pytest.param({"eror_rate": 1}, "eror_rate", id="misspelled-field"),
    ],
)
def test_bad_fault_plan_names_field(body: dict[str, Any], words: str) -> None:
    with SandboxServer(build_sandbox_app(_empty_app, Journal())) as server:
        response = httpx.put(f"{server.url}/_sandbox/faults", json=body)

    assert response.status_code == 400
    assert words in response.json()["error"]


def test_script_forces_outcomes_in_order() -> None:
    plan = FaultPlan(script=["503", "429"])
    with SandboxServer(build_sandbox_app(_empty_app, Journal(), plan)) as server:
        statuses = [httpx.get(f"{server.url}/x").status_code for _ in range(3)]

    assert statuses == [503, 429, 204]
