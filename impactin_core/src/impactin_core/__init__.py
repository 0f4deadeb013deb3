"""impactin: deliver CSR records to the platforms companies use.

Names are imported on first use (PEP 562), so that importing the package,
and starting the ``impactin`` command, does not load httpx, SQLite or the
OpenTelemetry API until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._audit import AuditLog, DeliveryQuery
    from ._config import (
        RUNTIME_OPTIONS,
        Config,
        EnvSecrets,
        SecretsProvider,
        check_option_names,
        load_config,
        plain_http_host,
    )
    from ._context import AuthContext, SendContext
    from ._errors import (
        AuthenticationError,
        CircuitOpen,
        ConfigError,
        DeliveryError,
        IdempotencyConflict,
        ImpactInError,
        PermanentError,
        PersonalDataLeak,
        PluginError,
        RateLimited,
        RecordInvalid,
        RetryableError,
        StoreError,
        UnsupportedKind,
        WebhookRejected,
    )
    from ._http import parse_retry_after, raise_for_response, request_with_mapping
    from ._input import ColumnMapping, ParsedRow, RejectedRow, read_records
    from ._logging import PersonalDataFilter, filter_handler
    from ._loops import drop_closed_loops
    from ._models import (
        CORE_API_VERSION,
        PERSONAL_FIELDS,
        Credentials,
        DeliveryStatus,
        ImpactRecord,
        PlatformInfo,
        PlatformRequest,
        PlatformSettings,
        RateLimit,
        RecordKind,
        SendOutcome,
        WebhookEvent,
    )
    from ._pipeline import Runtime
    from ._redaction import RedactionPolicy, leak_scan, pseudonymize, sanitize_text
    from ._stats import PlatformStats, RunReport
    from ._store import owner_alive, process_owner
    from ._tokens import (
        MemoryTokenStore,
        OAuthToken,
        RefreshTokenRejected,
        TokenCache,
        TokenStore,
    )
    from .hookspecs import hookimpl
    from .webhooks import (
        MemoryReplayStore,
        ReplayStore,
        sign_github,
        sign_standard_webhooks,
        sign_stripe,
        verify_with_scheme,
    )

_EXPORTS = {
    "._audit": ("AuditLog", "DeliveryQuery"),
    "._config": (
        "RUNTIME_OPTIONS",
        "Config",
        "EnvSecrets",
        "SecretsProvider",
        "check_option_names",
        "load_config",
        "plain_http_host",
    ),
    "._context": ("AuthContext", "SendContext"),
    "._errors": (
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
    ),
    "._http": ("parse_retry_after", "raise_for_response", "request_with_mapping"),
    "._input": ("ColumnMapping", "ParsedRow", "RejectedRow", "read_records"),
    "._logging": ("PersonalDataFilter", "filter_handler"),
    "._loops": ("drop_closed_loops",),
    "._models": (
        "CORE_API_VERSION",
        "PERSONAL_FIELDS",
        "Credentials",
        "DeliveryStatus",
        "ImpactRecord",
        "PlatformInfo",
        "PlatformRequest",
        "PlatformSettings",
        "RateLimit",
        "RecordKind",
        "SendOutcome",
        "WebhookEvent",
    ),
    "._pipeline": ("Runtime",),
    "._redaction": ("RedactionPolicy", "leak_scan", "pseudonymize", "sanitize_text"),
    "._stats": ("PlatformStats", "RunReport"),
    "._store": ("owner_alive", "process_owner"),
    "._tokens": (
        "MemoryTokenStore",
        "OAuthToken",
        "RefreshTokenRejected",
        "TokenCache",
        "TokenStore",
    ),
    ".hookspecs": ("hookimpl",),
    ".webhooks": (
        "MemoryReplayStore",
        "ReplayStore",
        "sign_github",
        "sign_standard_webhooks",
        "sign_stripe",
        "verify_with_scheme",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "CORE_API_VERSION",
    "PERSONAL_FIELDS",
    "RUNTIME_OPTIONS",
    "AuditLog",
    "AuthContext",
    "AuthenticationError",
    "CircuitOpen",
    "ColumnMapping",
    "Config",
    "ConfigError",
    "Credentials",
    "DeliveryError",
    "DeliveryQuery",
    "DeliveryStatus",
    "EnvSecrets",
    "IdempotencyConflict",
    "ImpactInError",
    "ImpactRecord",
    "MemoryReplayStore",
    "MemoryTokenStore",
    "OAuthToken",
    "ParsedRow",
    "PermanentError",
    "PersonalDataFilter",
    "PersonalDataLeak",
    "PlatformInfo",
    "PlatformRequest",
    "PlatformSettings",
    "PlatformStats",
    "PluginError",
    "RateLimit",
    "RateLimited",
    "RecordInvalid",
    "RecordKind",
    "RedactionPolicy",
    "RefreshTokenRejected",
    "RejectedRow",
    "ReplayStore",
    "RetryableError",
    "RunReport",
    "Runtime",
    "SecretsProvider",
    "SendContext",
    "SendOutcome",
    "StoreError",
    "TokenCache",
    "TokenStore",
    "UnsupportedKind",
    "WebhookEvent",
    "WebhookRejected",
    "check_option_names",
    "drop_closed_loops",
    "filter_handler",
    "hookimpl",
    "leak_scan",
    "load_config",
    "owner_alive",
    "parse_retry_after",
    "plain_http_host",
    "process_owner",
    "pseudonymize",
    "raise_for_response",
    "read_records",
    "request_with_mapping",
    "sanitize_text",
    "sign_github",
    "sign_standard_webhooks",
    "sign_stripe",
    "verify_with_scheme",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'impactin_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The module's own attributes, and the public names not loaded yet.
    return sorted({*globals(), *__all__})
