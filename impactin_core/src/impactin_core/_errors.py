"""The exception tree of impactin.

::

    ImpactInError
    ├── ConfigError (ValueError)
    ├── RecordInvalid (ValueError)
    ├── UnsupportedKind (ValueError)
    ├── IdempotencyConflict (ValueError)
    ├── PersonalDataLeak
    ├── PluginError
    ├── StoreError
    ├── WebhookRejected
    └── DeliveryError
        ├── AuthenticationError
        ├── PermanentError
        └── RetryableError
            ├── RateLimited
            └── CircuitOpen

Every error carries its context (platform, tenant, delivery id) as
attributes. No message ever contains a secret, a token or a personal value:
errors built from a platform's response pass the text through
``sanitize_text`` first.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "AuthenticationError",
    "CircuitOpen",
    "ConfigError",
    "DeliveryError",
    "IdempotencyConflict",
    "ImpactInError",
    "PermanentError",
    "PersonalDataLeak",
    "PluginError",
    "RateLimited",
    "RecordInvalid",
    "RetryableError",
    "StoreError",
    "UnsupportedKind",
    "WebhookRejected",
]


class ImpactInError(Exception):
    """Base class of every error that impactin raises on purpose."""


class ConfigError(ImpactInError, ValueError):
    """A setting is missing or malformed; ``key`` names it."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class RecordInvalid(ImpactInError, ValueError):
    """An input record fails validation; ``field`` names the first bad field."""

    def __init__(
        self, message: str, *, field: str | None = None, source_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.source_id = source_id


class UnsupportedKind(ImpactInError, ValueError):
    """No configured platform accepts records of this kind."""

    def __init__(self, message: str, *, kind: str, tenant: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.tenant = tenant


class IdempotencyConflict(ImpactInError, ValueError):
    """An idempotency key was seen before with different content."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class PersonalDataLeak(ImpactInError):
    """The leak scan found personal data the platform does not need.

    ``findings`` lists ``(field_path, data_kind)`` pairs, never the values.
    """

    def __init__(
        self, message: str, *, findings: list[tuple[str, str]], platform: str
    ) -> None:
        super().__init__(message)
        self.findings = findings
        self.platform = platform


class PluginError(ImpactInError):
    """A connector plugin is broken, duplicated or incompatible."""

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class StoreError(ImpactInError):
    """The state store cannot be opened or has an unknown schema."""


class WebhookRejected(ImpactInError):
    """An inbound event failed verification; ``reason`` is a stable code.

    Reasons: ``missing_header``, ``malformed_header``, ``bad_signature``,
    ``stale_timestamp``, ``future_timestamp``, ``replayed``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DeliveryError(ImpactInError):
    """A call to a platform failed; subclasses tell whether to retry."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        platform: str | None = None,
        tenant: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.platform = platform
        self.tenant = tenant
        self.status_code = status_code


class AuthenticationError(DeliveryError):
    """The platform rejected the credentials.

    ``refreshable`` is False for credentials that a new request cannot
    renew (a static password, an API key), so the runtime does not send the
    call again with ``force_refresh``.
    """

    def __init__(
        self,
        message: str,
        *,
        platform: str | None = None,
        tenant: str | None = None,
        status_code: int | None = None,
        refreshable: bool = True,
    ) -> None:
        super().__init__(
            message, platform=platform, tenant=tenant, status_code=status_code
        )
        self.refreshable = refreshable


class PermanentError(DeliveryError):
    """The platform rejected the request itself; repeating it cannot help."""


class RetryableError(DeliveryError):
    """A transient failure: throttling, a 5xx, a timeout or a lost connection.

    ``retry_after`` is the delay in seconds the platform asked for, if any.
    ``sent`` is False when the request certainly never reached the platform,
    which makes even a non-idempotent call safe to repeat.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        platform: str | None = None,
        tenant: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(
            message, platform=platform, tenant=tenant, status_code=status_code
        )
        self.retry_after = checked_retry_after(retry_after)
        self.sent = sent


#: The maximum delay a ``Retry-After`` value can set, in seconds (7 days).
#: A later date would keep a delivery pending for years, and a huge number
#: would overflow the conversion of its due time to a date.
MAX_RETRY_AFTER = 7 * 24 * 3600.0


def checked_retry_after(value: Any) -> float | None:
    """Return ``value`` as seconds between 0 and ``MAX_RETRY_AFTER``, or None.

    Raises TypeError for a value that is not a number (a header's text, for
    one) and ValueError for nan, so a connector's mistake shows where it is
    made instead of stopping the runtime's retry loop later.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        message = (
            f"retry_after must be a number of seconds or None, not "
            f"{type(value).__name__}; parse a Retry-After header with "
            "impactin_core.parse_retry_after."
        )
        raise TypeError(message)
    if math.isnan(value):
        message = (
            "retry_after is nan; pass a number of seconds, or None to let the "
            "runtime back off."
        )
        raise ValueError(message)
    return min(max(0.0, float(value)), MAX_RETRY_AFTER)


class RateLimited(RetryableError):
    """The platform returned 429 (or its throttling equivalent)."""


class CircuitOpen(RetryableError):
    """The circuit breaker for this tenant and platform is open."""

    def __init__(self, message: str, *, platform: str, tenant: str) -> None:
        super().__init__(message, platform=platform, tenant=tenant, sent=False)
