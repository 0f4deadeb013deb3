"""A Benevity simulator for tests, the demo and the contracts.

It serves the two calls the connector makes, as Benevity documents them:

- ``POST /oauth2/token`` takes HTTP Basic client authentication and the
  form body ``grant_type=client_credentials``. It returns an HS256 JWT,
  signed with a key made for each simulator, with ``expires_in`` 3600.
- ``POST /donations`` takes a bearer token and checks ``destination``,
  ``funds``, ``donor`` and ``metadata`` as Benevity describes them. It
  returns 201 with ``{id, state: {processingStatus: "ACCEPTED"}}``.

``GET /donations/{id}`` returns an accepted donation. Benevity does not
publish its error bodies, so errors here use a JSON:API ``errors`` list of
the simulator's own making. Benevity documents no idempotency either. The
simulator matches a replay on the metadata key ``impactin_idempotency_key``
and returns the first donation for it, counted as a repeat in the journal.

Besides the admin routes of ``impactin_core.sandbox``, ``GET
/_sandbox/tokens`` counts issued and active tokens and ``DELETE
/_sandbox/tokens`` revokes every issued token, so the next call with one of
them gets 401.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, Router

from impactin_core.sandbox import FaultPlan, Journal, Simulator, build_sandbox_app

from ._mapping import IDEMPOTENCY_KEY, MAX_METADATA_PAIRS
from ._options import TOKEN_LIFETIME

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "TokenIssuer",
    "create_simulator",
    "validate_donation",
]

DEFAULT_CLIENT_ID = "sandbox-benevity-client"
DEFAULT_CLIENT_SECRET = "sandbox-benevity-secret"

_CURRENCY = re.compile(r"[A-Z]{3}")
_DONATION_FIELDS = frozenset({"destination", "funds", "donor", "metadata"})

# An accumulated validation problem: the JSON pointer and what is wrong.
Problem = tuple[str, str]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issue HS256 JWT access tokens and check the ones presented.

    A token is valid while its ``exp`` lies ahead of ``clock()`` and it has
    not been revoked.
    """

    def __init__(self, *, lifetime: int, clock: Callable[[], float]) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self.issued_count = 0

    def issue(self, client_id: str) -> str:
        """Return a new signed token for ``client_id``."""
        now = int(self._clock())
        token_id = uuid.uuid4().hex
        claims = {
            "iss": "impactin-benevity-sandbox",
            "sub": client_id,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": token_id,
        }
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64url(json.dumps(claims).encode())
        signature = _b64url(self._sign(f"{header}.{payload}"))
        with self._lock:
            self._active.add(token_id)
            self.issued_count += 1
        return f"{header}.{payload}.{signature}"

    def rejection(self, token: str) -> str | None:
        """Return why ``token`` is not valid, or None when it is."""
        parts = token.split(".")
        if len(parts) != 3:
            return "The access token is not a JWT."
        header, payload, signature = parts
        try:
            presented = _b64url_decode(signature)
            claims = json.loads(_b64url_decode(payload))
        except (binascii.Error, ValueError):
            return "The access token is malformed."
        if not hmac.compare_digest(presented, self._sign(f"{header}.{payload}")):
            return "The access token signature is invalid."
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            return "The access token has no expiry."
        if claims["exp"] <= self._clock():
            return "The access token has expired."
        with self._lock:
            if claims.get("jti") not in self._active:
                return "The access token has been revoked."
        return None

    def revoke_all(self) -> int:
        """Revoke every issued token and return how many were active."""
        with self._lock:
            count = len(self._active)
            self._active.clear()
        return count

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"issued": self.issued_count, "active": len(self._active)}

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(
            self._key, signing_input.encode("ascii"), hashlib.sha256
        ).digest()


def validate_donation(body: Any) -> list[Problem]:
    """Return the problems of a ``POST /donations`` body, empty when valid."""
    if not isinstance(body, dict):
        return [("", "The body must be a JSON object.")]
    problems: list[Problem] = [
        (f"/{name}", "Unknown attribute.")
        for name in sorted(set(body) - _DONATION_FIELDS)
    ]
    problems += _check_destination(body.get("destination"))
    problems += _check_funds(body.get("funds"))
    if "donor" in body:
        problems += _check_donor(body["donor"])
    if "metadata" in body:
        problems += _check_metadata(body["metadata"])
    return problems


def _check_destination(destination: Any) -> list[Problem]:
    if not isinstance(destination, dict):
        return [("/destination", "Required object is missing.")]
    problems = []
    if not _is_text(destination.get("recipientId")):
        problems.append(("/destination/recipientId", "Required string is missing."))
    if "foundationId" in destination and not _is_text(destination["foundationId"]):
        problems.append(("/destination/foundationId", "Must be a non-empty string."))
    return problems


def _check_funds(funds: Any) -> list[Problem]:
    if not isinstance(funds, dict):
        return [("/funds", "Required object is missing.")]
    problems = []
    if not _is_text(funds.get("paymentType")):
        problems.append(("/funds/paymentType", "Required string is missing."))
    currency = funds.get("currencyCode")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        problems.append(("/funds/currencyCode", "Must be an ISO 4217 code."))
    amount = funds.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        problems.append(
            ("/funds/amount", "Must be a positive integer in the minor unit.")
        )
    if "source" in funds and not _is_text(funds["source"]):
        problems.append(("/funds/source", "Must be a non-empty string."))
    return problems


def _check_donor(donor: Any) -> list[Problem]:
    if not isinstance(donor, dict):
        return [("/donor", "Must be an object.")]
    problems = []
    email = donor.get("email")
    if email is not None and not (isinstance(email, str) and "@" in email):
        problems.append(("/donor/email", "Must be an email address."))
    if "fullName" in donor and not _is_text(donor["fullName"]):
        problems.append(("/donor/fullName", "Must be a non-empty string."))
    if "receipted" in donor and not isinstance(donor["receipted"], bool):
        problems.append(("/donor/receipted", "Must be true or false."))
    if "address" in donor and not isinstance(donor["address"], dict):
        problems.append(("/donor/address", "Must be an object."))
    return problems


def _check_metadata(metadata: Any) -> list[Problem]:
    if not isinstance(metadata, dict):
        return [("/metadata", "Must be an object of string values.")]
    problems = []
    if len(metadata) > MAX_METADATA_PAIRS:
        detail = f"At most {MAX_METADATA_PAIRS} key/value pairs are allowed."
        problems.append(("/metadata", detail))
    for key, value in metadata.items():
        if not isinstance(value, str):
            problems.append((f"/metadata/{key}", "Must be a string."))
    return problems


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _errors(status: int, code: str, problems: list[Problem]) -> JSONResponse:
    errors = [
        {
            "status": str(status),
            "code": code,
            "detail": detail,
            "source": {"pointer": pointer},
        }
        for pointer, detail in problems
    ]
    return JSONResponse({"errors": errors}, status_code=status)


def _oauth_error(status: int, code: str, description: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="benevity-sandbox"'
    body = {"error": code, "error_description": description}
    return JSONResponse(body, status_code=status, headers=headers)


class _BenevityState:
    """Credentials, tokens and accepted donations of one simulator."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        tokens: TokenIssuer,
        journal: Journal,
        clock: Callable[[], float],
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens = tokens
        self.journal = journal
        self.clock = clock
        self.donations: dict[str, dict[str, Any]] = {}

    def authenticated_client(self, header: str) -> str | None:
        """Return the client id when ``header`` contains valid Basic credentials."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, _, client_secret = decoded.partition(":")
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(
            client_secret.encode(), self.client_secret.encode()
        )
        return client_id if id_ok and secret_ok else None

    def bearer_rejection(self, request: Request) -> JSONResponse | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            reason = "A bearer access token is required."
        else:
            reason = self.tokens.rejection(token.strip()) or ""
        if not reason:
            return None
        response = _errors(401, "invalid_token", [("", reason)])
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response

    def accept(self, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body.get("metadata") or {}
        key = metadata.get(IDEMPOTENCY_KEY)
        answer, repeat = self.journal.accept(
            key, {"path": "/donations", "payload": body}, lambda: self._created(body)
        )
        if not repeat:
            self.donations[answer["id"]] = answer
        return dict(answer)

    def _created(self, body: dict[str, Any]) -> dict[str, Any]:
        updated = dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)
        return {
            "id": str(uuid.uuid4()),
            "type": "donations",
            **body,
            "state": {
                "processingStatus": "ACCEPTED",
                "statusLastUpdated": updated.isoformat().replace("+00:00", "Z"),
            },
        }


def _routes(state: _BenevityState) -> Starlette:
    async def token(request: Request) -> JSONResponse:
        client_id = state.authenticated_client(request.headers.get("authorization", ""))
        if client_id is None:
            return _oauth_error(401, "invalid_client", "Client authentication failed.")
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            detail = "Send the form as application/x-www-form-urlencoded."
            return _oauth_error(400, "invalid_request", detail)
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        grant_types = form.get("grant_type", [])
        if not grant_types:
            return _oauth_error(400, "invalid_request", "grant_type is missing.")
        if grant_types != ["client_credentials"]:
            detail = "Only client_credentials is supported."
            return _oauth_error(400, "unsupported_grant_type", detail)
        body = {
            "access_token": state.tokens.issue(client_id),
            "token_type": "Bearer",
            "expires_in": state.tokens.lifetime,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def create_donation(request: Request) -> JSONResponse:
        rejected = state.bearer_rejection(request)
        if rejected is not None:
            return rejected
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            problem = ("", "Send the donation as application/json.")
            return _errors(415, "unsupported_media_type", [problem])
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _errors(400, "invalid_json", [("", "The body is not valid JSON.")])
        problems = validate_donation(body)
        if problems:
            return _errors(400, "invalid_attribute", problems)
        return JSONResponse(state.accept(body), status_code=201)

    async def get_donation(request: Request) -> JSONResponse:
        rejected = state.bearer_rejection(request)
        if rejected is not None:
            return rejected
        donation = state.donations.get(request.path_params["donation_id"])
        if donation is None:
            return _errors(404, "not_found", [("", "No donation has this id.")])
        return JSONResponse(donation)

    return Starlette(
        routes=[
            Route("/oauth2/token", token, methods=["POST"]),
            Route("/donations", create_donation, methods=["POST"]),
            Route("/donations/{donation_id}", get_donation, methods=["GET"]),
        ]
    )


def _with_token_admin(app: Any, tokens: TokenIssuer) -> Any:
    async def tokens_route(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            return JSONResponse({"revoked": tokens.revoke_all()})
        return JSONResponse(tokens.counts())

    admin = Router(
        routes=[Route("/_sandbox/tokens", tokens_route, methods=["GET", "DELETE"])]
    )

    async def benevity_sandbox(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # The core's sandbox app handles every other /_sandbox/ path itself,
        # so the token route is served before it.
        if scope["type"] == "http" and scope["path"] == "/_sandbox/tokens":
            await admin(scope, receive, send)
        else:
            await app(scope, receive, send)

    benevity_sandbox.state = app.state  # type: ignore[attr-defined]
    return benevity_sandbox


def create_simulator(
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    token_lifetime: int = TOKEN_LIFETIME,
    clock: Callable[[], float] = time.time,
    plan: FaultPlan | None = None,
) -> Simulator:
    """Build a Benevity simulator wrapped with fault injection and a journal.

    ``clock`` decides token expiry and timestamps, so a test can expire
    tokens by moving a fake clock forward.
    """
    journal = Journal()
    tokens = TokenIssuer(lifetime=token_lifetime, clock=clock)
    state = _BenevityState(
        client_id=client_id,
        client_secret=client_secret,
        tokens=tokens,
        journal=journal,
        clock=clock,
    )
    sandbox = build_sandbox_app(_routes(state), journal, plan)
    return Simulator(
        app=_with_token_admin(sandbox, tokens),
        journal=journal,
        credentials={"client_id": client_id, "client_secret": client_secret},
    )
