"""CPU time per record of each pipeline step, in a real run against the simulator.

Wraps a few methods of the runtime, the store and httpx so that each adds
the process CPU time it used to a total. For a coroutine only the time it
runs counts, not the time it waits. Steps nest: ``run_delivery`` includes
the claim and the send, and ``post`` (httpx) is part of ``guarded_send``.
The bare loop of ``bench_throughput.py`` runs with the same wrapper on
``post``, for comparison. The wrappers cost some CPU themselves, so the
totals are somewhat higher than in ``bench_throughput.py``.

    python benchmarks/split_pipeline.py [--records N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import httpx
from _common import emit, machine, simulator_server
from bench_throughput import run_bare, run_pipeline

from impactin_core._pipeline import Runtime
from impactin_core._reliability import BreakerBoard, WindowLimiter
from impactin_core._store import Store

_totals: collections.Counter[str] = collections.Counter()


class _Suspend:
    """Pass one value a wrapped coroutine yields on to the event loop."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.value)


def _count_sync(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def counted(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            _totals[name] += time.process_time() - started

    return counted


def _count_async(
    name: str, function: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(function)
    async def counted(*args: Any, **kwargs: Any) -> Any:
        coroutine = function(*args, **kwargs)
        sent: Any = None
        error: BaseException | None = None
        while True:
            started = time.process_time()
            try:
                if error is None:
                    yielded = coroutine.send(sent)
                else:
                    yielded = coroutine.throw(error)
            except StopIteration as stop:
                return stop.value
            finally:
                _totals[name] += time.process_time() - started
            try:
                sent, error = await _Suspend(yielded), None
            except BaseException as exc:
                sent, error = None, exc

    return counted


_STEPS: list[tuple[Any, str, bool]] = [
    (Runtime, "submit", False),
    (Runtime, "_prepare_row", False),
    (Runtime, "run_delivery", True),
    (Runtime, "_guarded_send", True),
    (Runtime, "_succeed", False),
    (Store, "claim_delivery", False),
    (Store, "add_attempt", False),
    (Store, "flush", False),
    (BreakerBoard, "before", True),
    (BreakerBoard, "after", True),
    (WindowLimiter, "acquire", True),
    (httpx.AsyncClient, "post", True),
]


def _install() -> None:
    for owner, name, is_async in _STEPS:
        original = getattr(owner, name)
        label = name.lstrip("_")
        wrapped = (_count_async if is_async else _count_sync)(label, original)
        setattr(owner, name, wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    _install()
    count, concurrency = args.records, args.concurrency
    with simulator_server() as url:
        asyncio.run(run_pipeline(url, concurrency, 50, "split-warm"))
        asyncio.run(run_bare(url, concurrency, 50, "split-warm-bare"))
        results: dict[str, dict[str, float]] = {}
        for side, run in (("pipeline", run_pipeline), ("bare", run_bare)):
            _totals.clear()
            _, cpu, _ = asyncio.run(run(url, concurrency, count, f"split-{side}"))
            steps = {name: total * 1000 / count for name, total in _totals.items()}
            results[side] = {"total": cpu * 1000 / count, **steps}
    emit(
        "pipeline_split",
        {
            "records": count,
            "concurrency": concurrency,
            "cpu_ms_per_record": {
                side: {name: round(value, 3) for name, value in steps.items()}
                for side, steps in results.items()
            },
            "machine": machine(),
        },
    )


if __name__ == "__main__":
    main()
