"""Inbound webhook verification through the core's signature schemes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pytest

from impactin_benevity import PLATFORM, _plugin
from impactin_core import ConfigError, WebhookEvent, WebhookRejected

webhooks = pytest.importorskip(
    "impactin_core.webhooks",
    reason="this impactin-core has no webhooks module to verify signatures with",
)

SECRET = "whsec_" + base64.b64encode(b"benevity-webhook-test-secret-32b").decode()
BODY = json.dumps({"type": "donation.updated", "id": "d-1"}).encode()


def _verify(
    headers: Mapping[str, str],
    body: bytes = BODY,
    secrets: Sequence[str] = (SECRET,),
    options: Mapping[str, Any] | None = None,
    platform: Any = PLATFORM,
) -> WebhookEvent | None:
    return _plugin.impactin_verify_webhook(
        platform=platform,
        headers=headers,
        body=body,
        secrets=secrets,
        options=options or {},
    )


def _standard_headers(body: bytes = BODY) -> dict[str, str]:
    signed: dict[str, str] = webhooks.sign_standard_webhooks(
        SECRET, "msg_1", int(time.time()), body
    )
    return signed


def test_standard_webhooks_by_default() -> None:
    event = _verify(_standard_headers())
    assert event is not None
    assert event.platform == "benevity"
    assert event.event_id == "msg_1"
    assert event.payload == {"type": "donation.updated", "id": "d-1"}


def test_tampered_body_rejected() -> None:
    headers = _standard_headers()
    with pytest.raises(WebhookRejected) as caught:
        _verify(headers, body=BODY.replace(b"d-1", b"d-2"))
    assert caught.value.reason == "bad_signature"


def test_scheme_from_option() -> None:
    secret = "github-style-secret"
    headers = webhooks.sign_github(secret, BODY)
    options = {"webhook_scheme": "github", "id_header": "X-Delivery"}
    event = _verify({**headers, "X-Delivery": "g-1"}, secrets=[secret], options=options)
    assert event is not None
    assert event.payload["id"] == "d-1"


def test_scheme_from_platform() -> None:
    secret = "stripe-style-secret"
    headers = webhooks.sign_stripe(secret, int(time.time()), BODY)
    platform = attrs.evolve(PLATFORM, webhook_scheme="stripe")
    event = _verify(headers, secrets=[secret], platform=platform)
    assert event is not None


def test_unknown_scheme_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown webhook scheme"):
        _verify(_standard_headers(), options={"webhook_scheme": "benevity_v1"})


def test_blank_scheme_is_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        _verify(_standard_headers(), options={"webhook_scheme": " "})

    key = "tenants.NAME.platforms.benevity.options.webhook_scheme"
    assert caught.value.key == key
    assert key in str(caught.value)
