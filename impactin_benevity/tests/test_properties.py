"""Generated donation records map to payloads the simulator accepts."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pycountry
from hypothesis import given, settings
from hypothesis import strategies as st

from impactin_benevity import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    PLATFORM,
    _plugin,
    create_simulator,
)
from impactin_core import (
    ImpactRecord,
    PlatformRequest,
    PlatformSettings,
    RedactionPolicy,
    leak_scan,
)
from impactin_core._models import MAX_AMOUNT_MINOR
from impactin_core._redaction import minimize_record

POLICY = RedactionPolicy.for_platform(
    PLATFORM, "acme", b"property-test-pseudonym-key-0000", allow=["employee_name"]
)

_identifier = st.from_regex(r"\A[a-z]{2,8}-[0-9]{1,5}\Z")
# Benevity recipient ids in its guides: a charity ("124-1234ABCD"), one of
# its projects ("124-1234ABCD/3A19BC2DX3") and a portfolio ("2XABCDE4UT").
_recipient = st.one_of(
    st.from_regex(r"\A[0-9]{3}-[0-9]{4}[A-Z]{4}\Z"),
    st.from_regex(
        r"\A[0-9]{3}-[0-9]{4}[A-Z]{4}/[0-9][A-Z][0-9]{2}[A-Z]{2}[0-9][A-Z]{2}[0-9]\Z"
    ),
    st.from_regex(r"\A[0-9][A-Z]{5}[0-9][A-Z]{3}\Z"),
)
# ISO 4217 codes of money. The X codes, which include metals and "no
# currency", are left out because ImpactRecord rejects several of them.
_currency = st.sampled_from(
    sorted(code.alpha_3 for code in pycountry.currencies if code.alpha_3[0] != "X")
)
_text = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=40)
_key = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=5)
# The runtime's idempotency keys: "ik_" and a 40-digit hex digest.
_key = st.from_regex(r"\Aik_[0-9a-f]{40}\Z")


@st.composite
def donation_records(draw: st.DrawFn) -> ImpactRecord:
    name = draw(st.none() | st.from_regex(r"\A[A-Z][a-z]{1,10} [A-Z][a-z]{1,12}\Z"))
    return ImpactRecord(
        source_id=draw(_identifier),
        tenant="acme",
        kind="donation",
        activity_date=draw(st.dates(dt.date(2000, 1, 1), dt.date(2100, 12, 31))),
        employee_id=draw(_identifier),
        employee_email=draw(st.none() | st.emails()),
        employee_name=name,
        employee_phone=draw(st.none() | st.just("+44 20 7946 0958")),
        amount_minor=draw(st.integers(1, MAX_AMOUNT_MINOR)),
        currency=draw(_currency),
        organization_id=draw(_recipient),
        cause=draw(st.none() | _text),
        description=draw(st.none() | _text),
        metadata=draw(st.dictionaries(_key, _text, max_size=3)),
    )


_options = st.fixed_dictionaries(
    {},
    optional={
        "foundation_id": st.from_regex(r"\A[0-9][A-Z]{5}[0-9][A-Z]{3}\Z"),
        "payment_type": st.sampled_from(["DONATION_REPORT", "CREDITCARD"]),
        "funds_source": st.just("COMPANY"),
        "receipted": st.booleans(),
    },
)


def _map(record: ImpactRecord, options: dict[str, Any], key: str) -> PlatformRequest:
    minimized, _ = minimize_record(record, POLICY)
    platform_settings = PlatformSettings(
        tenant="acme", platform="benevity", base_url="http://b", options=options
    )
    requests = _plugin.impactin_map(
        platform=PLATFORM,
        records=[minimized],
        settings=platform_settings,
        idempotency_keys=[key],
    )
    assert requests is not None
    (request,) = requests
    return request


async def _post(payload: dict[str, Any]) -> httpx.Response:
    simulator = create_simulator()
    transport = httpx.ASGITransport(app=simulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
        token = await client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        )
        return await client.post(
            "/donations",
            json=payload,
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )


@settings(max_examples=150, deadline=None)
@given(record=donation_records(), options=_options, key=_key)
def test_generated_donations_accepted(
    record: ImpactRecord, options: dict[str, Any], key: str
) -> None:
    request = _map(record, options, key)
    changed = _plugin.impactin_redact(platform=PLATFORM, request=request, policy=POLICY)
    assert changed == 0
    assert leak_scan(request.payload, request.personal_paths) == []

    response = asyncio.run(_post(request.payload))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"]["processingStatus"] == "ACCEPTED"
    assert body["funds"]["amount"] == record.amount_minor
    assert body["destination"]["recipientId"] == record.organization_id
    assert body["metadata"]["impactin_idempotency_key"] == key
