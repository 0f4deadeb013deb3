"""The Benevity simulator: token endpoint, donation checks and admin routes."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from impactin_benevity import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

BASIC = (
    "Basic "
    + base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode()
)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _decode(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


async def _token(client: httpx.AsyncClient) -> str:
    response = await client.post(
        "/oauth2/token",
        content="grant_type=client_credentials",
        headers={"Authorization": BASIC, **FORM},
    )
    assert response.status_code == 200
    token: str = response.json()["access_token"]
    return token


def _donation(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "destination": {"recipientId": "124-1234ABCD", "foundationId": "1XABCDE4UT"},
        "funds": {
            "paymentType": "DONATION_REPORT",
            "currencyCode": "CAD",
            "amount": 111,
        },
        "donor": {"email": "pat@example.org", "fullName": "Pat Lee", "receipted": True},
        "metadata": {"impactin_idempotency_key": "k-1", "campaign": "fall"},
    }
    body.update(changes)
    return body


async def _post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    token = await _token(client)
    return await client.post(
        "/donations", json=body, headers={"Authorization": f"Bearer {token}", **headers}
    )


async def test_token_is_jwt(client: httpx.AsyncClient, clock: Any) -> None:
    response = await client.post(
        "/oauth2/token",
        content="grant_type=client_credentials",
        headers={"Authorization": BASIC, **FORM},
    )
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert response.headers["Cache-Control"] == "no-store"
    header, payload, signature = body["access_token"].split(".")
    assert _decode(header) == {"alg": "HS256", "typ": "JWT"}
    claims = _decode(payload)
    assert claims["sub"] == DEFAULT_CLIENT_ID
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iat"] == int(clock())
    assert signature


@pytest.mark.parametrize(
    ("headers", "form", "status", "error"),
    [
        pytest.param(
            {}, "grant_type=client_credentials", 401, "invalid_client", id="no-auth"
        ),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(b"x:y").decode()},
            "grant_type=client_credentials",
            401,
            "invalid_client",
            id="wrong-secret",
        ),
        pytest.param(
            {"Authorization": "Basic %%%"},
            "grant_type=client_credentials",
            401,
            "invalid_client",
            id="bad-base64",
        ),
        pytest.param(
            {"Authorization": BASIC},
            "grant_type=password",
            400,
            "unsupported_grant_type",
            id="wrong-grant",
        ),
        pytest.param(
            {"Authorization": BASIC}, "scope=all", 400, "invalid_request", id="no-grant"
        ),
    ],
)
async def test_token_rejections(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    form: str,
    status: int,
    error: str,
) -> None:
    response = await client.post(
        "/oauth2/token", content=form, headers={**headers, **FORM}
    )
    assert response.status_code == status
    assert response.json()["error"] == error


async def test_token_401_names_basic(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/oauth2/token", content="grant_type=client_credentials", headers=FORM
    )
    assert response.headers["WWW-Authenticate"].startswith("Basic")


async def test_token_requires_form(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/oauth2/token",
        json={"grant_type": "client_credentials"},
        headers={"Authorization": BASIC},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_donation_accepted(client: httpx.AsyncClient, simulator: Any) -> None:
    response = await _post(client, _donation())
    assert response.status_code == 201
    body = response.json()
    assert body["state"]["processingStatus"] == "ACCEPTED"
    assert body["type"] == "donations"
    assert body["funds"]["amount"] == 111
    (entry,) = simulator.journal.snapshot()["entries"]
    assert entry["key"] == "k-1"


async def test_donation_minimal_accepted(client: httpx.AsyncClient) -> None:
    body = {
        "destination": {"recipientId": "2XABCDE4UT"},
        "funds": {"paymentType": "DONATION_REPORT", "currencyCode": "USD", "amount": 1},
    }
    response = await _post(client, body)
    assert response.status_code == 201


async def test_donation_replay_counted(
    client: httpx.AsyncClient, simulator: Any
) -> None:
    first = await _post(client, _donation())
    second = await _post(client, _donation())
    assert second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert simulator.journal.snapshot()["repeats"] == {"k-1": 1}


async def test_donation_without_key_never_matched(
    client: httpx.AsyncClient, simulator: Any
) -> None:
    body = _donation(metadata={"campaign": "fall"})
    first = await _post(client, body)
    second = await _post(client, body)
    assert first.json()["id"] != second.json()["id"]
    assert len(simulator.journal.snapshot()["entries"]) == 2


def _metadata(count: int) -> dict[str, str]:
    return {f"key{index}": "value" for index in range(count)}


@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        pytest.param({"destination": None}, "/destination", id="no-destination"),
        pytest.param(
            {"destination": {"recipientId": ""}},
            "/destination/recipientId",
            id="empty-recipient",
        ),
        pytest.param(
            {"destination": {"recipientId": "r", "foundationId": 5}},
            "/destination/foundationId",
            id="foundation-number",
        ),
        pytest.param({"funds": "100"}, "/funds", id="funds-string"),
        pytest.param(
            {"funds": {"currencyCode": "USD", "amount": 1}},
            "/funds/paymentType",
            id="no-payment-type",
        ),
        pytest.param(
            {"funds": {"paymentType": "P", "currencyCode": "usd", "amount": 1}},
            "/funds/currencyCode",
            id="currency-lowercase",
        ),
        pytest.param(
            {"funds": {"paymentType": "P", "currencyCode": "US", "amount": 1}},
            "/funds/currencyCode",
            id="currency-short",
        ),
        pytest.param(
            {"funds": {"paymentType": "P", "currencyCode": "USD", "amount": 0}},
            "/funds/amount",
            id="amount-zero",
        ),
        pytest.param(
            {"funds": {"paymentType": "P", "currencyCode": "USD", "amount": -5}},
            "/funds/amount",
            id="amount-negative",
        ),
        pytest.param(
            {"funds": {"paymentType": "P", "currencyCode": "USD", "amount": 1.5}},
            "/funds/amount",
            id="amount-fraction",
        ),
        pytest.param(
            {"funds": {"paymentType": "P", "currencyCode": "USD", "amount": "100"}},
            "/funds/amount",
            id="amount-string",
        ),
        pytest.param(
            {"funds": {"paymentType": "P", "currencyCode": "USD", "amount": True}},
            "/funds/amount",
            id="amount-bool",
        ),
        pytest.param(
            {"donor": {"email": "not-an-email"}}, "/donor/email", id="donor-email"
        ),
        pytest.param(
            {"donor": {"receipted": "yes"}}, "/donor/receipted", id="donor-receipted"
        ),
        pytest.param({"donor": []}, "/donor", id="donor-list"),
        pytest.param({"metadata": {"a": 1}}, "/metadata/a", id="metadata-number"),
        pytest.param({"metadata": ["a"]}, "/metadata", id="metadata-list"),
        pytest.param({"metadata": _metadata(101)}, "/metadata", id="metadata-101"),
        pytest.param({"note": "hi"}, "/note", id="unknown-attribute"),
    ],
)
async def test_donation_invalid(
    client: httpx.AsyncClient, simulator: Any, changes: dict[str, Any], pointer: str
) -> None:
    response = await _post(client, _donation(**changes))
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert pointer in [error["source"]["pointer"] for error in errors]
    assert all(error["status"] == "400" for error in errors)
    assert simulator.journal.snapshot()["entries"] == []


async def test_donation_100_metadata_pairs(client: httpx.AsyncClient) -> None:
    response = await _post(client, _donation(metadata=_metadata(100)))
    assert response.status_code == 201


async def test_donation_body_not_object(client: httpx.AsyncClient) -> None:
    response = await _post(client, [1, 2])
    assert response.status_code == 400


async def test_donation_needs_json(client: httpx.AsyncClient) -> None:
    token = await _token(client)
    response = await client.post(
        "/donations",
        content="amount=1",
        headers={"Authorization": f"Bearer {token}", **FORM},
    )
    assert response.status_code == 415


async def test_donation_broken_json(client: httpx.AsyncClient) -> None:
    token = await _token(client)
    response = await client.post(
        "/donations",
        content=b"{",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalid_json"


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Basic abc", id="not-bearer"),
        pytest.param("Bearer abc", id="not-jwt"),
        pytest.param("Bearer a.b.c", id="malformed"),
    ],
)
async def test_donation_needs_valid_token(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.post("/donations", json=_donation(), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["errors"][0]["code"] == "invalid_token"


async def test_donation_forged_signature(client: httpx.AsyncClient) -> None:
    header, payload, _ = (await _token(client)).split(".")
    forged = f"{header}.{payload}.{'A' * 43}"
    response = await client.post(
        "/donations", json=_donation(), headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert "signature" in response.json()["errors"][0]["detail"]


async def test_donation_expired_token(client: httpx.AsyncClient, clock: Any) -> None:
    token = await _token(client)
    clock.advance(3600)
    response = await client.post(
        "/donations", json=_donation(), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert "expired" in response.json()["errors"][0]["detail"]


async def test_tokens_admin_counts_and_revokes(client: httpx.AsyncClient) -> None:
    token = await _token(client)
    await _token(client)
    counts = await client.get("/_sandbox/tokens")
    assert counts.json() == {"issued": 2, "active": 2}

    revoked = await client.delete("/_sandbox/tokens")
    assert revoked.json() == {"revoked": 2}
    response = await client.post(
        "/donations", json=_donation(), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert "revoked" in response.json()["errors"][0]["detail"]
    assert (await client.get("/_sandbox/tokens")).json() == {"issued": 2, "active": 0}


async def test_core_admin_routes_still_served(client: httpx.AsyncClient) -> None:
    faults = await client.get("/_sandbox/faults")
    journal = await client.get("/_sandbox/journal")
    assert faults.status_code == 200
    assert journal.json()["entries"] == []


async def test_get_donation(client: httpx.AsyncClient) -> None:
    created = (await _post(client, _donation())).json()
    token = await _token(client)
    headers = {"Authorization": f"Bearer {token}"}
    found = await client.get(f"/donations/{created['id']}", headers=headers)
    missing = await client.get("/donations/no-such-id", headers=headers)
    assert found.json() == created
    assert missing.status_code == 404
