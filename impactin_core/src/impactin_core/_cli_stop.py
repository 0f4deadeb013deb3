"""Run a command's coroutine so that SIGTERM stops it the way Ctrl-C does.

Service managers (systemd, Docker, Kubernetes) stop a process with SIGTERM,
whose default action ends Python at once. A delivery claimed but not yet
sent would then stay in flight, and a later run that cannot tell whether it
arrived dead-letters it. Cancelling the run instead returns such deliveries
to pending.
"""

from __future__ import annotations

import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

__all__ = ["SIGTERM_EXIT_CODE", "run_until_stopped"]

T = TypeVar("T")

#: The exit code of a process ended by SIGTERM, as shells report it.
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


def run_until_stopped(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` with ``asyncio.run``, and cancel it and exit on SIGTERM."""
    import asyncio

    stopped = False

    async def main() -> T:
        nonlocal stopped
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            nonlocal stopped
            stopped = True
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, stop)
        except (NotImplementedError, RuntimeError, ValueError):
            # Windows' event loop, and any loop outside the main thread, take
            # no signal handlers, so SIGTERM keeps its default action there.
            return await coroutine
        try:
            return await coroutine
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if not stopped:
            raise
        click.echo(
            "Stopped by SIGTERM. Deliveries not sent yet are pending again; "
            "'impactin resume' sends them.",
            err=True,
        )
        raise click.exceptions.Exit(SIGTERM_EXIT_CODE) from None
