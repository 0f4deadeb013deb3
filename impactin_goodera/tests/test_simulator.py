"""Responses of the Goodera simulator: auth, envelope, validation."""

from __future__ import annotations

from typing import Any

import pytest

from impactin_goodera.simulator import DEFAULT_API_KEY

EVENT = {
    "opportunityId": "65f96d1e1d38620012d38261",
    "startTimeStamp": "2026-03-14T09:00:00+00:00",
    "endTimeStamp": "2026-03-14T17:00:00+00:00",
    "timezone": "UTC",
    "country": "US",
}
KEY = {"x-api-key": DEFAULT_API_KEY}


async def test_missing_key_answers_403_envelope(server: Any, client: Any) -> None:
    response = await client.post(server.url + "/events", json=EVENT)
    body = response.json()
    assert response.status_code == 403
    assert body["message"] == "Unauthenticated"
    assert set(body) == {"name", "message", "statusCode", "timestamp", "url", "data"}


async def test_unknown_path_answers_500_with_404(server: Any, client: Any) -> None:
    response = await client.get(server.url + "/nowhere", headers=KEY)
    body = response.json()
    assert response.status_code == 500
    assert body["statusCode"] == 500
    assert body["data"]["statusCode"] == 404
    assert body["name"] == "NotFoundException"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param({"opportunityId": "xyz"}, "opportunityId", id="object-id"),
        pytest.param({"startTimeStamp": "14/03/2026"}, "ISO 8601", id="timestamp"),
        pytest.param(
            {"endTimeStamp": "2026-03-14T08:00:00+00:00"}, "later", id="end-first"
        ),
        pytest.param({"country": ""}, "country", id="country"),
    ],
)
async def test_invalid_event_answers_400_inside_500(
    server: Any, client: Any, change: dict[str, Any], problem: str
) -> None:
    response = await client.post(
        server.url + "/events", json={**EVENT, **change}, headers=KEY
    )
    data = response.json()["data"]
    assert response.status_code == 500
    assert data["statusCode"] == 400
    assert problem in data["message"]


async def test_invalid_email_answers_400_inside_500(server: Any, client: Any) -> None:
    created = await client.post(server.url + "/events", json=EVENT, headers=KEY)
    body = {"eventId": created.json()["id"], "email": "not-an-email"}
    response = await client.post(server.url + "/registrations", json=body, headers=KEY)
    assert response.json()["data"]["statusCode"] == 400


async def test_repeat_participation_returns_original(
    server: Any, client: Any, simulator: Any
) -> None:
    created = await client.post(server.url + "/events", json=EVENT, headers=KEY)
    body = {"eventId": created.json()["id"], "email": "Grace@Example.org", "hours": 1}
    first = await client.post(server.url + "/participation", json=body, headers=KEY)
    again = {**body, "email": "grace@example.org"}
    second = await client.post(server.url + "/participation", json=again, headers=KEY)
    assert second.json()["id"] == first.json()["id"]
    assert sum(simulator.journal.snapshot()["repeats"].values()) == 1


async def test_non_json_body_answers_400(server: Any, client: Any) -> None:
    response = await client.post(
        server.url + "/events", content=b"not json", headers=KEY
    )
    assert response.json()["data"]["statusCode"] == 400
