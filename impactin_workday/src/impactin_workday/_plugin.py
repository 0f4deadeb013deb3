"""The hook implementations of the Workday connector."""

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
    SendContext,
    SendOutcome,
    WebhookEvent,
    hookimpl,
)

from ._mapping import map_records
from ._options import PLATFORM_ID, WorkdayOptions

__all__ = ["PLATFORM"]

PLATFORM = PlatformInfo(
    id=PLATFORM_ID,
    name="Workday",
    # The arg-type ignores work around converter typing in impactin_core.
    # Both kinds are stored as rows of a worker custom object.
    kinds={RecordKind.VOLUNTEER_TIME, RecordKind.DONATION},  # type: ignore[arg-type]
    auth_kinds=("wsse_username_token", "oauth2_refresh_token"),  # type: ignore[arg-type]
    # SOAP comes first because it is the default protocol.
    transports=("soap", "rest"),  # type: ignore[arg-type]
    batch_limit=1,
    # NOTE: Workday publishes no numeric rate limit for SOAP or REST; one call
    # per second is a conservative guess, not a vendor figure.
    rate_limit=RateLimit(60, 60.0),
    personal_fields={"employee_id"},  # type: ignore[arg-type]
    # Workday publishes no signature scheme for outbound webhooks, so none is
    # declared and a tenant must choose one with the webhook_scheme option.
    webhook_scheme=None,
    # SOAP reads username and password; REST reads the other three.
    credential_names={  # type: ignore[arg-type]
        "username",
        "password",
        "client_id",
        "client_secret",
        "refresh_token",
    },
    simulator="impactin_workday.simulator:create_simulator",
)


@hookimpl
def impactin_register_platforms(register: Callable[[PlatformInfo], None]) -> None:
    register(PLATFORM)


@hookimpl
def impactin_map(
    platform: PlatformInfo,
    records: Sequence[ImpactRecord],
    settings: PlatformSettings,
    idempotency_keys: Sequence[str],
) -> list[PlatformRequest] | None:
    if platform.id != PLATFORM_ID:
        return None
    options = WorkdayOptions.from_settings(settings)
    return map_records(records, idempotency_keys, options)


async def _authenticate_soap(settings: PlatformSettings) -> Credentials:
    # The UsernameToken (nonce, Created, digest) is built per send, so this
    # only checks that both secrets exist.
    return Credentials(
        kind="wsse_username_token",
        username=settings.secret("username"),
        password=settings.secret("password"),
    )


@hookimpl
def impactin_authenticate(
    platform: PlatformInfo, settings: PlatformSettings, context: AuthContext
) -> Awaitable[Credentials] | None:
    if platform.id != PLATFORM_ID:
        return None
    options = WorkdayOptions.from_settings(settings)
    if options.protocol == "soap":
        return _authenticate_soap(settings)
    from ._rest import authenticate_rest

    return authenticate_rest(settings, options, context)


@hookimpl
def impactin_send(
    platform: PlatformInfo,
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
) -> Awaitable[SendOutcome] | None:
    if platform.id != PLATFORM_ID:
        return None
    options = WorkdayOptions.from_settings(context.settings)
    if options.protocol == "soap":
        from ._soap import send_soap

        return send_soap(request, credentials, context, options)
    from ._rest import send_rest

    return send_rest(request, credentials, context, options)


@hookimpl
def impactin_verify_webhook(
    platform: PlatformInfo,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    options: Mapping[str, Any],
) -> WebhookEvent | None:
    """Verify an inbound event with the tenant's ``webhook_scheme`` option.

    Raises ``ConfigError`` when the option is missing, because Workday has
    no published scheme to fall back on.
    """
    if platform.id != PLATFORM_ID:
        return None
    from impactin_core.webhooks import verify_with_scheme

    return verify_with_scheme(
        _webhook_scheme(options),
        platform=PLATFORM_ID,
        headers=headers,
        body=body,
        secrets=secrets,
        options=options,
    )


def _webhook_scheme(options: Mapping[str, Any]) -> str:
    from impactin_core.webhooks import SCHEMES

    # The hook receives no tenant, so the key names it as NAME.
    key = f"tenants.NAME.platforms.{PLATFORM_ID}.options.webhook_scheme"
    scheme = options.get("webhook_scheme")
    if scheme is None:
        message = (
            f"Workday webhooks cannot be verified: {key} is not set, and Workday "
            "publishes no signature scheme for outbound webhooks. Set it to the "
            f"scheme your sender uses, one of: {', '.join(SCHEMES)} (impactin "
            "webhooks verify takes it as --scheme)."
        )
        raise ConfigError(message, key=key)
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        message = (
            f"Workday option {key} is {scheme!r}; set it to one of: "
            f"{', '.join(SCHEMES)}."
        )
        raise ConfigError(message, key=key)
    return scheme
