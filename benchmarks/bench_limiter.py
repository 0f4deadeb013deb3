"""Rate limiter precision: 100 calls per minute over a 3-minute run.

Sixteen tasks take slots in a loop as the runtime does, with
``WindowLimiter.acquire_now`` and then ``acquire`` when no slot is free. The
limiter is built as the runtime builds it (``clock=time.time``, so the
sliding log alone limits).
The real-time run takes the full three minutes. The fake-clock run
replays the same load on a clock that ``sleep`` advances, in well under a
second. Each reports the most calls admitted in any 60-second window and
the share of the quota used (admitted calls over 100 per started minute).

    python benchmarks/bench_limiter.py [--seconds 180] [--fake-only]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import time
from collections.abc import Callable
from typing import Any

from _common import emit, machine

from impactin_core._reliability import WindowLimiter

CALLS = 100
PERIOD = 60.0
TASKS = 16


class FakeClock:
    """A clock that only ``sleep`` moves forward."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


async def admit(
    limiter: WindowLimiter, clock: Callable[[], float], seconds: float
) -> list[float]:
    start = clock()
    admitted: list[float] = []

    async def caller() -> None:
        while True:
            if not await limiter.acquire_now():
                await limiter.acquire()
            now = clock() - start
            if now >= seconds:
                return
            admitted.append(now)

    await asyncio.gather(*(caller() for _ in range(TASKS)))
    return sorted(admitted)


def max_in_window(times: list[float], window: float) -> int:
    """Return the most admissions in any half-open window of ``window`` s."""
    return max(
        (bisect.bisect_left(times, start + window) - index)
        for index, start in enumerate(times)
    )


def summarize(times: list[float], seconds: float, mode: str) -> dict[str, Any]:
    quota = CALLS * -(-seconds // PERIOD)
    return {
        "mode": mode,
        "seconds": seconds,
        "limit": f"{CALLS} per {PERIOD:g} s",
        "admitted": len(times),
        "max_in_any_60s": max_in_window(times, PERIOD),
        "quota_used": round(len(times) / quota, 4),
    }


def run_real(seconds: float) -> dict[str, Any]:
    limiter = WindowLimiter(CALLS, PERIOD, clock=time.time)
    started = time.perf_counter()
    times = asyncio.run(admit(limiter, time.time, seconds))
    result = summarize(times, seconds, "real time")
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def run_fake(seconds: float) -> dict[str, Any]:
    clock = FakeClock()
    limiter = WindowLimiter(CALLS, PERIOD, clock=clock, sleep=clock.sleep)
    started = time.perf_counter()
    times = asyncio.run(admit(limiter, clock, seconds))
    result = summarize(times, seconds, "fake clock")
    result["wall_s"] = round(time.perf_counter() - started, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="Run length.")
    parser.add_argument("--fake-only", action="store_true", help="Skip real time.")
    args = parser.parse_args()
    emit("limiter", {**run_fake(args.seconds), "machine": machine()})
    if not args.fake_only:
        emit("limiter", {**run_real(args.seconds), "machine": machine()})


if __name__ == "__main__":
    main()
