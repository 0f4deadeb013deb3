"""A sandbox simulator of Goodera's volunteering write API.

Routes: ``POST /events``, ``POST /registrations`` and ``POST
/participation``, each behind the ``x-api-key`` header. It follows what
Goodera publishes and what its API was observed to return:

- a missing or wrong key returns 403 "Unauthenticated", and a valid
  read-only key returns 401 "Unauthorized" to a write (Goodera swaps the RFC 9110
  meanings of the two codes);
- errors use the envelope ``{name, message, statusCode, timestamp, url,
  data}``, and unknown paths return 500 with ``data.statusCode`` 404.

NOTE: Goodera publishes no validation error shape. The simulator returns
for an invalid body what it returns for an unknown path: HTTP 500 with the real
status (400) in ``data.statusCode``. It also accepts the participation
``hours`` field, which Goodera does not document.

The journal key of a registration or a participation is its natural key
(event id and case-folded email, hashed), so a repeat is counted and gets
the original result back. Events carry no natural key: each
accepted POST /events is a new journal entry, which lets tests count
duplicate events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
import secrets
from collections.abc import Collection, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from impactin_core.sandbox import FaultPlan, Journal, Simulator, build_sandbox_app

from ._options import is_object_id

__all__ = ["DEFAULT_API_KEY", "READ_ONLY_API_KEY", "create_simulator"]

#: The key the sandbox accepts for writes when none is given.
DEFAULT_API_KEY = "sandbox-goodera-api-key"
#: A key the sandbox recognises but does not permit to write (HTTP 401).
READ_ONLY_API_KEY = "sandbox-goodera-read-only-key"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# The live API reports an internal path prefix in the envelope's url field.
_INTERNAL_PREFIX = "/v2/developer-api/v1"
_STATUS_NAMES = {
    400: ("BadRequestException", "Bad Request"),
    401: ("UnauthorizedException", "Unauthorized"),
    403: ("ForbiddenException", "Forbidden"),
    404: ("NotFoundException", "Not Found"),
}


def create_simulator(
    *,
    plan: FaultPlan | None = None,
    credentials: Mapping[str, str] | None = None,
    read_only_keys: Collection[str] = (READ_ONLY_API_KEY,),
) -> Simulator:
    """Build the Goodera simulator, accepting ``credentials["api_key"]``."""
    accepted = dict(credentials or {"api_key": DEFAULT_API_KEY})
    journal = Journal()
    state = _GooderaState(accepted["api_key"], frozenset(read_only_keys), journal)
    app = Starlette(
        routes=[
            Route("/events", state.create_event, methods=["POST"]),
            Route("/registrations", state.create_registration, methods=["POST"]),
            Route("/participation", state.create_participation, methods=["POST"]),
            Route("/{path:path}", _not_found, methods=_ALL_METHODS),
        ]
    )
    return Simulator(
        app=build_sandbox_app(app, journal, plan), journal=journal, credentials=accepted
    )


class _GooderaState:
    def __init__(self, api_key: str, read_only_keys: frozenset[str], journal: Journal):
        self.api_key = api_key
        self.read_only_keys = read_only_keys
        self.journal = journal
        self.events: dict[str, dict[str, Any]] = {}
        self._serial = itertools.count(1)

    async def create_event(self, request: Request) -> JSONResponse:
        body, failure = await self._authorized_body(request)
        if failure is not None:
            return failure
        problem = _event_problem(body)
        if problem is not None:
            return _error(request, 400, problem)
        entry = {"kind": "event", "body": body}
        answer, _ = self.journal.accept(None, entry, lambda: self._new_event(body))
        return JSONResponse(answer)

    async def create_registration(self, request: Request) -> JSONResponse:
        return await self._attendance(request, "registration", "registrationId")

    async def create_participation(self, request: Request) -> JSONResponse:
        return await self._attendance(request, "participation", "id")

    async def _attendance(
        self, request: Request, kind: str, id_field: str
    ) -> JSONResponse:
        body, failure = await self._authorized_body(request)
        if failure is not None:
            return failure
        problem = _attendance_problem(body, kind)
        if problem is not None:
            return _error(request, 400, problem)
        if body["eventId"] not in self.events:
            return _error(request, 404, f"Event {body['eventId']} not found")
        key = f"{kind}:{body['eventId']}:{_email_digest(body['email'])}"

        def answer() -> dict[str, Any]:
            return {id_field: self._object_id(), **body}

        result, _ = self.journal.accept(key, {"kind": kind, "body": body}, answer)
        return JSONResponse(result)

    async def _authorized_body(
        self, request: Request
    ) -> tuple[dict[str, Any], JSONResponse | None]:
        key = request.headers.get("x-api-key")
        if key is not None and key in self.read_only_keys:
            return {}, _error(request, 401, "Unauthorized", outer=401)
        if key is None or not secrets.compare_digest(key, self.api_key):
            return {}, _error(request, 403, "Unauthenticated", outer=403)
        try:
            body = await request.json()
        except ValueError:
            return {}, _error(request, 400, "Body must be a JSON object")
        if not isinstance(body, dict):
            return {}, _error(request, 400, "Body must be a JSON object")
        return body, None

    def _new_event(self, body: dict[str, Any]) -> dict[str, Any]:
        event = {"id": self._object_id(), **body, "status": "upcoming"}
        self.events[event["id"]] = event
        return event

    def _object_id(self) -> str:
        # An ObjectId starts with a 4-byte Unix time; a serial keeps ids unique.
        seconds = int(dt.datetime.now(dt.timezone.utc).timestamp())
        return f"{seconds:08x}{next(self._serial):016x}"


async def _not_found(request: Request) -> JSONResponse:
    message = f"Cannot {request.method} {_INTERNAL_PREFIX}{request.url.path}"
    return _error(request, 404, message)


def _error(
    request: Request, status: int, message: str, *, outer: int = 500
) -> JSONResponse:
    name, reason = _STATUS_NAMES.get(status, ("HttpException", "Error"))
    body = {
        "name": name,
        "message": message,
        "statusCode": outer,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(),
        "url": f"{_INTERNAL_PREFIX}{request.url.path}",
        "data": {"statusCode": status, "message": message, "error": reason},
    }
    return JSONResponse(body, status_code=outer)


def _event_problem(body: dict[str, Any]) -> str | None:
    if not is_object_id(body.get("opportunityId")):
        return "opportunityId must be a 24-hex ObjectId"
    start = _timestamp(body.get("startTimeStamp"))
    end = _timestamp(body.get("endTimeStamp"))
    if start is None or end is None:
        return (
            "startTimeStamp and endTimeStamp must be ISO 8601 timestamps with an offset"
        )
    if end <= start:
        return "endTimeStamp must be later than startTimeStamp"
    for field in ("timezone", "country"):
        value = body.get(field)
        if not isinstance(value, str) or not value.strip():
            return f"{field} must be a non-empty string"
    return None


def _attendance_problem(body: dict[str, Any], kind: str) -> str | None:
    if not is_object_id(body.get("eventId")):
        return "eventId must be a 24-hex ObjectId"
    email = body.get("email")
    if not isinstance(email, str) or not _EMAIL.match(email):
        return "email must be an email address"
    if kind == "participation" and "hours" in body:
        hours = body["hours"]
        if isinstance(hours, bool) or not isinstance(hours, (int, float)):
            return "hours must be a number"
        if not 0 < hours <= 24:
            return "hours must be above 0 and at most 24"
    return None


def _timestamp(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _email_digest(email: str) -> str:
    return hashlib.sha256(email.strip().casefold().encode()).hexdigest()[:16]
