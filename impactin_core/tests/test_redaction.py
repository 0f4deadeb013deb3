"""Minimization, pseudonymization and scrubbing before a connector maps a record."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactin_core import ConfigError, ImpactRecord, PlatformInfo, RecordKind
from impactin_core._redaction import (
    RedactionPolicy,
    detect,
    leak_scan,
    minimize_record,
    pseudonymize,
    scrub_text,
)

KEY = b"tenant-secret-key-for-tests-0001"

WORKDAY = PlatformInfo(
    id="workday",
    name="Workday",
    kinds={RecordKind.VOLUNTEER_TIME},
    auth_kinds=("basic",),
    personal_fields={"employee_id"},
)
GOODERA = PlatformInfo(
    id="goodera",
    name="Goodera",
    kinds={RecordKind.VOLUNTEER_TIME},
    auth_kinds=("api_key",),
    personal_fields={"employee_email"},
    widenable_fields={"employee_name"},
)


def record(**changes: Any) -> ImpactRecord:
    values: dict[str, Any] = {
        "source_id": "a-1",
        "tenant": "acme",
        "kind": RecordKind.VOLUNTEER_TIME,
        "activity_date": dt.date(2026, 3, 1),
        "hours": 2.0,
        "employee_id": "E-004217",
        "employee_email": "Maria.Lopez@Example.org",
        "employee_name": "Maria Lopez",
        "employee_phone": "+44 7700 900123",
        "description": "Maria Lopez tutored; reach her at +44 7700 900123",
        "metadata": {"contact": {"notes": ["tutor.lead@example.org", "AB 12 34 56 C"]}},
    }
    values.update(changes)
    return ImpactRecord(**values)


def test_pseudonym_is_hmac_sha256() -> None:
    expected = hmac.new(KEY, b"E-004217", hashlib.sha256).hexdigest()[:32]

    assert pseudonymize("E-004217", KEY) == f"psn_{expected}"


@pytest.mark.parametrize(
    ("first", "second", "is_email"),
    [
        pytest.param("E-004217", "E-004217 ", False, id="trailing-space"),
        pytest.param("E-004217", " E-004217", False, id="leading-space"),
        pytest.param("E-004217", "\uff25-004217", False, id="fullwidth-nfkc"),
        pytest.param("Maria@Example.org", "maria@example.org", True, id="email-case"),
        pytest.param(
            "maria@example.org", "maria@example.org\u200b", True, id="zero-width"
        ),
    ],
)
def test_pseudonym_normalizes(first: str, second: str, is_email: bool) -> None:
    assert pseudonymize(first, KEY, is_email=is_email) == pseudonymize(
        second, KEY, is_email=is_email
    )


def test_pseudonym_keeps_id_case() -> None:
    assert pseudonymize("e-004217", KEY) != pseudonymize("E-004217", KEY)


def test_pseudonym_depends_on_tenant_key() -> None:
    assert pseudonymize("E-004217", KEY) != pseudonymize("E-004217", b"other-key")


def test_minimize_keeps_declared_field() -> None:
    policy = RedactionPolicy.for_platform(WORKDAY, "acme", KEY)

    minimized, _ = minimize_record(record(), policy)

    assert minimized.employee_id == "E-004217"
    assert minimized.employee_email is None
    assert minimized.employee_phone is None
    assert minimized.employee_name is None


def test_minimize_pseudonymizes_employee_id() -> None:
    policy = RedactionPolicy.for_platform(GOODERA, "acme", KEY)

    minimized, count = minimize_record(record(), policy)

    assert minimized.employee_id == pseudonymize("E-004217", KEY)
    assert minimized.employee_email == "Maria.Lopez@Example.org"
    assert count >= 6


def test_minimize_scrubs_free_text_and_metadata() -> None:
    policy = RedactionPolicy.for_platform(GOODERA, "acme", KEY)

    minimized, _ = minimize_record(record(), policy)

    assert minimized.description == "[name] tutored; reach her at [phone]"
    assert minimized.metadata == {"contact": {"notes": ["[email]", "[uk_nino]"]}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("From LOPEZ, MARIA today", "From [name] today", id="comma"),
        pytest.param("Lopez Maria led it", "[name] led it", id="turned"),
        pytest.param("Lopez Park, Maria", "Lopez Park, Maria", id="apart"),
    ],
)
def test_scrub_finds_name_in_other_order(text: str, expected: str) -> None:
    assert scrub_text(text, ["Maria Lopez"])[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Ref E777011", id="separator-removed"),
        pytest.param("Ref e 777011", id="space-lower-case"),
        pytest.param("Ref E_777011.", id="underscore"),
        pytest.param("Ref E/777011", id="slash"),
        pytest.param("Ref E-777011", id="exact"),
    ],
)
def test_scrub_removes_id_separator_variants(text: str) -> None:
    assert scrub_text(text, ["E-777011"])[0].startswith("Ref [id]")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Ana-Li led the data analysis",
            "[name] led the data analysis",
            id="inside-word",
        ),
        pytest.param("Ticket XE777011", "Ticket XE777011", id="longer-id"),
        pytest.param("Ref E77", "Ref E77", id="short-value"),
    ],
)
def test_separator_variants_match_whole_words(text: str, expected: str) -> None:
    assert scrub_text(text, ["Ana Li", "E-777011", "E-77"])[0] == expected


def test_minimize_scrubs_id_without_separator() -> None:
    policy = RedactionPolicy.for_platform(GOODERA, "acme", KEY)

    minimized, _ = minimize_record(
        record(employee_id="E-777011", description="Ref E777011"), policy
    )

    assert minimized.description == "Ref [id]"


def test_tenant_can_tighten() -> None:
    policy = RedactionPolicy.for_platform(GOODERA, "acme", KEY, deny=["employee_email"])

    minimized, _ = minimize_record(record(), policy)

    assert minimized.employee_email is None


def test_tenant_can_widen_allowed_field() -> None:
    policy = RedactionPolicy.for_platform(GOODERA, "acme", KEY, allow=["employee_name"])

    minimized, _ = minimize_record(record(), policy)

    assert minimized.employee_name == "Maria Lopez"


def test_tenant_cannot_widen_other_field() -> None:
    with pytest.raises(ConfigError) as caught:
        RedactionPolicy.for_platform(GOODERA, "acme", KEY, allow=["employee_phone"])

    message = str(caught.value)
    assert caught.value.key == "tenants.acme.platforms.goodera.redaction.allow"
    assert message.startswith(caught.value.key)
    assert "lists employee_phone" in message
    assert "allow only employee_name" in message


def test_tenant_may_list_needed_field() -> None:
    allow = ["employee_email"]

    policy = RedactionPolicy.for_platform(GOODERA, "acme", KEY, allow=allow)

    assert policy.keep == {"employee_email"}


def test_policy_repr_hides_key() -> None:
    policy = RedactionPolicy.for_platform(GOODERA, "acme", KEY)

    assert KEY.decode() not in repr(policy)


_personal = st.sampled_from(
    [
        "maria.lopez+volunteer@example.org",
        "bob\uff20example.net",
        "dana@\u200bexample.com",
        "+44 7700 900123",
        "07700 900 123",
        "+82 10-1234-5678",
        "123\u201045\u20106789",
        "AB 12 34 56 C",
        "4111 1111 1111 1111",
    ]
)
_filler = st.sampled_from(["", "note: ", "call ", " thanks", ", "])
_free_text = st.builds(lambda a, b, c: a + b + c, _filler, _personal, _filler)
_metadata = st.recursive(
    _free_text,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "notes"]), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(
    description=_free_text,
    location=_free_text,
    cause=_free_text,
    metadata=st.dictionaries(st.sampled_from(["x", "y"]), _metadata, max_size=2),
    name=st.sampled_from(["Maria Lopez", "Ji-woo Park", "Zoë Brontë"]),
)
def test_personal_values_never_survive(
    description: str, location: str, cause: str, metadata: Any, name: str
) -> None:
    source = record(
        description=f"{name} {description}",
        location=location,
        cause=cause,
        organization_name=f"Team of {name}",
        metadata=metadata,
        employee_name=name,
    )
    policy = RedactionPolicy.for_platform(WORKDAY, "acme", KEY)

    minimized, _ = minimize_record(source, policy)
    payload = {
        "description": minimized.description,
        "location": minimized.location,
        "cause": minimized.cause,
        "organization_name": minimized.organization_name,
        "metadata": dict(minimized.metadata),
    }
    text = unicodedata.normalize("NFKC", repr(payload)).casefold()

    assert leak_scan(payload) == []
    assert name.casefold() not in text
    assert detect(repr(payload)) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Call ana.silva@example.org %00 about 50%25 off",
            "Call [email] %00 about 50%25 off",
            id="escapes-kept",
        ),
        pytest.param(
            "Call ana.silva%40example.org today",
            "Call [email] today",
            id="escaped-email",
        ),
        pytest.param(
            "\uff43\uff41\uff4c\uff4c +44 7700 900123 \uff2e\uff2f\uff37",
            "\uff43\uff41\uff4c\uff4c [phone] \uff2e\uff2f\uff37",
            id="full-width-kept",
        ),
        pytest.param(
            "Call ana.silva%40example.org %00",
            "Call [email]  ",
            id="decoded-nul-removed",
        ),
    ],
)
def test_scrub_keeps_text_as_written(text: str, expected: str) -> None:
    cleaned, count = scrub_text(text)

    assert cleaned == expected
    assert count == 1


def test_scrub_without_finding_keeps_text() -> None:
    text = "Smith%20Fund 100%25 \u00bd \ufb01"

    assert scrub_text(text) == (text, 0)
