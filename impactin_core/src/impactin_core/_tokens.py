"""OAuth token caching with refresh ahead of expiry and single flight.

``TokenCache`` keeps one token per tenant and platform in a ``TokenStore``.
Callers in one event loop share one refresh through an ``asyncio.Lock`` of
that loop.
When the store also implements ``TokenLockStore`` (the SQLite ``Store``
does), processes that share the store file share one refresh too. The
refreshing process takes a lease row. A waiting process re-reads the store
once it gets the lease, so it uses the token the other process saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import attrs

from ._errors import AuthenticationError
from ._logging import register_secrets
from ._loops import drop_closed_loops

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_REFRESH_LEEWAY",
    "MemoryTokenStore",
    "OAuthToken",
    "RefreshTokenRejected",
    "TokenCache",
    "TokenLockStore",
    "TokenStore",
    "fingerprint",
    "reauthentication_error",
]

logger = logging.getLogger("impactin.tokens")

#: Seconds before expiry at which a token counts as expired and is refreshed.
DEFAULT_REFRESH_LEEWAY = 60.0

#: Seconds a process may keep the refresh lease of one tenant and platform.
#: A process that dies while refreshing blocks the others for at most this
#: long. It is twice the runtime's 30 s HTTP timeout of one token request.
DEFAULT_LEASE_SECONDS = 60.0

#: Seconds between two attempts to take a lease that another process holds.
DEFAULT_LEASE_POLL = 0.05


@attrs.frozen(kw_only=True)
class OAuthToken:
    """An access token, and the refresh token that renews it where one exists.

    ``source_fingerprint`` identifies the configured refresh token that the
    chain of rotated refresh tokens started from (see ``fingerprint``), so a
    connector can tell when an operator has configured a new one.
    """

    access_token: str = attrs.field(repr=False)
    expires_at: float
    refresh_token: str | None = attrs.field(default=None, repr=False)
    token_type: str = "Bearer"
    obtained_at: float = attrs.field(factory=time.time)
    source_fingerprint: str | None = None

    def is_fresh(self, now: float, leeway: float = DEFAULT_REFRESH_LEEWAY) -> bool:
        return now < self.expires_at - leeway


def _keep_refresh_token(token: OAuthToken, used: OAuthToken | None) -> OAuthToken:
    """Carry the used refresh token over to a new token that came without one.

    An authorization server may leave the refresh token unchanged and omit
    it from the refresh response (RFC 6749, section 6).
    """
    if token.refresh_token or used is None or not used.refresh_token:
        return token
    return attrs.evolve(
        token,
        refresh_token=used.refresh_token,
        source_fingerprint=token.source_fingerprint or used.source_fingerprint,
    )


def fingerprint(secret: str) -> str:
    """Return a short SHA-256 prefix that identifies ``secret`` without revealing it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


class TokenStore(Protocol):
    """Persistent storage of tokens per tenant and platform."""

    def load_token(self, tenant: str, platform: str) -> OAuthToken | None: ...

    def save_token(self, tenant: str, platform: str, token: OAuthToken) -> None: ...

    def delete_token(self, tenant: str, platform: str) -> None: ...


class TokenLockStore(Protocol):
    """A token store that can lease the right to refresh across processes.

    ``try_lock_token`` takes the lease of ``owner`` until ``until`` (Unix
    time) and returns True, unless another owner holds an unexpired lease.
    """

    def try_lock_token(
        self, tenant: str, platform: str, owner: str, until: float
    ) -> bool: ...

    def unlock_token(self, tenant: str, platform: str, owner: str) -> None: ...


Fetch = Callable[[OAuthToken | None], Awaitable[OAuthToken]]


class RefreshTokenRejected(AuthenticationError):
    """The authorization server rejected a refresh token with ``invalid_grant``.

    A connector's fetch function raises it, and ``TokenCache`` then re-reads
    the store once, because another worker may have rotated the token.
    """


def reauthentication_error(tenant: str, platform: str) -> RefreshTokenRejected:
    """Build the error that tells the operator to issue a new refresh token."""
    message = (
        f"The refresh token of tenant {tenant!r} on {platform!r} was rejected "
        "(invalid_grant), and the token store holds no newer one. Issue a new "
        "refresh token, set it as the tenant's 'refresh_token' secret, then run "
        f"'impactin tokens refresh --tenant {tenant} --platform {platform}'. To "
        "start again from the secret already set (a sandbox that restarted, "
        "say), run 'impactin tokens invalidate' with the same options first."
    )
    return RefreshTokenRejected(message, platform=platform, tenant=tenant)


class TokenCache:
    """Return a fresh token per tenant and platform, refreshing once at a time.

    ``fetch`` receives the stored token (which may carry a refresh token) and
    returns a new one. The new token is saved before any caller uses it, so
    a rotated refresh token is never lost. A token counts as expired
    ``leeway`` seconds before its ``expires_at``, measured with ``clock``.
    Leases between processes use ``lease_clock`` (wall time), because they
    are compared across processes.
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        clock: Callable[[], float] = time.time,
        leeway: float = DEFAULT_REFRESH_LEEWAY,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        lease_clock: Callable[[], float] = time.time,
        lease_poll: float = DEFAULT_LEASE_POLL,
    ) -> None:
        self._store = store
        self._clock = clock
        self._leeway = leeway
        self._lease_seconds = lease_seconds
        self._lease_clock = lease_clock
        self._lease_poll = lease_poll
        # An asyncio.Lock belongs to the loop that first waits on it, so each
        # loop has its own, because a host may call asyncio.run once per
        # batch with the same runtime. A lock that was waited on refers to its
        # loop, so the weak key alone does not free a closed loop, and _lock
        # drops the closed ones.
        self._locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[str, str], asyncio.Lock]
        ] = weakref.WeakKeyDictionary()
        self._locks_guard = threading.Lock()
        #: Tokens this cache obtained from an authorization server.
        self.refresh_count = 0

    @property
    def store(self) -> TokenStore:
        return self._store

    def _lock(self, tenant: str, platform: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        # Loops of other threads may look up their locks at the same time.
        with self._locks_guard:
            locks = self._locks.get(loop)
            if locks is None:
                drop_closed_loops(self._locks)
                locks = self._locks[loop] = {}
            return locks.setdefault((tenant, platform), asyncio.Lock())

    def _usable(self, token: OAuthToken | None) -> bool:
        return token is not None and token.is_fresh(self._clock(), self._leeway)

    def load(self, tenant: str, platform: str) -> OAuthToken | None:
        """Return the stored token, fresh or not, or None."""
        return self._store.load_token(tenant, platform)

    def save(self, tenant: str, platform: str, token: OAuthToken) -> None:
        """Store ``token``, for example one issued outside impactin."""
        self._store.save_token(tenant, platform, token)

    def invalidate(self, tenant: str, platform: str) -> None:
        """Delete the stored token, so the next ``get`` fetches a new one."""
        self._store.delete_token(tenant, platform)

    async def refresh(self, tenant: str, platform: str, fetch: Fetch) -> OAuthToken:
        """Fetch, save and return a new token even when the stored one is fresh."""
        return await self.get(tenant, platform, fetch, force=True)

    async def get(
        self, tenant: str, platform: str, fetch: Fetch, *, force: bool = False
    ) -> OAuthToken:
        """Return a stored fresh token, or fetch, save and return a new one.

        With ``force`` the stored token is replaced unless another caller
        replaced it while this one waited for the lock: the platform rejected
        the token this caller saw, not the newer one.
        """
        seen = self._store.load_token(tenant, platform)
        if not force and seen is not None and self._usable(seen):
            return seen
        async with self._lock(tenant, platform), self._lease(tenant, platform):
            stored = self._store.load_token(tenant, platform)
            # A forced refresh still uses a token that another caller saved
            # while this one waited: the platform rejected the older token.
            usable = stored is not None and self._usable(stored)
            if stored is not None and usable and (not force or _replaced(stored, seen)):
                return stored
            if stored is not None:
                register_secrets([stored.refresh_token])
            token = await self._obtain(tenant, platform, fetch, stored)
            register_secrets([token.access_token, token.refresh_token])
            self._store.save_token(tenant, platform, token)
            self.refresh_count += 1
            logger.info("Obtained a new token for tenant %s on %s", tenant, platform)
            return token

    async def _obtain(
        self, tenant: str, platform: str, fetch: Fetch, stored: OAuthToken | None
    ) -> OAuthToken:
        try:
            return _keep_refresh_token(await fetch(stored), stored)
        except RefreshTokenRejected:
            pass
        # Another worker that does not share the lease (an older version, or
        # one whose lease expired) may have rotated the refresh token.
        reread = self._store.load_token(tenant, platform)
        used = stored.refresh_token if stored is not None else None
        if reread is None or not reread.refresh_token or reread.refresh_token == used:
            raise reauthentication_error(tenant, platform) from None
        if self._usable(reread) and _replaced(reread, stored):
            return reread
        logger.info(
            "Retrying the refresh for tenant %s on %s with the refresh token "
            "another worker stored",
            tenant,
            platform,
        )
        try:
            return _keep_refresh_token(await fetch(reread), reread)
        except RefreshTokenRejected:
            raise reauthentication_error(tenant, platform) from None

    @contextlib.asynccontextmanager
    async def _lease(self, tenant: str, platform: str) -> AsyncIterator[None]:
        # getattr, not isinstance: since Python 3.12 a runtime protocol check
        # ignores __getattr__, which store proxies such as the metrics
        # wrapper use to pass these methods through.
        try_lock = getattr(self._store, "try_lock_token", None)
        unlock = getattr(self._store, "unlock_token", None)
        if try_lock is None or unlock is None:
            yield
            return
        owner = uuid.uuid4().hex
        waited = False
        while not try_lock(
            tenant, platform, owner, self._lease_clock() + self._lease_seconds
        ):
            if not waited:
                logger.debug(
                    "Waiting for another process to refresh the token of "
                    "tenant %s on %s",
                    tenant,
                    platform,
                )
                waited = True
            await asyncio.sleep(self._lease_poll)
        try:
            yield
        finally:
            unlock(tenant, platform, owner)


def _replaced(current: OAuthToken, previous: OAuthToken | None) -> bool:
    return previous is None or current.access_token != previous.access_token


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
