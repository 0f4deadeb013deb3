"""Classify Goodera's error responses into the impactin exception tree.

Goodera documents 200, 401 "Unauthorized", 403 "Unauthenticated" and 500.
The 401 and 403 meanings are swapped relative to RFC 9110: 403 means the
``x-api-key`` is missing or wrong, 401 means the key is valid but not
permitted. Unknown paths return 500 with the real status in
``data.statusCode`` inside ``{name, message, statusCode, timestamp, url,
data}``, so a 500 is classified by that inner status when present.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

import httpx

from impactin_core import (
    AuthenticationError,
    PermanentError,
    RateLimited,
    RetryableError,
    parse_retry_after,
    sanitize_text,
)

__all__ = ["effective_status", "raise_for_goodera"]

PLATFORM = "goodera"
_MESSAGE_LIMIT = 200


def raise_for_goodera(
    response: httpx.Response,
    *,
    call: str,
    tenant: str,
    now: float,
    known_values: Iterable[str] = (),
) -> NoReturn:
    """Raise the error that fits a non-success Goodera response to ``call``.

    ``known_values`` are personal values sent in the call (the email), which
    are removed from the message even when the platform echoes them.
    """
    body = _json_body(response)
    status = effective_status(response.status_code, body)
    detail = sanitize_text(_platform_message(body, response), known_values)
    message = f"Goodera returned HTTP {response.status_code} for {call}"
    if status != response.status_code:
        message += f" (status {status} inside the body)"
    message += f": {detail}" if detail else "."
    context: dict[str, Any] = {
        "platform": PLATFORM,
        "tenant": tenant,
        "status_code": status,
    }
    if status == 403:
        hint = " Check the tenant's Goodera api_key: it is missing or wrong."
        raise AuthenticationError(message + hint, **context)
    if status == 401:
        hint = " The api_key is valid but not permitted to do this; ask Goodera."
        raise PermanentError(message + hint, **context)
    retry_after = parse_retry_after(response.headers.get("retry-after"), now)
    # 429, 503 and 408 mean the request was refused before any work, so
    # the runtime may repeat it even though Goodera publishes no idempotency.
    if status == 429:
        raise RateLimited(message, retry_after=retry_after, sent=False, **context)
    if status in (408, 503):
        raise RetryableError(message, retry_after=retry_after, sent=False, **context)
    if status >= 500:
        raise RetryableError(message, retry_after=retry_after, **context)
    raise PermanentError(message, **context)


def effective_status(outer: int, body: Any) -> int:
    """Return the status that decides the class: ``data.statusCode`` of a 500."""
    if outer != 500 or not isinstance(body, dict):
        return outer
    data = body.get("data")
    inner = data.get("statusCode") if isinstance(data, dict) else None
    if isinstance(inner, int) and not isinstance(inner, bool) and 100 <= inner <= 599:
        return inner
    return outer


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _platform_message(body: Any, response: httpx.Response) -> str:
    if isinstance(body, dict):
        data = body.get("data")
        text = data.get("message") if isinstance(data, dict) else None
        text = text or body.get("message")
        if isinstance(text, list):
            text = "; ".join(str(item) for item in text)
        return str(text)[:_MESSAGE_LIMIT] if text else ""
    try:
        return response.text[:_MESSAGE_LIMIT].strip()
    except UnicodeDecodeError:
        return ""
