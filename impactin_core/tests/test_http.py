"""``Retry-After`` parsing and the mapping of HTTP answers and transport errors."""

from __future__ import annotations

import calendar
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from impactin_core import (
    AuthenticationError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
    parse_retry_after,
    raise_for_response,
    request_with_mapping,
)
from impactin_core.sandbox import FaultPlan, Journal, SandboxServer, build_sandbox_app

#: Wed, 21 Oct 2015 07:28:00 GMT as a Unix time.
NOW = float(calendar.timegm((2015, 10, 21, 7, 28, 0)))

# -- parse_retry_after --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="delta"),
        pytest.param(" 120 ", 120.0, id="delta-spaces"),
        pytest.param("0", 0.0, id="delta-zero"),
        pytest.param("Wed, 21 Oct 2015 07:30:00 GMT", 120.0, id="imf-gmt"),
        pytest.param("Wed, 21 Oct 2015 09:30:00 +0200", 120.0, id="imf-plus-0200"),
        pytest.param("Wed, 21 Oct 2015 02:30:00 -0500", 120.0, id="imf-minus-0500"),
        pytest.param("Wed, 21 Oct 2015 07:30:00 -0000", 120.0, id="imf-minus-0000"),
        pytest.param("Wednesday, 21-Oct-15 07:30:00 GMT", 120.0, id="rfc850"),
        pytest.param("Wed Oct 21 07:30:00 2015", 120.0, id="asctime"),
        pytest.param("Wed, 21 Oct 2015 07:00:00 GMT", 0.0, id="past-date"),
        pytest.param("604801", 604800.0, id="delta-above-7-days"),
        pytest.param("99999999999999999999", 604800.0, id="delta-huge"),
        pytest.param("9" * 400, 604800.0, id="delta-beyond-float"),
        pytest.param("9" * 5000, 604800.0, id="delta-beyond-int-digits"),
        pytest.param("Wed, 21 Oct 2099 07:28:00 GMT", 604800.0, id="date-far-ahead"),
    ],
)
def test_retry_after_parses(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("-5", id="negative"),
        pytest.param("+5", id="plus-sign"),
        pytest.param("1.5", id="fractional"),
        pytest.param("1m0s", id="go-duration"),
        pytest.param("1e3", id="exponent"),
        pytest.param("0x10", id="hex"),
        pytest.param("120 s", id="unit"),
        pytest.param("\u0661\u0662", id="arabic-indic-digits"),
        pytest.param("soon", id="word"),
        pytest.param("Wed, 32 Oct 2015 07:28:00 GMT", id="bad-day"),
        pytest.param("Wed, 21 Oct 99999 07:28:00 GMT", id="bad-year"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 +2400", id="bad-offset"),
    ],
)
def test_retry_after_rejects(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize(
    "zone",
    [
        pytest.param("Asia/Tokyo", id="tokyo"),
        pytest.param("America/St_Johns", id="st-johns"),
        pytest.param("UTC", id="utc"),
    ],
)
def test_retry_after_ignores_local_zone(zone: str) -> None:
    """HTTP dates compare in UTC whatever the process's time zone is."""
    script = (
        "import time, sys\n"
        "time.tzset()\n"
        "from impactin_core import parse_retry_after\n"
        f"now = {NOW!r}\n"
        "for value in ('Wed, 21 Oct 2015 07:30:00 GMT',\n"
        "              'Wed, 21 Oct 2015 07:30:00 -0000',\n"
        "              'Wed Oct 21 07:30:00 2015',\n"
        "              'Wed, 21 Oct 2015 09:30:00 +0200'):\n"
        "    print(parse_retry_after(value, now))\n"
        "print(time.strftime('%z'))\n"
    )
    env = {**os.environ, "TZ": zone}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    *delays, offset = result.stdout.split()
    assert delays == ["120.0"] * 4
    if zone != "UTC":
        assert offset != "+0000", "the time zone did not take effect"


# -- raise_for_response ----------------------------------------------------------


def _response(
    status: int, text: str = "", headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1:9/donations")
    return httpx.Response(status, text=text, headers=headers, request=request)


def _raised(response: httpx.Response, **kwargs: Any) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        raise_for_response(response, platform="bv", tenant="acme", now=NOW, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("status", "kind", "sent"),
    [
        pytest.param(400, PermanentError, None, id="400"),
        pytest.param(401, AuthenticationError, None, id="401"),
        pytest.param(403, PermanentError, None, id="403"),
        pytest.param(404, PermanentError, None, id="404"),
        pytest.param(408, RetryableError, False, id="408"),
        pytest.param(409, PermanentError, None, id="409"),
        pytest.param(422, PermanentError, None, id="422"),
        pytest.param(429, RateLimited, False, id="429"),
        pytest.param(500, RetryableError, True, id="500"),
        pytest.param(502, RetryableError, True, id="502"),
        pytest.param(503, RetryableError, False, id="503"),
        pytest.param(504, RetryableError, True, id="504"),
    ],
)
def test_response_maps_status(status: int, kind: type, sent: bool | None) -> None:
    error = _raised(_response(status, '{"message": "nope"}'))
    assert type(error) is kind
    assert error.status_code == status
    assert getattr(error, "sent", None) == sent


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        pytest.param(429, "7", 7.0, id="429-delta"),
        pytest.param(503, "Wed, 21 Oct 2015 07:29:00 GMT", 60.0, id="503-date"),
        pytest.param(429, "1m0s", None, id="429-garbage"),
        pytest.param(500, "3", 3.0, id="500-delta"),
    ],
)
def test_response_retry_after(status: int, header: str, expected: float | None) -> None:
    error = _raised(_response(status, headers={"Retry-After": header}))
    assert isinstance(error, RetryableError)
    assert error.retry_after == expected


def test_response_context() -> None:
    error = _raised(_response(400))
    assert error.platform == "bv"
    assert error.tenant == "acme"
    assert str(error) == "bv returned HTTP 400"


def test_response_scrubs_known_values() -> None:
    body = '{"error": "employee EMP-778812 (jane.doe@example.com) is unknown"}'
    error = _raised(_response(422, body), known_values=["EMP-778812"])
    assert "EMP-778812" not in str(error)
    assert "jane.doe@example.com" not in str(error)
    assert "is unknown" in str(error)


def test_response_scrubs_before_cut() -> None:
    """A value that straddles the length limit leaves no fragment behind."""
    body = "x " * 146 + "jane.doe@example.com and more text after it"
    error = _raised(_response(400, body))
    assert "jane" not in str(error)
    assert len(str(error)) < 330


def test_response_cuts_long_body() -> None:
    error = _raised(_response(500, "word " * 1000))
    assert len(str(error)) < 330
    assert str(error).endswith("...")


def test_response_binary_body() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/donations")
    response = httpx.Response(
        500,
        content=b"\xff\xfe\x00bad",
        headers={"content-type": "text/plain; charset=ascii"},
        request=request,
    )
    error = _raised(response)
    assert error.status_code == 500


# -- request_with_mapping over real HTTP on 127.0.0.1 -------------------------------


async def _donations(request: Request) -> JSONResponse:
    return JSONResponse({"id": "d-1"}, status_code=201)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, Any]]:
    app = Starlette(routes=[Route("/donations", _donations, methods=["POST"])])
    sandbox = build_sandbox_app(app, Journal())
    with SandboxServer(sandbox) as running:
        yield running, sandbox.state  # type: ignore[attr-defined]


async def _send(
    server: tuple[SandboxServer, Any], plan: FaultPlan, *, timeout: float = 5.0
) -> httpx.Response:
    running, state = server
    state.replace_plan(plan)
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await request_with_mapping(
            lambda: client.post(f"{running.url}/donations?token=SECRET-123", json={}),
            platform="bv",
            tenant="acme",
        )
    if response.is_error:
        raise_for_response(response, platform="bv", tenant="acme", now=NOW)
    return response


async def test_http_success(server: tuple[SandboxServer, Any]) -> None:
    response = await _send(server, FaultPlan())
    assert response.status_code == 201


async def test_http_throttled(server: tuple[SandboxServer, Any]) -> None:
    with pytest.raises(RateLimited) as caught:
        await _send(server, FaultPlan(script=["429"], retry_after="7"))
    assert caught.value.retry_after == 7.0
    assert caught.value.sent is False


async def test_http_server_error(server: tuple[SandboxServer, Any]) -> None:
    with pytest.raises(RetryableError) as caught:
        await _send(server, FaultPlan(script=["502"]))
    assert caught.value.sent is True
    assert caught.value.status_code == 502


async def test_http_dropped(server: tuple[SandboxServer, Any]) -> None:
    with pytest.raises(RetryableError, match="connection to bv failed") as caught:
        await _send(server, FaultPlan(script=["drop"]))
    assert caught.value.sent is True
    assert "SECRET-123" not in str(caught.value)


async def test_http_read_timeout(server: tuple[SandboxServer, Any]) -> None:
    plan = FaultPlan(script=["slow"], slow_seconds=0.3)
    with pytest.raises(RetryableError, match="timed out") as caught:
        await _send(server, plan, timeout=0.05)
    assert caught.value.sent is True


async def test_http_connect_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableError, match="Could not connect") as caught:
            await request_with_mapping(
                lambda: client.get(f"http://127.0.0.1:{port}/?token=SECRET-123"),
                platform="bv",
                tenant="acme",
            )
    assert caught.value.sent is False
    assert "SECRET-123" not in str(caught.value)


async def test_http_unsupported_scheme() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentError, match="base_url"):
            await request_with_mapping(
                lambda: client.get("ftp://127.0.0.1/file"),
                platform="bv",
                tenant="acme",
            )


async def test_http_header_with_line_break_is_not_sent(
    server: tuple[SandboxServer, Any],
) -> None:
    running, state = server
    state.replace_plan(FaultPlan())
    before = state.journal.request_count
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentError, match="was not sent") as caught:
            await request_with_mapping(
                lambda: client.post(
                    f"{running.url}/donations",
                    json={},
                    headers={"x-api-key": "SECRET-123\n"},
                ),
                platform="bv",
                tenant="acme",
            )
    assert "SECRET-123" not in str(caught.value)
    assert state.journal.request_count == before
