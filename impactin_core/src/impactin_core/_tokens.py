"""OAuth token caching with refresh ahead of expiry and single flight."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from ._errors import AuthenticationError

__all__ = ["MemoryTokenStore", "OAuthToken", "TokenCache", "TokenStore"]

logger = logging.getLogger("impactin.tokens")

#: Seconds before expiry at which a token counts as expired and is refreshed.
DEFAULT_REFRESH_LEEWAY = 60.0


@attrs.frozen(kw_only=True)
class OAuthToken:
    """An access token, and the refresh token that renews it where one exists."""

    access_token: str = attrs.field(repr=False)
    expires_at: float
    refresh_token: str | None = attrs.field(default=None, repr=False)
    token_type: str = "Bearer"
    obtained_at: float = attrs.field(factory=time.time)

    def is_fresh(self, now: float, leeway: float = DEFAULT_REFRESH_LEEWAY) -> bool:
        return now < self.expires_at - leeway


class TokenStore(Protocol):
    """Persistent storage of tokens per tenant and platform."""

    def load_token(self, tenant: str, platform: str) -> OAuthToken | None: ...

    def save_token(self, tenant: str, platform: str, token: OAuthToken) -> None: ...

    def delete_token(self, tenant: str, platform: str) -> None: ...


Fetch = Callable[[OAuthToken | None], Awaitable[OAuthToken]]


class TokenCache:
    """Return a fresh token per tenant and platform, refreshing once at a time.

    Concurrent callers in one event loop wait for one refresh and share its
    result. ``fetch`` receives the stored token (which may carry a refresh
    token) and returns a new one; the new token is saved before any caller
    uses it, so a rotated refresh token is never lost.
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        clock: Callable[[], float] = time.time,
        leeway: float = DEFAULT_REFRESH_LEEWAY,
    ) -> None:
        self._store = store
        self._clock = clock
        self._leeway = leeway
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.refresh_count = 0

    def _lock(self, tenant: str, platform: str) -> asyncio.Lock:
        key = (tenant, platform)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def get(
        self, tenant: str, platform: str, fetch: Fetch, *, force: bool = False
    ) -> OAuthToken:
        """Return a stored fresh token, or fetch, save and return a new one."""
        stale = None if force else self._fresh(tenant, platform)
        if stale is not None:
            return stale
        async with self._lock(tenant, platform):
            stored = self._store.load_token(tenant, platform)
            if (
                stored is not None
                and not force
                and stored.is_fresh(self._clock(), self._leeway)
            ):
                return stored
            token = await fetch(stored)
            self._store.save_token(tenant, platform, token)
            self.refresh_count += 1
            logger.info("Obtained a new token for tenant %s on %s", tenant, platform)
            return token

    def _fresh(self, tenant: str, platform: str) -> OAuthToken | None:
        stored = self._store.load_token(tenant, platform)
        if stored is not None and stored.is_fresh(self._clock(), self._leeway):
            return stored
        return None

    def invalidate(self, tenant: str, platform: str) -> None:
        self._store.delete_token(tenant, platform)


def reauthentication_error(tenant: str, platform: str) -> AuthenticationError:
    message = (
        f"The refresh token of tenant {tenant!r} on {platform!r} was rejected "
        "(invalid_grant); issue a new refresh token and store it with "
        "'impactin tokens refresh'."
    )
    return AuthenticationError(message, platform=platform, tenant=tenant)


class MemoryTokenStore:
    """A ``TokenStore`` kept in a dict, for tests and short-lived scripts."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], OAuthToken] = {}

    def load_token(self, tenant: str, platform: str) -> OAuthToken | None:
        return self._tokens.get((tenant, platform))

    def save_token(self, tenant: str, platform: str, token: OAuthToken) -> None:
        self._tokens[(tenant, platform)] = token

    def delete_token(self, tenant: str, platform: str) -> None:
        self._tokens.pop((tenant, platform), None)
