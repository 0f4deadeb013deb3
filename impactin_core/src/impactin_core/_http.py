"""HTTP helpers that connectors share: error mapping and ``Retry-After``."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn

import httpx

from ._errors import (
    MAX_RETRY_AFTER,
    AuthenticationError,
    PermanentError,
    RateLimited,
    RetryableError,
    checked_retry_after,
)
from ._redaction import sanitize_text

__all__ = [
    "parse_retry_after",
    "raise_for_response",
    "request_with_mapping",
]

_DELTA_SECONDS = re.compile(r"[0-9]+")

#: Characters of a response body that are scrubbed before the message is cut.
_SCRUB_LIMIT = 65536


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the delay in seconds that a ``Retry-After`` value requests.

    Accepts delta-seconds (``120``) and HTTP dates in the three forms of
    RFC 9110 section 5.6.7 with any zone that ``email.utils`` parses
    (``GMT``, ``+0200``, ``-0000``). A date without a zone is read as UTC,
    so the local time zone never matters. A date in the past gives 0, and
    a delay above ``MAX_RETRY_AFTER`` gives ``MAX_RETRY_AFTER``. Returns
    None for an empty, negative, fractional or unparseable value, so the
    caller falls back to its own backoff. ``now`` is a Unix time.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        # A longer number is above the cap anyway, and thousands of digits
        # would overflow a float or exceed int()'s digit limit.
        if len(text) > 15:
            return MAX_RETRY_AFTER
        return checked_retry_after(float(int(text)))
    if text[0] in "+-" or text[0].isdigit():
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # HTTP dates are always GMT. email.utils returns a naive datetime
        # for "-0000" and for a missing zone.
        when = when.replace(tzinfo=dt.timezone.utc)
    delay = when.timestamp() - now
    if math.isnan(delay):
        return None
    return checked_retry_after(delay)


def _error_text(
    response: httpx.Response, known_values: Iterable[str], limit: int = 300
) -> str:
    try:
        body = response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return ""
    # Scrub before cutting, so the cut cannot split a personal value into a
    # part the scrubber no longer recognises.
    text = sanitize_text(body[:_SCRUB_LIMIT], known_values)
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return f"{cut} ..."


def raise_for_response(
    response: httpx.Response,
    *,
    platform: str,
    tenant: str,
    now: float,
    known_values: Iterable[str] = (),
) -> NoReturn:
    """Raise the error class that fits a non-success response.

    429 is ``RateLimited``, 408 and 5xx are ``RetryableError``, 401 is
    ``AuthenticationError`` and every other status is ``PermanentError``.
    The message quotes the start of the body after ``sanitize_text`` has
    removed ``known_values`` (the employee id, the email) and the personal
    data it recognises. Connectors whose platform uses codes differently
    map them before calling this.
    """
    status = response.status_code
    text = _error_text(response, known_values)
    message = f"{platform} returned HTTP {status}: {text}".rstrip(": ")
    context: dict[str, Any] = {
        "platform": platform,
        "tenant": tenant,
        "status_code": status,
    }
    delay = parse_retry_after(response.headers.get("retry-after"), now)
    # 429, 503 and 408 mean the server did not act on the request (RFC 6585
    # section 4, RFC 9110 sections 15.6.4 and 15.5.9), so repeating it
    # cannot create a duplicate. Other 5xx responses may come after the work
    # was done.
    if status == 429:
        raise RateLimited(message, retry_after=delay, sent=False, **context)
    if status in (408, 503):
        raise RetryableError(message, retry_after=delay, sent=False, **context)
    if status >= 500:
        raise RetryableError(message, retry_after=delay, **context)
    if status == 401:
        raise AuthenticationError(message, **context)
    raise PermanentError(message, **context)


async def request_with_mapping(
    call: Callable[[], Awaitable[httpx.Response]], *, platform: str, tenant: str
) -> httpx.Response:
    """Await ``call`` and map httpx request errors to impactin errors.

    A connection that could not be opened, through a proxy or from the pool,
    never carried the request, so its error has ``sent=False`` and the call
    is safe to repeat. A timeout or a dropped connection after the request
    went out may have been processed, so its error has ``sent=True``. An
    unsupported URL scheme, a redirect loop or a request that h11 refuses to
    write (``LocalProtocolError``) is a ``PermanentError``.
    Messages name only the httpx error class, because httpx's own text can
    contain the URL and its query.
    """
    try:
        return await call()
    except (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.ProxyError,
    ) as exc:
        message = f"Could not connect to {platform}: {type(exc).__name__}."
        raise RetryableError(
            message, platform=platform, tenant=tenant, sent=False
        ) from exc
    except (httpx.UnsupportedProtocol, httpx.TooManyRedirects) as exc:
        message = (
            f"The call to {platform} cannot succeed: {type(exc).__name__}; "
            "check the platform's base_url."
        )
        raise PermanentError(message, platform=platform, tenant=tenant) from exc
    except httpx.LocalProtocolError as exc:
        # h11 refused to write the request (a header value with a line break,
        # for one), so nothing reached the platform, and a repeat would fail
        # the same way.
        message = (
            f"The request to {platform} was not sent: {type(exc).__name__}, a "
            "header or the URL holds a character that HTTP does not allow; "
            "check the connector's options and credentials, or correct the record."
        )
        raise PermanentError(message, platform=platform, tenant=tenant) from exc
    except httpx.TimeoutException as exc:
        message = f"The call to {platform} timed out: {type(exc).__name__}."
        raise RetryableError(message, platform=platform, tenant=tenant) from exc
    except httpx.TransportError as exc:
        message = f"The connection to {platform} failed: {type(exc).__name__}."
        raise RetryableError(message, platform=platform, tenant=tenant) from exc
    except httpx.DecodingError as exc:
        message = (
            f"The answer of {platform} could not be decoded: {type(exc).__name__}."
        )
        raise RetryableError(message, platform=platform, tenant=tenant) from exc
