"""Webhook verification through the core's scheme verifiers."""

from __future__ import annotations

import base64
import importlib.util
import json
import time

import pytest

from impactin_core import WebhookRejected
from impactin_goodera import PLATFORM_INFO
from impactin_goodera import _plugin as plugin

if importlib.util.find_spec("impactin_core.webhooks") is None:
    pytest.skip(
        "impactin_core.webhooks is not installed, so there is no verifier to call",
        allow_module_level=True,
    )

from impactin_core.webhooks import sign_github, sign_standard_webhooks

SECRET = "whsec_" + base64.b64encode(b"goodera-test-secret-0123456789").decode()
BODY = json.dumps({"type": "participation.created"}).encode()


def test_verify_standard_webhooks_by_default() -> None:
    headers = sign_standard_webhooks(SECRET, "msg_1", int(time.time()), BODY)
    event = plugin.impactin_verify_webhook(
        platform=PLATFORM_INFO, headers=headers, body=BODY, secrets=[SECRET], options={}
    )
    assert event is not None
    assert event.platform == "goodera"
    assert event.event_id == "msg_1"
    assert event.payload == {"type": "participation.created"}


def test_verify_rejects_tampered_body() -> None:
    headers = sign_standard_webhooks(SECRET, "msg_2", int(time.time()), BODY)
    with pytest.raises(WebhookRejected) as caught:
        plugin.impactin_verify_webhook(
            platform=PLATFORM_INFO,
            headers=headers,
            body=BODY + b" ",
            secrets=[SECRET],
            options={},
        )
    assert caught.value.reason == "bad_signature"


def test_verify_uses_scheme_option() -> None:
    headers = sign_github("plain-secret", BODY)
    event = plugin.impactin_verify_webhook(
        platform=PLATFORM_INFO,
        headers=headers,
        body=BODY,
        secrets=["plain-secret"],
        options={"webhook_scheme": "github"},
    )
    assert event is not None
    assert event.payload == {"type": "participation.created"}
