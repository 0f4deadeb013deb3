"""Backoff, rate limiting and circuit breaking per tenant and platform."""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiolimiter import AsyncLimiter
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import HALF_OPENED, OpenedState

from ._config import BreakerPolicy, RetryPolicy
from ._errors import CircuitOpen, RetryableError

__all__ = ["BreakerBoard", "WindowLimiter", "backoff_delay"]

Sleep = Callable[[float], Awaitable[Any]]


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Return the wait before retry ``attempt`` (1-based): full jitter.

    The ceiling doubles per attempt from ``base_delay`` and is capped at
    ``max_delay``; the wait is drawn uniformly below it.
    """
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
    return rng.uniform(0, ceiling)


class WindowLimiter:
    """At most ``calls`` acquisitions in any window of ``period`` seconds.

    aiolimiter's leaky bucket smooths the flow but lets a full bucket burst
    through right after a drained one, which can put up to twice the quota
    in one window. A log of the last ``calls`` acquisition times closes that
    gap: a caller waits until the oldest of them leaves the window. A 429
    from the platform pauses every caller with ``pause``.
    """

    def __init__(
        self,
        calls: int,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if calls <= 0 or not period > 0 or math.isinf(period):
            message = f"A rate limit needs calls > 0 and a finite period > 0, not {calls} per {period}."
            raise ValueError(message)
        self.calls = calls
        self.period = float(period)
        self._clock = clock
        self._sleep = sleep
        self._log: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._buckets: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncLimiter
        ] = weakref.WeakKeyDictionary()
        self._locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Lock
        ] = weakref.WeakKeyDictionary()
        self.waits = 0

    def _bucket(self) -> tuple[AsyncLimiter, asyncio.Lock]:
        # aiolimiter and asyncio.Lock bind to one event loop; keep one per
        # loop so repeated asyncio.run() calls in one process work.
        loop = asyncio.get_running_loop()
        bucket = self._buckets.get(loop)
        if bucket is None:
            bucket = self._buckets[loop] = AsyncLimiter(self.calls, self.period)
            self._locks[loop] = asyncio.Lock()
        return bucket, self._locks[loop]

    async def acquire(self, amount: float = 1) -> bool:
        """Wait for capacity; return True when the caller had to wait."""
        if not isinstance(amount, (int, float)) or math.isnan(amount) or amount <= 0:
            raise ValueError(f"Cannot acquire {amount!r} calls; use a positive number.")
        if amount > self.calls:
            message = (
                f"Cannot acquire {amount} calls at once from a quota of {self.calls}."
            )
            raise ValueError(message)
        bucket, lock = self._bucket()
        waited = False
        async with lock:
            now = self._clock()
            if now < self._paused_until:
                waited = True
                await self._sleep(self._paused_until - now)
            if not bucket.has_capacity(amount):
                waited = True
            await bucket.acquire(amount)
            for _ in range(math.ceil(amount)):
                waited = await self._admit() or waited
        if waited:
            self.waits += 1
        return waited

    async def _admit(self) -> bool:
        waited = False
        while True:
            now = self._clock()
            while self._log and self._log[0] <= now - self.period:
                self._log.popleft()
            if len(self._log) < self.calls:
                self._log.append(now)
                return waited
            waited = True
            await self._sleep(self._log[0] + self.period - now)

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds``, as a platform's 429 asks."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


@attrs.frozen
class BreakerState:
    name: str
    state: str
    failure_count: int
    opened_at: float | None
    threshold: int
    reset_timeout: float


class BreakerBoard:
    """Circuit breakers (purgatory) keyed by ``tenant/platform``.

    Only retryable failures count. Permanent errors and validation faults
    neither count nor reset the failure streak. In the half-open state one
    probe goes through while other callers fail fast.
    """

    def __init__(self, on_event: Callable[[str, str], None] | None = None) -> None:
        self._factory = AsyncCircuitBreakerFactory()
        self._probing: set[str] = set()
        self._policies: dict[str, BreakerPolicy] = {}
        self._contexts: dict[str, Any] = {}
        self._on_event = on_event

    async def _breaker(self, name: str, policy: BreakerPolicy) -> Any:
        self._policies[name] = policy
        return await self._factory.get_breaker(
            name, threshold=policy.threshold, ttl=policy.reset_timeout
        )

    async def _flush(self, breaker: Any) -> None:
        context = breaker.context
        while context.messages:
            await breaker.messagebus.handle(context.messages.pop(0), breaker.uow)

    async def before(self, tenant: str, platform: str, policy: BreakerPolicy) -> Any:
        """Let a call through or raise ``CircuitOpen``."""
        name = f"{tenant}/{platform}"
        breaker = await self._breaker(name, policy)
        context = breaker.context
        try:
            context.handle_new_request()
        except OpenedState:
            raise self._open_error(tenant, platform) from None
        finally:
            await self._flush(breaker)
        if context.state == HALF_OPENED:
            if name in self._probing:
                raise self._open_error(tenant, platform)
            self._probing.add(name)
        self._contexts[name] = context
        return breaker

    def _open_error(self, tenant: str, platform: str) -> CircuitOpen:
        message = (
            f"The circuit for tenant {tenant!r} on {platform!r} is open after "
            "repeated failures; the delivery stays pending and is tried again "
            "after the reset timeout."
        )
        return CircuitOpen(message, platform=platform, tenant=tenant)

    async def after(self, breaker: Any, outcome: str) -> None:
        """Report ``"success"``, ``"failure"`` (retryable) or ``"neutral"``."""
        context = breaker.context
        before = context.state
        if outcome == "failure":
            context.handle_exception(RetryableError("retryable failure"))
        elif outcome == "success" or context.state == HALF_OPENED:
            # A platform that answered, even with a permanent error, is up.
            context.handle_end_request()
        self._probing.discard(context.name)
        await self._flush(breaker)
        if self._on_event and before != context.state:
            self._on_event(context.name, context.state)

    def reopens_at(self, tenant: str, platform: str) -> float | None:
        context = self._contexts.get(f"{tenant}/{platform}")
        if context is None or context.opened_at is None:
            return None
        return float(context.opened_at + context.ttl)

    def states(self) -> list[BreakerState]:
        result = []
        for name, context in sorted(self._contexts.items()):
            result.append(
                BreakerState(
                    name=name,
                    state=context.state,
                    failure_count=context.failure_count or 0,
                    opened_at=context.opened_at,
                    threshold=context.threshold,
                    reset_timeout=context.ttl,
                )
            )
        return result
