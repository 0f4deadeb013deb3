"""Platform declaration of the Goodera connector."""

from __future__ import annotations

from impactin_core import PlatformInfo, RateLimit, RecordKind

__all__ = ["PLATFORM_ID", "PLATFORM_INFO"]

PLATFORM_ID = "goodera"

# NOTE: the ignores work around the core's untyped attrs converters
# (``converter=frozenset``), which mypy reads as ``Iterable[_T_co]``.
PLATFORM_INFO = PlatformInfo(
    id=PLATFORM_ID,
    name="Goodera",
    # Goodera's write API covers volunteering only: events, registrations
    # and participation. It has no donation endpoint.
    kinds=frozenset({RecordKind.VOLUNTEER_TIME}),  # type: ignore[arg-type]
    auth_kinds=("api_key",),  # type: ignore[arg-type]
    transports=("rest",),  # type: ignore[arg-type]
    # No batch endpoint is published, so one record per request.
    batch_limit=1,
    # NOTE: Goodera publishes no rate limit. 30 sends a minute (each send is
    # up to three calls) is a conservative guess, not a vendor figure.
    rate_limit=RateLimit(30, 60.0),
    # Volunteers are identified by email, the only personal field sent.
    personal_fields=frozenset({"employee_email"}),  # type: ignore[arg-type]
    # Goodera publishes no webhook signature scheme; tenants may choose one
    # with the webhook_scheme option.
    webhook_scheme="standard_webhooks",
    credential_names=frozenset({"api_key"}),  # type: ignore[arg-type]
    honours_idempotency_key=False,
    simulator="impactin_goodera.simulator:create_simulator",
)
