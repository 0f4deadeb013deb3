"""Run a command's coroutine so that SIGTERM stops it without losing track.

Service managers (systemd, Docker, Kubernetes) stop a process with SIGTERM,
whose default action ends Python at once. A delivery claimed but not yet
sent would then stay in flight, and a later run that cannot tell whether it
arrived dead-letters it. Here the first SIGTERM stops the run from claiming
more deliveries and gives the requests already sent a grace period to
receive their responses. When the grace period ends, or at a second SIGTERM, the run is
cancelled, which returns deliveries not yet sent to pending.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

import click

__all__ = ["GRACE_ENV", "SIGTERM_EXIT_CODE", "Stopper"]

T = TypeVar("T")

#: The exit code of a process ended by SIGTERM, as shells report it.
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM

#: The environment variable that sets the grace period, in seconds.
GRACE_ENV = "IMPACTIN_STOP_GRACE"

#: The grace period when GRACE_ENV is not set. Docker sends SIGKILL 10 s
#: after SIGTERM unless configured otherwise, so the run ends well before.
DEFAULT_GRACE = 5.0


def _grace_seconds() -> float:
    text = os.environ.get(GRACE_ENV, "").strip()
    if not text:
        return DEFAULT_GRACE
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        message = (
            f"{GRACE_ENV} is {text!r}; set it to the seconds a stopping run "
            "waits for the requests already sent, such as 5."
        )
        raise click.UsageError(message)
    return seconds


class Stopper:
    """Run coroutines with the SIGTERM handling described in this module.

    ``drain`` makes the run stop claiming deliveries (``Runtime.request_stop``).
    Without it, SIGTERM cancels the run at once.
    """

    def __init__(self, drain: Callable[[], None] | None = None) -> None:
        self.drain = drain
        self.grace = _grace_seconds()
        #: Whether a SIGTERM arrived.
        self.stopped = False
        #: Whether it arrived while the input was being read.
        self.stopped_reading = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Let SIGTERM end the reading of the input instead of the process.

        The first SIGTERM sets ``stopped``, so the reader stops after the
        current row and the rows read are stored; a second one exits at
        once. Outside the main thread nothing changes.
        """
        try:
            previous = signal.signal(signal.SIGTERM, self._on_sigterm_while_reading)
        except ValueError:
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm_while_reading(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped:
            click.echo(
                "Stopped by a second SIGTERM while reading the input; run the same "
                "command again to send the rest.",
                err=True,
            )
            raise click.exceptions.Exit(SIGTERM_EXIT_CODE)
        self.stopped = True
        self.stopped_reading = True
        if self.drain is not None:
            self.drain()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` with ``asyncio.run`` and return its result.

        A run cancelled after SIGTERM prints why and exits with status 143.
        A run that finished within the grace period returns, and the caller
        prints its report and then calls ``exit_if_stopped``.
        """
        import asyncio

        try:
            result = asyncio.run(self._main(coroutine))
        except asyncio.CancelledError:
            if not self.stopped:
                raise
            click.echo(
                "Stopped by SIGTERM. Deliveries not sent yet are pending again; "
                "'impactin resume' sends them.",
                err=True,
            )
            raise click.exceptions.Exit(SIGTERM_EXIT_CODE) from None
        self._handle_sigterm_after_run()
        return result

    def _handle_sigterm_after_run(self) -> None:
        # The event loop's handler is gone once the run returns, and the
        # default action would end the process in the middle of its summary
        # with the signal's own status. The store is committed by now.
        # Outside the main thread this raises ValueError, and SIGTERM keeps
        # its default action.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, self._on_sigterm_after_run)

    def _on_sigterm_after_run(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopped:
            # The summary is printed first, then exit_if_stopped exits.
            self.stopped = True
            return
        click.echo(
            "Stopped by a second SIGTERM while printing the summary; nothing was lost.",
            err=True,
        )
        raise click.exceptions.Exit(SIGTERM_EXIT_CODE)

    def exit_if_stopped(self) -> None:
        """Exit with status 143 if SIGTERM stopped the run early."""
        if not self.stopped:
            return
        if self.stopped_reading:
            click.echo(
                "Stopped by SIGTERM while reading the input: the rows read were "
                "stored and nothing was sent. Run the same command again to read "
                "the rest; rows stored already are sent once.",
                err=True,
            )
        else:
            click.echo(
                "Stopped by SIGTERM after the requests already sent got their "
                "responses. Deliveries not sent yet are pending; 'impactin resume' "
                "sends them.",
                err=True,
            )
        raise click.exceptions.Exit(SIGTERM_EXIT_CODE)

    async def _main(self, coroutine: Coroutine[Any, Any, T]) -> T:
        import asyncio

        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            if self.stopped or self.drain is None:
                self.stopped = True
                task.cancel()
                return
            self.stopped = True
            self.drain()
            click.echo(
                f"SIGTERM: claiming no more deliveries, and waiting up to "
                f"{self.grace:g} s for the requests already sent. A second "
                "SIGTERM stops at once.",
                err=True,
            )
            loop.call_later(self.grace, task.cancel)

        try:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        except (NotImplementedError, RuntimeError, ValueError):
            # Windows' event loop, and any loop outside the main thread, take
            # no signal handlers, so SIGTERM keeps its default action there.
            return await coroutine
        try:
            return await coroutine
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
