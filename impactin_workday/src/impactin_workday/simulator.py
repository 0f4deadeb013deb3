"""A sandbox simulator of Workday's Staffing SOAP service and OAuth 2.0 REST API.

Routes:

- ``GET /ccx/service/{tenant}/Staffing/{version}?wsdl``: the bundled WSDL;
- ``POST /ccx/service/{tenant}/Staffing/{version}``: ``Edit_Worker_Additional_Data``;
- ``POST /ccx/oauth2/{tenant}/token``: the ``refresh_token`` grant with HTTP
  Basic client authentication;
- ``POST /ccx/api/v1/{tenant}/{rest_path}``: the REST write, with a bearer token.

Workers: with ``workers=None`` any Employee_ID of 1 to 64 letters, digits,
``_`` or ``-`` exists; with a collection, only those ids exist. Accepted
writes are journaled under the custom object row id, so a repeat returns
the first response and counts as a repeat. Unknown paths get an HTML 404 page.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import re
import secrets
import threading
import uuid
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import parse_qs

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from impactin_core.sandbox import FaultPlan, Journal, Simulator, build_sandbox_app

from ._options import DEFAULT_FIELD_NAMES
from ._sim_soap import html_not_found, staffing_endpoint

__all__ = [
    "SANDBOX_TENANT",
    "WorkdaySimulator",
    "WorkdaySimulatorState",
    "create_simulator",
]

#: Tenant name in the simulator's URLs.
SANDBOX_TENANT = "impactin_sandbox"

_DEFAULT_CREDENTIALS = {
    "username": f"ISU_Impactin@{SANDBOX_TENANT}",
    "password": "sandbox-password",
    "client_id": "sandbox-client",
    "client_secret": "sandbox-client-secret",
    "refresh_token": "sandbox-refresh-token",
}
_WORKER_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@attrs.define(kw_only=True)
class WorkdaySimulatorState:
    """Accepted credentials, workers and custom objects, and the tokens issued."""

    journal: Journal
    tenant_name: str
    username: str = attrs.field(repr=False)
    password: str = attrs.field(repr=False)
    client_id: str = attrs.field(repr=False)
    client_secret: str = attrs.field(repr=False)
    workers: frozenset[str] | None = None
    custom_objects: frozenset[str] = frozenset({"Volunteer_Activity"})
    row_id_field: str = DEFAULT_FIELD_NAMES["row_id"]
    #: False makes every SOAP write fail with a Processing_Fault.
    write_permission: bool = True
    #: True issues a new refresh token on each refresh and revokes the old one.
    rotate_refresh_token: bool = True
    rest_path: str = "volunteerActivities"
    #: False rejects every REST write with 401, as if each token were expired.
    accept_access_tokens: bool = True
    #: ``expires_in`` of issued access tokens, in seconds.
    token_lifetime: int = 3600
    #: ``GET ?wsdl`` requests served, so tests can prove the WSDL disk cache.
    wsdl_requests: int = 0
    #: Successful refresh-token grants.
    grants: int = 0
    refresh_tokens: set[str] = attrs.field(factory=set, repr=False)
    access_tokens: set[str] = attrs.field(factory=set, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def knows_worker(self, employee_id: str) -> bool:
        if self.workers is None:
            return bool(_WORKER_ID.match(employee_id))
        return employee_id in self.workers

    def count_wsdl_request(self) -> None:
        with self._lock:
            self.wsdl_requests += 1

    def expire_access_tokens(self) -> None:
        """Revoke every access token, as if each had expired."""
        with self._lock:
            self.access_tokens.clear()

    def refresh(self, refresh_token: str) -> dict[str, Any] | None:
        """Issue an access token for a known refresh token; None for an unknown one."""
        with self._lock:
            if refresh_token not in self.refresh_tokens:
                return None
            access = secrets.token_urlsafe(24)
            self.access_tokens.add(access)
            self.grants += 1
            answer: dict[str, Any] = {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
            }
            if self.rotate_refresh_token:
                self.refresh_tokens.discard(refresh_token)
                rotated = secrets.token_urlsafe(24)
                self.refresh_tokens.add(rotated)
                answer["refresh_token"] = rotated
            return answer

    def accepts_bearer(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        with self._lock:
            if not self.accept_access_tokens:
                return False
            return scheme.lower() == "bearer" and token in self.access_tokens


@attrs.frozen
class WorkdaySimulator(Simulator):
    """A ``Simulator`` with the Workday state, so tests can change it."""

    state: WorkdaySimulatorState | None = attrs.field(default=None, repr=False)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    # RFC 6749 section 5.2 error response.
    body = {"error": error, "error_description": description}
    headers = dict(_NO_STORE)
    if error == "invalid_client":
        headers["WWW-Authenticate"] = 'Basic realm="workday"'
    return JSONResponse(body, status_code=status, headers=headers)


def _basic_client(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, separator, client_secret = decoded.partition(":")
    return (client_id, client_secret) if separator else None


async def _token_endpoint(request: Request, state: WorkdaySimulatorState) -> Response:
    if request.path_params["tenant"] != state.tenant_name:
        return html_not_found()
    client = _basic_client(request.headers.get("authorization", ""))
    if client is None or not (
        hmac.compare_digest(client[0], state.client_id)
        and hmac.compare_digest(client[1], state.client_secret)
    ):
        return _oauth_error("invalid_client", "Client authentication failed.", 401)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    if form.get("grant_type") != ["refresh_token"]:
        return _oauth_error("unsupported_grant_type", "Use grant_type=refresh_token.")
    answer = state.refresh((form.get("refresh_token") or [""])[0])
    if answer is None:
        return _oauth_error("invalid_grant", "The refresh token is invalid or revoked.")
    return JSONResponse(answer, headers=_NO_STORE)


def _rest_errors(body: Any, state: WorkdaySimulatorState) -> list[dict[str, str]]:
    if not isinstance(body, Mapping):
        return [{"error": "The body must be a JSON object.", "field": ""}]
    errors = []
    worker = body.get("worker")
    employee_id = worker.get("id") if isinstance(worker, Mapping) else None
    if not isinstance(employee_id, str) or not state.knows_worker(employee_id):
        # Like Workday's own messages, this one quotes the rejected value.
        message = f"Invalid worker id {employee_id!r}."
        errors.append({"error": message, "field": "worker.id"})
    try:
        dt.date.fromisoformat(str(body.get("effectiveDate")))
    except ValueError:
        errors.append({"error": "Invalid date.", "field": "effectiveDate"})
    if body.get("customObject") not in state.custom_objects:
        errors.append({"error": "Unknown custom object.", "field": "customObject"})
    data = body.get("data")
    if not isinstance(data, Mapping) or not all(
        isinstance(value, str) for value in data.values()
    ):
        errors.append({"error": "data must map field names to text.", "field": "data"})
    elif not data.get(state.row_id_field):
        field = f"data.{state.row_id_field}"
        errors.append({"error": "The row id is missing.", "field": field})
    return errors


async def _rest_write(request: Request, state: WorkdaySimulatorState) -> Response:
    tenant = request.path_params["tenant"]
    if tenant != state.tenant_name or request.path_params["path"] != state.rest_path:
        return JSONResponse({"error": "Resource not found"}, status_code=404)
    if not state.accepts_bearer(request.headers.get("authorization", "")):
        return JSONResponse(
            {"error": "invalid_token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    try:
        body = await request.json()
    except ValueError:
        body = None
    errors = _rest_errors(body, state)
    if errors:
        return JSONResponse(
            {"error": "invalid request", "errors": errors}, status_code=400
        )
    entry = {"protocol": "rest", "tenant": tenant, **body}
    key = body["data"][state.row_id_field]
    answer, _ = state.journal.accept(key, entry, lambda: {"id": uuid.uuid4().hex})
    return JSONResponse(answer, status_code=201)


def _starlette_app(state: WorkdaySimulatorState) -> Starlette:
    async def staffing(request: Request) -> Response:
        return await staffing_endpoint(request, state)

    async def token(request: Request) -> Response:
        return await _token_endpoint(request, state)

    async def rest(request: Request) -> Response:
        return await _rest_write(request, state)

    async def not_found(request: Request, exc: Exception) -> Response:
        return html_not_found()

    routes = [
        Route(
            "/ccx/service/{tenant}/{service}/{version}",
            staffing,
            methods=["GET", "POST"],
        ),
        Route("/ccx/oauth2/{tenant}/token", token, methods=["POST"]),
        Route("/ccx/api/v1/{tenant}/{path:path}", rest, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found})


def create_simulator(
    *,
    plan: FaultPlan | None = None,
    credentials: Mapping[str, str] | None = None,
    workers: Collection[str] | None = None,
    custom_objects: Collection[str] = ("Volunteer_Activity",),
    write_permission: bool = True,
    rotate_refresh_token: bool = True,
    rest_path: str = "volunteerActivities",
    tenant_name: str = SANDBOX_TENANT,
) -> WorkdaySimulator:
    """Build the simulator; ``credentials`` defaults to sandbox values.

    ``credentials`` takes the connector's secret names: ``username``,
    ``password``, ``client_id``, ``client_secret`` and ``refresh_token`` (the
    first refresh token the simulator accepts). Missing names take the
    sandbox defaults.
    """
    accepted = {**_DEFAULT_CREDENTIALS, **(credentials or {})}
    journal = Journal()
    state = WorkdaySimulatorState(
        journal=journal,
        tenant_name=tenant_name,
        username=accepted["username"],
        password=accepted["password"],
        client_id=accepted["client_id"],
        client_secret=accepted["client_secret"],
        workers=None if workers is None else frozenset(workers),
        custom_objects=frozenset(custom_objects),
        write_permission=write_permission,
        rotate_refresh_token=rotate_refresh_token,
        rest_path=rest_path,
        refresh_tokens={accepted["refresh_token"]},
    )
    app = build_sandbox_app(_starlette_app(state), journal, plan)
    return WorkdaySimulator(
        app=app,
        journal=journal,
        credentials=accepted,
        # The options a connector needs to reach this simulator's tenant.
        options={"tenant_name": tenant_name, "rest_path": rest_path},
        state=state,
    )
