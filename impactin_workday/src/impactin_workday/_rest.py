"""REST: OAuth 2.0 refresh-token authentication and the tenant-specific write.

Workday publishes no REST resource for volunteering or custom object rows,
so the write goes to the path a tenant configures in the ``rest_path``
option, with a JSON body this connector defines.
"""

from __future__ import annotations

import json
import time
from typing import Any, NoReturn

import attrs
import httpx

from impactin_core import (
    AuthContext,
    AuthenticationError,
    Credentials,
    OAuthToken,
    PermanentError,
    PlatformRequest,
    PlatformSettings,
    RateLimited,
    RetryableError,
    SendContext,
    SendOutcome,
    parse_retry_after,
    request_with_mapping,
    sanitize_text,
)
from impactin_core._tokens import fingerprint, reauthentication_error

from ._options import PLATFORM_ID, WorkdayOptions

__all__ = ["DEFAULT_TOKEN_LIFETIME", "authenticate_rest", "rest_body", "send_rest"]

#: Seconds an access token is trusted when the token response has no
#: ``expires_in``. NOTE: not a vendor figure; tenants can enforce 60 minutes,
#: so five minutes stays well inside any lifetime seen.
DEFAULT_TOKEN_LIFETIME = 300
_TEXT_LIMIT = 300


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _raise_transient(
    response: httpx.Response, message: str, tenant: str, now: float
) -> None:
    delay = parse_retry_after(response.headers.get("retry-after"), now)
    context: dict[str, Any] = {
        "platform": PLATFORM_ID,
        "tenant": tenant,
        "status_code": response.status_code,
        "retry_after": delay,
    }
    if response.status_code == 429:
        # A 429 refuses the request before any work, so repeating it is safe.
        raise RateLimited(message, sent=False, **context)
    if response.status_code in (408, 503):
        # A 503 or 408 also means the server did not act (RFC 9110 sections
        # 15.6.4 and 15.5.9), as the SOAP path and
        # impactin_core.raise_for_response treat it.
        raise RetryableError(message, sent=False, **context)
    if response.status_code >= 500:
        raise RetryableError(message, **context)


def _token_failure(response: httpx.Response, tenant: str, now: float) -> NoReturn:
    status = response.status_code
    _raise_transient(
        response,
        f"The Workday token endpoint responded with HTTP {status}.",
        tenant,
        now,
    )
    error = str(_json(response).get("error", ""))
    if error == "invalid_grant":
        raise reauthentication_error(tenant, PLATFORM_ID)
    if error == "invalid_client" or status == 401:
        message = (
            f"The Workday token endpoint rejected the API client (HTTP {status}); "
            "check the 'client_id' and 'client_secret' secrets."
        )
    else:
        code = sanitize_text(error[:80]) or "no error code"
        message = f"The Workday token endpoint responded with HTTP {status} ({code})."
    raise AuthenticationError(
        message, platform=PLATFORM_ID, tenant=tenant, status_code=status
    )


def _token_from(
    response: httpx.Response, refresh_token: str, tenant: str, now: float
) -> OAuthToken:
    body = _json(response)
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        message = "The Workday token response has no access_token."
        raise AuthenticationError(message, platform=PLATFORM_ID, tenant=tenant)
    lifetime = body.get("expires_in")
    if (
        isinstance(lifetime, bool)
        or not isinstance(lifetime, (int, float))
        or lifetime <= 0
    ):
        lifetime = DEFAULT_TOKEN_LIFETIME
    # A refresh response may rotate the refresh token; keep the one in use
    # when it does not, so the cache always stores a usable one.
    rotated = body.get("refresh_token")
    return OAuthToken(
        access_token=access,
        expires_at=now + float(lifetime),
        refresh_token=rotated
        if isinstance(rotated, str) and rotated
        else refresh_token,
        obtained_at=now,
    )


async def _refresh(
    settings: PlatformSettings,
    options: WorkdayOptions,
    context: AuthContext,
    refresh_token: str,
) -> OAuthToken:
    auth = httpx.BasicAuth(
        settings.secret("client_id"), settings.secret("client_secret")
    )
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    response = await request_with_mapping(
        lambda: context.client.post(
            options.token_url,
            data=form,
            auth=auth,
            headers={"Accept": "application/json"},
        ),
        platform=PLATFORM_ID,
        tenant=settings.tenant,
    )
    now = context.clock()
    if response.status_code != 200:
        _token_failure(response, settings.tenant, now)
    return _token_from(response, refresh_token, settings.tenant, now)


def _refresh_token_to_use(
    stored: OAuthToken | None, configured: str, source: str
) -> str:
    # The store carries the latest rotated refresh token, which wins over the
    # configured secret as long as the rotations started from that secret.
    # A different configured secret means an operator issued a new refresh
    # token (for example after invalid_grant), so it wins instead.
    if stored is None or not stored.refresh_token:
        return configured
    if stored.source_fingerprint not in (None, source):
        return configured
    return stored.refresh_token


async def authenticate_rest(
    settings: PlatformSettings, options: WorkdayOptions, context: AuthContext
) -> Credentials:
    """Return bearer credentials, refreshing the access token when needed."""
    configured = settings.secret("refresh_token")
    source = fingerprint(configured)

    async def fetch(stored: OAuthToken | None) -> OAuthToken:
        refresh = _refresh_token_to_use(stored, configured, source)
        token = await _refresh(settings, options, context, refresh)
        return attrs.evolve(token, source_fingerprint=source)

    token = await context.tokens.get(
        settings.tenant, PLATFORM_ID, fetch, force=context.force_refresh
    )
    return Credentials(
        kind="bearer",
        headers={"Authorization": f"Bearer {token.access_token}"},
        expires_at=token.expires_at,
    )


def rest_body(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON body of the REST write for a mapped payload."""
    return {
        "worker": {"id": payload["employee_id"]},
        "effectiveDate": payload["effective_date"],
        "customObject": payload["custom_object"],
        "data": payload["row"],
    }


def _send_failure(response: httpx.Response, tenant: str, known: list[str]) -> NoReturn:
    status = response.status_code
    text = sanitize_text(response.text[:_TEXT_LIMIT], known)
    message = f"Workday responded with HTTP {status}: {text}".rstrip(": ")
    _raise_transient(response, message, tenant, time.time())
    context: dict[str, Any] = {
        "platform": PLATFORM_ID,
        "tenant": tenant,
        "status_code": status,
    }
    if status == 401:
        raise AuthenticationError(message, **context)
    raise PermanentError(message, **context)


async def send_rest(
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
    options: WorkdayOptions,
) -> SendOutcome:
    """POST one custom object row to the REST path and classify the response."""
    url = options.rest_url(context.settings)
    headers = {**credentials.headers, "Accept": "application/json"}
    body = rest_body(request.payload)
    response = await request_with_mapping(
        lambda: context.client.post(url, json=body, headers=headers),
        platform=PLATFORM_ID,
        tenant=request.tenant,
    )
    if not response.is_success:
        _send_failure(response, request.tenant, [request.payload["employee_id"]])
    response_id = _json(response).get("id")
    return SendOutcome(
        status_code=response.status_code,
        response_id=response_id if isinstance(response_id, str) else None,
    )
