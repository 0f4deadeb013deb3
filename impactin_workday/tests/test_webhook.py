"""Webhook verification of the Workday connector, which needs a chosen scheme."""

from __future__ import annotations

import base64
import json
import time

import pytest

from impactin_core import ConfigError, PlatformInfo, RecordKind, WebhookRejected
from impactin_core.webhooks import sign_github, sign_standard_webhooks
from impactin_workday import _plugin as plugin

SECRET = "whsec_" + base64.b64encode(b"workday-test-secret-0123456789").decode()
BODY = json.dumps({"type": "worker.updated"}).encode()


def _verify(headers: dict[str, str], body: bytes, **options: object) -> object:
    return plugin.impactin_verify_webhook(
        platform=plugin.PLATFORM,
        headers=headers,
        body=body,
        secrets=[SECRET],
        options=options,
    )


def test_platform_declares_no_scheme() -> None:
    assert plugin.PLATFORM.webhook_scheme is None


def test_verify_with_standard_webhooks() -> None:
    headers = sign_standard_webhooks(SECRET, "msg_1", int(time.time()), BODY)
    event = _verify(headers, BODY, webhook_scheme="standard_webhooks")
    assert event is not None
    assert getattr(event, "event_id", None) == "msg_1"


def test_verify_with_github_scheme() -> None:
    headers = {**sign_github(SECRET, BODY), "x-github-delivery": "delivery-1"}
    event = _verify(headers, BODY, webhook_scheme="github")
    assert getattr(event, "platform", None) == "workday"


def test_verify_rejects_tampered_body() -> None:
    headers = sign_standard_webhooks(SECRET, "msg_2", int(time.time()), BODY)
    with pytest.raises(WebhookRejected):
        _verify(headers, BODY + b" ", webhook_scheme="standard_webhooks")


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="missing"),
        pytest.param({"webhook_scheme": None}, id="none"),
        pytest.param({"webhook_scheme": "hmac_md5"}, id="unknown"),
        pytest.param({"webhook_scheme": 3}, id="not-text"),
    ],
)
def test_scheme_option_required(options: dict[str, object]) -> None:
    headers = sign_standard_webhooks(SECRET, "msg_3", int(time.time()), BODY)
    with pytest.raises(ConfigError) as caught:
        _verify(headers, BODY, **options)
    key = "tenants.NAME.platforms.workday.options.webhook_scheme"
    assert caught.value.key == key
    assert key in str(caught.value)


def test_other_platform_ignored() -> None:
    other = PlatformInfo(
        id="other_platform",
        name="Other",
        kinds=[RecordKind.DONATION],
        auth_kinds=["none"],
    )
    result = plugin.impactin_verify_webhook(
        platform=other, headers={}, body=b"{}", secrets=[], options={}
    )
    assert result is None
