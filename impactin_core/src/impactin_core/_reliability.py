"""Backoff, rate limiting and circuit breaking per tenant and platform."""

from __future__ import annotations

import asyncio
import collections
import math
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiolimiter import AsyncLimiter
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import (
    CLOSED,
    HALF_OPENED,
    OPENED,
    ClosedState,
    Context,
    HalfOpenedState,
    State,
)

from ._config import BreakerPolicy, RetryPolicy
from ._errors import CircuitOpen, RetryableError
from ._loops import drop_closed_loops

__all__ = [
    "BreakerBoard",
    "BreakerState",
    "BreakerTicket",
    "WindowLimiter",
    "backoff_ceiling",
    "backoff_delay",
    "retry_delay",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]

# -- backoff -------------------------------------------------------------------


def backoff_ceiling(attempt: int, policy: RetryPolicy) -> float:
    """Return the longest wait before retry ``attempt`` (1-based).

    The ceiling is ``base_delay * 2 ** (attempt - 1)``, capped at ``max_delay``.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        message = f"Retry attempts are numbered from 1, not {attempt!r}."
        raise ValueError(message)
    doublings = attempt - 1
    # Compare exponents first, because 2.0 ** doublings overflows a float
    # after 1023 doublings.
    if doublings >= math.log2(policy.max_delay / policy.base_delay):
        return float(policy.max_delay)
    return min(float(policy.max_delay), policy.base_delay * 2.0**doublings)


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Draw the wait before retry ``attempt`` (1-based) with full jitter.

    The wait is uniform in ``[0, backoff_ceiling(attempt, policy)]``.
    """
    return rng.uniform(0.0, backoff_ceiling(attempt, policy))


def retry_delay(
    attempts: int,
    policy: RetryPolicy,
    rng: random.Random,
    *,
    elapsed: float,
    retry_after: float | None = None,
) -> float | None:
    """Return the wait before the next attempt, or None when the policy ends.

    ``attempts`` counts the attempts made so far and ``elapsed`` the seconds
    since the first one. A platform's ``retry_after`` replaces the backoff
    draw. None means ``max_attempts`` is reached or the wait would end after
    ``policy.deadline``.
    """
    if attempts >= policy.max_attempts:
        return None
    delay = retry_after
    if delay is None:
        delay = backoff_delay(attempts, policy, rng)
    if elapsed + delay > policy.deadline:
        return None
    return float(delay)


# -- rate limits ----------------------------------------------------------------


class WindowLimiter:
    """Admit at most ``calls`` calls in any window of ``period`` seconds.

    A sliding log of admitted calls enforces the limit: a call waits until
    enough logged calls are older than ``period``. aiolimiter's leaky bucket
    (1.3) runs in front of the log and spaces calls ``period / calls`` apart
    once its burst of ``calls`` is spent. It cannot enforce the limit alone,
    because it refills while callers wait: a full burst right after a
    drained bucket puts up to twice the quota into one window.

    aiolimiter reads the event loop's clock (``loop.time()``) and schedules
    its wake-ups with ``loop.call_at``. So the bucket runs only when
    ``clock`` is left as None, which makes the log read the running loop's
    clock too. With an injected ``clock`` the log alone limits the calls,
    and ``sleep`` must advance that clock. The standard asyncio loops all
    read ``time.monotonic()``, so the log stays valid across repeated
    ``asyncio.run()`` calls in one process.
    """

    def __init__(
        self,
        calls: int,
        period: float,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        max_pause: float = 3600.0,
    ) -> None:
        if isinstance(calls, bool) or not isinstance(calls, int) or calls <= 0:
            message = (
                f"A rate limit needs a whole number of calls above 0, not {calls!r}."
            )
            raise ValueError(message)

        if not _is_positive_finite(period):
            message = (
                f"A rate limit needs a finite period above 0 seconds, not {period!r}."
            )
            raise ValueError(message)

        if not _is_positive_finite(max_pause):
            message = (
                "max_pause must be a finite number of seconds above 0, "
                f"not {max_pause!r}."
            )
            raise ValueError(message)

        self.calls = calls
        self.period = float(period)
        self.max_pause = float(max_pause)
        self._clock = clock
        self._sleep: Sleep = sleep or asyncio.sleep

        # (admission time, amount) of the calls admitted in the last period.
        self._log: collections.deque[tuple[float, float]] = collections.deque()
        self._logged = 0.0
        self._log_lock = threading.Lock()
        self._paused_until = -math.inf
        # aiolimiter and asyncio.Lock bind to one event loop, so there is one
        # of each per loop.
        self._buckets: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncLimiter
        ] = weakref.WeakKeyDictionary()
        self._locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Lock
        ] = weakref.WeakKeyDictionary()
        self.waits = 0

    def now(self) -> float:
        """Return the limiter's clock reading in seconds."""
        if self._clock is not None:
            return self._clock()
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def _check_amount(self, amount: float) -> None:
        valid_number = isinstance(amount, (int, float)) and not isinstance(amount, bool)
        if not valid_number or not 0 < amount <= self.calls:
            message = (
                f"Cannot acquire {amount!r} calls from a quota of {self.calls} per "
                f"{self.period:g} s; use a number above 0 and at most {self.calls}."
            )
            raise ValueError(message)

    def _loop_primitives(self) -> tuple[AsyncLimiter | None, asyncio.Lock]:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            drop_closed_loops(self._locks)
            drop_closed_loops(self._buckets)
            lock = self._locks[loop] = asyncio.Lock()
            if self._clock is None:
                self._buckets[loop] = AsyncLimiter(self.calls, self.period)
        return self._buckets.get(loop), lock

    async def acquire(self, amount: float = 1) -> bool:
        """Wait until ``amount`` calls fit the quota; return True if it waited.

        Raises ValueError at once for an amount that is not a number above 0
        and at most ``calls``.
        """
        self._check_amount(amount)
        bucket, lock = self._loop_primitives()
        async with lock:
            floor = await self._wait_out_pause()
            waited = floor > -math.inf
            if bucket is not None:
                waited = not bucket.has_capacity(amount) or waited
                await bucket.acquire(amount)
            waited = await self._admit(amount, floor) or waited
        if waited:
            self.waits += 1
        return waited

    async def acquire_now(self, amount: float = 1) -> bool:
        """Admit ``amount`` calls if they fit the quota now; return whether admitted.

        It never waits, and it admits nothing while other callers wait in
        ``acquire``, so they keep their turn.
        """
        self._check_amount(amount)
        bucket, lock = self._loop_primitives()
        if lock.locked() or self.now() < self._paused_until:
            return False
        if bucket is not None and not bucket.has_capacity(amount):
            return False
        if self._try_log(amount, -math.inf) is not None:
            return False
        if bucket is not None:
            # With capacity, aiolimiter takes the amount without suspending.
            await bucket.acquire(amount)
        return True

    # A clock that is sleeping to a target time can wake a rounding error
    # short of it, and the remaining wait can be too small to move the clock
    # at all. So after a sleep the limiter treats the target as reached: the
    # sleep's target is a floor under the clock reading.

    async def _wait_out_pause(self) -> float:
        """Sleep out any pause; return the last sleep's target or -inf."""
        floor = -math.inf
        while max(self.now(), floor) < self._paused_until:
            target = self._paused_until
            await self._sleep(target - self.now())
            floor = target
        return floor

    async def _admit(self, amount: float, floor: float) -> bool:
        waited = False
        while True:
            target = self._try_log(amount, floor)
            if target is None:
                return waited
            waited = True
            await self._sleep(target - self.now())
            floor = target

    def _try_log(self, amount: float, floor: float) -> float | None:
        """Log the call and return None, or return the time to wait for."""
        with self._log_lock:
            now = max(self.now(), floor)
            while self._log and self._log[0][0] + self.period <= now:
                self._logged -= self._log.popleft()[1]
            if not self._log:
                self._logged = 0.0  # drop the rounding error of the sums
            if self._logged + amount <= self.calls:
                self._log.append((now, amount))
                self._logged += amount
                return None
            # Wait until enough of the oldest calls leave the window. Once
            # every logged call has left, any valid amount fits.
            remaining = self._logged
            for admitted_at, logged_amount in self._log:
                remaining -= logged_amount
                if remaining + amount <= self.calls:
                    return admitted_at + self.period
            return self._log[-1][0] + self.period

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds``, as a platform's 429 requests.

        Pauses longer than ``max_pause`` are cut to it, so a far-off
        ``Retry-After`` cannot stop a process for good. A new pause never
        shortens one already running, and 0 or a negative value adds none.
        """
        if not isinstance(seconds, (int, float)) or math.isnan(seconds):
            message = (
                f"Cannot pause a rate limiter for {seconds!r} s; "
                "use a number of seconds."
            )
            raise ValueError(message)
        until = self.now() + min(float(seconds), self.max_pause)
        self._paused_until = max(self._paused_until, until)

    def admitted_in_window(self) -> float:
        """Return the amount of calls admitted in the last ``period`` seconds."""
        with self._log_lock:
            now = self.now()
            return sum(a for t, a in self._log if t + self.period > now)


def _is_positive_finite(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value > 0


# -- circuit breakers -----------------------------------------------------------


@attrs.frozen
class BreakerState:
    """A circuit's state as ``impactin health`` shows it."""

    name: str
    state: str
    failure_count: int
    #: The board's clock reading when the circuit last opened.
    opened_at: float | None
    #: When an open circuit lets a probe through, on the board's clock.
    reopens_at: float | None
    threshold: int
    reset_timeout: float
    probing: bool


@attrs.frozen(eq=False)
class BreakerTicket:
    """A call that ``BreakerBoard.before`` let through; pass it to ``after``."""

    name: str
    generation: int
    probe: bool


@attrs.define(eq=False)
class _Circuit:
    context: Context
    breaker: Any
    opened_at: float | None = None
    # Counts state changes, so outcomes of calls let through before the
    # latest change are recognised as stale and ignored.
    generation: int = 0
    probing: bool = False


_OUTCOMES = ("success", "failure", "neutral")


class BreakerBoard:
    """Circuit breakers (purgatory 3) keyed by ``tenant/platform``.

    A circuit opens after ``policy.threshold`` consecutive retryable
    failures, fails calls fast with ``CircuitOpen`` for
    ``policy.reset_timeout`` seconds, then lets one probe call through
    (half-open). The probe's success closes the circuit and its failure
    opens it again. A ``"neutral"`` outcome (a permanent error, a bad
    record) neither counts nor resets the streak, and a neutral probe
    leaves the circuit half-open for the next caller's probe.

    purgatory keeps the state and counts failures, but its open state reads
    ``time.time()`` directly. So the board times the open state itself with
    ``clock`` and never lets purgatory decide whether an open circuit expired.
    The state lives in process memory only.
    """

    def __init__(
        self,
        on_event: Callable[[str, str], None] | None = None,
        *,
        clock: Clock = time.time,
    ) -> None:
        self._factory = AsyncCircuitBreakerFactory()
        self._circuits: dict[str, _Circuit] = {}
        self._on_event = on_event
        self._clock = clock

    async def _circuit(self, name: str, policy: BreakerPolicy) -> _Circuit:
        circuit = self._circuits.get(name)
        if circuit is None:
            breaker = await self._factory.get_breaker(
                name, threshold=policy.threshold, ttl=policy.reset_timeout
            )
            # Another task may have created it during the await; keep the first.
            circuit = self._circuits.setdefault(
                name, _Circuit(breaker.context, breaker)
            )
        circuit.context.threshold = policy.threshold
        circuit.context.ttl = policy.reset_timeout
        return circuit

    async def before(
        self, tenant: str, platform: str, policy: BreakerPolicy
    ) -> BreakerTicket:
        """Let a call through and return its ticket, or raise ``CircuitOpen``."""
        name = f"{tenant}/{platform}"
        circuit = await self._circuit(name, policy)
        context = circuit.context
        if context.state == OPENED:
            assert circuit.opened_at is not None
            if self._clock() < circuit.opened_at + context.ttl:
                raise self._open_error(tenant, platform, probing=False)
            self._change_state(name, circuit, HalfOpenedState())
        probe = context.state == HALF_OPENED
        if probe:
            if circuit.probing:
                raise self._open_error(tenant, platform, probing=True)
            circuit.probing = True
        ticket = BreakerTicket(name=name, generation=circuit.generation, probe=probe)
        await self._flush(circuit)
        return ticket

    async def after(self, ticket: BreakerTicket, outcome: str) -> None:
        """Report a call's outcome: ``"success"``, ``"failure"`` or ``"neutral"``.

        ``"failure"`` is for retryable errors only.
        """
        if outcome not in _OUTCOMES:
            choices = ", ".join(_OUTCOMES)
            message = f"Unknown breaker outcome {outcome!r}; use one of {choices}."
            raise ValueError(message)
        circuit = self._circuits[ticket.name]
        if ticket.generation != circuit.generation:
            return
        if ticket.probe:
            circuit.probing = False
        context = circuit.context
        state_before = context.state
        if outcome == "failure":
            context.handle_exception(RetryableError("retryable failure"))
        elif outcome == "success":
            context.handle_end_request()
        if context.state != state_before:
            self._record_change(ticket.name, circuit)
        await self._flush(circuit)

    def reset(self, tenant: str, platform: str) -> bool:
        """Close a circuit and clear its failure streak, as an operator would.

        Returns False when the circuit does not exist in this process.
        Outcomes of calls let through before the reset are ignored.
        """
        circuit = self._circuits.get(f"{tenant}/{platform}")
        if circuit is None:
            return False
        self._change_state(f"{tenant}/{platform}", circuit, ClosedState())
        return True

    def _change_state(self, name: str, circuit: _Circuit, state: State) -> None:
        circuit.context.set_state(state)
        self._record_change(name, circuit)

    def _record_change(self, name: str, circuit: _Circuit) -> None:
        state = circuit.context.state
        circuit.generation += 1
        circuit.probing = False
        if state == OPENED:
            circuit.opened_at = self._clock()
        elif state == CLOSED:
            circuit.opened_at = None
        if self._on_event is not None:
            self._on_event(name, state)

    async def _flush(self, circuit: _Circuit) -> None:
        # Hand purgatory's queued events to its message bus, as its own
        # context manager does, so the list does not grow.
        context = circuit.context
        while context.messages:
            await circuit.breaker.messagebus.handle(
                context.messages.pop(0), circuit.breaker.uow
            )

    def _open_error(self, tenant: str, platform: str, *, probing: bool) -> CircuitOpen:
        if probing:
            reason = "is half-open and one probe call is testing the platform"
        else:
            reason = "is open after repeated retryable failures"
        message = (
            f"The circuit for tenant {tenant!r} on {platform!r} {reason}; the delivery "
            "stays pending and is tried again after the reset timeout."
        )
        return CircuitOpen(message, platform=platform, tenant=tenant)

    def reopens_at(self, tenant: str, platform: str) -> float | None:
        """Return when an open circuit lets a probe through, or None if not open."""
        circuit = self._circuits.get(f"{tenant}/{platform}")
        if circuit is None or circuit.context.state != OPENED:
            return None
        assert circuit.opened_at is not None
        return circuit.opened_at + float(circuit.context.ttl)

    def states(self) -> list[BreakerState]:
        """Return every circuit's state, sorted by name."""
        result = []
        for name, circuit in sorted(self._circuits.items()):
            context = circuit.context
            tenant, _, platform = name.rpartition("/")
            result.append(
                BreakerState(
                    name=name,
                    state=context.state,
                    failure_count=context.failure_count or 0,
                    opened_at=circuit.opened_at,
                    reopens_at=self.reopens_at(tenant, platform),
                    threshold=int(context.threshold),
                    reset_timeout=float(context.ttl),
                    probing=circuit.probing,
                )
            )
        return result
