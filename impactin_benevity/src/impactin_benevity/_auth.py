"""OAuth 2.0 client credentials for Benevity.

``POST /oauth2/token`` with HTTP Basic ``client_id:client_secret`` and the
form body ``grant_type=client_credentials`` returns a JWT access token with
``expires_in`` 3600 and ``token_type`` Bearer. The token is reused through
the runtime's token cache until shortly before it expires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import httpx

from impactin_core import (
    AuthContext,
    AuthenticationError,
    ConfigError,
    Credentials,
    OAuthToken,
    PlatformSettings,
    RetryableError,
    plain_http_host,
    raise_for_response,
    request_with_mapping,
)

from ._mapping import PLATFORM_ID
from ._options import AUTH_KIND, TOKEN_LIFETIME, BenevityOptions, option_key

__all__ = ["AUTH_KIND", "TOKEN_LIFETIME", "authenticate", "fetch_token", "token_url"]


# RFC 6749 section 5.2: the error codes that mean the client itself was
# rejected, whatever the status code carrying them.
_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


def token_url(settings: PlatformSettings) -> str:
    """Return the token endpoint: the ``token_url`` option or ``/oauth2/token``."""
    options = BenevityOptions.from_settings(settings.tenant, settings.options)
    if options.token_url is None:
        return settings.base_url.rstrip("/") + "/oauth2/token"
    host = plain_http_host(options.token_url)
    if host is not None and not settings.allow_http:
        # The token request carries the client secret, so it gets the rule
        # that the runtime applies to base_url.
        key = option_key(settings.tenant, "token_url")
        message = (
            f"Benevity option {key} is plain http:// to {host!r}, which would "
            "carry the client secret unencrypted; use https://, or set "
            "allow_http = true for the platform if a proxy on a network you "
            "trust adds TLS."
        )
        raise ConfigError(message, key=key)
    return options.token_url


async def authenticate(settings: PlatformSettings, context: AuthContext) -> Credentials:
    """Return bearer credentials, reusing the cached token while it is fresh."""

    async def fetch(stored: OAuthToken | None) -> OAuthToken:
        # Client credentials carry no refresh token, so ``stored`` is unused.
        return await fetch_token(context.client, settings, clock=context.clock)

    token = await context.tokens.get(
        settings.tenant, PLATFORM_ID, fetch, force=context.force_refresh
    )
    return Credentials(
        kind=AUTH_KIND,
        headers={"Authorization": f"Bearer {token.access_token}"},
        expires_at=token.expires_at,
    )


async def fetch_token(
    client: httpx.AsyncClient,
    settings: PlatformSettings,
    *,
    clock: Callable[[], float],
) -> OAuthToken:
    """Request a new access token with the tenant's client credentials."""
    auth = httpx.BasicAuth(
        settings.secret("client_id"), settings.secret("client_secret")
    )
    url = token_url(settings)
    response = await request_with_mapping(
        lambda: client.post(
            url,
            data={"grant_type": "client_credentials"},
            auth=auth,
            headers={"Accept": "application/json"},
        ),
        platform=PLATFORM_ID,
        tenant=settings.tenant,
    )
    now = clock()
    if response.status_code != 200:
        _raise_token_error(response, settings.tenant, now)
    return _parse_token(response, settings.tenant, now)


def _parse_token(response: httpx.Response, tenant: str, now: float) -> OAuthToken:
    body = _json_object(response)
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        message = (
            f"Benevity responded to the token request of tenant {tenant!r} with HTTP "
            "200 but no access_token; the token endpoint or a proxy in front of "
            "it returned something else."
        )
        raise RetryableError(
            message, platform=PLATFORM_ID, tenant=tenant, status_code=200
        )
    lifetime = body.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
        lifetime = TOKEN_LIFETIME
    token_type = body.get("token_type")
    return OAuthToken(
        access_token=access_token,
        expires_at=now + lifetime,
        token_type=token_type if isinstance(token_type, str) else "Bearer",
        obtained_at=now,
    )


def _raise_token_error(response: httpx.Response, tenant: str, now: float) -> NoReturn:
    code = _json_object(response).get("error")
    if response.status_code in (401, 403) or code in _CLIENT_ERRORS:
        prefix = f"tenants.{tenant}.platforms.{PLATFORM_ID}.credentials"
        message = (
            f"Benevity rejected the client credentials of tenant {tenant!r} "
            f"(HTTP {response.status_code}); check {prefix}.client_id and "
            f"{prefix}.client_secret."
        )
        raise AuthenticationError(
            message,
            platform=PLATFORM_ID,
            tenant=tenant,
            status_code=response.status_code,
        )
    raise_for_response(response, platform=PLATFORM_ID, tenant=tenant, now=now)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
