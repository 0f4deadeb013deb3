"""Backoff, the window rate limiter and the circuit breaker board."""

from __future__ import annotations

import asyncio
import math
import random
import selectors
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

import attrs
import pytest
from aiolimiter import AsyncLimiter
from hypothesis import given, settings
from hypothesis import strategies as st

from impactin_core import CircuitOpen, RetryableError
from impactin_core._config import BreakerPolicy, RetryPolicy
from impactin_core._reliability import (
    BreakerBoard,
    WindowLimiter,
    backoff_ceiling,
    backoff_delay,
    retry_delay,
)

T = TypeVar("T")


class FakeClock:
    """A clock that only moves when a caller sleeps or a test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that jumps the loop's virtual clock instead of blocking."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 1000.0

    def select(
        self, timeout: float | None = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            return super().select(None)
        events = super().select(0)
        if not events and timeout > 0:
            self.virtual_now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock advances to the next timer at once.

    Timers, ``asyncio.sleep`` and aiolimiter's ``call_at`` wake-ups all read
    ``time()``, so a test of minutes of virtual time takes milliseconds.
    """

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.virtual_now


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def max_in_window(times: list[tuple[float, float]], period: float) -> float:
    """Return the largest amount admitted in any window ``[t, t + period)``."""
    ordered = sorted(times)
    best = 0.0
    for start, _ in ordered:
        total = sum(a for t, a in ordered if start <= t < start + period)
        best = max(best, total)
    return best


# -- backoff --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        pytest.param(1, 0.5, id="first"),
        pytest.param(2, 1.0, id="second"),
        pytest.param(4, 4.0, id="fourth"),
        pytest.param(7, 30.0, id="capped"),
        pytest.param(5000, 30.0, id="huge-attempt"),
    ],
)
def test_backoff_ceiling(attempt: int, expected: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    assert backoff_ceiling(attempt, policy) == expected


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool"),
        pytest.param(1.5, id="float"),
    ],
)
def test_backoff_ceiling_rejects_attempt(attempt: Any) -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        backoff_ceiling(attempt, RetryPolicy())


@pytest.mark.parametrize("seed", range(20))
def test_backoff_delay_within_ceiling(seed: int) -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=10.0)
    rng = random.Random(seed)
    for attempt in range(1, 16):
        delay = backoff_delay(attempt, policy, rng)
        ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
        assert delay >= 0.0, (attempt, delay)
        assert delay <= ceiling, (attempt, delay, ceiling)


def test_backoff_delay_full_jitter() -> None:
    """Full jitter spreads draws over the whole range, down to near 0."""
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0)
    rng = random.Random(7)
    delays = [backoff_delay(4, policy, rng) for _ in range(2000)]
    assert min(delays) < 0.05 * 8.0
    assert max(delays) > 0.95 * 8.0
    assert 3.6 < sum(delays) / len(delays) < 4.4


def test_backoff_delay_repeats_with_seed() -> None:
    policy = RetryPolicy()
    first = [backoff_delay(n, policy, random.Random(3)) for n in range(1, 8)]
    second = [backoff_delay(n, policy, random.Random(3)) for n in range(1, 8)]
    assert first == second


def test_retry_delay_stops_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    delay = retry_delay(3, policy, random.Random(1), elapsed=0.0)
    assert delay is None


def test_retry_delay_stops_at_deadline() -> None:
    policy = RetryPolicy(base_delay=10.0, max_delay=10.0, deadline=30.0)
    delay = retry_delay(1, policy, random.Random(1), elapsed=29.0, retry_after=5.0)
    assert delay is None


def test_retry_delay_uses_retry_after() -> None:
    policy = RetryPolicy(deadline=300.0)
    delay = retry_delay(1, policy, random.Random(1), elapsed=10.0, retry_after=42.0)
    assert delay == 42.0


def test_retry_delay_draws_backoff() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0, deadline=300.0)
    delay = retry_delay(3, policy, random.Random(1), elapsed=0.0)
    assert delay is not None
    assert 0.0 <= delay <= 4.0


# -- rate limiter: fake clock ------------------------------------------------


async def test_limiter_window_fake_clock() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(5, 10.0, clock=clock, sleep=clock.sleep)
    admitted: list[tuple[float, float]] = []

    async def call() -> None:
        await limiter.acquire()
        admitted.append((clock(), 1.0))

    await asyncio.gather(*(call() for _ in range(23)))
    assert len(admitted) == 23
    assert max_in_window(admitted, 10.0) <= 5
    assert clock() - 1000.0 == pytest.approx(40.0)


async def test_limiter_acquire_now_never_waits() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(2, 10.0, clock=clock, sleep=clock.sleep)

    first = await limiter.acquire_now()
    second = await limiter.acquire_now()
    full = await limiter.acquire_now()
    clock.advance(10.0)
    later = await limiter.acquire_now()

    assert [first, second, full, later] == [True, True, False, True]
    assert clock.sleeps == []


async def test_limiter_acquire_now_keeps_turns() -> None:
    """No slot is taken now while the limiter is paused or a caller waits."""
    limiter = WindowLimiter(1, 10.0)
    limiter.pause(0.05)
    paused = await limiter.acquire_now()
    waiting = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    while_waiting = await limiter.acquire_now()
    await waiting

    assert paused is False
    assert while_waiting is False
    assert limiter.waits == 1


async def test_limiter_reports_wait() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(2, 1.0, clock=clock, sleep=clock.sleep)
    first = await limiter.acquire()
    second = await limiter.acquire()
    third = await limiter.acquire()
    assert first is False
    assert second is False
    assert third is True
    assert limiter.waits == 1


@settings(max_examples=60, deadline=None)
@given(
    calls=st.integers(min_value=1, max_value=6),
    period=st.floats(min_value=0.01, max_value=100.0),
    plan=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=50.0),
            st.floats(min_value=0.05, max_value=1.0),
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_limiter_window_property(
    calls: int, period: float, plan: list[tuple[float, float]]
) -> None:
    """No window of ``period`` carries more than ``calls``, whatever the gaps."""
    clock = FakeClock()
    limiter = WindowLimiter(calls, period, clock=clock, sleep=clock.sleep)
    admitted: list[tuple[float, float]] = []

    async def scenario() -> None:
        for gap, fraction in plan:
            clock.advance(gap)
            amount = max(fraction * calls, 0.01)
            await limiter.acquire(amount)
            admitted.append((clock(), amount))

    asyncio.run(scenario())
    assert max_in_window(admitted, period) <= calls + 1e-9


async def test_limiter_pause_holds_callers() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(100, 1.0, clock=clock, sleep=clock.sleep)
    limiter.pause(30.0)
    waited = await limiter.acquire()
    assert waited is True
    assert clock() == pytest.approx(1030.0)


async def test_limiter_pause_never_shortens() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(100, 1.0, clock=clock, sleep=clock.sleep)
    limiter.pause(30.0)
    limiter.pause(5.0)
    await limiter.acquire()
    assert clock() == pytest.approx(1030.0)


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(0.0, id="zero"),
        pytest.param(-5.0, id="negative"),
    ],
)
async def test_limiter_pause_none(seconds: float) -> None:
    clock = FakeClock()
    limiter = WindowLimiter(100, 1.0, clock=clock, sleep=clock.sleep)
    limiter.pause(seconds)
    waited = await limiter.acquire()
    assert waited is False
    assert clock() == 1000.0


async def test_limiter_pause_capped() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(100, 1.0, clock=clock, sleep=clock.sleep, max_pause=60.0)
    limiter.pause(1e9)
    await limiter.acquire()
    assert clock() == pytest.approx(1060.0)


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param("5", id="text"),
        pytest.param(None, id="none"),
    ],
)
def test_limiter_pause_rejects(seconds: Any) -> None:
    limiter = WindowLimiter(1, 1.0)
    with pytest.raises(ValueError, match="Cannot pause"):
        limiter.pause(seconds)


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(-1, id="negative"),
        pytest.param(0, id="zero"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinite"),
        pytest.param(6, id="above-capacity"),
        pytest.param(True, id="bool"),
        pytest.param("1", id="text"),
    ],
)
async def test_limiter_rejects_amount(amount: Any) -> None:
    clock = FakeClock()
    limiter = WindowLimiter(5, 10.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(ValueError, match="Cannot acquire"):
        await limiter.acquire(amount)
    assert clock.sleeps == []
    assert limiter.admitted_in_window() == 0


@pytest.mark.parametrize(
    ("calls", "period"),
    [
        pytest.param(0, 1.0, id="zero-calls"),
        pytest.param(-3, 1.0, id="negative-calls"),
        pytest.param(2.5, 1.0, id="fractional-calls"),
        pytest.param(math.nan, 1.0, id="nan-calls"),
        pytest.param(5, 0.0, id="zero-period"),
        pytest.param(5, math.nan, id="nan-period"),
        pytest.param(5, math.inf, id="infinite-period"),
    ],
)
def test_limiter_rejects_quota(calls: Any, period: Any) -> None:
    with pytest.raises(ValueError, match="rate limit needs"):
        WindowLimiter(calls, period)


def test_limiter_across_asyncio_runs_fake_clock() -> None:
    """The log carries over from one asyncio.run() to the next."""
    clock = FakeClock()
    limiter = WindowLimiter(2, 60.0, clock=clock, sleep=clock.sleep)
    results = [asyncio.run(limiter.acquire()) for _ in range(3)]
    assert results == [False, False, True]
    assert clock() == pytest.approx(1060.0)


def test_limiter_across_asyncio_runs_loop_clock() -> None:
    """aiolimiter's bucket is kept per loop, so new loops raise no warning."""
    limiter = WindowLimiter(10, 60.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = [asyncio.run(limiter.acquire()) for _ in range(3)]
    assert results == [False, False, False]
    assert limiter.admitted_in_window() == 3


# -- rate limiter: aiolimiter on a virtual-time loop ------------------------------


def test_limiter_window_virtual_loop() -> None:
    """With the loop's clock, aiolimiter and the log together hold the limit."""
    limiter = WindowLimiter(4, 8.0)
    admitted: list[tuple[float, float]] = []

    async def call() -> None:
        await limiter.acquire()
        admitted.append((limiter.now(), 1.0))

    async def scenario() -> None:
        await asyncio.gather(*(call() for _ in range(20)))

    run_virtual(scenario())
    assert len(admitted) == 20
    assert max_in_window(admitted, 8.0) <= 4
    assert max(t for t, _ in admitted) - min(t for t, _ in admitted) >= 32.0


def test_bucket_alone_breaks_window() -> None:
    """aiolimiter alone lets more than the quota into one window.

    This is why the limiter keeps a log, and it shows ``max_in_window``
    can fail.
    """
    admitted: list[tuple[float, float]] = []

    async def scenario() -> None:
        bucket = AsyncLimiter(4, 8.0)
        loop = asyncio.get_running_loop()
        for _ in range(12):
            await bucket.acquire()
            admitted.append((loop.time(), 1.0))

    run_virtual(scenario())
    assert max_in_window(admitted, 8.0) > 4


def test_virtual_loop_takes_no_real_time() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600.0)
        return loop.time() - start

    assert run_virtual(scenario()) == pytest.approx(3600.0)


# -- circuit breaker --------------------------------------------------------------


@attrs.define
class Board:
    board: BreakerBoard
    clock: FakeClock
    events: list[tuple[str, str]]
    policy: BreakerPolicy = attrs.field(factory=BreakerPolicy)

    async def call(
        self, outcome: str, tenant: str = "acme", platform: str = "bv"
    ) -> None:
        ticket = await self.board.before(tenant, platform, self.policy)
        await self.board.after(ticket, outcome)

    async def fail(self, times: int, **names: str) -> None:
        for _ in range(times):
            await self.call("failure", **names)

    def state(self, name: str = "acme/bv") -> str:
        return {s.name: s for s in self.board.states()}[name].state


@pytest.fixture
def board() -> Board:
    clock = FakeClock()
    events: list[tuple[str, str]] = []
    breakers = BreakerBoard(
        on_event=lambda name, state: events.append((name, state)), clock=clock
    )
    return Board(breakers, clock, events)


async def test_breaker_opens_at_threshold(board: Board) -> None:
    await board.fail(4)
    assert board.state() == "closed"
    await board.fail(1)
    assert board.state() == "opened"


async def test_breaker_open_fails_fast(board: Board) -> None:
    await board.fail(5)
    with pytest.raises(CircuitOpen) as caught:
        await board.board.before("acme", "bv", board.policy)
    assert caught.value.sent is False
    assert isinstance(caught.value, RetryableError)
    assert caught.value.tenant == "acme"


async def test_breaker_stays_open_until_timeout(board: Board) -> None:
    await board.fail(5)
    board.clock.advance(59.9)
    with pytest.raises(CircuitOpen):
        await board.board.before("acme", "bv", board.policy)
    board.clock.advance(0.1)
    ticket = await board.board.before("acme", "bv", board.policy)
    assert ticket.probe is True
    assert board.state() == "half-opened"


async def test_breaker_reopens_at(board: Board) -> None:
    await board.fail(5)
    assert board.board.reopens_at("acme", "bv") == pytest.approx(1060.0)


async def test_breaker_single_probe(board: Board) -> None:
    await board.fail(5)
    board.clock.advance(60.0)
    await board.board.before("acme", "bv", board.policy)
    with pytest.raises(CircuitOpen, match="one probe call"):
        await board.board.before("acme", "bv", board.policy)


async def test_breaker_probe_success_closes(board: Board) -> None:
    await board.fail(5)
    board.clock.advance(60.0)
    await board.call("success")
    assert board.state() == "closed"
    assert board.board.reopens_at("acme", "bv") is None


async def test_breaker_probe_failure_reopens(board: Board) -> None:
    await board.fail(5)
    board.clock.advance(60.0)
    await board.call("failure")
    assert board.state() == "opened"
    assert board.board.reopens_at("acme", "bv") == pytest.approx(1120.0)


async def test_breaker_neutral_probe_stays_half_open(board: Board) -> None:
    await board.fail(5)
    board.clock.advance(60.0)
    await board.call("neutral")
    ticket = await board.board.before("acme", "bv", board.policy)
    assert board.state() == "half-opened"
    assert ticket.probe is True


async def test_breaker_neutral_keeps_streak(board: Board) -> None:
    await board.fail(4)
    for _ in range(10):
        await board.call("neutral")
    await board.fail(1)
    assert board.state() == "opened"


async def test_breaker_neutral_does_not_count(board: Board) -> None:
    for _ in range(10):
        await board.call("neutral")
    states = board.board.states()
    assert states[0].state == "closed"
    assert states[0].failure_count == 0


async def test_breaker_success_resets_streak(board: Board) -> None:
    await board.fail(4)
    await board.call("success")
    await board.fail(4)
    assert board.state() == "closed"


async def test_breaker_per_tenant_and_platform(board: Board) -> None:
    await board.fail(5)
    await board.call("success", tenant="acme", platform="gd")
    await board.call("success", tenant="globex", platform="bv")
    assert board.state("acme/bv") == "opened"
    assert board.state("acme/gd") == "closed"
    assert board.state("globex/bv") == "closed"


async def test_breaker_custom_policy(board: Board) -> None:
    board.policy = BreakerPolicy(threshold=2, reset_timeout=5.0)
    await board.fail(2)
    board.clock.advance(5.0)
    ticket = await board.board.before("acme", "bv", board.policy)
    assert ticket.probe is True


async def test_breaker_events(board: Board) -> None:
    await board.fail(5)
    board.clock.advance(60.0)
    await board.call("success")
    assert board.events == [
        ("acme/bv", "opened"),
        ("acme/bv", "half-opened"),
        ("acme/bv", "closed"),
    ]


async def test_breaker_reset(board: Board) -> None:
    await board.fail(5)
    assert board.board.reset("acme", "bv") is True
    assert board.state() == "closed"
    ticket = await board.board.before("acme", "bv", board.policy)
    assert ticket.probe is False


def test_breaker_reset_unknown(board: Board) -> None:
    assert board.board.reset("acme", "nowhere") is False


async def test_breaker_ignores_stale_outcome(board: Board) -> None:
    """A call let through before a reset cannot count against the new streak."""
    await board.fail(4)
    stale = await board.board.before("acme", "bv", board.policy)
    board.board.reset("acme", "bv")
    await board.board.after(stale, "failure")
    await board.fail(4)
    assert board.state() == "closed"


async def test_breaker_states(board: Board) -> None:
    await board.fail(5)
    await board.fail(2, tenant="acme", platform="gd")
    opened, closed = board.board.states()
    assert opened.name == "acme/bv"
    assert opened.opened_at == pytest.approx(1000.0)
    assert opened.reopens_at == pytest.approx(1060.0)
    assert opened.threshold == 5
    assert opened.reset_timeout == 60.0
    assert closed.name == "acme/gd"
    assert closed.failure_count == 2
    assert closed.opened_at is None


async def test_breaker_rejects_outcome(board: Board) -> None:
    ticket = await board.board.before("acme", "bv", board.policy)
    with pytest.raises(ValueError, match="Unknown breaker outcome"):
        await board.board.after(ticket, "maybe")


def test_breaker_across_asyncio_runs() -> None:
    clock = FakeClock()
    board = BreakerBoard(clock=clock)
    policy = BreakerPolicy(threshold=2)

    async def fail() -> None:
        ticket = await board.before("acme", "bv", policy)
        await board.after(ticket, "failure")

    asyncio.run(fail())
    asyncio.run(fail())
    assert board.states()[0].state == "opened"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"threshold": 0}, id="zero-threshold"),
        pytest.param({"threshold": -1}, id="negative-threshold"),
        pytest.param({"threshold": True}, id="bool-threshold"),
        pytest.param({"reset_timeout": 0}, id="zero-timeout"),
        pytest.param({"reset_timeout": -5.0}, id="negative-timeout"),
        pytest.param({"reset_timeout": "60"}, id="text-timeout"),
        pytest.param({"reset_timeout": float("nan")}, id="nan-timeout"),
        pytest.param({"reset_timeout": float("inf")}, id="inf-timeout"),
    ],
)
def test_breaker_policy_rejects(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be a finite number above 0"):
        BreakerPolicy(**fields)


def test_breaker_policy_defaults() -> None:
    policy = BreakerPolicy()
    assert policy.threshold == 5
    assert policy.reset_timeout == 60.0


def test_limiter_drops_primitives_of_closed_loops() -> None:
    """A host that calls asyncio.run per batch does not keep every loop."""
    limiter = WindowLimiter(1, 0.01)

    async def two_calls() -> None:
        await limiter.acquire()
        await limiter.acquire()

    for _ in range(20):
        asyncio.run(two_calls())

    assert len(limiter._locks) <= 1
    assert len(limiter._buckets) <= 1
