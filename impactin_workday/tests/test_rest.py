"""REST: refresh-token grant, rotation, 401 handling and the configured write path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from impactin_core import (
    AuthenticationError,
    ConfigError,
    PermanentError,
    RateLimited,
    RetryableError,
)
from impactin_core._models import MAX_AMOUNT_MINOR
from impactin_core.sandbox import FaultPlan

from .conftest import EMPLOYEE_ID, Harness, make_record

REST = {"rest_path": "volunteerActivities"}


def stored_refresh_token(harness: Harness) -> str | None:
    token = harness.tokens._store.load_token("acme", "workday")  # type: ignore[attr-defined]
    assert token is not None
    return token.refresh_token


async def test_rest_send_accepted(harness: Harness) -> None:
    outcome = await harness.send(harness.settings("rest", **REST))
    entries = harness.sim.journal.snapshot()["entries"]
    assert outcome.status_code == 201
    assert outcome.response_id
    assert entries[0]["key"] == "key-1"
    assert entries[0]["worker"] == {"id": EMPLOYEE_ID}
    assert entries[0]["data"]["Hours"] == "3.5"


async def test_rest_send_exact_decimals(harness: Harness) -> None:
    settings = harness.settings("rest", **REST)
    volunteer = make_record(source_id="act-tiny", hours=1e-7)
    donation = make_record(
        source_id="gift-max",
        kind="donation",
        hours=None,
        amount_minor=MAX_AMOUNT_MINOR,
        currency="KWD",
        activity_date=dt.date(2026, 11, 4),
    )
    await harness.send(settings, harness.map(settings, volunteer, key="key-1"))
    await harness.send(settings, harness.map(settings, donation, key="key-2"))
    entries = harness.sim.journal.snapshot()["entries"]
    assert entries[0]["data"]["Hours"] == "0.0000001"
    assert entries[1]["data"]["Amount"] == "999999999.999"


async def test_rotated_refresh_token_persisted(harness: Harness) -> None:
    settings = harness.settings("rest", **REST)
    await harness.send(settings)
    rotated = stored_refresh_token(harness)
    assert rotated != harness.sim.credentials["refresh_token"]
    assert harness.sim.state is not None
    assert harness.sim.state.refresh_tokens == {rotated}


async def test_rotated_token_used_next(harness: Harness) -> None:
    """A forced refresh after rotation succeeds, so it used the new token."""
    settings = harness.settings("rest", **REST)
    await harness.send(settings)
    outcome = await harness.send(settings, force_refresh=True)
    assert outcome.status_code == 201
    assert harness.tokens.refresh_count == 2


async def test_refresh_token_kept_without_rotation(
    serve: Callable[..., Harness],
) -> None:
    harness = serve(rotate_refresh_token=False)
    await harness.send(harness.settings("rest", **REST))
    assert stored_refresh_token(harness) == harness.sim.credentials["refresh_token"]


async def test_lifetime_from_expires_in(harness: Harness) -> None:
    await harness.send(harness.settings("rest", **REST), clock=lambda: 1000.0)
    token = harness.tokens._store.load_token("acme", "workday")  # type: ignore[attr-defined]
    assert token.expires_at == 4600.0


async def test_401_then_success_after_refresh(harness: Harness) -> None:
    settings = harness.settings("rest", **REST)
    await harness.send(settings)
    assert harness.sim.state is not None
    harness.sim.state.expire_access_tokens()
    with pytest.raises(AuthenticationError) as caught:
        await harness.send(settings, harness.map(settings, key="key-2"))
    assert caught.value.status_code == 401
    outcome = await harness.send(
        settings, harness.map(settings, key="key-2"), force_refresh=True
    )
    assert outcome.status_code == 201


async def test_invalid_grant_asks_reauthentication(harness: Harness) -> None:
    settings = harness.settings("rest", secrets={"refresh_token": "revoked"}, **REST)
    with pytest.raises(AuthenticationError) as caught:
        await harness.send(settings)
    message = str(caught.value)
    assert "invalid_grant" in message
    assert "'acme'" in message
    assert "'workday'" in message
    assert "revoked" not in message


async def test_bad_client_secret_rejected(harness: Harness) -> None:
    settings = harness.settings("rest", secrets={"client_secret": "wrong"}, **REST)
    with pytest.raises(AuthenticationError) as caught:
        await harness.send(settings)
    assert "client_secret" in str(caught.value)
    assert "wrong" not in str(caught.value)


async def test_429_is_rate_limited(harness: Harness) -> None:
    settings = harness.settings("rest", **REST)
    await harness.send(settings)
    harness_state = harness.sim.app.state  # type: ignore[attr-defined]
    harness_state.replace_plan(FaultPlan(script=["429"], retry_after="7"))
    with pytest.raises(RateLimited) as caught:
        await harness.send(settings)
    assert caught.value.retry_after == 7.0


async def test_invalid_worker_hides_employee_id(serve: Callable[..., Harness]) -> None:
    harness = serve(workers={"99999"})
    with pytest.raises(PermanentError) as caught:
        await harness.send(harness.settings("rest", **REST))
    assert caught.value.status_code == 400
    assert "worker.id" in str(caught.value)
    assert EMPLOYEE_ID not in str(caught.value)


async def test_rest_path_required(harness: Harness) -> None:
    with pytest.raises(ConfigError) as caught:
        await harness.send(harness.settings("rest"))
    assert caught.value.key == "tenants.acme.platforms.workday.options.rest_path"


async def test_wrong_rest_path_is_permanent(harness: Harness) -> None:
    with pytest.raises(PermanentError) as caught:
        await harness.send(harness.settings("rest", rest_path="elsewhere"))
    assert caught.value.status_code == 404


@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param("403", PermanentError, id="403-permanent"),
        pytest.param("500", RetryableError, id="500-retryable"),
        pytest.param("503", RetryableError, id="503-retryable"),
    ],
)
async def test_rest_status_mapping(
    harness: Harness, status: str, error: type[Exception]
) -> None:
    settings = harness.settings("rest", **REST)
    await harness.send(settings)
    harness.sim.app.state.replace_plan(FaultPlan(script=[status]))  # type: ignore[attr-defined]
    with pytest.raises(error) as caught:
        await harness.send(settings, harness.map(settings, key="key-2"))
    assert getattr(caught.value, "status_code", None) == int(status)
    assert not isinstance(caught.value, AuthenticationError)
