"""The pluggy hook implementations of the Goodera connector.

Each hook returns None for any platform other than Goodera, so the runtime
can call it next to other connectors.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from impactin_core import (
    AuthContext,
    Credentials,
    ImpactRecord,
    PlatformInfo,
    PlatformRequest,
    PlatformSettings,
    PluginError,
    SendContext,
    SendOutcome,
    WebhookEvent,
    hookimpl,
)

from ._mapping import map_record
from ._options import GooderaOptions
from ._platform import PLATFORM_ID, PLATFORM_INFO

__all__ = [
    "impactin_authenticate",
    "impactin_map",
    "impactin_register_platforms",
    "impactin_send",
    "impactin_verify_webhook",
]


@hookimpl
def impactin_register_platforms(register: Callable[[PlatformInfo], None]) -> None:
    register(PLATFORM_INFO)


@hookimpl
def impactin_authenticate(
    platform: PlatformInfo, settings: PlatformSettings, context: AuthContext
) -> Awaitable[Credentials] | None:
    if platform.id != PLATFORM_ID:
        return None
    return _api_key_credentials(settings)


async def _api_key_credentials(settings: PlatformSettings) -> Credentials:
    # Goodera uses one static key per organization, so a forced refresh
    # reads the same secret again; there is no token to renew.
    return Credentials(
        kind="api_key", headers={"x-api-key": settings.secret("api_key")}
    )


@hookimpl
def impactin_map(
    platform: PlatformInfo,
    records: Sequence[ImpactRecord],
    settings: PlatformSettings,
    idempotency_keys: Sequence[str],
) -> list[PlatformRequest] | None:
    if platform.id != PLATFORM_ID:
        return None
    pairs = zip(records, idempotency_keys, strict=True)
    return [map_record(record, settings, key) for record, key in pairs]


@hookimpl
def impactin_send(
    platform: PlatformInfo,
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
) -> Awaitable[SendOutcome] | None:
    if platform.id != PLATFORM_ID:
        return None
    # Imported here so that listing plugins does not load httpx.
    from ._send import send_participation

    return send_participation(request, credentials, context)


@hookimpl
def impactin_verify_webhook(
    platform: PlatformInfo,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    options: Mapping[str, Any],
) -> WebhookEvent | None:
    if platform.id != PLATFORM_ID:
        return None
    scheme = options.get("webhook_scheme", GooderaOptions().webhook_scheme)
    verify = _verify_with_scheme()
    event: WebhookEvent = verify(
        scheme,
        platform=PLATFORM_ID,
        headers=headers,
        body=body,
        secrets=secrets,
        options=options,
    )
    return event


def _verify_with_scheme() -> Callable[..., WebhookEvent]:
    # Imported on first use so the connector loads with an impactin-core
    # that has no webhook support yet.
    try:
        module = importlib.import_module("impactin_core.webhooks")
    except ModuleNotFoundError as exc:
        if exc.name != "impactin_core.webhooks":
            raise
        message = (
            "The installed impactin-core has no impactin_core.webhooks module, "
            "so Goodera webhooks cannot be verified; upgrade impactin-core."
        )
        raise PluginError(message, plugin=PLATFORM_ID) from exc
    verify: Callable[..., WebhookEvent] = module.verify_with_scheme
    return verify
