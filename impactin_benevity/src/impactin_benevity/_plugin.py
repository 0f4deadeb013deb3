"""The Benevity connector's hook implementations.

This module is the plugin that the ``impactin`` entry point ``benevity``
loads. Every hook returns None for a platform other than Benevity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from impactin_core import (
    AuthContext,
    ConfigError,
    Credentials,
    ImpactRecord,
    PlatformInfo,
    PlatformRequest,
    PlatformSettings,
    RateLimit,
    RecordKind,
    RedactionPolicy,
    SendContext,
    SendOutcome,
    WebhookEvent,
    hookimpl,
)

from ._mapping import PLATFORM_ID, map_records, redact_payload
from ._options import AUTH_KIND, DEFAULT_WEBHOOK_SCHEME

__all__ = [
    "PLATFORM",
    "impactin_authenticate",
    "impactin_map",
    "impactin_redact",
    "impactin_register_platforms",
    "impactin_send",
    "impactin_verify_webhook",
]

PLATFORM = PlatformInfo(
    id=PLATFORM_ID,
    name="Benevity",
    # Benevity's API can search volunteer opportunities but not record
    # volunteer hours, so donations are the only kind it accepts.
    kinds=[RecordKind.DONATION],
    auth_kinds=[AUTH_KIND],
    transports=["rest"],
    batch_limit=1,
    # NOTE: Benevity publishes no rate limit. One call per second is a
    # conservative guess, and the connector backs off on 429 in any case.
    rate_limit=RateLimit(60, 60.0),
    personal_fields=["employee_email"],
    widenable_fields=["employee_name", "employee_id"],
    webhook_scheme=DEFAULT_WEBHOOK_SCHEME,
    credential_names=["client_id", "client_secret"],
    # Benevity documents no idempotency key; the simulator's matching of
    # replays on the metadata key is not vendor behaviour.
    honours_idempotency_key=False,
    simulator="impactin_benevity._simulator:create_simulator",
)


def _serves(platform: PlatformInfo) -> bool:
    return platform.id == PLATFORM_ID


@hookimpl
def impactin_register_platforms(register: Callable[[PlatformInfo], None]) -> None:
    """Register the Benevity platform."""
    register(PLATFORM)


@hookimpl
def impactin_authenticate(
    platform: PlatformInfo, settings: PlatformSettings, context: AuthContext
) -> Awaitable[Credentials] | None:
    """Return an awaitable of bearer credentials for one send."""
    if not _serves(platform):
        return None
    # Imported here so that listing plugins does not load httpx.
    from ._auth import authenticate

    return authenticate(settings, context)


@hookimpl
def impactin_map(
    platform: PlatformInfo,
    records: Sequence[ImpactRecord],
    settings: PlatformSettings,
    idempotency_keys: Sequence[str],
) -> list[PlatformRequest] | None:
    """Turn donation records into ``POST /donations`` requests."""
    if not _serves(platform):
        return None
    return map_records(records, settings, idempotency_keys)


@hookimpl
def impactin_redact(
    platform: PlatformInfo, request: PlatformRequest, policy: RedactionPolicy
) -> int | None:
    """Drop donor fields and pseudonymize an employee id that the policy withholds."""
    if not _serves(platform):
        return None
    return redact_payload(request.payload, policy)


@hookimpl
def impactin_send(
    platform: PlatformInfo,
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
) -> Awaitable[SendOutcome] | None:
    """Return an awaitable that posts one donation."""
    if not _serves(platform):
        return None
    # Imported here so that listing plugins does not load httpx.
    from ._send import send_donation

    return send_donation(request, credentials, context)


@hookimpl
def impactin_verify_webhook(
    platform: PlatformInfo,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    options: Mapping[str, Any],
) -> WebhookEvent | None:
    """Verify an inbound event with the tenant's scheme and return it parsed.

    Benevity publishes no webhook signature, so the scheme is the option
    ``webhook_scheme``, else the platform's declared scheme.
    """
    if not _serves(platform):
        return None
    # Imported here so that the connector loads even with a core that
    # predates the webhooks module.
    from impactin_core.webhooks import verify_with_scheme

    scheme = _webhook_scheme(platform, options)
    return verify_with_scheme(
        scheme,
        platform=platform.id,
        headers=headers,
        body=body,
        secrets=secrets,
        options=options,
    )


def _webhook_scheme(platform: PlatformInfo, options: Mapping[str, Any]) -> str:
    scheme = options.get("webhook_scheme", platform.webhook_scheme)
    if scheme is None:
        return DEFAULT_WEBHOOK_SCHEME
    if not isinstance(scheme, str) or not scheme.strip():
        # The hook receives no tenant, so the key names it as NAME.
        key = f"tenants.NAME.platforms.{PLATFORM_ID}.options.webhook_scheme"
        message = (
            f"Benevity option {key} is {scheme!r}; set it to a webhook scheme "
            "name such as 'standard_webhooks'."
        )
        raise ConfigError(message, key=key)
    return scheme
