"""The hook specifications a connector implements.

A connector is a pluggy plugin registered under the entry-point group
``impactin``. The runtime calls every hook with keyword arguments only, and
calls a platform's hooks on the connector that registered the platform plus
any plugin that registers no platform (a cross-cutting plugin), never on
other connectors. ``impactin_authenticate`` and ``impactin_send`` return
awaitables; the runtime awaits them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from ._context import AuthContext, SendContext
    from ._models import (
        Credentials,
        ImpactRecord,
        PlatformInfo,
        PlatformRequest,
        PlatformSettings,
        SendOutcome,
        WebhookEvent,
    )
    from ._redaction import RedactionPolicy

PROJECT_NAME = "impactin"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def impactin_register_platforms(register: Callable[[PlatformInfo], None]) -> None:
    """Declare the platforms this plugin connects to.

    Called once when plugins load. Call ``register`` with one
    ``PlatformInfo`` per platform. Two plugins registering one platform id
    is an error that names both.
    """


@hookspec(firstresult=True)
def impactin_authenticate(
    platform: PlatformInfo, settings: PlatformSettings, context: AuthContext
) -> Awaitable[Credentials] | None:
    """Return an awaitable of the credentials for one send.

    Called before every attempt. Use ``context.tokens`` to reuse a stored
    OAuth token and refresh it ahead of expiry, and ``context.client`` for
    the token request. With ``context.force_refresh`` set, the previous
    credentials were rejected: fetch new ones. Return None for a platform
    this plugin does not serve.
    """


@hookspec(firstresult=True)
def impactin_map(
    platform: PlatformInfo,
    records: Sequence[ImpactRecord],
    settings: PlatformSettings,
    idempotency_keys: Sequence[str],
) -> list[PlatformRequest] | None:
    """Turn canonical records into platform requests.

    ``records`` holds at most ``platform.batch_limit`` records, already
    minimized by the redaction policy, and ``idempotency_keys`` holds one key
    per record in the same order. The runtime currently passes one record
    per call. Raise ``RecordInvalid`` naming the field
    when a record cannot be expressed on the platform.
    """


@hookspec
def impactin_redact(
    platform: PlatformInfo, request: PlatformRequest, policy: RedactionPolicy
) -> int | None:
    """Remove or pseudonymize data in ``request.payload`` in place.

    Called after the runtime's own redaction and before the leak scan, on
    the platform's connector and on every cross-cutting plugin. Return the
    number of fields changed.
    """


@hookspec(firstresult=True)
def impactin_send(
    platform: PlatformInfo,
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
) -> Awaitable[SendOutcome] | None:
    """Return an awaitable that performs the call and classifies the outcome.

    Use ``context.client`` (an ``httpx.AsyncClient`` owned by the runtime) so
    that tracing, evidence hashing and timeouts apply. Resolve with a
    ``SendOutcome`` on success; raise ``RetryableError``, ``RateLimited``,
    ``AuthenticationError`` or ``PermanentError`` otherwise.
    """


@hookspec(firstresult=True)
def impactin_verify_webhook(
    platform: PlatformInfo,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    options: Mapping[str, Any],
) -> WebhookEvent | None:
    """Verify the signature of an inbound event and parse it.

    ``body`` is the raw bytes received. Raise ``WebhookRejected`` with the
    reason when the signature, timestamp or format is wrong.
    """
