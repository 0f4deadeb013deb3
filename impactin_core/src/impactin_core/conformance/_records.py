"""Hypothesis strategies for records a connector must map or reject cleanly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from hypothesis import strategies as st

from .._models import ImpactRecord, RecordKind

__all__ = ["records"]

# The record model rejects the C0 control characters other than tab, line
# feed and carriage return.
_CONTROL_CHARACTERS = "".join(
    chr(code) for code in range(0x20) if code not in (9, 10, 13)
)
_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters=_CONTROL_CHARACTERS),
    min_size=1,
    max_size=40,
).filter(lambda text: text.strip() != "")
_OPTIONAL_TEXT = st.none() | _TEXT
_CURRENCIES = st.sampled_from(["USD", "EUR", "GBP", "JPY", "CAD", "INR"])
_EMAILS = st.from_regex(r"[a-z]{1,12}\.[a-z]{1,12}@example\.(org|com)", fullmatch=True)


@st.composite
def _record(
    draw: st.DrawFn, kinds: list[RecordKind], fields: Mapping[str, Any]
) -> ImpactRecord:
    kind = draw(st.sampled_from(kinds))
    values: dict[str, Any] = {
        # NOTE: a source id of bare digits such as "01000000" reads as a phone
        # number to the leak scan, which then blocks the send, so generated
        # ids start with letters joined to the digits.
        "source_id": draw(st.from_regex(r"[a-z]{2,8}_[0-9]{1,10}", fullmatch=True)),
        "tenant": "conformance",
        "kind": kind,
        "activity_date": draw(
            st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2030, 12, 31))
        ),
        "employee_id": draw(st.from_regex(r"E-[0-9]{3,8}", fullmatch=True)),
        "employee_email": draw(st.none() | _EMAILS),
        "cause": draw(_OPTIONAL_TEXT),
        "organization_name": draw(_OPTIONAL_TEXT),
        "organization_id": draw(
            st.none() | st.from_regex(r"[0-9a-f]{24}", fullmatch=True) | _TEXT
        ),
        "location": draw(_OPTIONAL_TEXT),
        "description": draw(_OPTIONAL_TEXT),
    }
    if kind is RecordKind.VOLUNTEER_TIME:
        values["hours"] = draw(
            st.floats(min_value=0.25, max_value=24.0, allow_nan=False).map(
                lambda hours: round(hours, 2)
            )
        )
    else:
        values["amount_minor"] = draw(st.integers(min_value=1, max_value=10**9))
        values["currency"] = draw(_CURRENCIES)
    if values["employee_email"] is not None:
        # One volunteer per source id: platforms such as Goodera keep one
        # participation per volunteer and event, and shrinking repeats the
        # same minimal email and date across examples.
        local, _, domain = values["employee_email"].partition("@")
        values["employee_email"] = f"{local}.{values['source_id']}@{domain}"
    values.update(fields)
    return ImpactRecord(**values)


def records(
    kinds: Iterable[RecordKind], fields: Mapping[str, Any] | None = None
) -> st.SearchStrategy[ImpactRecord]:
    """Return a strategy of valid records of ``kinds``; ``fields`` are fixed values."""
    ordered = sorted(kinds, key=lambda kind: kind.value)
    return _record(ordered, dict(fields or {}))
