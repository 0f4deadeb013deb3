"""Mapping a volunteer_time record to the Goodera request."""

from __future__ import annotations

from typing import Any

import pytest

from impactin_core import ConfigError, RecordInvalid, leak_scan

OPPORTUNITY = "65f96d1e1d38620012d38261"
FALLBACK = "610cc05de85e70001106f7d9"


def test_map_builds_three_bodies(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    request = map_record(make_record(), make_settings())
    payload = request.payload
    assert payload["event"] == {
        "opportunityId": OPPORTUNITY,
        "name": "City Food Bank on 2026-03-14",
        "startTimeStamp": "2026-03-14T09:00:00+00:00",
        "endTimeStamp": "2026-03-14T17:00:00+00:00",
        "timezone": "UTC",
        "country": "US",
        "language": "en",
        "expectedVolunteerCount": 1,
    }
    assert payload["registration"] == {"email": "ada.lovelace@example.org"}
    assert payload["participation"] == {
        "email": "ada.lovelace@example.org",
        "hours": 2.5,
    }


def test_map_request_metadata(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    request = map_record(make_record(), make_settings())
    assert request.operation == "record_participation"
    assert request.idempotency_key == "key-activity-1"
    assert request.source_ids == ("activity-1",)
    assert request.safe_to_repeat is False
    assert request.personal_paths == {"registration.email", "participation.email"}


def test_map_passes_leak_scan(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    request = map_record(make_record(), make_settings())
    assert leak_scan(request.payload, request.personal_paths) == []


def test_map_uses_timezone_option(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    settings = make_settings(timezone="America/New_York", country="CA")
    event = map_record(make_record(), settings).payload["event"]
    assert event["startTimeStamp"] == "2026-03-14T09:00:00-04:00"
    assert event["timezone"] == "America/New_York"
    assert event["country"] == "CA"


def test_map_hours_field_option(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    settings = make_settings(hours_field="volunteerHours")
    participation = map_record(make_record(), settings).payload["participation"]
    assert participation == {"email": "ada.lovelace@example.org", "volunteerHours": 2.5}


def test_map_contact_email_is_allowed_path(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    settings = make_settings(event_contact_email="csr@example.com")
    request = map_record(make_record(), settings)
    assert request.payload["event"]["email"] == "csr@example.com"
    assert leak_scan(request.payload, request.personal_paths) == []


@pytest.mark.parametrize(
    ("organization_id", "options", "expected"),
    [
        pytest.param(OPPORTUNITY, {}, OPPORTUNITY, id="record-object-id"),
        pytest.param(
            OPPORTUNITY, {"opportunity_id": FALLBACK}, OPPORTUNITY, id="record-wins"
        ),
        pytest.param(
            "EIN-12-3456789", {"opportunity_id": FALLBACK}, FALLBACK, id="not-hex"
        ),
        pytest.param(None, {"opportunity_id": FALLBACK}, FALLBACK, id="no-org"),
    ],
)
def test_map_opportunity_source(
    make_record: Any,
    make_settings: Any,
    map_record: Any,
    organization_id: str | None,
    options: dict[str, Any],
    expected: str,
) -> None:
    record = make_record(organization_id=organization_id)
    request = map_record(record, make_settings(**options))
    assert request.payload["event"]["opportunityId"] == expected


def test_map_without_opportunity_rejects(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    with pytest.raises(RecordInvalid) as caught:
        map_record(make_record(organization_id="not-an-id"), make_settings())
    assert caught.value.field == "organization_id"
    assert "opportunity_id" in str(caught.value)


def test_map_missing_email_rejects(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    with pytest.raises(RecordInvalid) as caught:
        map_record(make_record(employee_email=None), make_settings())
    assert caught.value.field == "employee_email"
    assert "employee_email" in str(caught.value)
    assert caught.value.source_id == "activity-1"


def test_map_donation_rejects(
    make_record: Any, make_settings: Any, map_record: Any
) -> None:
    donation = make_record(
        kind="donation", hours=None, amount_minor=500, currency="USD"
    )
    with pytest.raises(RecordInvalid) as caught:
        map_record(donation, make_settings())
    assert caught.value.field == "kind"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        pytest.param({"opportunity_id": "123"}, "opportunity_id", id="short-id"),
        pytest.param({"timezone": "Mars/Olympus"}, "timezone", id="zone"),
        pytest.param({"country": "usa"}, "country", id="country"),
        pytest.param({"event_start": "9am"}, "event_start", id="start"),
        pytest.param({"event_end": "08:00"}, "event_end", id="end-before-start"),
        pytest.param(
            {"expected_volunteer_count": 0}, "expected_volunteer_count", id="count"
        ),
        pytest.param({"event_contact_email": "x"}, "event_contact_email", id="email"),
        pytest.param({"hours_field": "a b"}, "hours_field", id="hours-field"),
        pytest.param({"timezon": "Europe/Paris"}, "timezon", id="misspelled"),
    ],
)
def test_map_invalid_option_names_key(
    make_record: Any,
    make_settings: Any,
    map_record: Any,
    options: dict[str, Any],
    key: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        map_record(make_record(), make_settings(**options))
    assert caught.value.key == f"tenants.acme.platforms.goodera.options.{key}"
