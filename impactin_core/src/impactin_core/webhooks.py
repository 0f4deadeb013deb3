"""Signature verification and replay protection for inbound webhooks.

Three signature schemes are supported, each an HMAC-SHA256 over the raw body
bytes as received (never over re-serialized JSON):

``standard_webhooks``
    Headers ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
    (space-separated ``v1,<base64>`` entries) over ``id.timestamp.body``. The
    key is the base64-decoded secret after its ``whsec_`` prefix.
``github``
    ``X-Hub-Signature-256: sha256=<hex>`` over the body. It carries no
    timestamp.
``stripe``
    ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`` over ``t.body``.

Every failure raises ``WebhookRejected`` with a stable ``reason``. No message
contains a secret, a signature or the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import inspect
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Protocol

from ._config import toml_repr
from ._errors import ConfigError, WebhookRejected
from ._models import WebhookEvent

__all__ = [
    "DEFAULT_FUTURE_TOLERANCE",
    "DEFAULT_TOLERANCE",
    "MAX_HEADER_LENGTH",
    "SCHEMES",
    "MemoryReplayStore",
    "ReplayStore",
    "sign_github",
    "sign_standard_webhooks",
    "sign_stripe",
    "verify_with_scheme",
]

logger = logging.getLogger("impactin.webhooks")

#: Maximum age in seconds of a signed timestamp, unless the option
#: ``tolerance`` overrides it. Standard Webhooks and Stripe both use five minutes.
DEFAULT_TOLERANCE = 300.0

#: Maximum seconds a signed timestamp may lie ahead of the local clock, unless
#: the option ``future_tolerance`` overrides it. Standard Webhooks allows five
#: minutes, but this project is stricter because a sender has no reason to
#: sign ahead of time beyond clock drift.
DEFAULT_FUTURE_TOLERANCE = 30.0

#: Maximum length, in characters, of a header value that verification reads.
#: A longer value is rejected as malformed before any parsing.
MAX_HEADER_LENGTH = 4096

_SHA256_SIZE = 32
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_UNIX_TIME = re.compile(r"[0-9]{1,12}")
_STANDARD_SECRET_PREFIX = "whsec_"


class ReplayStore(Protocol):
    """Storage of the event ids already accepted, per tenant and platform."""

    def seen(
        self, platform: str, event_id: str, now: float, *, tenant: str = ""
    ) -> bool:
        """Record the event id and return True if it was already recorded.

        Ids are kept apart per ``tenant`` and ``platform``, so two tenants of
        one platform whose senders reuse an id do not reject each other's
        events. ``""`` is the tenant of callers that name none. The check and
        the write must be one atomic step, so two concurrent deliveries of one
        event cannot both see False.
        """
        ...


class MemoryReplayStore:
    """A thread-safe ``ReplayStore`` in process memory.

    An id is remembered for ``retention`` seconds after it was first seen and
    then forgotten. Keep ``retention`` above the tolerance of every scheme in
    use, because a replay older than that is rejected as stale anyway. The
    GitHub style has no timestamp, so its replays are caught only within
    ``retention``.
    """

    def __init__(self, retention: float = 86_400.0) -> None:
        # nan compares false with everything, so retention <= 0 alone would
        # pass it, and ids would never be forgotten.
        if not math.isfinite(retention) or retention <= 0:
            raise ValueError(
                "retention must be a finite positive number of seconds, got "
                f"{retention!r}."
            )
        self._retention = retention
        self._first_seen: dict[tuple[str, str, str], float] = {}
        self._expiries: list[tuple[float, tuple[str, str, str]]] = []
        self._lock = threading.Lock()

    def seen(
        self, platform: str, event_id: str, now: float, *, tenant: str = ""
    ) -> bool:
        key = (tenant, platform, event_id)
        with self._lock:
            self._forget_expired(now)
            if key in self._first_seen:
                return True
            self._first_seen[key] = now
            heapq.heappush(self._expiries, (now + self._retention, key))
            return False

    def __len__(self) -> int:
        with self._lock:
            return len(self._first_seen)

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            self._first_seen.pop(key, None)


# --- Signing -----------------------------------------------------------------


def sign_standard_webhooks(
    secret: str, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Sign ``body`` the Standard Webhooks way and return the three headers."""
    key = _standard_webhooks_key(secret, position=1)
    signature = _standard_webhooks_digest(key, msg_id, str(timestamp), body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(signature).decode("ascii"),
    }


def sign_github(secret: str, body: bytes) -> dict[str, str]:
    """Sign ``body`` the GitHub way and return the ``X-Hub-Signature-256`` header."""
    digest = _hmac_sha256(_utf8_key(secret, position=1), body)
    return {"X-Hub-Signature-256": "sha256=" + digest.hex()}


def sign_stripe(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Sign ``body`` the Stripe way and return the ``Stripe-Signature`` header."""
    signed = str(timestamp).encode("ascii") + b"." + body
    digest = _hmac_sha256(_utf8_key(secret, position=1), signed)
    return {"Stripe-Signature": f"t={timestamp},v1={digest.hex()}"}


# --- Verification ------------------------------------------------------------


def verify_with_scheme(
    scheme: str,
    *,
    platform: str,
    headers: Mapping[str, str] | Mapping[bytes, bytes],
    body: bytes,
    secrets: Sequence[str],
    options: Mapping[str, Any],
    now: float | None = None,
    replay_store: ReplayStore | None = None,
    tenant: str = "",
) -> WebhookEvent:
    """Verify an inbound event signed with ``scheme`` and return it parsed.

    ``body`` must be the raw bytes received, and a bytearray or memoryview
    is copied to bytes. Header names and values may be ``str`` or ``bytes``,
    and bytes are decoded as ISO-8859-1. Each of ``secrets`` is tried, so an
    old and a new secret can both be active during rotation. ``options`` may
    set ``tolerance`` (maximum age in seconds), ``future_tolerance`` (maximum
    seconds ahead of ``now``) and, for ``github``, ``id_header``; other keys
    are ignored. The replay check runs only after the signature and the
    timestamp are valid, so a forged request never uses up an id.
    ``replay_store`` keeps the ids of each ``tenant`` apart, and ``""`` (the
    default) is one shared namespace per platform.

    Raises ``WebhookRejected`` when the request fails verification,
    ``ValueError`` for an unknown scheme or a ``now`` that is not finite,
    ``TypeError`` for a ``str`` body, an argument of another wrong type or a
    tenant given to a replay store whose ``seen`` takes none, and
    ``ConfigError`` for unusable secrets or options. Each rejection adds one
    to the ``impact_in_webhook_verification_failures_total`` counter of the
    global OpenTelemetry meter provider, labelled with the platform and the
    reason.
    """
    try:
        return _verify(
            scheme,
            platform=platform,
            headers=headers,
            body=_body_bytes(body),
            secrets=secrets,
            options=options,
            now=_current_time(now),
            replay=_ReplayCheck.create(replay_store, tenant),
        )
    except WebhookRejected as exc:
        _count_rejection(platform, exc.reason)
        raise


def _count_rejection(platform: str, reason: str) -> None:
    global _rejections
    if _rejections is None:
        # Imported here so that verifying needs no OpenTelemetry import
        # until the first rejection.
        from opentelemetry import metrics

        _rejections = metrics.get_meter("impactin").create_counter(
            "impact_in_webhook_verification_failures_total",
            description="Inbound webhook events rejected, by reason",
        )
    _rejections.add(1, {"platform": platform, "reason": reason})


_rejections: Any = None


def _verify(
    scheme: str,
    *,
    platform: str,
    headers: Mapping[str, str] | Mapping[bytes, bytes],
    body: bytes,
    secrets: Sequence[str],
    options: Mapping[str, Any],
    now: float,
    replay: _ReplayCheck | None,
) -> WebhookEvent:
    verifier = _VERIFIERS.get(scheme)
    if verifier is None:
        valid = ", ".join(SCHEMES)
        message = f"Unknown webhook scheme {scheme!r}. Valid schemes: {valid}."
        raise ValueError(message)

    keys = _secret_keys(scheme, secrets)
    limits = _TimeLimits.from_options(options)
    lowered = _lower_headers(headers)
    event_id, timestamp = verifier(lowered, body, keys, options)

    if timestamp is not None:
        limits.check(timestamp, now)
    payload = _parse_payload(body)
    if event_id is None and scheme == "stripe":
        event_id = _stripe_event_id(payload)
    if replay is not None and event_id is not None:
        replay.check(platform, event_id, now)
    return WebhookEvent(
        platform=platform, event_id=event_id, timestamp=timestamp, payload=payload
    )


# A verifier checks the signature and returns the event id and timestamp it
# found in the headers, either of which may be None.
_Verifier = Callable[
    [Mapping[str, str], bytes, Sequence[bytes], Mapping[str, Any]],
    tuple[str | None, int | None],
]


def _verify_standard_webhooks(
    headers: Mapping[str, str],
    body: bytes,
    keys: Sequence[bytes],
    options: Mapping[str, Any],
) -> tuple[str | None, int | None]:
    msg_id = _required_header(headers, "webhook-id")
    timestamp_text = _required_header(headers, "webhook-timestamp")
    signature_text = _required_header(headers, "webhook-signature")
    timestamp = _parse_unix_time(timestamp_text, "webhook-timestamp")
    candidates = _parse_standard_signatures(signature_text)

    for position, key in enumerate(keys, start=1):
        expected = _standard_webhooks_digest(key, msg_id, timestamp_text, body)
        if _matches_any(expected, candidates):
            _log_match(position, len(keys))
            return msg_id, timestamp
    _reject("bad_signature", _no_match_message("webhook-signature", len(keys)))


def _verify_github(
    headers: Mapping[str, str],
    body: bytes,
    keys: Sequence[bytes],
    options: Mapping[str, Any],
) -> tuple[str | None, int | None]:
    signature_text = _required_header(headers, "x-hub-signature-256")
    prefix, _, hex_digest = signature_text.partition("=")
    if prefix != "sha256" or not _HEX_DIGEST.fullmatch(hex_digest):
        message = "The X-Hub-Signature-256 header must be 'sha256=' and 64 hex digits."
        _reject("malformed_header", message)
    candidate = bytes.fromhex(hex_digest)

    for position, key in enumerate(keys, start=1):
        if hmac.compare_digest(_hmac_sha256(key, body), candidate):
            _log_match(position, len(keys))
            return _github_event_id(headers, options), None
    _reject("bad_signature", _no_match_message("X-Hub-Signature-256", len(keys)))


def _verify_stripe(
    headers: Mapping[str, str],
    body: bytes,
    keys: Sequence[bytes],
    options: Mapping[str, Any],
) -> tuple[str | None, int | None]:
    signature_text = _required_header(headers, "stripe-signature")
    timestamp_text, candidates = _parse_stripe_header(signature_text)
    timestamp = _parse_unix_time(timestamp_text, "Stripe-Signature t")
    signed = timestamp_text.encode("ascii") + b"." + body

    for position, key in enumerate(keys, start=1):
        if _matches_any(_hmac_sha256(key, signed), candidates):
            _log_match(position, len(keys))
            return None, timestamp
    _reject("bad_signature", _no_match_message("Stripe-Signature", len(keys)))


_VERIFIERS: dict[str, _Verifier] = {
    "github": _verify_github,
    "standard_webhooks": _verify_standard_webhooks,
    "stripe": _verify_stripe,
}

#: Names accepted by ``verify_with_scheme``, sorted.
SCHEMES: tuple[str, ...] = tuple(sorted(_VERIFIERS))


# --- Header parsing ----------------------------------------------------------


def _lower_headers(
    headers: Mapping[str, str] | Mapping[bytes, bytes],
) -> dict[str, str]:
    """Return the headers keyed by lower-case name.

    Two names that differ only in case with different values are rejected,
    because there is no safe way to choose between them. A mapping whose
    ``items()`` yields one name more than once, such as Starlette's
    ``Headers``, is checked the same way.
    """
    items = getattr(headers, "items", None)
    if not callable(items):
        message = (
            "headers must be a mapping of header names to values, such as the "
            f"request.headers of the web framework, not {type(headers).__name__}."
        )
        raise TypeError(message)
    lowered: dict[str, str] = {}
    for name, value in items():
        key = _header_text(name, "name").lower()
        text = _header_text(value, f"value of {key}")
        if key in lowered and lowered[key] != text:
            message = f"The {key} header appears twice with different values."
            _reject("malformed_header", message)
        lowered[key] = text
    return lowered


def _header_text(text: object, part: str) -> str:
    """Return a header name or value as ``str``, decoding bytes as ISO-8859-1.

    ISO-8859-1 maps every byte to one character, so decoding never fails, and
    a non-ASCII byte in a header that verification reads is still rejected
    as malformed.
    """
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("latin-1")
    message = f"A header {part} is {type(text).__name__}; pass str or bytes."
    raise TypeError(message)


def _required_header(headers: Mapping[str, str], name: str) -> str:
    """Return the header value, stripped, after checking its size and characters."""
    value = headers.get(name)
    if value is None:
        _reject("missing_header", f"The {name} header is missing.")
    if len(value) > MAX_HEADER_LENGTH:
        message = (
            f"The {name} header is {len(value)} characters long. "
            f"The maximum is {MAX_HEADER_LENGTH}."
        )
        _reject("malformed_header", message)
    if not value.isascii():
        _reject("malformed_header", f"The {name} header contains non-ASCII characters.")
    value = value.strip()
    if not value:
        _reject("malformed_header", f"The {name} header is empty.")
    if not value.isprintable():
        message = f"The {name} header contains control characters."
        _reject("malformed_header", message)
    return value


def _parse_unix_time(text: str, name: str) -> int:
    if not _UNIX_TIME.fullmatch(text):
        message = f"The {name} value is not a Unix time in whole seconds."
        _reject("malformed_header", message)
    return int(text)


def _parse_standard_signatures(text: str) -> list[bytes]:
    """Return the decoded ``v1`` signatures, skipping entries of other versions."""
    candidates: list[bytes] = []
    for entry in text.split():
        version, comma, encoded = entry.partition(",")
        if not comma or not version:
            message = (
                "A webhook-signature entry is not of the form 'version,signature'."
            )
            _reject("malformed_header", message)
        if version != "v1":
            continue
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            _reject("malformed_header", "A v1 webhook-signature is not valid base64.")
        if len(decoded) != _SHA256_SIZE:
            size = _SHA256_SIZE
            message = f"A v1 webhook-signature is not a {size}-byte HMAC-SHA256."
            _reject("malformed_header", message)
        candidates.append(decoded)
    if not candidates:
        message = "The webhook-signature header has no v1 signature to verify."
        _reject("malformed_header", message)
    return candidates


def _parse_stripe_header(text: str) -> tuple[str, list[bytes]]:
    """Return the ``t`` value and the decoded ``v1`` signatures.

    Entries with other keys, such as ``v0``, are skipped.
    """
    timestamps: list[str] = []
    candidates: list[bytes] = []
    for item in text.split(","):
        key, equals, value = item.strip().partition("=")
        if not equals:
            message = "A Stripe-Signature entry is not of the form 'key=value'."
            _reject("malformed_header", message)
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            if not _HEX_DIGEST.fullmatch(value):
                message = "A Stripe-Signature v1 value is not 64 hex digits."
                _reject("malformed_header", message)
            candidates.append(bytes.fromhex(value))
    if len(timestamps) != 1:
        count = len(timestamps)
        message = f"The Stripe-Signature header has {count} t entries, not exactly 1."
        _reject("malformed_header", message)
    if not candidates:
        _reject("malformed_header", "The Stripe-Signature header has no v1 signature.")
    return timestamps[0], candidates


def _github_event_id(
    headers: Mapping[str, str], options: Mapping[str, Any]
) -> str | None:
    """Return the delivery id GitHub sends in ``X-GitHub-Delivery``, if any.

    The id is not covered by the signature, so replay protection through it
    catches redeliveries but not an attacker who changes the id.
    """
    name = options.get("id_header", "X-GitHub-Delivery")
    if not isinstance(name, str):
        raise ConfigError(
            "The id_header option must be a header name.", key="id_header"
        )
    if name.lower() not in headers:
        return None
    return _required_header(headers, name.lower())


def _stripe_event_id(payload: Any) -> str | None:
    """Return the ``id`` field of a Stripe-style event body, which is signed."""
    if isinstance(payload, dict):
        event_id = payload.get("id")
        if isinstance(event_id, str) and event_id:
            return event_id
    return None


# --- Secrets, digests and limits ---------------------------------------------


def _secret_keys(scheme: str, secrets: Sequence[str]) -> list[bytes]:
    """Return the HMAC key of each secret, in the order given."""
    if isinstance(secrets, str):
        message = "secrets must be a sequence of secrets, not a single string."
        raise ConfigError(message, key="secrets")
    if not secrets:
        raise ConfigError("No webhook secret is configured.", key="secrets")
    if scheme == "standard_webhooks":
        return [
            _standard_webhooks_key(secret, position)
            for position, secret in enumerate(secrets, start=1)
        ]
    return [
        _utf8_key(secret, position) for position, secret in enumerate(secrets, start=1)
    ]


def _standard_webhooks_key(secret: str, position: int) -> bytes:
    """Decode a Standard Webhooks secret, whose ``whsec_`` prefix is optional."""
    encoded = secret.removeprefix(_STANDARD_SECRET_PREFIX)
    # Some senders drop the base64 padding, so restore it before decoding.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        message = (
            f"Webhook secret {position} is not a Standard Webhooks secret: "
            "expected 'whsec_' followed by non-empty base64."
        )
        raise ConfigError(message, key="secrets") from None
    return key


def _utf8_key(secret: str, position: int) -> bytes:
    if not secret:
        raise ConfigError(f"Webhook secret {position} is empty.", key="secrets")
    return secret.encode("utf-8")


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _standard_webhooks_digest(
    key: bytes, msg_id: str, timestamp_text: str, body: bytes
) -> bytes:
    signed = f"{msg_id}.{timestamp_text}.".encode() + body
    return _hmac_sha256(key, signed)


def _matches_any(expected: bytes, candidates: Sequence[bytes]) -> bool:
    # Compare with every candidate, without stopping early, in constant time each.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    return any(matches)


class _TimeLimits:
    """How far a signed timestamp may lie behind and ahead of the local clock."""

    def __init__(self, tolerance: float, future_tolerance: float) -> None:
        self.tolerance = tolerance
        self.future_tolerance = future_tolerance

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> _TimeLimits:
        tolerance = _seconds_option(options, "tolerance", DEFAULT_TOLERANCE)
        future = _seconds_option(options, "future_tolerance", DEFAULT_FUTURE_TOLERANCE)
        return cls(tolerance, future)

    def check(self, timestamp: int, now: float) -> None:
        age = now - timestamp
        if age > self.tolerance:
            message = (
                f"The webhook timestamp is {age:.0f} s old. "
                f"The maximum age is {self.tolerance:g} s."
            )
            _reject("stale_timestamp", message)
        if -age > self.future_tolerance:
            message = (
                f"The webhook timestamp is {-age:.0f} s in the future. The maximum "
                f"is {self.future_tolerance:g} s. Check the clocks of both hosts."
            )
            _reject("future_timestamp", message)


def _seconds_option(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    # nan compares false with everything, so a nan tolerance would turn the
    # age check off, and so would inf.
    if not is_number or not math.isfinite(value) or value < 0:
        message = (
            f"The webhook option {name} is {toml_repr(value)}; set it to a finite "
            "number of seconds, 0 or more."
        )
        raise ConfigError(message, key=name)
    return float(value)


# --- Payload and replay ------------------------------------------------------


def _parse_payload(body: bytes) -> Any:
    """Return the body parsed as JSON, else as UTF-8 text, else the bytes."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


def _body_bytes(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        message = (
            "body is str; pass the raw request body as bytes, exactly as "
            "received, because encoding decoded text again can change the "
            "signed bytes."
        )
        raise TypeError(message)
    message = f"body must be the raw request body as bytes, not {type(body).__name__}."
    raise TypeError(message)


def _current_time(now: object) -> float:
    if now is None:
        return time.time()
    if not isinstance(now, (int, float)) or isinstance(now, bool):
        message = f"now must be a Unix time in seconds, not {type(now).__name__}."
        raise TypeError(message)
    # A nan clock compares false with every limit, so it would accept a
    # timestamp of any age, and an infinite one rejects every event.
    if not math.isfinite(now):
        message = f"now must be a finite Unix time in seconds, not {now!r}."
        raise ValueError(message)
    return float(now)


class _ReplayCheck:
    """A replay store and the tenant whose event ids it checks."""

    def __init__(self, store: ReplayStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    @classmethod
    def create(cls, store: ReplayStore | None, tenant: object) -> _ReplayCheck | None:
        """Check the tenant and that ``store`` can take it, before any parsing."""
        if not isinstance(tenant, str):
            message = (
                f"tenant must be a tenant name (str), not {type(tenant).__name__}."
            )
            raise TypeError(message)
        if store is None:
            return None
        if tenant and not _takes_tenant(store):
            message = (
                f"The replay store {type(store).__name__} has a seen() method "
                "without the tenant keyword, so it cannot keep the event ids of "
                "tenants apart. Add a keyword parameter tenant: str = '' to "
                "seen() and store the ids per tenant, or pass no tenant."
            )
            raise TypeError(message)
        return cls(store, tenant)

    def check(self, platform: str, event_id: str, now: float) -> None:
        if self.tenant:
            replayed = self.store.seen(platform, event_id, now, tenant=self.tenant)
        else:
            # Called without the keyword, so a store written for the earlier
            # protocol, whose seen() takes no tenant, keeps working.
            replayed = self.store.seen(platform, event_id, now)
        if replayed:
            message = (
                f"The {platform} webhook event was already accepted, so this "
                "is a replay."
            )
            _reject("replayed", message)


def _takes_tenant(store: ReplayStore) -> bool:
    try:
        parameters = inspect.signature(store.seen).parameters.values()
    except (TypeError, ValueError):
        # No signature to read, as for some builtins: let the call decide.
        return True
    return any(
        parameter.name == "tenant" or parameter.kind is parameter.VAR_KEYWORD
        for parameter in parameters
    )


def _log_match(position: int, count: int) -> None:
    # The matched position shows an operator during rotation whether the old
    # secret is still in use. The secret itself is never logged.
    logger.debug("Webhook signature matched secret %s of %s", position, count)


def _no_match_message(header: str, count: int) -> str:
    return (
        f"The {header} signature matches none of the {count} configured secrets. "
        "Check that the sender and this host use the same secret."
    )


def _reject(reason: str, message: str) -> NoReturn:
    raise WebhookRejected(message, reason=reason)
