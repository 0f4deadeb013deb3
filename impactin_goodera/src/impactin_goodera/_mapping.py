"""Map one ``volunteer_time`` record to the Goodera request of one send."""

from __future__ import annotations

from typing import Any

from impactin_core import (
    ImpactRecord,
    PlatformRequest,
    PlatformSettings,
    RecordInvalid,
    RecordKind,
)

from ._options import GooderaOptions, is_object_id

__all__ = ["OPERATION", "PERSONAL_PATHS", "map_record"]

#: The one operation this connector performs: event, registration, participation.
OPERATION = "record_participation"

#: Payload paths where the employee's email is expected in clear.
PERSONAL_PATHS = frozenset({"registration.email", "participation.email"})


def map_record(
    record: ImpactRecord, settings: PlatformSettings, idempotency_key: str
) -> PlatformRequest:
    """Build the request that records ``record`` as participation in an event.

    The payload has three parts, one per call. The event id is not known
    yet: the send step creates or reuses the event and fills it in.
    """
    options = GooderaOptions.from_settings(settings.tenant, settings.options)
    email = _check_record(record)

    payload: dict[str, Any] = {
        "event": _event_body(record, options),
        "registration": {"email": email},
        "participation": {"email": email, options.hours_field: record.hours},
    }
    personal_paths = set(PERSONAL_PATHS)
    if options.event_contact_email is not None:
        personal_paths.add("event.email")
    return PlatformRequest(
        platform=settings.platform,
        tenant=settings.tenant,
        operation=OPERATION,
        idempotency_key=idempotency_key,
        # The ignores work around the core's untyped attrs converters.
        source_ids=(record.source_id,),  # type: ignore[arg-type]
        payload=payload,
        personal_paths=frozenset(personal_paths),  # type: ignore[arg-type]
    )


def opportunity_for(record: ImpactRecord, options: GooderaOptions) -> str | None:
    """Return the record's opportunity: its organization id if an ObjectId."""
    if is_object_id(record.organization_id):
        return record.organization_id
    return options.opportunity_id


def _check_record(record: ImpactRecord) -> str:
    """Return the record's email, or raise ``RecordInvalid`` naming the field."""
    if record.kind is not RecordKind.VOLUNTEER_TIME:
        message = (
            f"Record {record.source_id!r} is a {record.kind.value} record, but "
            "Goodera accepts only volunteer_time records; send donations to "
            "another platform."
        )
        raise RecordInvalid(message, field="kind", source_id=record.source_id)
    if not record.employee_email:
        message = (
            f"Record {record.source_id!r} has no employee_email; Goodera "
            "identifies volunteers by email, so add the employee's email."
        )
        raise RecordInvalid(message, field="employee_email", source_id=record.source_id)
    return record.employee_email


def _event_body(record: ImpactRecord, options: GooderaOptions) -> dict[str, Any]:
    opportunity = opportunity_for(record, options)
    if opportunity is None:
        message = (
            f"Record {record.source_id!r} has no Goodera opportunity: its "
            "organization_id is not a 24-hex ObjectId and the tenant sets no "
            "opportunity_id option; set either one."
        )
        raise RecordInvalid(
            message, field="organization_id", source_id=record.source_id
        )
    start, end = options.event_window(record.activity_date)
    body: dict[str, Any] = {
        "opportunityId": opportunity,
        "name": _event_name(record),
        "startTimeStamp": start,
        "endTimeStamp": end,
        "timezone": options.timezone,
        "country": options.country,
        "language": options.language,
        "expectedVolunteerCount": options.expected_volunteer_count,
    }
    if options.event_contact_email is not None:
        body["email"] = options.event_contact_email
    return body


def _event_name(record: ImpactRecord) -> str:
    # The runtime has already scrubbed personal data from organization_name.
    title = record.organization_name or "Volunteering"
    return f"{title} on {record.activity_date.isoformat()}"
