"""impactin: deliver CSR records to the platforms companies use."""

from __future__ import annotations

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
from ._redaction import RedactionPolicy, leak_scan, pseudonymize, sanitize_text
from ._tokens import MemoryTokenStore, OAuthToken, TokenCache, TokenStore
from .hookspecs import hookimpl

__all__ = [
    "CORE_API_VERSION",
    "PERSONAL_FIELDS",
    "AuthContext",
    "AuthenticationError",
    "CircuitOpen",
    "ConfigError",
    "Credentials",
    "DeliveryError",
    "DeliveryStatus",
    "IdempotencyConflict",
    "ImpactInError",
    "ImpactRecord",
    "MemoryTokenStore",
    "OAuthToken",
    "PermanentError",
    "PersonalDataLeak",
    "PlatformInfo",
    "PlatformRequest",
    "PlatformSettings",
    "PluginError",
    "RateLimit",
    "RateLimited",
    "RecordInvalid",
    "RecordKind",
    "RedactionPolicy",
    "RetryableError",
    "SendContext",
    "SendOutcome",
    "StoreError",
    "TokenCache",
    "TokenStore",
    "UnsupportedKind",
    "WebhookEvent",
    "WebhookRejected",
    "hookimpl",
    "leak_scan",
    "parse_retry_after",
    "pseudonymize",
    "raise_for_response",
    "request_with_mapping",
    "sanitize_text",
]
