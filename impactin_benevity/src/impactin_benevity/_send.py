"""Send one donation to Benevity and classify the response.

Benevity responds to a created donation with 201 and
``{id, state: {processingStatus}}``. A 429 is ``RateLimited`` with the
``Retry-After`` delay, a 5xx is ``RetryableError`` and a 401 is
``AuthenticationError``, after which the runtime fetches a new token once.
Any other status is ``PermanentError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, NoReturn

import httpx

from impactin_core import (
    Credentials,
    PlatformRequest,
    SendContext,
    SendOutcome,
    raise_for_response,
    request_with_mapping,
)

from ._mapping import PERSONAL_PATHS, PLATFORM_ID

__all__ = ["donations_url", "send_donation"]

logger = logging.getLogger("impactin.benevity")


def donations_url(base_url: str) -> str:
    """Return the ``/donations`` endpoint under ``base_url``."""
    return base_url.rstrip("/") + "/donations"


async def send_donation(
    request: PlatformRequest, credentials: Credentials, context: SendContext
) -> SendOutcome:
    """Post one donation and return its outcome, or raise the fitting error."""
    url = donations_url(context.settings.base_url)
    headers = {**credentials.headers, "Accept": "application/json"}
    response = await request_with_mapping(
        lambda: context.client.post(
            url, json=request.payload, headers=headers, timeout=context.timeout
        ),
        platform=PLATFORM_ID,
        tenant=request.tenant,
    )
    if not response.is_success:
        _raise_for_donation(response, request)
    return SendOutcome(
        status_code=response.status_code, response_id=_donation_id(response, request)
    )


def _raise_for_donation(response: httpx.Response, request: PlatformRequest) -> NoReturn:
    # The core scrubs emails, phone numbers and other data it recognises from
    # the quoted response, but not a name or an employee id. Pass the values
    # this request carried, so that a response echoing them does not leak them
    # into logs and the delivery record.
    raise_for_response(
        response,
        platform=PLATFORM_ID,
        tenant=request.tenant,
        now=time.time(),
        known_values=list(_personal_values(request.payload)),
    )


def _personal_values(payload: dict[str, Any]) -> Iterator[str]:
    for path in PERSONAL_PATHS:
        section, _, name = path.partition(".")
        part = payload.get(section)
        value = part.get(name) if isinstance(part, dict) else None
        if isinstance(value, str) and value:
            yield value


def _donation_id(response: httpx.Response, request: PlatformRequest) -> str | None:
    try:
        body = response.json()
    except ValueError:
        body = None
    donation_id = body.get("id") if isinstance(body, dict) else None
    if isinstance(donation_id, str) and donation_id:
        return donation_id
    logger.warning(
        "Benevity returned HTTP %s without a donation id for tenant %s, "
        "idempotency key %s",
        response.status_code,
        request.tenant,
        request.idempotency_key,
    )
    return None
