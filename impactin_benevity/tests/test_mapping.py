"""Mapping donation records to ``POST /donations`` payloads, and redaction."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from impactin_benevity import PERSONAL_PATHS, PLATFORM, _plugin
from impactin_benevity._simulator import validate_donation
from impactin_core import (
    ConfigError,
    ImpactRecord,
    PlatformSettings,
    RecordInvalid,
    RedactionPolicy,
    leak_scan,
    pseudonymize,
)

KEY = "idem-3f2a"
POLICY_KEY = b"tenant-pseudonym-key-0123456789ab"

MakeRecord = Callable[..., ImpactRecord]


def _settings(**options: Any) -> PlatformSettings:
    return PlatformSettings(
        tenant="acme", platform="benevity", base_url="http://b", options=options
    )


def _map(records: list[ImpactRecord], **options: Any) -> list[Any]:
    keys = [f"{KEY}-{index}" for index in range(len(records))]
    result = _plugin.impactin_map(
        platform=PLATFORM,
        records=records,
        settings=_settings(**options),
        idempotency_keys=keys,
    )
    assert result is not None
    return result


def test_map_full_donation(make_record: MakeRecord) -> None:
    (request,) = _map([make_record()])

    assert request.platform == "benevity"
    assert request.tenant == "acme"
    assert request.operation == "create_donation"
    assert request.idempotency_key == f"{KEY}-0"
    assert request.source_ids == ("gift-1001",)
    assert request.safe_to_repeat is False
    assert request.payload == {
        "destination": {"recipientId": "124-1234ABCD"},
        "funds": {
            "paymentType": "DONATION_REPORT",
            "currencyCode": "USD",
            "amount": 2500,
        },
        "donor": {"email": "dana.reyes@acme.example", "receipted": True},
        "metadata": {
            "impactin_source_id": "gift-1001",
            "impactin_kind": "donation",
            "impactin_activity_date": "2026-11-03",
            "impactin_employee_ref": "E-20417",
            "impactin_cause": "Food security",
            "impactin_idempotency_key": f"{KEY}-0",
        },
    }


def test_map_payload_passes_simulator_checks(make_record: MakeRecord) -> None:
    (request,) = _map([make_record()])
    assert validate_donation(request.payload) == []


def test_map_one_request_per_record(make_record: MakeRecord) -> None:
    records = [make_record(source_id=f"gift-{n}") for n in range(3)]
    requests = _map(records)
    assert [r.source_ids for r in requests] == [("gift-0",), ("gift-1",), ("gift-2",)]
    assert [r.idempotency_key for r in requests] == [f"{KEY}-{n}" for n in range(3)]


def test_map_options_shape_payload(make_record: MakeRecord) -> None:
    (request,) = _map(
        [make_record()],
        foundation_id="1XABCDE4UT",
        payment_type="CREDITCARD",
        funds_source="COMPANY",
        receipted=False,
    )
    payload = request.payload
    assert payload["destination"] == {
        "recipientId": "124-1234ABCD",
        "foundationId": "1XABCDE4UT",
    }
    assert payload["funds"]["paymentType"] == "CREDITCARD"
    assert payload["funds"]["source"] == "COMPANY"
    assert payload["donor"]["receipted"] is False


def test_map_rejects_misspelled_option(make_record: MakeRecord) -> None:
    with pytest.raises(ConfigError) as caught:
        _map([make_record()], foundaton_id="f-1")
    assert caught.value.key == "tenants.acme.platforms.benevity.options.foundaton_id"
    assert "did you mean 'foundation_id'?" in str(caught.value)


def test_map_suggests_lowercase_option(make_record: MakeRecord) -> None:
    with pytest.raises(ConfigError) as caught:
        _map([make_record()], FOUNDATION_ID="f-1")
    assert "did you mean 'foundation_id'?" in str(caught.value)


def test_map_accepts_runtime_option(make_record: MakeRecord) -> None:
    (request,) = _map([make_record()], replay_safe=True)
    assert "replay_safe" not in str(request.payload)


def test_map_name_when_kept(make_record: MakeRecord) -> None:
    (request,) = _map([make_record(employee_name="Dana Reyes")])
    assert request.payload["donor"]["fullName"] == "Dana Reyes"


def test_map_anonymous_without_email(make_record: MakeRecord) -> None:
    (request,) = _map([make_record(employee_email=None)])
    assert "donor" not in request.payload


def test_map_without_cause(make_record: MakeRecord) -> None:
    (request,) = _map([make_record(cause=None)])
    assert "impactin_cause" not in request.payload["metadata"]


def test_map_metadata_strings_within_limit(make_record: MakeRecord) -> None:
    (request,) = _map([make_record()])
    metadata = request.payload["metadata"]
    assert len(metadata) <= 100
    assert all(isinstance(value, str) for value in metadata.values())


def test_map_leaves_out_other_personal_data(make_record: MakeRecord) -> None:
    record = make_record(
        employee_phone="+1 415 555 2671",
        description="Call me on +1 415 555 2671",
        location="12 Elm Street",
        metadata={"manager_email": "lee@acme.example"},
    )
    (request,) = _map([record])
    text = str(request.payload)
    assert "555" not in text
    assert "Elm Street" not in text
    assert "lee@acme.example" not in text
    assert leak_scan(request.payload, request.personal_paths) == []


def test_map_personal_paths_cover_donor(make_record: MakeRecord) -> None:
    (request,) = _map([make_record(employee_name="Dana Reyes")])
    assert request.personal_paths == PERSONAL_PATHS
    assert leak_scan(request.payload) != []
    assert leak_scan(request.payload, request.personal_paths) == []


def test_map_key_digits_not_a_card(make_record: MakeRecord) -> None:
    """A digest key with a Luhn-valid run of 13 digits is not a card number."""
    key = "ik_e509b679770de1de9ef3b041fde7590258624520"
    result = _plugin.impactin_map(
        platform=PLATFORM,
        records=[make_record()],
        settings=_settings(),
        idempotency_keys=[key],
    )
    assert result is not None
    (request,) = result
    assert leak_scan(request.payload, request.personal_paths) == []


@pytest.mark.parametrize(
    "organization_id",
    [pytest.param(None, id="none"), pytest.param("   ", id="blank")],
)
def test_map_requires_organization_id(
    make_record: MakeRecord, organization_id: str | None
) -> None:
    record = make_record(organization_id=organization_id)
    with pytest.raises(RecordInvalid) as caught:
        _map([record])
    assert caught.value.field == "organization_id"
    assert caught.value.source_id == "gift-1001"
    assert "organization_id" in str(caught.value)
    assert "dana.reyes" not in str(caught.value)


def test_map_rejects_volunteer_time(make_record: MakeRecord) -> None:
    record = make_record(
        kind="volunteer_time", hours=2.0, amount_minor=None, currency=None
    )
    with pytest.raises(RecordInvalid) as caught:
        _map([record])
    assert caught.value.field == "kind"


def test_map_rejects_fractional_amount(make_record: MakeRecord) -> None:
    record = make_record(amount_minor=1250)
    # ImpactRecord rejects a float amount; the connector checks again for a
    # record whose validators were bypassed.
    object.__setattr__(record, "amount_minor", 12.5)
    with pytest.raises(RecordInvalid) as caught:
        _map([record])
    assert caught.value.field == "amount_minor"


def test_map_rejects_other_tenant(make_record: MakeRecord) -> None:
    with pytest.raises(RecordInvalid) as caught:
        _map([make_record(tenant="globex")])
    assert caught.value.field == "tenant"


def test_map_rejects_key_count_mismatch(make_record: MakeRecord) -> None:
    with pytest.raises(ValueError, match="one key per record"):
        _plugin.impactin_map(
            platform=PLATFORM,
            records=[make_record()],
            settings=_settings(),
            idempotency_keys=[],
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("receipted", "yes", id="receipted-string"),
        pytest.param("payment_type", "", id="payment-type-empty"),
        pytest.param("foundation_id", 42, id="foundation-id-number"),
        pytest.param("funds_source", " ", id="funds-source-blank"),
        pytest.param("token_url", "ftp://auth.example", id="token-url-scheme"),
        pytest.param("webhook_scheme", None, id="webhook-scheme-none"),
    ],
)
def test_map_rejects_bad_option(make_record: MakeRecord, name: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        _map([make_record()], **{name: value})
    assert caught.value.key == f"tenants.acme.platforms.benevity.options.{name}"


def _policy(keep: set[str]) -> RedactionPolicy:
    return RedactionPolicy.for_platform(
        PLATFORM, "acme", POLICY_KEY, allow=keep - PLATFORM.personal_fields
    )


def _redact(request: Any, policy: RedactionPolicy) -> int | None:
    return _plugin.impactin_redact(platform=PLATFORM, request=request, policy=policy)


def test_redact_keeps_declared_fields(make_record: MakeRecord) -> None:
    record = make_record(employee_id=pseudonymize("E-20417", POLICY_KEY))
    (request,) = _map([record])
    before = copy.deepcopy(request.payload)
    assert _redact(request, _policy({"employee_email"})) == 0
    assert request.payload == before


def test_redact_drops_withheld_donor(make_record: MakeRecord) -> None:
    (request,) = _map([make_record(employee_name="Dana Reyes")])
    policy = RedactionPolicy.for_platform(
        PLATFORM, "acme", POLICY_KEY, deny=["employee_email"]
    )
    changed = _redact(request, policy)
    assert changed == 3
    assert "donor" not in request.payload
    reference = request.payload["metadata"]["impactin_employee_ref"]
    assert reference == pseudonymize("E-20417", POLICY_KEY)


def test_redact_keeps_widened_id(make_record: MakeRecord) -> None:
    (request,) = _map([make_record()])
    assert _redact(request, _policy({"employee_email", "employee_id"})) == 0
    assert request.payload["metadata"]["impactin_employee_ref"] == "E-20417"
