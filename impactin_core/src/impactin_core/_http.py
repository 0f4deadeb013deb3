"""HTTP helpers that connectors share: error mapping and ``Retry-After``."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import httpx

from ._errors import (
    AuthenticationError,
    PermanentError,
    RateLimited,
    RetryableError,
)
from ._redaction import sanitize_text

__all__ = [
    "parse_retry_after",
    "raise_for_response",
    "request_with_mapping",
]

_DELTA_SECONDS = re.compile(r"^\d+$")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the delay in seconds that a ``Retry-After`` value asks for.

    Accepts delta-seconds (``120``) and HTTP dates in any zone form that
    ``email.utils`` parses (``GMT``, ``+0200``, ``-0000``), compared in UTC.
    Returns None for an empty, negative, fractional or unparseable value,
    so the caller falls back to its own backoff. ``now`` is a Unix time.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.match(text):
        return float(int(text))
    if text[0] in "+-" or text[0].isdigit():
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always in GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=dt.timezone.utc)
    delay = when.timestamp() - now
    if math.isnan(delay):
        return None
    return max(0.0, delay)


def _error_text(response: httpx.Response, limit: int = 300) -> str:
    try:
        body = response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return ""
    return sanitize_text(body[:limit])


def raise_for_response(
    response: httpx.Response,
    *,
    platform: str,
    tenant: str,
    now: float,
) -> NoReturn:
    """Raise the error class that fits a non-success response.

    429 is ``RateLimited``, 5xx is ``RetryableError``, 401 is
    ``AuthenticationError`` and every other status is ``PermanentError``.
    Connectors whose platform uses codes differently map them before calling
    this.
    """
    status = response.status_code
    text = _error_text(response)
    message = f"{platform} answered HTTP {status}: {text}".rstrip(": ")
    context: dict[str, Any] = {
        "platform": platform,
        "tenant": tenant,
        "status_code": status,
    }
    delay = parse_retry_after(response.headers.get("retry-after"), now)
    # 429 and 503 say the server refused the request without acting on it
    # (RFC 6585 section 4, RFC 9110 section 15.6.4), so repeating it cannot
    # create a duplicate. Other 5xx answers may come after the work was done.
    if status == 429:
        raise RateLimited(message, retry_after=delay, sent=False, **context)
    if status == 503:
        raise RetryableError(message, retry_after=delay, sent=False, **context)
    if status >= 500:
        raise RetryableError(message, retry_after=delay, **context)
    if status == 401:
        raise AuthenticationError(message, **context)
    raise PermanentError(message, **context)


async def request_with_mapping(
    call: Callable[[], Awaitable[httpx.Response]], *, platform: str, tenant: str
) -> httpx.Response:
    """Await ``call`` and map httpx transport errors to ``RetryableError``.

    A connection that could not be opened never carried the request, so the
    error says ``sent=False`` and the call is safe to repeat. A timeout or a
    dropped connection after the request went out may have been processed.
    """
    try:
        return await call()
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        message = f"Could not connect to {platform}: {type(exc).__name__}."
        raise RetryableError(
            message, platform=platform, tenant=tenant, sent=False
        ) from exc
    except httpx.TimeoutException as exc:
        message = f"The call to {platform} timed out: {type(exc).__name__}."
        raise RetryableError(message, platform=platform, tenant=tenant) from exc
    except httpx.TransportError as exc:
        message = f"The connection to {platform} failed: {type(exc).__name__}."
        raise RetryableError(message, platform=platform, tenant=tenant) from exc
