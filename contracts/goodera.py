"""Consumer scenarios of the Goodera connector: events, registrations, participation.

One send is up to three calls: ``POST /events`` (skipped when the
connector already created the day's event), ``POST /registrations`` and
``POST /participation``, each with the ``x-api-key`` header.

Provider states used here, which the provider verification sets up:

- ``an event exists``: creates an event and returns its id as ``eventId``,
  injected into the request body;
- ``no event has the requested id``: nothing to set up, because the
  provider never issued the example id.
"""

from __future__ import annotations

import datetime as dt

from pact import Pact, generate, match
from pact.match.matcher import GenericMatcher

from impactin_core import (
    AuthenticationError,
    ImpactRecord,
    PermanentError,
    SendOutcome,
)
from impactin_goodera import _plugin
from impactin_goodera._platform import PLATFORM_INFO
from impactin_goodera._send import _event_key
from impactin_goodera._state import ledger_for, reset_ledgers
from impactin_goodera.simulator import DEFAULT_API_KEY, READ_ONLY_API_KEY

from ._common import Scenario, deliver, settings_for

__all__ = ["CONSUMER", "PROVIDER", "SCENARIOS"]

CONSUMER = "impactin-goodera"
PROVIDER = "goodera"

EVENT_STATE = "an event exists"
MISSING_EVENT_STATE = "no event has the requested id"

_JSON = "application/json"
_OBJECT_ID = r"^[0-9a-f]{24}$"
_OPPORTUNITY_ID = "64b7f0c2a1d3e4f5a6b7c8d9"
_EVENT_ID = "65a1b2c3d4e5f60718293a4b"
_MISSING_EVENT_ID = "5f00000000000000000000aa"
_EMAIL = "dana.reyes@example.org"
_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_IDEMPOTENCY_KEY = "idem-goodera-0001"


def _record() -> ImpactRecord:
    return ImpactRecord(
        source_id="shift-2001",
        tenant="acme",
        kind="volunteer_time",
        activity_date=dt.date(2026, 11, 3),
        employee_id="E-20417",
        employee_email=_EMAIL,
        hours=3.5,
        organization_id=_OPPORTUNITY_ID,
        organization_name="Riverside Food Bank",
    )


def _object_id(example: str) -> object:
    return match.regex(example, regex=_OBJECT_ID)


def _api_key(example: str) -> object:
    return match.regex(example, regex=r"^\S+$")


def _injected_event_id() -> object:
    return GenericMatcher(
        "regex",
        _EVENT_ID,
        regex=_OBJECT_ID,
        generator=generate.provider_state("${eventId}"),
    )


def _event_body() -> dict[str, object]:
    return {
        "opportunityId": _object_id(_OPPORTUNITY_ID),
        "name": match.str("Riverside Food Bank on 2026-11-03"),
        "startTimeStamp": match.regex("2026-11-03T09:00:00+00:00", regex=_TIMESTAMP),
        "endTimeStamp": match.regex("2026-11-03T17:00:00+00:00", regex=_TIMESTAMP),
        "timezone": match.str("UTC"),
        "country": match.regex("US", regex=r"^[A-Z]{2}$"),
        "language": match.str("en"),
        "expectedVolunteerCount": match.int(1),
    }


def _envelope(
    *, outer: int, inner: int, name: str, error: str, message: object, path: str
) -> dict[str, object]:
    return {
        "name": name,
        "message": message,
        "statusCode": outer,
        "timestamp": match.regex("2026-11-03T10:00:00.000000+00:00", regex=_TIMESTAMP),
        "url": match.str(f"/v2/developer-api/v1{path}"),
        "data": {"statusCode": inner, "message": message, "error": error},
    }


def _event_request(pact: Pact, description: str, api_key: str) -> object:
    return (
        pact.upon_receiving(description)
        .with_request("POST", "/events")
        .with_header("x-api-key", _api_key(api_key))
        .with_body(_event_body(), content_type=_JSON)
    )


def _event_created(pact: Pact) -> None:
    interaction = _event_request(pact, "an event for an opportunity", DEFAULT_API_KEY)
    interaction.will_respond_with(200).with_body(  # type: ignore[attr-defined]
        {"id": _object_id(_EVENT_ID)}, content_type=_JSON
    )


def _attendance(
    pact: Pact, path: str, description: str, body: dict[str, object]
) -> object:
    return (
        pact.upon_receiving(description)
        .given(EVENT_STATE)
        .with_request("POST", path)
        .with_header("x-api-key", _api_key(DEFAULT_API_KEY))
        .with_body({"eventId": _injected_event_id(), **body}, content_type=_JSON)
    )


def _participation_recorded(pact: Pact) -> None:
    _event_created(pact)
    email = match.regex(_EMAIL, regex=r"^\S+@\S+$")
    registration = _attendance(
        pact, "/registrations", "a registration for an existing event", {"email": email}
    )
    registration.will_respond_with(200).with_body(  # type: ignore[attr-defined]
        {"registrationId": _object_id("65a1b2c3d4e5f60718293a4c")}, content_type=_JSON
    )
    participation = _attendance(
        pact,
        "/participation",
        "participation hours for an existing event",
        {"email": email, "hours": match.decimal(3.5)},
    )
    participation.will_respond_with(200).with_body(  # type: ignore[attr-defined]
        {"id": _object_id("65a1b2c3d4e5f60718293a4d")}, content_type=_JSON
    )


def _wrong_key(pact: Pact) -> None:
    interaction = _event_request(pact, "an event with a wrong API key", "wrong-api-key")
    interaction.will_respond_with(403).with_body(  # type: ignore[attr-defined]
        _envelope(
            outer=403,
            inner=403,
            name="ForbiddenException",
            error="Forbidden",
            message="Unauthenticated",
            path="/events",
        ),
        content_type=_JSON,
    )


def _read_only_key(pact: Pact) -> None:
    interaction = _event_request(
        pact, "an event with an API key not permitted to write", READ_ONLY_API_KEY
    )
    interaction.will_respond_with(401).with_body(  # type: ignore[attr-defined]
        _envelope(
            outer=401,
            inner=401,
            name="UnauthorizedException",
            error="Unauthorized",
            message="Unauthorized",
            path="/events",
        ),
        content_type=_JSON,
    )


def _unknown_event(pact: Pact) -> None:
    interaction = (
        pact.upon_receiving("a registration for an event Goodera does not have")
        .given(MISSING_EVENT_STATE)
        .with_request("POST", "/registrations")
        .with_header("x-api-key", _api_key(DEFAULT_API_KEY))
        .with_body(
            {
                "eventId": _MISSING_EVENT_ID,
                "email": match.regex(_EMAIL, regex=r"^\S+@\S+$"),
            },
            content_type=_JSON,
        )
    )
    # Goodera reports a missing object as HTTP 500 with the real status in
    # data.statusCode.
    interaction.will_respond_with(500).with_body(
        _envelope(
            outer=500,
            inner=404,
            name="NotFoundException",
            error="Not Found",
            message=match.str(f"Event {_MISSING_EVENT_ID} not found"),
            path="/registrations",
        ),
        content_type=_JSON,
    )


async def _send_with(base_url: str, api_key: str) -> SendOutcome:
    reset_ledgers()
    return await deliver(
        plugin=_plugin,
        platform=PLATFORM_INFO,
        settings=settings_for("goodera", base_url, {"api_key": api_key}),
        record=_record(),
        idempotency_key=_IDEMPOTENCY_KEY,
    )


async def _send(base_url: str) -> SendOutcome:
    return await _send_with(base_url, DEFAULT_API_KEY)


async def _send_with_wrong_key(base_url: str) -> SendOutcome:
    return await _send_with(base_url, "wrong-api-key")


async def _send_with_read_only_key(base_url: str) -> SendOutcome:
    return await _send_with(base_url, READ_ONLY_API_KEY)


async def _send_to_deleted_event(base_url: str) -> SendOutcome:
    # The connector remembers the day's event from an earlier send, so it
    # skips POST /events; Goodera no longer has that event.
    reset_ledgers()
    settings = settings_for("goodera", base_url, {"api_key": DEFAULT_API_KEY})
    requests = _plugin.impactin_map(
        platform=PLATFORM_INFO,
        records=[_record()],
        settings=settings,
        idempotency_keys=[_IDEMPOTENCY_KEY],
    )
    assert requests is not None
    (request,) = requests
    ledger = ledger_for(settings.tenant, base_url, None)
    ledger.record_event(_event_key(request.payload["event"]), _MISSING_EVENT_ID)
    return await deliver(
        plugin=_plugin,
        platform=PLATFORM_INFO,
        settings=settings,
        record=_record(),
        idempotency_key=_IDEMPOTENCY_KEY,
    )


SCENARIOS = (
    Scenario(
        platform=PROVIDER,
        name="participation-recorded",
        define=_participation_recorded,
        run=_send,
    ),
    Scenario(
        platform=PROVIDER,
        name="wrong-api-key",
        define=_wrong_key,
        run=_send_with_wrong_key,
        expected=AuthenticationError,
    ),
    Scenario(
        platform=PROVIDER,
        name="read-only-api-key",
        define=_read_only_key,
        run=_send_with_read_only_key,
        expected=PermanentError,
    ),
    Scenario(
        platform=PROVIDER,
        name="unknown-event",
        define=_unknown_event,
        run=_send_to_deleted_event,
        expected=PermanentError,
    ),
)
