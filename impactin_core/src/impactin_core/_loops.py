"""Per-event-loop state that does not keep closed loops alive."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

__all__ = ["drop_closed_loops"]


def drop_closed_loops(
    by_loop: MutableMapping[asyncio.AbstractEventLoop, Any],
) -> None:
    """Delete the entries of ``by_loop`` whose event loop is closed.

    An ``asyncio.Lock`` or a limiter that a task waited on refers to its
    loop, so a ``WeakKeyDictionary`` keyed by the loop never frees a closed
    loop by itself. Calling this before adding a loop's entry keeps one
    entry per open loop, plus at most the last closed one, when a host runs
    ``asyncio.run`` once per batch.
    """
    for loop in [loop for loop in list(by_loop) if loop.is_closed()]:
        del by_loop[loop]
