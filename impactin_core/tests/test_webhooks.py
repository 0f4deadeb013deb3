"""Tests of webhook signature verification and replay protection."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from hypothesis import given, settings
from hypothesis import strategies as st

from impactin_core import ConfigError, WebhookEvent, WebhookRejected
from impactin_core.webhooks import (
    SCHEMES,
    MemoryReplayStore,
    sign_github,
    sign_standard_webhooks,
    sign_stripe,
    verify_with_scheme,
)

VECTORS = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "fixtures"
    / "vectors"
    / "published.json"
)

NOW = 1_700_000_000
BODY = b'{"id": "evt_1", "type": "volunteer.hours", "amount": 2.5}'
STANDARD_SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
OLD_STANDARD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()
PLAIN_SECRET = "plain-secret-value-1"
OLD_PLAIN_SECRET = "plain-secret-value-0"
# Well-formed signatures that match no secret.
VALID_HEX = "ab" * 32
VALID_BASE64 = base64.b64encode(b"s" * 32).decode()
SECRET_FRAGMENTS = ("plain-secret", "k" * 8, base64.b64encode(b"k" * 24).decode())


def verify(
    scheme: str,
    headers: Mapping[str, str],
    *,
    body: bytes = BODY,
    secrets: tuple[str, ...] | None = None,
    options: Mapping[str, Any] | None = None,
    now: float = NOW,
    replay_store: MemoryReplayStore | None = None,
) -> WebhookEvent:
    if secrets is None:
        secrets = (
            (STANDARD_SECRET,) if scheme == "standard_webhooks" else (PLAIN_SECRET,)
        )
    return verify_with_scheme(
        scheme,
        platform="acme",
        headers=headers,
        body=body,
        secrets=secrets,
        options=options or {},
        now=now,
        replay_store=replay_store,
    )


def signed(scheme: str, *, timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    """Return valid headers for ``body`` under ``scheme`` with the default secret."""
    if scheme == "standard_webhooks":
        return sign_standard_webhooks(STANDARD_SECRET, "msg_1", timestamp, body)
    if scheme == "github":
        return {**sign_github(PLAIN_SECRET, body), "X-GitHub-Delivery": "d-1"}
    return sign_stripe(PLAIN_SECRET, timestamp, body)


def reason_of(scheme: str, headers: Mapping[str, str], **kwargs: Any) -> str:
    with pytest.raises(WebhookRejected) as caught:
        verify(scheme, headers, **kwargs)
    return caught.value.reason


def load_vectors() -> dict[str, Any]:
    if not VECTORS.is_file():
        pytest.skip("the published test vectors file is not available")
    vectors: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return vectors


# --- Published vectors -------------------------------------------------------


def test_standard_webhooks_published_vector() -> None:
    vector = load_vectors()["standard_webhooks_v1"]
    body = vector["payload"].encode()
    headers = sign_standard_webhooks(
        vector["secret"], vector["msg_id"], vector["timestamp"], body
    )
    assert headers["webhook-signature"] == vector["signature"]

    event = verify(
        "standard_webhooks",
        headers,
        body=body,
        secrets=(vector["secret"],),
        now=vector["timestamp"],
    )
    assert event.event_id == vector["msg_id"]


def test_github_published_vector() -> None:
    vector = load_vectors()["github_sha256"]
    body = vector["payload"].encode()
    headers = sign_github(vector["secret"], body)
    assert headers["X-Hub-Signature-256"] == vector["signature"]

    event = verify(
        "github",
        {"X-Hub-Signature-256": vector["signature"]},
        body=body,
        secrets=(vector["secret"],),
    )
    assert event.payload == vector["payload"]


# --- Valid events ------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_valid_event_parsed(scheme: str) -> None:
    event = verify(scheme, signed(scheme))
    assert event.platform == "acme"
    assert event.payload == json.loads(BODY)


@pytest.mark.parametrize(
    ("scheme", "event_id", "timestamp"),
    [
        pytest.param("standard_webhooks", "msg_1", NOW, id="standard_webhooks"),
        pytest.param("github", "d-1", None, id="github"),
        pytest.param("stripe", "evt_1", NOW, id="stripe"),
    ],
)
def test_valid_event_id_and_timestamp(
    scheme: str, event_id: str, timestamp: int | None
) -> None:
    event = verify(scheme, signed(scheme))
    assert event.event_id == event_id
    assert event.timestamp == timestamp


def test_github_without_delivery_has_no_id() -> None:
    event = verify("github", sign_github(PLAIN_SECRET, BODY))
    assert event.event_id is None


def test_github_id_header_option() -> None:
    headers = {**sign_github(PLAIN_SECRET, BODY), "X-Event-Id": "e-9"}
    event = verify("github", headers, options={"id_header": "x-event-id"})
    assert event.event_id == "e-9"


@pytest.mark.parametrize(
    ("body", "payload"),
    [
        pytest.param(b"plain text", "plain text", id="text"),
        pytest.param(b"\xff\xfe\x00", b"\xff\xfe\x00", id="binary"),
        pytest.param(b"[1, 2]", [1, 2], id="json-list"),
    ],
)
def test_non_object_payload(body: bytes, payload: Any) -> None:
    event = verify("github", sign_github(PLAIN_SECRET, body), body=body)
    assert event.payload == payload


def test_raw_bytes_not_reserialized() -> None:
    """A body with unusual spacing verifies as sent, and fails once normalized."""
    body = b'{ "b":1,\n  "a" :2 }'
    headers = signed("standard_webhooks", body=body)
    normalized = json.dumps(json.loads(body)).encode()
    assert verify("standard_webhooks", headers, body=body).payload == {"b": 1, "a": 2}
    assert reason_of("standard_webhooks", headers, body=normalized) == "bad_signature"


def test_unknown_scheme_names_valid_ones() -> None:
    with pytest.raises(ValueError, match="'svix'") as caught:
        verify("svix", {})
    for scheme in SCHEMES:
        assert scheme in str(caught.value)


def test_default_clock_is_wall_clock() -> None:
    headers = signed("stripe", timestamp=int(time.time()))
    event = verify_with_scheme(
        "stripe",
        platform="acme",
        headers=headers,
        body=BODY,
        secrets=[PLAIN_SECRET],
        options={},
    )
    assert event.event_id == "evt_1"


# --- Signature failures ------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tampered_body_rejected(scheme: str) -> None:
    tampered = BODY.replace(b"2.5", b"25")
    assert reason_of(scheme, signed(scheme), body=tampered) == "bad_signature"


@pytest.mark.parametrize(
    ("scheme", "wrong_secret"),
    [
        pytest.param("standard_webhooks", OLD_STANDARD_SECRET, id="standard_webhooks"),
        pytest.param("github", OLD_PLAIN_SECRET, id="github"),
        pytest.param("stripe", OLD_PLAIN_SECRET, id="stripe"),
    ],
)
def test_wrong_secret_rejected(scheme: str, wrong_secret: str) -> None:
    reason = reason_of(scheme, signed(scheme), secrets=(wrong_secret,))
    assert reason == "bad_signature"


def test_standard_webhooks_tampered_id_rejected() -> None:
    headers = {**signed("standard_webhooks"), "webhook-id": "msg_2"}
    assert reason_of("standard_webhooks", headers) == "bad_signature"


def test_standard_webhooks_tampered_timestamp_rejected() -> None:
    headers = {**signed("standard_webhooks"), "webhook-timestamp": str(NOW + 1)}
    assert reason_of("standard_webhooks", headers) == "bad_signature"


def test_stripe_tampered_timestamp_rejected() -> None:
    header = signed("stripe")["Stripe-Signature"]
    tampered = header.replace(f"t={NOW}", f"t={NOW + 1}")
    assert reason_of("stripe", {"Stripe-Signature": tampered}) == "bad_signature"


# --- Rotation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "secrets"),
    [
        pytest.param(
            "standard_webhooks",
            (OLD_STANDARD_SECRET, STANDARD_SECRET),
            id="standard_webhooks-new-second",
        ),
        pytest.param(
            "standard_webhooks",
            (STANDARD_SECRET, OLD_STANDARD_SECRET),
            id="standard_webhooks-new-first",
        ),
        pytest.param("github", (OLD_PLAIN_SECRET, PLAIN_SECRET), id="github"),
        pytest.param("stripe", (OLD_PLAIN_SECRET, PLAIN_SECRET), id="stripe"),
    ],
)
def test_rotation_any_secret_matches(scheme: str, secrets: tuple[str, ...]) -> None:
    event = verify(scheme, signed(scheme), secrets=secrets)
    assert event.payload == json.loads(BODY)


def test_standard_webhooks_sender_signs_twice() -> None:
    """A sender in rotation sends one signature per secret, space-separated."""
    old = sign_standard_webhooks(OLD_STANDARD_SECRET, "msg_1", NOW, BODY)
    new = sign_standard_webhooks(STANDARD_SECRET, "msg_1", NOW, BODY)
    both = f"{old['webhook-signature']} {new['webhook-signature']}"
    headers = {**new, "webhook-signature": both}
    assert verify("standard_webhooks", headers).event_id == "msg_1"


def test_standard_webhooks_secret_without_prefix() -> None:
    bare = STANDARD_SECRET.removeprefix("whsec_")
    event = verify("standard_webhooks", signed("standard_webhooks"), secrets=(bare,))
    assert event.event_id == "msg_1"


def test_standard_webhooks_unpadded_secret() -> None:
    key = base64.b64encode(b"k" * 20).decode()
    assert key.endswith("=")
    secret = "whsec_" + key
    headers = sign_standard_webhooks(secret, "msg_1", NOW, BODY)
    event = verify("standard_webhooks", headers, secrets=(secret.rstrip("="),))
    assert event.event_id == "msg_1"


def test_stripe_several_v1_entries() -> None:
    old = sign_stripe(OLD_PLAIN_SECRET, NOW, BODY)["Stripe-Signature"]
    new = sign_stripe(PLAIN_SECRET, NOW, BODY)["Stripe-Signature"]
    old_v1 = old.split(",")[1]
    header = f"{new.split(',')[0]},{old_v1},{new.split(',')[1]},v0=abc"
    assert verify("stripe", {"Stripe-Signature": header}).event_id == "evt_1"


def test_stripe_only_wrong_v1_entries() -> None:
    old = sign_stripe(OLD_PLAIN_SECRET, NOW, BODY)["Stripe-Signature"]
    header = f"{old},v1={'0' * 64}"
    assert reason_of("stripe", {"Stripe-Signature": header}) == "bad_signature"


# --- Timestamps --------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "offset", "reason"),
    [
        pytest.param("standard_webhooks", -301, "stale_timestamp", id="std-stale"),
        pytest.param("standard_webhooks", 31, "future_timestamp", id="std-future"),
        pytest.param("stripe", -301, "stale_timestamp", id="stripe-stale"),
        pytest.param("stripe", 31, "future_timestamp", id="stripe-future"),
    ],
)
def test_timestamp_out_of_range(scheme: str, offset: int, reason: str) -> None:
    headers = signed(scheme, timestamp=NOW + offset)
    assert reason_of(scheme, headers) == reason


@pytest.mark.parametrize(
    ("scheme", "offset"),
    [
        pytest.param("standard_webhooks", -300, id="std-oldest"),
        pytest.param("standard_webhooks", 30, id="std-latest"),
        pytest.param("stripe", -300, id="stripe-oldest"),
        pytest.param("stripe", 30, id="stripe-latest"),
    ],
)
def test_timestamp_at_limit_accepted(scheme: str, offset: int) -> None:
    event = verify(scheme, signed(scheme, timestamp=NOW + offset))
    assert event.timestamp == NOW + offset


def test_tolerance_option() -> None:
    headers = signed("stripe", timestamp=NOW - 100)
    assert reason_of("stripe", headers, options={"tolerance": 60}) == "stale_timestamp"


def test_future_tolerance_option() -> None:
    headers = signed("standard_webhooks", timestamp=NOW + 200)
    event = verify("standard_webhooks", headers, options={"future_tolerance": 300})
    assert event.timestamp == NOW + 200


def test_github_has_no_time_limit() -> None:
    event = verify("github", signed("github"), now=NOW + 10**6)
    assert event.timestamp is None


def test_stale_checked_after_signature() -> None:
    """An old, forged request is rejected for its signature, not its age."""
    headers = signed("stripe", timestamp=NOW - 1000)
    assert reason_of("stripe", headers, secrets=(OLD_PLAIN_SECRET,)) == "bad_signature"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"tolerance": "300"}, id="string"),
        pytest.param({"tolerance": -1}, id="negative"),
        pytest.param({"tolerance": True}, id="bool"),
        pytest.param({"tolerance": float("nan")}, id="nan"),
        pytest.param({"tolerance": float("inf")}, id="inf"),
        pytest.param({"future_tolerance": float("nan")}, id="future-nan"),
        pytest.param({"future_tolerance": float("inf")}, id="future-inf"),
        pytest.param({"future_tolerance": None}, id="none"),
        pytest.param({"id_header": 5}, id="id-header-number"),
    ],
)
def test_invalid_option_raises(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        verify("github", signed("github"), options=options)

    assert caught.value.key in options


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(float("nan"), "nan", id="nan"),
        pytest.param(float("inf"), "inf", id="inf"),
        pytest.param(-1, "-1", id="negative"),
        pytest.param(True, "true", id="bool"),
    ],
)
def test_tolerance_error_shows_value(value: float, shown: str) -> None:
    headers = signed("stripe", timestamp=NOW - 1000)

    with pytest.raises(ConfigError) as caught:
        verify("stripe", headers, options={"tolerance": value})

    assert str(caught.value) == (
        f"The webhook option tolerance is {shown}; set it to a finite number "
        "of seconds, 0 or more."
    )


def test_unknown_option_ignored() -> None:
    event = verify("stripe", signed("stripe"), options={"scheme": "stripe"})
    assert event.event_id == "evt_1"


# --- Replay protection -------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_replay_rejected(scheme: str) -> None:
    store = MemoryReplayStore()
    verify(scheme, signed(scheme), replay_store=store)
    reason = reason_of(scheme, signed(scheme), replay_store=store, now=NOW + 1)
    assert reason == "replayed"


def test_replay_keyed_by_platform() -> None:
    store = MemoryReplayStore()
    headers = signed("standard_webhooks")
    verify("standard_webhooks", headers, replay_store=store)
    event = verify_with_scheme(
        "standard_webhooks",
        platform="other",
        headers=headers,
        body=BODY,
        secrets=[STANDARD_SECRET],
        options={},
        now=NOW,
        replay_store=store,
    )
    assert event.platform == "other"


def verify_for_tenant(
    tenant: str, store: Any, *, now: float = NOW, platform: str = "acme"
) -> WebhookEvent:
    return verify_with_scheme(
        "standard_webhooks",
        platform=platform,
        headers=signed("standard_webhooks"),
        body=BODY,
        secrets=[STANDARD_SECRET],
        options={},
        now=now,
        replay_store=store,
        tenant=tenant,
    )


def test_replay_keyed_by_tenant() -> None:
    store = MemoryReplayStore()
    first = verify_for_tenant("tenant-a", store)
    second = verify_for_tenant("tenant-b", store)
    with pytest.raises(WebhookRejected) as caught:
        verify_for_tenant("tenant-a", store, now=NOW + 1)

    assert first.event_id == "msg_1"
    assert second.event_id == "msg_1"
    assert caught.value.reason == "replayed"


def test_replay_without_tenant_shared() -> None:
    store = MemoryReplayStore()
    verify("standard_webhooks", signed("standard_webhooks"), replay_store=store)
    reason = reason_of(
        "standard_webhooks", signed("standard_webhooks"), replay_store=store
    )
    tenant_event = verify_for_tenant("tenant-a", store)

    assert reason == "replayed"
    assert tenant_event.event_id == "msg_1"


class TenantlessStore:
    """A replay store written for the protocol without the tenant keyword."""

    def __init__(self) -> None:
        self.ids: set[tuple[str, str]] = set()

    def seen(self, platform: str, event_id: str, now: float) -> bool:
        key = (platform, event_id)
        found = key in self.ids
        self.ids.add(key)
        return found


def test_tenantless_store_works_without_tenant() -> None:
    store = TenantlessStore()
    verify("standard_webhooks", signed("standard_webhooks"), replay_store=store)
    reason = reason_of(
        "standard_webhooks", signed("standard_webhooks"), replay_store=store
    )
    assert reason == "replayed"


def test_tenantless_store_with_tenant_raises() -> None:
    store = TenantlessStore()
    with pytest.raises(TypeError, match="tenant: str = ''") as caught:
        verify_for_tenant("tenant-a", store)

    assert "TenantlessStore" in str(caught.value)
    assert store.ids == set()


def test_tenant_of_wrong_type_raises() -> None:
    with pytest.raises(TypeError, match="tenant must be"):
        verify_for_tenant(None, MemoryReplayStore())  # type: ignore[arg-type]


def test_forged_request_does_not_use_id() -> None:
    """A request with a bad signature must not record its event id."""
    store = MemoryReplayStore()
    forged = {**signed("standard_webhooks"), "webhook-signature": "v1," + VALID_BASE64}
    assert reason_of("standard_webhooks", forged, replay_store=store) == "bad_signature"
    assert len(store) == 0
    event = verify("standard_webhooks", signed("standard_webhooks"), replay_store=store)
    assert event.event_id == "msg_1"


def test_stale_request_does_not_use_id() -> None:
    store = MemoryReplayStore()
    stale = signed("standard_webhooks", timestamp=NOW - 400)
    assert (
        reason_of("standard_webhooks", stale, replay_store=store) == "stale_timestamp"
    )
    assert len(store) == 0


def test_memory_store_seen_once() -> None:
    store = MemoryReplayStore()
    assert store.seen("acme", "e1", NOW) is False
    assert store.seen("acme", "e1", NOW) is True
    assert store.seen("acme", "e2", NOW) is False


def test_memory_store_forgets_after_retention() -> None:
    store = MemoryReplayStore(retention=60)
    store.seen("acme", "e1", NOW)
    assert store.seen("acme", "e1", NOW + 59) is True
    assert store.seen("acme", "e1", NOW + 60) is False
    assert len(store) == 1


def test_memory_store_keyed_by_tenant() -> None:
    store = MemoryReplayStore(retention=60)
    assert store.seen("acme", "e1", NOW, tenant="tenant-a") is False
    assert store.seen("acme", "e1", NOW, tenant="tenant-b") is False
    assert store.seen("acme", "e1", NOW) is False
    assert store.seen("acme", "e1", NOW, tenant="tenant-a") is True
    assert store.seen("acme", "e1", NOW + 60, tenant="tenant-a") is False
    assert len(store) == 1


def test_memory_store_invalid_retention() -> None:
    with pytest.raises(ValueError, match="retention"):
        MemoryReplayStore(retention=0)


# --- Argument types and the clock -------------------------------------------


@pytest.mark.parametrize("now", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_now_raises(now: float) -> None:
    signed_in_2001 = signed("standard_webhooks", timestamp=1_000_000_000)
    with pytest.raises(ValueError, match="now must be a finite Unix time"):
        verify("standard_webhooks", signed_in_2001, now=now)


@pytest.mark.parametrize("now", ["1700000000", True])
def test_now_of_wrong_type_raises(now: Any) -> None:
    with pytest.raises(TypeError, match="now must be a Unix time"):
        verify("standard_webhooks", signed("standard_webhooks"), now=now)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bytes_headers_accepted(scheme: str) -> None:
    headers = {
        name.encode("ascii"): value.encode("ascii")
        for name, value in signed(scheme).items()
    }
    event = verify(scheme, headers)  # type: ignore[arg-type]
    assert event.payload == json.loads(BODY)


def test_bytes_header_value_with_str_name_accepted() -> None:
    headers: dict[str, Any] = dict(signed("github"))
    headers["X-Hub-Signature-256"] = bytearray(headers["X-Hub-Signature-256"], "ascii")
    assert verify("github", headers).event_id == "d-1"


def test_bytes_header_non_ascii_rejected() -> None:
    headers: dict[str, Any] = dict(signed("github"))
    headers["X-GitHub-Delivery"] = "d-\u00fc".encode()
    assert reason_of("github", headers) == "malformed_header"


@pytest.mark.parametrize("value", [None, 42])
def test_header_value_of_wrong_type_raises(value: Any) -> None:
    headers: dict[str, Any] = {**signed("github"), "X-GitHub-Delivery": value}
    with pytest.raises(TypeError, match="pass str or bytes"):
        verify("github", headers)


def test_headers_not_mapping_raises() -> None:
    pairs = list(signed("github").items())
    with pytest.raises(TypeError, match="headers must be a mapping"):
        verify("github", pairs)  # type: ignore[arg-type]


def test_str_body_raises() -> None:
    with pytest.raises(TypeError, match="pass the raw request body as bytes"):
        verify("github", signed("github"), body=BODY.decode())  # type: ignore[arg-type]


@pytest.mark.parametrize("body_type", [bytearray, memoryview])
def test_bytes_like_body_accepted(body_type: Any) -> None:
    event = verify("github", signed("github"), body=body_type(BODY))
    assert event.payload == json.loads(BODY)


# --- Malformed and missing headers -------------------------------------------


def replace_header(scheme: str, value: str) -> dict[str, str]:
    """Return signed headers for ``scheme`` with the signature header replaced."""
    name = {
        "standard_webhooks": "webhook-signature",
        "github": "X-Hub-Signature-256",
        "stripe": "Stripe-Signature",
    }[scheme]
    return {**signed(scheme), name: value}


@pytest.mark.parametrize(
    ("scheme", "value"),
    [
        pytest.param("standard_webhooks", "v1" + VALID_BASE64, id="std-no-comma"),
        pytest.param(
            "standard_webhooks",
            f"v1,{VALID_BASE64} v1{VALID_BASE64}",
            id="std-second-entry-no-comma",
        ),
        pytest.param("standard_webhooks", ",abc", id="std-no-version"),
        pytest.param("standard_webhooks", "v1,not base64!", id="std-bad-base64"),
        pytest.param("standard_webhooks", "v1,QUJD", id="std-short-digest"),
        pytest.param("standard_webhooks", "v1,", id="std-empty-digest"),
        pytest.param("standard_webhooks", "v1a,abc", id="std-no-v1"),
        pytest.param("standard_webhooks", "v1,é" + VALID_BASE64, id="std-non-ascii"),
        pytest.param("standard_webhooks", "", id="std-empty"),
        pytest.param("standard_webhooks", "   ", id="std-blank"),
        pytest.param("standard_webhooks", "v1,AAAA " * 1000, id="std-huge"),
        pytest.param("github", VALID_HEX, id="gh-no-prefix"),
        pytest.param("github", "sha1=" + VALID_HEX[:40], id="gh-sha1"),
        pytest.param("github", "sha256=" + VALID_HEX[:-1], id="gh-short-hex"),
        pytest.param("github", "sha256=" + "zz" * 32, id="gh-not-hex"),
        pytest.param("github", "sha256=" + "\u0663" * 64, id="gh-arabic-digits"),
        pytest.param("github", "", id="gh-empty"),
        pytest.param("github", "sha256=" + "a" * 10_000, id="gh-huge"),
        pytest.param("stripe", f"t={NOW}v1={VALID_HEX}", id="stripe-no-comma"),
        pytest.param("stripe", f"v1={VALID_HEX}", id="stripe-no-t"),
        pytest.param("stripe", f"t={NOW},t={NOW},v1={VALID_HEX}", id="stripe-two-t"),
        pytest.param("stripe", f"t={NOW}", id="stripe-no-v1"),
        pytest.param("stripe", f"t={NOW},v1=xyz", id="stripe-bad-hex"),
        pytest.param("stripe", f"t=soon,v1={VALID_HEX}", id="stripe-bad-t"),
        pytest.param("stripe", f"t=-5,v1={VALID_HEX}", id="stripe-negative-t"),
        pytest.param("stripe", f"t=1_700,v1={VALID_HEX}", id="stripe-underscore-t"),
        pytest.param("stripe", f"t={NOW},v1={VALID_HEX}\u00a0", id="stripe-nbsp"),
        pytest.param("stripe", ",", id="stripe-comma-only"),
        pytest.param("stripe", "", id="stripe-empty"),
    ],
)
def test_malformed_signature_header(scheme: str, value: str) -> None:
    assert reason_of(scheme, replace_header(scheme, value)) == "malformed_header"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("webhook-timestamp", "1.7e9", id="float-timestamp"),
        pytest.param(
            "webhook-timestamp", "\u0661\u0667" + "\u0660" * 8, id="arabic-digits"
        ),
        pytest.param("webhook-timestamp", "9" * 40, id="huge-timestamp"),
        pytest.param("webhook-id", "msg\x001", id="control-in-id"),
        pytest.param("webhook-id", "msg_ü", id="non-ascii-id"),
    ],
)
def test_standard_webhooks_malformed_other_headers(name: str, value: str) -> None:
    headers = {**signed("standard_webhooks"), name: value}
    assert reason_of("standard_webhooks", headers) == "malformed_header"


@pytest.mark.parametrize(
    ("scheme", "name"),
    [
        pytest.param("standard_webhooks", "webhook-id", id="std-id"),
        pytest.param("standard_webhooks", "webhook-timestamp", id="std-timestamp"),
        pytest.param("standard_webhooks", "webhook-signature", id="std-signature"),
        pytest.param("github", "X-Hub-Signature-256", id="github"),
        pytest.param("stripe", "Stripe-Signature", id="stripe"),
    ],
)
def test_missing_header(scheme: str, name: str) -> None:
    headers = signed(scheme)
    del headers[name]
    assert reason_of(scheme, headers) == "missing_header"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_headers_missing(scheme: str) -> None:
    assert reason_of(scheme, {}) == "missing_header"


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(str.upper, id="upper"),
        pytest.param(str.lower, id="lower"),
        pytest.param(str.title, id="title"),
    ],
)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_headers_case_insensitive(scheme: str, transform: Any) -> None:
    headers = {transform(name): value for name, value in signed(scheme).items()}
    assert verify(scheme, headers).payload == json.loads(BODY)


def test_conflicting_header_case_rejected() -> None:
    headers = {**signed("github"), "x-hub-signature-256": "sha256=" + VALID_HEX}
    assert reason_of("github", headers) == "malformed_header"


def test_duplicate_header_same_value_accepted() -> None:
    headers = signed("github")
    headers["x-hub-signature-256"] = headers["X-Hub-Signature-256"]
    assert verify("github", headers).event_id == "d-1"


class RepeatedHeaders(dict[str, str]):
    """Headers whose ``items()`` yields a repeated line, like Starlette's."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def items(self) -> Any:
        return list(self.pairs)


def test_repeated_header_different_value_rejected() -> None:
    pairs = [*signed("standard_webhooks").items(), ("webhook-id", "msg_2")]
    headers = RepeatedHeaders(pairs)
    assert reason_of("standard_webhooks", headers) == "malformed_header"


@pytest.mark.parametrize(
    "delivery_id",
    [
        pytest.param("d-\u00fc", id="non-ascii"),
        pytest.param("d-\x1b[31m", id="control"),
    ],
)
def test_github_bad_delivery_id_rejected(delivery_id: str) -> None:
    headers = {**signed("github"), "X-GitHub-Delivery": delivery_id}
    assert reason_of("github", headers) == "malformed_header"


# --- Secrets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "secrets"),
    [
        pytest.param("github", (), id="none"),
        pytest.param("github", ("",), id="empty"),
        pytest.param("stripe", PLAIN_SECRET, id="string-not-sequence"),
        pytest.param("standard_webhooks", ("whsec_",), id="std-empty-key"),
        pytest.param("standard_webhooks", ("whsec_not*base64",), id="std-not-base64"),
    ],
)
def test_unusable_secrets_raise(scheme: str, secrets: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        verify(scheme, signed(scheme), secrets=secrets)
    assert caught.value.key == "secrets"


def test_bad_secret_message_has_no_secret() -> None:
    secret = "whsec_S3cr3t*value"
    with pytest.raises(ConfigError) as caught:
        verify("standard_webhooks", signed("standard_webhooks"), secrets=(secret,))
    assert "S3cr3t" not in str(caught.value)


REJECTED_CASES = [
    pytest.param("standard_webhooks", {}, (STANDARD_SECRET,), id="missing"),
    pytest.param(
        "standard_webhooks",
        replace_header("standard_webhooks", "v1,é"),
        (STANDARD_SECRET,),
        id="malformed",
    ),
    pytest.param(
        "standard_webhooks",
        signed("standard_webhooks"),
        (OLD_STANDARD_SECRET,),
        id="std-wrong-secret",
    ),
    pytest.param("github", signed("github"), (OLD_PLAIN_SECRET,), id="github-wrong"),
    pytest.param("stripe", signed("stripe"), (OLD_PLAIN_SECRET,), id="stripe-wrong"),
    pytest.param(
        "stripe",
        signed("stripe", timestamp=NOW - 999),
        (OLD_PLAIN_SECRET, PLAIN_SECRET),
        id="stale",
    ),
    pytest.param(
        "stripe",
        signed("stripe", timestamp=NOW + 999),
        (OLD_PLAIN_SECRET, PLAIN_SECRET),
        id="future",
    ),
]
LEAK_FRAGMENTS = (*SECRET_FRAGMENTS, "o" * 8, "volunteer.hours", "evt_1")


@pytest.mark.parametrize(("scheme", "headers", "secrets"), REJECTED_CASES)
def test_rejection_message_has_no_secret_or_body(
    scheme: str, headers: dict[str, str], secrets: tuple[str, ...]
) -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify(scheme, headers, secrets=secrets)
    text = f"{caught.value} {caught.value!r}"
    for fragment in LEAK_FRAGMENTS:
        assert fragment not in text


def test_replay_message_has_no_event_id() -> None:
    store = MemoryReplayStore()
    verify("stripe", signed("stripe"), replay_store=store)
    with pytest.raises(WebhookRejected) as caught:
        verify("stripe", signed("stripe"), replay_store=store)
    assert "evt_1" not in str(caught.value)


def test_rejection_message_has_no_signature() -> None:
    headers = signed("github")
    with pytest.raises(WebhookRejected) as caught:
        verify("github", headers, secrets=(OLD_PLAIN_SECRET,))
    digest = headers["X-Hub-Signature-256"].removeprefix("sha256=")
    assert digest not in str(caught.value)


# --- Interoperability with the standardwebhooks library ----------------------


def test_library_signed_verifies() -> None:
    timestamp = datetime.fromtimestamp(NOW, tz=timezone.utc)
    signature = standardwebhooks.Webhook(STANDARD_SECRET).sign(
        "msg_lib", timestamp, BODY
    )
    headers = {
        "Webhook-Id": "msg_lib",
        "Webhook-Timestamp": str(NOW),
        "Webhook-Signature": signature,
    }
    assert verify("standard_webhooks", headers).event_id == "msg_lib"


def test_library_signed_tampered_rejected() -> None:
    timestamp = datetime.fromtimestamp(NOW, tz=timezone.utc)
    signature = standardwebhooks.Webhook(STANDARD_SECRET).sign(
        "msg_lib", timestamp, BODY
    )
    headers = {
        "webhook-id": "msg_lib",
        "webhook-timestamp": str(NOW),
        "webhook-signature": signature,
    }
    assert reason_of("standard_webhooks", headers, body=BODY + b" ") == "bad_signature"


def test_impactin_signed_verifies_in_library() -> None:
    """The library reads the wall clock, so the event is signed at the current time."""
    headers = sign_standard_webhooks(STANDARD_SECRET, "msg_own", int(time.time()), BODY)
    payload = standardwebhooks.Webhook(STANDARD_SECRET).verify(BODY, headers)
    assert payload == json.loads(BODY)


def test_impactin_signed_wrong_secret_fails_in_library() -> None:
    headers = sign_standard_webhooks(
        OLD_STANDARD_SECRET, "msg_own", int(time.time()), BODY
    )
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(STANDARD_SECRET).verify(BODY, headers)


# --- Property tests ----------------------------------------------------------

HEADER_NAMES = st.sampled_from(
    [
        "webhook-id",
        "Webhook-Timestamp",
        "webhook-signature",
        "X-Hub-Signature-256",
        "x-github-delivery",
        "Stripe-Signature",
        "other",
    ]
)
# Fragments of real header syntax make the parsers go past their first check.
HEADER_PIECES = st.sampled_from(
    ["v1,", "v1=", "t=", "sha256=", ",", " ", "=", str(NOW), VALID_HEX, VALID_BASE64]
)
HEADER_VALUES = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(HEADER_PIECES, st.text(max_size=5)), max_size=12).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(SCHEMES),
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=7),
    body=st.binary(max_size=64),
)
def test_random_headers_only_rejected(
    scheme: str, headers: dict[str, str], body: bytes
) -> None:
    try:
        verify(scheme, headers, body=body, replay_store=MemoryReplayStore())
    except WebhookRejected as exc:
        assert exc.reason in {
            "missing_header",
            "malformed_header",
            "bad_signature",
            "stale_timestamp",
            "future_timestamp",
        }


_COUNT_SCRIPT = textwrap.dedent(
    """
    import json, time
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from impactin_core import WebhookRejected
    from impactin_core.webhooks import sign_github, verify_with_scheme

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    body = b'{"id": "evt-1"}'
    good = sign_github("s3cret", body)
    verify_with_scheme("github", platform="acme", headers=good, body=body,
                       secrets=["s3cret"], options={})
    for headers in ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, {}):
        try:
            verify_with_scheme("github", platform="acme", headers=headers,
                               body=body, secrets=["s3cret"], options={})
        except WebhookRejected:
            pass
    counts = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = metric.name + ":" + point.attributes["reason"]
                    counts[key] = point.value
    print(json.dumps(counts))
    """
)


def test_rejections_counted_in_global_meter() -> None:
    """A host that calls verify_with_scheme directly gets the metric too."""
    result = subprocess.run(
        [sys.executable, "-c", _COUNT_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    counts = json.loads(result.stdout)
    name = "impact_in_webhook_verification_failures_total"
    assert counts == {f"{name}:bad_signature": 1, f"{name}:missing_header": 1}


@pytest.mark.parametrize("retention", [math.nan, math.inf, 0.0, -1.0])
def test_replay_store_rejects_bad_retention(retention: float) -> None:
    with pytest.raises(ValueError, match="finite positive number of seconds"):
        MemoryReplayStore(retention=retention)
