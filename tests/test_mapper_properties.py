"""Generated records against each connector's mapper and simulator.

Valid records go through the runtime's steps (minimize, map, redact, leak
scan, authenticate, send) and the platform's simulator must accept them over
HTTP on 127.0.0.1. Invalid records must be rejected by the mapper with
``RecordInvalid`` naming the field.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impactin_core import ImpactRecord, RecordInvalid, RecordKind, leak_scan
from impactin_core._models import MAX_AMOUNT_MINOR
from impactin_core.conformance import ConformanceTarget
from impactin_core.conformance._harness import Harness, running_harness
from impactin_core.conformance._records import records

pytest.importorskip("impactin_benevity")
pytest.importorskip("impactin_goodera")
workday_simulator = pytest.importorskip("impactin_workday.simulator")

EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
    ],
)

GOODERA_OPPORTUNITY = "64b7f0c2a1d3e4f5a6b7c8d9"

TARGETS = {
    "benevity": ConformanceTarget(
        platform="benevity", options={"foundation_id": "demo-foundation"}
    ),
    "goodera": ConformanceTarget(
        platform="goodera", options={"opportunity_id": GOODERA_OPPORTUNITY}
    ),
    "workday": ConformanceTarget(
        platform="workday",
        options={"tenant_name": workday_simulator.SANDBOX_TENANT},
        transport_options={"rest": {"rest_path": "volunteerActivities"}},
    ),
}

# Benevity recipient ids as its guides show them: a charity, one of its
# projects and a portfolio.
_BENEVITY_RECIPIENTS = st.one_of(
    st.from_regex(r"[0-9]{3}-[0-9]{4}[A-Z]{4}", fullmatch=True),
    st.from_regex(
        r"[0-9]{3}-[0-9]{4}[A-Z]{4}/[0-9][A-Z][0-9]{2}[A-Z]{2}[0-9][A-Z]{2}[0-9]",
        fullmatch=True,
    ),
    st.from_regex(r"[0-9][A-Z]{5}[0-9][A-Z]{3}", fullmatch=True),
)
_EMAILS = st.from_regex(r"[a-z]{1,12}\.[a-z]{1,12}@example\.(org|com)", fullmatch=True)
# Every amount a record may carry, up to the record model's maximum.
_AMOUNTS = st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR)
_UNIQUE = itertools.count()


def _with(field: str, values: st.SearchStrategy[Any]) -> Callable[..., Any]:
    """Return a function that sets ``field`` of a record to a drawn value."""

    def build(record: ImpactRecord, value: Any) -> ImpactRecord:
        return attrs.evolve(record, **{field: value})

    return lambda strategy: st.builds(build, strategy, values)


# Characters outside XML 1.0's Char production, which a SOAP body cannot carry.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(record: ImpactRecord) -> ImpactRecord:
    """Drop the characters XML cannot carry from the fields a SOAP row holds."""
    changes: dict[str, Any] = {}
    for field in ("source_id", "cause", "organization_name", "organization_id"):
        value = getattr(record, field)
        if value is not None:
            changes[field] = _NOT_XML_CHAR.sub("", value) or "x"
    return attrs.evolve(record, **changes)


def _with_amount(record: ImpactRecord, amount_minor: int) -> ImpactRecord:
    if record.kind is not RecordKind.DONATION:
        return record
    return attrs.evolve(record, amount_minor=amount_minor)


def _new_worker(record: ImpactRecord) -> ImpactRecord:
    return attrs.evolve(record, employee_id=f"{record.employee_id}-{next(_UNIQUE)}")


def _new_volunteer(record: ImpactRecord) -> ImpactRecord:
    assert record.employee_email is not None
    local, _, domain = record.employee_email.partition("@")
    return attrs.evolve(record, employee_email=f"{local}{next(_UNIQUE)}@{domain}")


def _valid_records(
    platform: str, transport: str, kinds: Any
) -> st.SearchStrategy[ImpactRecord]:
    base = st.builds(_with_amount, records(kinds), _AMOUNTS)
    if platform == "benevity":
        result: st.SearchStrategy[ImpactRecord] = _with(
            "organization_id", _BENEVITY_RECIPIENTS
        )(base)
        return result
    if platform == "goodera":
        # Goodera takes one participation per volunteer and event (opportunity
        # and day), so each example gets a volunteer of its own.
        result = st.builds(_new_volunteer, _with("employee_email", _EMAILS)(base))
        return result
    # The Workday connector rejects a second activity of one worker on one
    # date, so each example gets a worker of its own.
    workers = st.builds(_new_worker, base)
    if transport == "soap":
        return st.builds(_xml_safe, workers)
    return workers


@pytest.fixture
def harness_for(tmp_path: Path) -> Iterator[Callable[[str, str], Harness]]:
    """Start simulators on demand and stop them when the test ends."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def start(platform: str, transport: str) -> Harness:
            folder = tmp_path / f"{platform}-{transport}"
            folder.mkdir()
            harness: Harness = stack.enter_context(
                running_harness(TARGETS[platform], transport, folder)
            )
            return harness

        yield start


def _unique_key(record: ImpactRecord) -> str:
    """Return a fresh idempotency key shaped like the runtime's."""
    seed = f"{next(_UNIQUE)}\x1f{record.source_id}".encode()
    return "ik_" + hashlib.sha1(seed, usedforsecurity=False).hexdigest()


async def _deliver(harness: Harness, record: ImpactRecord) -> int:
    """Map, redact, scan and send one record as the runtime does; return the status."""
    request = harness.map_records([record], [_unique_key(record)])[0]
    harness.redact(request)
    findings = leak_scan(request.payload, request.personal_paths)
    assert findings == [], [f"{item.kind} at {item.path}" for item in findings]
    async with httpx.AsyncClient(timeout=30.0) as client:
        credentials = await harness.authenticate(client, harness.tokens)
        outcome = await harness.send(client, request, credentials)
    status: int = outcome.status_code
    return status


def _journaled_writes(harness: Harness) -> int:
    """Count the writes the simulator accepted, each repeat included.

    Hypothesis may generate one record twice, and a repeat adds no journal
    entry but counts as a repeat. A platform may also accept more than one
    write per send (Goodera: an event, a registration, a participation).
    """
    journal = harness.journal()
    repeats: dict[str, int] = journal["repeats"]
    return len(journal["entries"]) + sum(repeats.values())


@pytest.mark.parametrize(
    ("platform", "transport"),
    [
        pytest.param("benevity", "rest", id="benevity"),
        pytest.param("goodera", "rest", id="goodera"),
        pytest.param("workday", "soap", id="workday-soap"),
        pytest.param("workday", "rest", id="workday-rest"),
    ],
)
def test_valid_records_accepted(
    harness_for: Callable[[str, str], Harness], platform: str, transport: str
) -> None:
    harness = harness_for(platform, transport)

    @EXAMPLES
    @given(_valid_records(platform, transport, harness.info.kinds))
    def check(record: ImpactRecord) -> None:
        writes_before = _journaled_writes(harness)
        status = asyncio.run(_deliver(harness, record))
        assert 200 <= status < 300
        assert _journaled_writes(harness) > writes_before

    check()


def _volunteer(record: ImpactRecord) -> ImpactRecord:
    return attrs.evolve(
        record,
        kind=RecordKind.VOLUNTEER_TIME,
        hours=2.0,
        amount_minor=None,
        currency=None,
    )


def _donation(record: ImpactRecord) -> ImpactRecord:
    return attrs.evolve(
        record,
        kind=RecordKind.DONATION,
        hours=None,
        amount_minor=1500,
        currency="EUR",
    )


def _xml_safe_records(kind: RecordKind) -> st.SearchStrategy[ImpactRecord]:
    return st.builds(_xml_safe, records([kind]))


_BLANKS = st.sampled_from(["", " ", "\t", "  \n"])
# Text with U+FFFE or U+FFFF, which XML 1.0 cannot carry. The record model
# itself rejects the C0 control characters that XML cannot carry either.
_NOT_XML_TEXT = st.builds(
    lambda head, character, tail: head + character + tail,
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)),
    st.sampled_from(["\ufffe", "\uffff"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)),
)


@pytest.mark.parametrize(
    ("platform", "transport", "invalid", "field", "mentioned"),
    [
        pytest.param(
            "benevity",
            "rest",
            st.builds(
                lambda record: attrs.evolve(record, organization_id=None),
                records([RecordKind.DONATION]),
            ),
            "organization_id",
            "organization_id",
            id="benevity-no-organization",
        ),
        pytest.param(
            "benevity",
            "rest",
            _with("organization_id", _BLANKS)(records([RecordKind.DONATION])),
            "organization_id",
            "organization_id",
            id="benevity-blank-organization",
        ),
        pytest.param(
            "benevity",
            "rest",
            st.builds(
                _volunteer,
                _with("organization_id", _BENEVITY_RECIPIENTS)(
                    records([RecordKind.DONATION])
                ),
            ),
            "kind",
            "volunteer_time",
            id="benevity-volunteer-time",
        ),
        pytest.param(
            "goodera",
            "rest",
            st.builds(
                lambda record: attrs.evolve(record, employee_email=None),
                records([RecordKind.VOLUNTEER_TIME]),
            ),
            "employee_email",
            "employee_email",
            id="goodera-no-email",
        ),
        pytest.param(
            "goodera",
            "rest",
            st.builds(
                _donation,
                _with("employee_email", _EMAILS)(records([RecordKind.VOLUNTEER_TIME])),
            ),
            "kind",
            "donation",
            id="goodera-donation",
        ),
        pytest.param(
            "workday",
            "soap",
            _with("cause", _NOT_XML_TEXT)(_xml_safe_records(RecordKind.VOLUNTEER_TIME)),
            "cause",
            "cause",
            id="workday-soap-non-xml-character",
        ),
        pytest.param(
            "workday",
            "soap",
            _with("organization_name", _NOT_XML_TEXT)(
                _xml_safe_records(RecordKind.DONATION)
            ),
            "organization_name",
            "organization_name",
            id="workday-soap-non-xml-character-name",
        ),
    ],
)
def test_invalid_records_rejected(
    harness_for: Callable[[str, str], Harness],
    platform: str,
    transport: str,
    invalid: st.SearchStrategy[ImpactRecord],
    field: str,
    mentioned: str,
) -> None:
    """``mentioned`` is the field name, or the rejected value for ``kind``."""
    harness = harness_for(platform, transport)

    @EXAMPLES
    @given(invalid)
    def check(record: ImpactRecord) -> None:
        with pytest.raises(RecordInvalid) as caught:
            harness.map_records([record], [_unique_key(record)])
        assert caught.value.field == field
        assert mentioned in str(caught.value)

    check()
