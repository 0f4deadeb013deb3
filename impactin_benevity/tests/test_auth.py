"""OAuth 2.0 client credentials: fetching, reusing and refreshing tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from impactin_benevity import PLATFORM, _plugin, create_simulator
from impactin_benevity._options import TOKEN_LIFETIME
from impactin_core import (
    AuthContext,
    AuthenticationError,
    ConfigError,
    Credentials,
    MemoryTokenStore,
    PlatformRequest,
    PlatformSettings,
    RateLimited,
    RetryableError,
    SendContext,
    TokenCache,
)
from impactin_core.sandbox import FaultPlan, Simulator

BuildAuth = Callable[..., AuthContext]


async def _authenticate(
    settings: PlatformSettings, context: AuthContext
) -> Credentials:
    awaitable = _plugin.impactin_authenticate(
        platform=PLATFORM, settings=settings, context=context
    )
    assert awaitable is not None
    return await awaitable


async def _send(
    request: PlatformRequest, credentials: Credentials, context: SendContext
) -> Any:
    awaitable = _plugin.impactin_send(
        platform=PLATFORM, request=request, credentials=credentials, context=context
    )
    assert awaitable is not None
    return await awaitable


async def _token_counts(client: httpx.AsyncClient) -> dict[str, int]:
    response = await client.get("/_sandbox/tokens")
    counts: dict[str, int] = response.json()
    return counts


def _donation(make_record: Callable[..., Any], key: str = "idem-1") -> PlatformRequest:
    result = _plugin.impactin_map(
        platform=PLATFORM,
        records=[make_record()],
        settings=PlatformSettings(tenant="acme", platform="benevity", base_url="x"),
        idempotency_keys=[key],
    )
    assert result is not None
    return result[0]


async def test_credentials_are_bearer_token(
    settings: PlatformSettings, auth_context: BuildAuth, clock: Any
) -> None:
    credentials = await _authenticate(settings, auth_context())
    assert credentials.kind == "oauth2_client_credentials"
    scheme, _, token = credentials.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    assert token.count(".") == 2
    assert credentials.expires_at == clock() + TOKEN_LIFETIME


async def test_token_fetched_once_across_sends(
    settings: PlatformSettings,
    auth_context: BuildAuth,
    send_context: SendContext,
    client: httpx.AsyncClient,
    tokens: TokenCache,
    make_record: Callable[..., Any],
) -> None:
    for number in range(3):
        credentials = await _authenticate(settings, auth_context())
        outcome = await _send(
            _donation(make_record, f"idem-{number}"), credentials, send_context
        )
        assert outcome.status_code == 201
    assert tokens.refresh_count == 1
    assert (await _token_counts(client))["issued"] == 1


async def test_token_refreshed_ahead_of_expiry(
    settings: PlatformSettings,
    auth_context: BuildAuth,
    client: httpx.AsyncClient,
    clock: Any,
) -> None:
    first = await _authenticate(settings, auth_context())
    clock.advance(TOKEN_LIFETIME - 120)
    assert await _authenticate(settings, auth_context()) == first
    # The cache counts a token as expired 60 s before its expiry.
    clock.advance(61)
    second = await _authenticate(settings, auth_context())
    assert second.headers != first.headers
    assert (await _token_counts(client))["issued"] == 2


async def test_expired_token_rejected_then_refreshed(
    settings: PlatformSettings,
    auth_context: BuildAuth,
    send_context: SendContext,
    clock: Any,
    make_record: Callable[..., Any],
) -> None:
    old = await _authenticate(settings, auth_context())
    clock.advance(TOKEN_LIFETIME)
    with pytest.raises(AuthenticationError) as caught:
        await _send(_donation(make_record), old, send_context)
    assert caught.value.status_code == 401

    fresh = await _authenticate(settings, auth_context())
    outcome = await _send(_donation(make_record), fresh, send_context)
    assert outcome.status_code == 201


async def test_revoked_token_refreshed_on_401(
    settings: PlatformSettings,
    auth_context: BuildAuth,
    send_context: SendContext,
    client: httpx.AsyncClient,
    make_record: Callable[..., Any],
) -> None:
    """A 401 makes the runtime ask once more with force_refresh set."""
    credentials = await _authenticate(settings, auth_context())
    revoked = await client.delete("/_sandbox/tokens")
    assert revoked.json() == {"revoked": 1}

    with pytest.raises(AuthenticationError):
        await _send(_donation(make_record), credentials, send_context)
    # Without force_refresh the cache still returns the revoked token.
    assert await _authenticate(settings, auth_context()) == credentials

    renewed = await _authenticate(settings, auth_context(force_refresh=True))
    assert renewed != credentials
    outcome = await _send(_donation(make_record), renewed, send_context)
    assert outcome.status_code == 201


async def test_wrong_secret_is_authentication_error(
    simulator: Simulator, auth_context: BuildAuth
) -> None:
    settings = PlatformSettings(
        tenant="acme",
        platform="benevity",
        base_url="http://benevity.test",
        secrets={**simulator.credentials, "client_secret": "not-the-secret"},
    )
    with pytest.raises(AuthenticationError) as caught:
        await _authenticate(settings, auth_context())
    message = str(caught.value)
    assert caught.value.status_code == 401
    assert "tenants.acme.platforms.benevity.credentials.client_secret" in message
    assert "not-the-secret" not in message


@pytest.mark.parametrize("missing", ["client_id", "client_secret"])
async def test_missing_secret_is_config_error(
    simulator: Simulator, auth_context: BuildAuth, missing: str
) -> None:
    secrets = {k: v for k, v in simulator.credentials.items() if k != missing}
    settings = PlatformSettings(
        tenant="acme", platform="benevity", base_url="http://b", secrets=secrets
    )
    with pytest.raises(ConfigError) as caught:
        await _authenticate(settings, auth_context())
    assert caught.value.key == f"tenants.acme.platforms.benevity.credentials.{missing}"


@pytest.mark.parametrize(
    ("script", "error"),
    [
        pytest.param("503", RetryableError, id="503"),
        pytest.param("429", RateLimited, id="429"),
    ],
)
async def test_token_endpoint_transient_errors(
    clock: Any, script: str, error: type[Exception]
) -> None:
    simulator_ = create_simulator(plan=FaultPlan(script=[script]), clock=clock)
    transport = httpx.ASGITransport(app=simulator_.app)
    async with httpx.AsyncClient(transport=transport) as client:
        context = AuthContext(client=client, tokens=TokenCache(MemoryTokenStore()))
        settings = PlatformSettings(
            tenant="acme",
            platform="benevity",
            base_url="http://benevity.test",
            secrets=simulator_.credentials,
        )
        with pytest.raises(error) as caught:
            await _authenticate(settings, context)
    assert type(caught.value) is error


class _Recorder:
    """An httpx handler that records requests and returns a fixed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response


async def _authenticate_against(
    recorder: _Recorder, **options: Any
) -> tuple[Credentials, httpx.Request]:
    settings = PlatformSettings(
        tenant="acme",
        platform="benevity",
        base_url="https://api.benevity.test/",
        secrets={"client_id": "cid", "client_secret": "s3cret"},
        options=options,
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        context = AuthContext(
            client=client, tokens=TokenCache(MemoryTokenStore()), clock=lambda: 1000.0
        )
        credentials = await _authenticate(settings, context)
    return credentials, recorder.requests[-1]


def _token_response(**body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


async def test_token_request_shape() -> None:
    recorder = _Recorder(
        _token_response(access_token="a.b.c", expires_in=3600, token_type="Bearer")
    )
    _, request = await _authenticate_against(recorder)
    assert request.method == "POST"
    assert str(request.url) == "https://api.benevity.test/oauth2/token"
    expected = "Basic " + base64.b64encode(b"cid:s3cret").decode()
    assert request.headers["Authorization"] == expected
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.content == b"grant_type=client_credentials"


async def test_token_url_option() -> None:
    recorder = _Recorder(_token_response(access_token="a.b.c", expires_in=60))
    url = "https://auth.benevity.test/oauth2/token"
    _, request = await _authenticate_against(recorder, token_url=url)
    assert str(request.url) == url


async def test_remote_http_token_url_rejected() -> None:
    """The client secret goes to token_url, so base_url's http rule applies."""
    recorder = _Recorder(_token_response(access_token="a.b.c", expires_in=60))
    with pytest.raises(ConfigError) as caught:
        await _authenticate_against(
            recorder, token_url="http://auth.partner.example/oauth2/token"
        )
    assert caught.value.key == "tenants.acme.platforms.benevity.options.token_url"
    assert "'auth.partner.example'" in str(caught.value)
    assert recorder.requests == []


async def test_loopback_http_token_url_used() -> None:
    recorder = _Recorder(_token_response(access_token="a.b.c", expires_in=60))
    url = "http://127.0.0.1:8080/oauth2/token"
    _, request = await _authenticate_against(recorder, token_url=url)
    assert str(request.url) == url


async def test_token_lifetime_defaults_to_documented() -> None:
    recorder = _Recorder(_token_response(access_token="a.b.c"))
    credentials, _ = await _authenticate_against(recorder)
    assert credentials.expires_at == 1000.0 + TOKEN_LIFETIME


async def test_token_without_access_token_is_retryable() -> None:
    recorder = _Recorder(httpx.Response(200, text="<html>maintenance</html>"))
    with pytest.raises(RetryableError) as caught:
        await _authenticate_against(recorder)
    assert "no access_token" in str(caught.value)


async def test_token_invalid_client_on_400() -> None:
    """RFC 6749 lets a server return invalid_client with 400."""
    body = json.dumps({"error": "invalid_client"})
    recorder = _Recorder(httpx.Response(400, text=body))
    with pytest.raises(AuthenticationError):
        await _authenticate_against(recorder)
