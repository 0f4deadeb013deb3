"""Sending to the Goodera simulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from impactin_core import (
    AuthenticationError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
)
from impactin_core.sandbox import FaultPlan
from impactin_goodera._send import _event_key
from impactin_goodera._state import ledger_for, reset_ledgers
from impactin_goodera.simulator import READ_ONLY_API_KEY

EMAIL = "ada.lovelace@example.org"


async def test_send_creates_event_registration_participation(
    send: Any, simulator: Any, journal_entries: Any
) -> None:
    outcome = await send()
    events = journal_entries(simulator, "event")
    registrations = journal_entries(simulator, "registration")
    participations = journal_entries(simulator, "participation")
    assert outcome.status_code == 200
    assert outcome.duplicate is False
    assert len(events) == 1
    assert len(registrations) == 1
    assert len(participations) == 1
    assert participations[0]["body"]["hours"] == 2.5
    assert participations[0]["body"]["email"] == EMAIL
    event_id = registrations[0]["body"]["eventId"]
    assert participations[0]["body"]["eventId"] == event_id


@pytest.mark.parametrize(
    "hours",
    [
        pytest.param(1e-7, id="tiny"),
        pytest.param(1 / 3, id="third"),
        pytest.param(24.0, id="max"),
    ],
)
async def test_send_hours_exact(
    send: Any, simulator: Any, make_record: Any, journal_entries: Any, hours: float
) -> None:
    """Hours travel as a JSON number, which reads back as the same double."""
    await send(make_record(hours=hours))
    participations = journal_entries(simulator, "participation")
    assert len(participations) == 1
    assert participations[0]["body"]["hours"] == hours


async def test_send_same_day_reuses_event(
    send: Any, simulator: Any, make_record: Any, journal_entries: Any
) -> None:
    await send(make_record(source_id="a-1"))
    await send(make_record(source_id="a-2", employee_email="grace@example.org"))
    assert len(journal_entries(simulator, "event")) == 1
    assert len(journal_entries(simulator, "participation")) == 2


async def test_send_second_activity_same_event_refused(
    send: Any, simulator: Any, make_record: Any, journal_entries: Any
) -> None:
    """Goodera keeps one participation per volunteer and event; hours would go."""
    await send(make_record(source_id="a-1", hours=2.0))

    with pytest.raises(PermanentError, match="already has a participation"):
        await send(make_record(source_id="a-2", hours=3.0))

    assert len(journal_entries(simulator, "participation")) == 1


async def test_send_repeat_skips_confirmed_steps(
    send: Any, simulator: Any, journal_entries: Any
) -> None:
    first = await send()
    requests_before = simulator.journal.snapshot()["request_count"]
    second = await send()
    assert second.duplicate is True
    assert second.response_id == first.response_id
    assert simulator.journal.snapshot()["request_count"] == requests_before
    assert len(journal_entries(simulator, "participation")) == 1


async def test_send_retry_after_lost_answer(
    send: Any, simulator: Any, server: Any, journal_entries: Any
) -> None:
    """The participation is processed, its response is lost, then retried."""
    plan = FaultPlan(script=["ok", "ok", "drop_after"])
    simulator.app.state.replace_plan(plan)
    with pytest.raises(RetryableError) as caught:
        await send()
    assert caught.value.sent is True
    outcome = await send()
    repeats = simulator.journal.snapshot()["repeats"]
    assert outcome.status_code == 200
    assert len(journal_entries(simulator, "event")) == 1
    assert len(journal_entries(simulator, "registration")) == 1
    assert len(journal_entries(simulator, "participation")) == 1
    assert list(repeats) == [next(k for k in repeats if k.startswith("participation:"))]


async def test_send_partial_failure_reuses_event(
    send: Any, simulator: Any, journal_entries: Any
) -> None:
    simulator.app.state.replace_plan(FaultPlan(script=["ok", "503"]))
    with pytest.raises(RetryableError):
        await send()
    await send()
    assert len(journal_entries(simulator, "event")) == 1
    assert len(journal_entries(simulator, "participation")) == 1


async def test_send_ledger_survives_restart(
    send: Any, simulator: Any, tmp_path: Path, journal_entries: Any
) -> None:
    await send(cache_dir=tmp_path)
    reset_ledgers()
    second = await send(cache_dir=tmp_path)
    assert second.duplicate is True
    assert len(journal_entries(simulator, "event")) == 1
    files = list(tmp_path.glob("goodera-ledger-*"))
    assert any(path.suffix == ".sqlite" for path in files)
    for path in files:
        assert EMAIL.encode() not in path.read_bytes()


async def test_send_wrong_key_is_authentication_error(send: Any) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await send(api_key="not-the-key")
    assert caught.value.status_code == 403


async def test_send_read_only_key_is_permanent(send: Any) -> None:
    with pytest.raises(PermanentError) as caught:
        await send(api_key=READ_ONLY_API_KEY)
    assert caught.value.status_code == 401
    assert not isinstance(caught.value, AuthenticationError)


async def test_send_unknown_path_is_permanent(send: Any, server: Any) -> None:
    with pytest.raises(PermanentError) as caught:
        await send(base_url=server.url + "/v9")
    assert caught.value.status_code == 404
    assert "inside the body" in str(caught.value)


async def test_send_plain_500_is_retryable(send: Any, simulator: Any) -> None:
    simulator.app.state.replace_plan(FaultPlan(script=["500"]))
    with pytest.raises(RetryableError) as caught:
        await send()
    assert caught.value.status_code == 500
    assert not isinstance(caught.value, RateLimited)


async def test_send_429_is_rate_limited(send: Any, simulator: Any) -> None:
    simulator.app.state.replace_plan(FaultPlan(script=["429"], retry_after="7"))
    with pytest.raises(RateLimited) as caught:
        await send()
    assert caught.value.retry_after == 7.0


async def test_send_dropped_connection_is_retryable(send: Any, simulator: Any) -> None:
    simulator.app.state.replace_plan(FaultPlan(script=["drop"]))
    with pytest.raises(RetryableError):
        await send()


async def test_send_refused_connection_not_sent(send: Any) -> None:
    with pytest.raises(RetryableError) as caught:
        await send(base_url="http://127.0.0.1:9")
    assert caught.value.sent is False


async def test_send_unknown_event_is_permanent(
    send: Any, server: Any, make_record: Any, make_settings: Any, map_record: Any
) -> None:
    """An event id unknown to the platform returns 404 inside a 500."""
    request = map_record(make_record(), make_settings(server.url))
    ledger = ledger_for("acme", server.url, None)
    ledger.record_event(_event_key(request.payload["event"]), "0" * 24)
    with pytest.raises(PermanentError) as caught:
        await send()
    assert caught.value.status_code == 404


@pytest.mark.parametrize(
    ("script", "options"),
    [
        pytest.param([], {"api_key": "wrong"}, id="403"),
        pytest.param([], {"api_key": READ_ONLY_API_KEY}, id="401"),
        pytest.param(["500"], {}, id="500"),
        pytest.param(["429"], {}, id="429"),
    ],
)
async def test_errors_contain_no_email(
    send: Any, simulator: Any, script: list[str], options: dict[str, Any]
) -> None:
    simulator.app.state.replace_plan(FaultPlan(script=list(script)))
    with pytest.raises(DeliveryError) as caught:
        await send(**options)
    assert EMAIL not in str(caught.value)
    assert "ada.lovelace" not in str(caught.value)
