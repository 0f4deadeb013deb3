"""Turn donation records into Benevity ``POST /donations`` requests.

A donation carries ``destination``, ``funds``, an optional ``donor`` and
``metadata``, as in Benevity's Giving API guide. The payload contains only what
Benevity needs: the donor's email (and the name when a tenant allows it),
the recipient, the funds and string metadata. Descriptions, locations,
phone numbers and the host's own record metadata are never sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from impactin_core import (
    ImpactRecord,
    PlatformRequest,
    PlatformSettings,
    RecordInvalid,
    RecordKind,
    RedactionPolicy,
    pseudonymize,
)

from ._options import BenevityOptions

__all__ = [
    "EMPLOYEE_REF_KEY",
    "IDEMPOTENCY_KEY",
    "MAX_METADATA_PAIRS",
    "OPERATION",
    "PERSONAL_PATHS",
    "PLATFORM_ID",
    "donation_payload",
    "map_records",
    "redact_payload",
]

PLATFORM_ID = "benevity"
OPERATION = "create_donation"

#: Metadata key that carries the delivery's idempotency key. Benevity
#: publishes no idempotency mechanism; the key lets a replay be matched to
#: the donation it repeats.
IDEMPOTENCY_KEY = "impactin_idempotency_key"

#: Metadata key that carries the employee reference: a keyed pseudonym of
#: ``employee_id``, or the id itself when a tenant allows it in clear.
EMPLOYEE_REF_KEY = "impactin_employee_ref"

#: Benevity accepts at most 100 key/value pairs in ``metadata``.
MAX_METADATA_PAIRS = 100

#: Payload paths where the declared personal fields may appear.
PERSONAL_PATHS = frozenset(
    {"donor.email", "donor.fullName", f"metadata.{EMPLOYEE_REF_KEY}"}
)

_PSEUDONYM = re.compile(r"psn_[0-9a-f]{32}")


def map_records(
    records: Sequence[ImpactRecord],
    settings: PlatformSettings,
    idempotency_keys: Sequence[str],
) -> list[PlatformRequest]:
    """Return one ``POST /donations`` request per record, in order."""
    if len(records) != len(idempotency_keys):
        message = (
            f"Got {len(records)} records but {len(idempotency_keys)} idempotency "
            "keys; pass one key per record."
        )
        raise ValueError(message)
    options = BenevityOptions.from_settings(settings.tenant, settings.options)
    return [
        _request(record, key, settings, options)
        for record, key in zip(records, idempotency_keys, strict=True)
    ]


def _request(
    record: ImpactRecord,
    key: str,
    settings: PlatformSettings,
    options: BenevityOptions,
) -> PlatformRequest:
    if record.tenant != settings.tenant:
        message = (
            f"Record {record.source_id!r} belongs to tenant {record.tenant!r}, "
            f"not {settings.tenant!r}; map it with that tenant's settings."
        )
        raise RecordInvalid(message, field="tenant", source_id=record.source_id)
    return PlatformRequest(
        platform=PLATFORM_ID,
        tenant=settings.tenant,
        operation=OPERATION,
        idempotency_key=key,
        source_ids=[record.source_id],
        payload=donation_payload(record, key, options),
        personal_paths=PERSONAL_PATHS,
        safe_to_repeat=False,
    )


def donation_payload(
    record: ImpactRecord, key: str, options: BenevityOptions
) -> dict[str, Any]:
    """Return the JSON body of ``POST /donations`` for one donation record."""
    _check_record(record)
    payload: dict[str, Any] = {
        "destination": _destination(record, options),
        "funds": _funds(record, options),
    }
    donor = _donor(record, options)
    if donor:
        payload["donor"] = donor
    payload["metadata"] = _metadata(record, key)
    return payload


def _check_record(record: ImpactRecord) -> None:
    if record.kind is not RecordKind.DONATION:
        message = (
            f"Record {record.source_id!r} is a {record.kind.value} record; Benevity "
            "accepts only donations through its API, so send volunteer time to "
            "another platform."
        )
        raise RecordInvalid(message, field="kind", source_id=record.source_id)
    if record.organization_id is None or not record.organization_id.strip():
        message = (
            f"Record {record.source_id!r} has no organization_id; set it to the "
            "Benevity id of the cause, project or portfolio that receives the "
            "donation."
        )
        raise RecordInvalid(
            message, field="organization_id", source_id=record.source_id
        )
    amount = record.amount_minor
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        message = (
            f"Record {record.source_id!r} has amount_minor {amount!r}; Benevity "
            "needs a positive integer in the currency's minor unit (cents for USD)."
        )
        raise RecordInvalid(message, field="amount_minor", source_id=record.source_id)


def _destination(record: ImpactRecord, options: BenevityOptions) -> dict[str, str]:
    destination = {"recipientId": str(record.organization_id).strip()}
    # Without a foundationId, Benevity routes the donation through a
    # foundation it picks for the recipient.
    if options.foundation_id is not None:
        destination["foundationId"] = options.foundation_id
    return destination


def _funds(record: ImpactRecord, options: BenevityOptions) -> dict[str, Any]:
    funds: dict[str, Any] = {
        "paymentType": options.payment_type,
        "currencyCode": record.currency,
        "amount": record.amount_minor,
    }
    if options.funds_source is not None:
        funds["source"] = options.funds_source
    return funds


def _donor(record: ImpactRecord, options: BenevityOptions) -> dict[str, Any]:
    # Benevity accepts a donation without a donor as anonymous, which is what
    # a tenant gets when its policy withholds both the email and the name.
    donor: dict[str, Any] = {}
    if record.employee_email:
        donor["email"] = record.employee_email
    if record.employee_name:
        donor["fullName"] = record.employee_name
    if donor:
        donor["receipted"] = options.receipted
    return donor


def _metadata(record: ImpactRecord, key: str) -> dict[str, str]:
    metadata = {
        "impactin_source_id": record.source_id,
        "impactin_kind": record.kind.value,
        "impactin_activity_date": record.activity_date.isoformat(),
        EMPLOYEE_REF_KEY: record.employee_id,
    }
    if record.cause:
        metadata["impactin_cause"] = record.cause
    metadata[IDEMPOTENCY_KEY] = key
    return metadata


def redact_payload(payload: dict[str, Any], policy: RedactionPolicy) -> int:
    """Remove donor fields and pseudonymize an employee id that ``policy`` withholds.

    The runtime minimizes records before they are mapped, so this normally
    changes nothing. It guards against a caller that maps records without
    minimizing them. Returns the number of fields changed.
    """
    changes = _redact_donor(payload, policy)
    metadata = payload.get("metadata")
    if not isinstance(metadata, dict):
        return changes
    reference = metadata.get(EMPLOYEE_REF_KEY)
    keeps_id = "employee_id" in policy.keep
    if (
        isinstance(reference, str)
        and not keeps_id
        and not _PSEUDONYM.fullmatch(reference)
    ):
        metadata[EMPLOYEE_REF_KEY] = pseudonymize(reference, policy.key)
        changes += 1
    return changes


def _redact_donor(payload: dict[str, Any], policy: RedactionPolicy) -> int:
    donor = payload.get("donor")
    if not isinstance(donor, dict):
        return 0
    changes = 0
    for path_field, record_field in (
        ("email", "employee_email"),
        ("fullName", "employee_name"),
    ):
        if path_field in donor and record_field not in policy.keep:
            del donor[path_field]
            changes += 1
    if not _has_identity(donor):
        del payload["donor"]
    return changes


def _has_identity(donor: Mapping[str, Any]) -> bool:
    return "email" in donor or "fullName" in donor
