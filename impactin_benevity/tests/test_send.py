"""Sending donations and classifying Benevity's responses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from impactin_benevity import PLATFORM, _plugin, create_simulator
from impactin_core import (
    AuthContext,
    AuthenticationError,
    Credentials,
    ImpactRecord,
    MemoryTokenStore,
    PermanentError,
    PlatformRequest,
    PlatformSettings,
    RateLimited,
    RetryableError,
    SendContext,
    SendOutcome,
    TokenCache,
)
from impactin_core._models import MAX_AMOUNT_MINOR
from impactin_core.sandbox import FaultPlan, SandboxServer, Simulator

MakeRecord = Callable[..., ImpactRecord]


def _request(record: ImpactRecord, key: str = "idem-7c1d") -> PlatformRequest:
    settings = PlatformSettings(tenant="acme", platform="benevity", base_url="x")
    result = _plugin.impactin_map(
        platform=PLATFORM, records=[record], settings=settings, idempotency_keys=[key]
    )
    assert result is not None
    return result[0]


async def _credentials(settings: PlatformSettings, context: AuthContext) -> Credentials:
    awaitable = _plugin.impactin_authenticate(
        platform=PLATFORM, settings=settings, context=context
    )
    assert awaitable is not None
    return await awaitable


async def _send(
    request: PlatformRequest, credentials: Credentials, context: SendContext
) -> SendOutcome:
    awaitable = _plugin.impactin_send(
        platform=PLATFORM, request=request, credentials=credentials, context=context
    )
    assert awaitable is not None
    return await awaitable


@pytest.fixture
async def credentials(
    settings: PlatformSettings, auth_context: Callable[..., AuthContext]
) -> Credentials:
    return await _credentials(settings, auth_context())


async def test_send_created(
    credentials: Credentials,
    send_context: SendContext,
    simulator: Simulator,
    make_record: MakeRecord,
) -> None:
    request = _request(make_record())
    outcome = await _send(request, credentials, send_context)

    assert outcome.status_code == 201
    assert outcome.response_id
    assert outcome.duplicate is False
    (entry,) = simulator.journal.snapshot()["entries"]
    assert entry["key"] == "idem-7c1d"
    assert entry["payload"] == request.payload


async def test_send_donation_readable(
    credentials: Credentials,
    send_context: SendContext,
    client: httpx.AsyncClient,
    make_record: MakeRecord,
) -> None:
    outcome = await _send(_request(make_record()), credentials, send_context)
    response = await client.get(
        f"/donations/{outcome.response_id}", headers=credentials.headers
    )
    assert response.status_code == 200
    assert response.json()["state"]["processingStatus"] == "ACCEPTED"
    assert response.json()["funds"]["amount"] == 2500


async def test_send_max_amount_exact(
    credentials: Credentials,
    send_context: SendContext,
    client: httpx.AsyncClient,
    make_record: MakeRecord,
) -> None:
    request = _request(make_record(amount_minor=MAX_AMOUNT_MINOR))
    outcome = await _send(request, credentials, send_context)
    response = await client.get(
        f"/donations/{outcome.response_id}", headers=credentials.headers
    )
    # A client that reads JSON numbers as IEEE 754 doubles gets the same value.
    as_double = json.loads(response.text, parse_int=float)["funds"]["amount"]
    assert response.json()["funds"]["amount"] == 999_999_999_999
    assert as_double == 999_999_999_999
    assert '"amount":999999999999' in response.text.replace(" ", "")


async def test_send_replay_counted_as_repeat(
    credentials: Credentials,
    send_context: SendContext,
    simulator: Simulator,
    make_record: MakeRecord,
) -> None:
    request = _request(make_record())
    first = await _send(request, credentials, send_context)
    second = await _send(request, credentials, send_context)

    assert second.response_id == first.response_id
    snapshot = simulator.journal.snapshot()
    assert len(snapshot["entries"]) == 1
    assert snapshot["repeats"] == {"idem-7c1d": 1}


async def test_send_new_key_is_new_donation(
    credentials: Credentials,
    send_context: SendContext,
    simulator: Simulator,
    make_record: MakeRecord,
) -> None:
    first = await _send(_request(make_record(), "idem-a"), credentials, send_context)
    second = await _send(_request(make_record(), "idem-b"), credentials, send_context)
    assert first.response_id != second.response_id
    assert len(simulator.journal.snapshot()["entries"]) == 2


async def _send_with_plan(
    plan: FaultPlan, clock: Any, make_record: MakeRecord
) -> SendOutcome:
    simulator = create_simulator(plan=plan, clock=clock)
    transport = httpx.ASGITransport(app=simulator.app)
    settings = PlatformSettings(
        tenant="acme",
        platform="benevity",
        base_url="http://benevity.test",
        secrets=simulator.credentials,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        auth = AuthContext(
            client=client,
            tokens=TokenCache(MemoryTokenStore(), clock=clock),
            clock=clock,
        )
        credentials = await _credentials(settings, auth)
        context = SendContext(client=client, settings=settings)
        return await _send(_request(make_record()), credentials, context)


async def test_send_429_is_rate_limited(clock: Any, make_record: MakeRecord) -> None:
    plan = FaultPlan(script=["ok", "429"], retry_after="7")
    with pytest.raises(RateLimited) as caught:
        await _send_with_plan(plan, clock, make_record)
    assert caught.value.status_code == 429
    assert caught.value.retry_after == 7.0


async def test_send_429_without_retry_after(
    clock: Any, make_record: MakeRecord
) -> None:
    plan = FaultPlan(script=["ok", "429"], retry_after=None)
    with pytest.raises(RateLimited) as caught:
        await _send_with_plan(plan, clock, make_record)
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("status", "sent"),
    [
        pytest.param("500", True, id="500"),
        # 503 means the server did not act on the request, so the core marks
        # it as never processed.
        pytest.param("503", False, id="503"),
    ],
)
async def test_send_5xx_is_retryable(
    clock: Any, make_record: MakeRecord, status: str, sent: bool
) -> None:
    plan = FaultPlan(script=["ok", status])
    with pytest.raises(RetryableError) as caught:
        await _send_with_plan(plan, clock, make_record)
    assert type(caught.value) is RetryableError
    assert caught.value.status_code == int(status)
    assert caught.value.sent is sent


async def test_send_invalid_payload_is_permanent(
    credentials: Credentials, send_context: SendContext, make_record: MakeRecord
) -> None:
    request = _request(make_record())
    request.payload["funds"]["amount"] = 0
    with pytest.raises(PermanentError) as caught:
        await _send(request, credentials, send_context)
    assert caught.value.status_code == 400
    assert "/funds/amount" in str(caught.value)


async def test_send_401_is_authentication_error(
    send_context: SendContext, make_record: MakeRecord
) -> None:
    forged = Credentials(
        kind="oauth2_client_credentials", headers={"Authorization": "Bearer a.b.c"}
    )
    with pytest.raises(AuthenticationError) as caught:
        await _send(_request(make_record()), forged, send_context)
    assert caught.value.status_code == 401


async def _send_to_handler(
    handler: Callable[[httpx.Request], httpx.Response], request: PlatformRequest
) -> SendOutcome:
    settings = PlatformSettings(
        tenant="acme", platform="benevity", base_url="https://b.test"
    )
    credentials = Credentials(
        kind="oauth2_client_credentials", headers={"Authorization": "Bearer t"}
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        context = SendContext(client=client, settings=settings)
        return await _send(request, credentials, context)


async def test_send_error_hides_personal_values(make_record: MakeRecord) -> None:
    """A 400 that echoes the donor keeps no personal value in the error."""
    request = _request(make_record(employee_name="Dana Reyes"))
    echo = {
        "errors": [
            {
                "detail": "Donor Dana Reyes <dana.reyes@acme.example> (E-20417) "
                "is not eligible for this recipient."
            }
        ]
    }

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text=json.dumps(echo))

    with pytest.raises(PermanentError) as caught:
        await _send_to_handler(handler, request)
    message = str(caught.value)
    assert caught.value.status_code == 400
    assert "not eligible" in message
    assert "Dana" not in message
    assert "Reyes" not in message
    assert "dana.reyes@acme.example" not in message
    assert "E-20417" not in message


async def test_send_request_shape(make_record: MakeRecord) -> None:
    seen: list[httpx.Request] = []
    request = _request(make_record())

    def handler(sent: httpx.Request) -> httpx.Response:
        seen.append(sent)
        return httpx.Response(
            201, json={"id": "d-1", "state": {"processingStatus": "ACCEPTED"}}
        )

    outcome = await _send_to_handler(handler, request)
    (sent,) = seen
    assert outcome.response_id == "d-1"
    assert sent.method == "POST"
    assert str(sent.url) == "https://b.test/donations"
    assert sent.headers["Authorization"] == "Bearer t"
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.content) == request.payload


async def test_send_success_without_id(make_record: MakeRecord) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(201, text="")

    outcome = await _send_to_handler(handler, _request(make_record()))
    assert outcome.status_code == 201
    assert outcome.response_id is None


async def test_send_connect_error_not_sent(make_record: MakeRecord) -> None:
    def handler(sent: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=sent)

    with pytest.raises(RetryableError) as caught:
        await _send_to_handler(handler, _request(make_record()))
    assert caught.value.sent is False


async def test_send_dropped_response_then_replay(make_record: MakeRecord) -> None:
    """Over TCP, the response is lost after the donation was stored. The repeat
    with the same key returns that donation instead of a second one."""
    simulator = create_simulator(plan=FaultPlan(script=["ok", "drop_after"]))
    with SandboxServer(simulator.app) as server:
        settings = PlatformSettings(
            tenant="acme",
            platform="benevity",
            base_url=server.url,
            secrets=simulator.credentials,
        )
        async with httpx.AsyncClient() as client:
            auth = AuthContext(client=client, tokens=TokenCache(MemoryTokenStore()))
            credentials = await _credentials(settings, auth)
            context = SendContext(client=client, settings=settings, timeout=5.0)
            request = _request(make_record())
            with pytest.raises(RetryableError) as caught:
                await _send(request, credentials, context)
            assert caught.value.sent is True
            outcome = await _send(request, credentials, context)

    assert outcome.status_code == 201
    snapshot = simulator.journal.snapshot()
    assert len(snapshot["entries"]) == 1
    assert snapshot["repeats"] == {"idem-7c1d": 1}


async def test_dropped_token_request_is_retried(
    make_record: MakeRecord, tmp_path: Any
) -> None:
    """A token request cut off carries no donation, so the runtime retries it."""
    from impactin_core import EnvSecrets, Runtime
    from impactin_core._config import parse_config
    from impactin_core._crypto import generate_key

    simulator = create_simulator(plan=FaultPlan(script=["drop_after"]))
    with SandboxServer(simulator.app) as server:
        environ = {
            "STORE_KEY": generate_key(),
            "ACME_KEY": "acme-tenant-key",
            "BV_ID": simulator.credentials["client_id"],
            "BV_SECRET": simulator.credentials["client_secret"],
        }
        benevity = {
            "base_url": server.url,
            "credentials": {"client_id": "BV_ID", "client_secret": "BV_SECRET"},
            "retry": {"base_delay": 0.01, "max_attempts": 3},
        }
        data = {
            "store": {"path": "state.db", "key_env": "STORE_KEY"},
            "tenants": {
                "acme": {"key_env": "ACME_KEY", "platforms": {"benevity": benevity}}
            },
        }
        runtime = Runtime(
            parse_config(data, base_dir=tmp_path), secrets=EnvSecrets(environ)
        )
        try:
            report = await runtime.deliver([make_record()])
            (delivery,) = runtime.store.list_deliveries()
            attempts = runtime.store.attempts(delivery["id"])
        finally:
            runtime.close()

    assert report.platform("benevity").delivered == 1
    assert [row["outcome"] for row in attempts] == ["retryable", "success"]
    assert len(simulator.journal.snapshot()["entries"]) == 1
