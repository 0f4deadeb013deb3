"""Map canonical records to Workday custom object rows."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from impactin_core import ImpactRecord, PlatformRequest, RecordInvalid, RecordKind

from ._options import PLATFORM_ID, WorkdayOptions

__all__ = ["REST_OPERATION", "SOAP_OPERATION", "map_records"]

SOAP_OPERATION = "Edit_Worker_Additional_Data"
REST_OPERATION = "rest_custom_object_write"

#: Payload path of the worker's Employee_ID, the one personal value sent.
EMPLOYEE_ID_PATH = "employee_id"

# ISO 4217 currencies whose minor unit is not 1/100 of the major unit. It
# matches impactin_core's currency_digits, which the input reader uses to
# convert major units to minor units.
_MINOR_DIGITS = {
    **dict.fromkeys(
        [
            *("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"),
            *("RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"),
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}


# Characters outside XML 1.0's Char production (most C0 controls, lone
# surrogates, U+FFFE and U+FFFF), which no SOAP body can carry.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _check_xml_text(
    record: ImpactRecord, payload: dict[str, Any], options: WorkdayOptions
) -> None:
    """Raise ``RecordInvalid`` for a SOAP value that XML 1.0 cannot carry."""
    values = {EMPLOYEE_ID_PATH: payload[EMPLOYEE_ID_PATH], **payload["row"]}
    fields = {name: purpose for purpose, name in options.field_names.items()}
    for name, value in values.items():
        match = _NOT_XML_CHAR.search(value)
        if match is None:
            continue
        field = fields.get(name, name)
        message = (
            f"Record {record.source_id!r} has character U+{ord(match.group()):04X} "
            f"in {field}, which an XML document cannot contain; remove control "
            "characters from the field or send over REST."
        )
        raise RecordInvalid(message, field=field, source_id=record.source_id)


def format_amount(amount_minor: int, currency: str) -> str:
    """Return an amount in minor units as an xsd:decimal string in major units.

    Integer arithmetic keeps every digit and writes no exponent. By contrast,
    ``Decimal.scaleb`` rounds to 28 digits and ``str`` may write ``1E+31``.
    """
    digits = _MINOR_DIGITS.get(currency, 2)
    sign = "-" if amount_minor < 0 else ""
    major, minor = divmod(abs(amount_minor), 10**digits)
    if digits == 0:
        return f"{sign}{major}"
    return f"{sign}{major}.{minor:0{digits}d}"


def format_hours(hours: float) -> str:
    """Return hours as the shortest exact xsd:decimal string, without an exponent.

    ``str`` of a float is its shortest round-trip form, such as ``1e-07``, and
    formatting its Decimal with ``"f"`` writes the same digits as ``0.0000001``.
    """
    return format(Decimal(str(hours)), "f")


def _check_amount(record: ImpactRecord) -> None:
    # The record model accepts any positive number below its maximum, but only
    # a whole number of minor units has an exact major-unit form.
    amount = record.amount_minor
    if isinstance(amount, int) and not isinstance(amount, bool):
        return
    message = (
        f"Record {record.source_id!r} has amount_minor {amount!r}; Workday needs "
        "a whole number in the currency's minor unit (cents for USD)."
    )
    raise RecordInvalid(message, field="amount_minor", source_id=record.source_id)


def _row(record: ImpactRecord, key: str, options: WorkdayOptions) -> dict[str, str]:
    names = options.field_names
    values: dict[str, str | None] = {
        "row_id": key,
        "kind": record.kind.value,
        "activity_date": record.activity_date.isoformat(),
        "source_id": record.source_id,
        "cause": record.cause,
        "organization_name": record.organization_name,
        "organization_id": record.organization_id,
    }
    if record.kind is RecordKind.VOLUNTEER_TIME:
        assert record.hours is not None
        values["hours"] = format_hours(record.hours)
    else:
        assert record.amount_minor is not None and record.currency is not None
        _check_amount(record)
        values["amount"] = format_amount(record.amount_minor, record.currency)
        values["currency"] = record.currency
    return {names[purpose]: value for purpose, value in values.items() if value}


def _payload(record: ImpactRecord, key: str, options: WorkdayOptions) -> dict[str, Any]:
    return {
        "effective_date": record.activity_date.isoformat(),
        EMPLOYEE_ID_PATH: record.employee_id,
        "custom_object": options.custom_object,
        "row": _row(record, key, options),
    }


def map_records(
    records: Sequence[ImpactRecord],
    idempotency_keys: Sequence[str],
    options: WorkdayOptions,
) -> list[PlatformRequest]:
    """Build one request per record, keyed by the record's idempotency key."""
    if len(records) != len(idempotency_keys):
        message = (
            f"Workday mapping received {len(records)} records and "
            f"{len(idempotency_keys)} idempotency keys; pass one key per record."
        )
        raise RecordInvalid(message)
    is_soap = options.protocol == "soap"
    requests = []
    for record, key in zip(records, idempotency_keys, strict=True):
        payload = _payload(record, key, options)
        if is_soap:
            _check_xml_text(record, payload, options)
        request = PlatformRequest(
            platform=PLATFORM_ID,
            tenant=record.tenant,
            operation=SOAP_OPERATION if is_soap else REST_OPERATION,
            idempotency_key=key,
            # The ignores below work around converter typing in impactin_core.
            source_ids=(record.source_id,),  # type: ignore[arg-type]
            payload=payload,
            personal_paths={EMPLOYEE_ID_PATH},  # type: ignore[arg-type]
            # Edit_Worker_Additional_Data sets the worker's custom object data
            # effective on Effective_Date to what the request carries, so a
            # repeat rewrites the same row (keyed by the idempotency key)
            # instead of adding one. The REST path is tenant-specific and its
            # repeat behaviour unknown, so REST requests are not marked safe.
            safe_to_repeat=is_soap,
        )
        requests.append(request)
    return requests
