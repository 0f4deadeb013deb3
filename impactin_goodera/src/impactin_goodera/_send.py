"""Send one mapped record: create or reuse the event, register, participate.

A retry after a partial failure repeats no step the connector saw succeed.
The event id is reused per (opportunity, time window, timezone, country),
and the registration and participation ids are stored per idempotency key
(see ``_state``). A step whose response was lost (timeout, dropped
connection, 5xx) may still have been processed, so the connector does not
mark the request safe to repeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from impactin_core import (
    Credentials,
    PermanentError,
    PlatformRequest,
    SendContext,
    SendOutcome,
    request_with_mapping,
)

from ._errors import PLATFORM, raise_for_goodera
from ._state import SendLedger, ledger_for

__all__ = ["send_participation"]

logger = logging.getLogger("impactin.goodera")

#: Response fields that may carry the new object's id, per path, in the order
#: tried. Goodera documents ``registrationId`` for registrations; the id
#: field of events and participation is not published.
_ID_FIELDS = {
    "/events": ("id", "_id", "eventId"),
    "/registrations": ("registrationId", "id", "_id"),
    "/participation": ("participationId", "id", "_id"),
}


async def send_participation(
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
    *,
    clock: Callable[[], float] = time.time,
) -> SendOutcome:
    """Record one participation, skipping the steps already confirmed."""
    settings = context.settings
    ledger = ledger_for(settings.tenant, settings.base_url, context.cache_dir)
    key = request.idempotency_key
    done = ledger.step_id(key, "participation")
    if done is not None:
        logger.info("Goodera participation for key %s was already recorded.", key)
        return SendOutcome(status_code=200, response_id=done, duplicate=True)

    caller = _Caller(request, credentials, context, clock)
    event_id = await _ensure_event(caller, ledger, request.payload["event"])

    if ledger.step_id(key, "registration") is None:
        body = {"eventId": event_id, **request.payload["registration"]}
        registration_id, _ = await caller.post("/registrations", body)
        ledger.record_step(key, "registration", registration_id)

    attendee = _attendee_key(credentials, event_id, request.payload["participation"])
    # Claimed before the call, in one transaction, so two workers or two
    # processes cannot both post a participation for one volunteer and event.
    owner = ledger.claim_step(attendee, "owner", key)
    if owner != key:
        # A participation is posted by event id and email, and Goodera does
        # not publish what a second one for the same pair does: it may be
        # rejected, merged or replaced by the first. Not sending it keeps the
        # second activity's hours from being lost silently.
        message = (
            "This volunteer already has a participation on the same Goodera event "
            "(same opportunity and day) from another activity; a participation "
            "is identified by event and email, and what Goodera does with a "
            "second one is not published, so merge the two activities' hours "
            "into one record or move one to another opportunity."
        )
        raise PermanentError(message, platform=PLATFORM, tenant=settings.tenant)

    body = {"eventId": event_id, **request.payload["participation"]}
    try:
        participation_id, status = await caller.post("/participation", body)
    except PermanentError:
        # Goodera rejected it, so this activity has no participation, and a
        # corrected or merged record may take the volunteer's place.
        ledger.release_step(attendee, "owner", key)
        raise
    ledger.record_step(key, "participation", participation_id)
    return SendOutcome(status_code=status, response_id=participation_id)


def _attendee_key(
    credentials: Credentials, event_id: str, participation: dict[str, Any]
) -> str:
    # Keyed with the tenant's API key, so the ledger file contains no value
    # from which an email could be recovered by guessing.
    secret = "".join(sorted(credentials.headers.values())).encode("utf-8")
    email = str(participation.get("email", "")).strip().casefold()
    digest = hmac.new(secret, f"{event_id}\x1f{email}".encode(), hashlib.sha256)
    return f"attendee:{digest.hexdigest()[:32]}"


async def _ensure_event(
    caller: _Caller, ledger: SendLedger, event: dict[str, Any]
) -> str:
    event_key = _event_key(event)
    async with ledger.event_lock(event_key):
        owner = uuid.uuid4().hex
        while (event_id := ledger.event_id(event_key)) is None:
            if not ledger.claim_event(event_key, owner, time.time()):
                # Another process is creating this event; its id follows.
                await asyncio.sleep(_CLAIM_POLL)
                continue
            try:
                # The other process may have finished between the two reads.
                event_id = ledger.event_id(event_key)
                if event_id is None:
                    event_id, _ = await caller.post("/events", event)
                    ledger.record_event(event_key, event_id)
                    logger.info(
                        "Created Goodera event %s for tenant %s.",
                        event_id,
                        caller.tenant,
                    )
            finally:
                ledger.release_event(event_key, owner)
        return event_id


#: Seconds between looks at the ledger while another process creates an event.
_CLAIM_POLL = 0.2


def _event_key(event: dict[str, Any]) -> str:
    parts = (
        event["opportunityId"],
        event["startTimeStamp"],
        event["endTimeStamp"],
        event["timezone"],
        event["country"],
    )
    return json.dumps(parts)


class _Caller:
    """POST client for one step of the sequence, returning the new object id."""

    def __init__(
        self,
        request: PlatformRequest,
        credentials: Credentials,
        context: SendContext,
        clock: Callable[[], float],
    ) -> None:
        self.tenant = request.tenant
        self.client = context.client
        self.base_url = context.settings.base_url.rstrip("/")
        self.headers = dict(credentials.headers)
        self.timeout = context.timeout
        self.clock = clock
        email = request.payload.get("registration", {}).get("email")
        self.known_values = [email] if email else []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[str, int]:
        """POST ``body`` to ``path`` and return (new object id, HTTP status)."""
        url = f"{self.base_url}{path}"

        async def call() -> httpx.Response:
            return await self.client.post(
                url, json=body, headers=self.headers, timeout=self.timeout
            )

        response = await request_with_mapping(
            call, platform=PLATFORM, tenant=self.tenant
        )
        call_name = f"POST {path}"
        if not response.is_success:
            raise_for_goodera(
                response,
                call=call_name,
                tenant=self.tenant,
                now=self.clock(),
                known_values=self.known_values,
            )
        object_id = _object_id(response, path, self.tenant)
        return object_id, response.status_code


def _object_id(response: httpx.Response, path: str, tenant: str) -> str:
    fields = _ID_FIELDS[path]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for field in fields:
            value = body.get(field)
            if isinstance(value, str) and value:
                return value
    message = (
        f"Goodera returned HTTP {response.status_code} for POST {path} but no id "
        f"in any of the fields {', '.join(fields)}; the response format may have "
        "changed, so check the connector against Goodera's reference."
    )
    raise PermanentError(
        message, platform=PLATFORM, tenant=tenant, status_code=response.status_code
    )
