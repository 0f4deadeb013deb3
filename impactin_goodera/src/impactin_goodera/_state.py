"""Send ledger: state kept between sends to one tenant's Goodera.

Goodera publishes no idempotency key and no way to find an event again
by its opportunity and date, so the connector keeps two maps itself:

- the event id created for each (opportunity, time window, timezone,
  country), so every record of that day joins one event;
- per idempotency key, the registration and participation ids already
  confirmed, so a repeated send skips the calls that succeeded.

The maps hold ObjectIds and keyed hashes only, never an email. They live
in memory, and in a JSON file under ``SendContext.cache_dir`` when the
runtime provides one, so a restarted worker reuses the same events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["SendLedger", "ledger_for", "reset_ledgers"]

logger = logging.getLogger("impactin.goodera")


class SendLedger:
    """Event ids and completed steps of one tenant on one Goodera base URL."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.events: dict[str, str] = {}
        self.steps: dict[str, dict[str, str]] = {}
        self._event_locks: dict[tuple[int, str], asyncio.Lock] = {}
        if path is not None:
            self._load(path)

    def event_lock(self, event_key: str) -> asyncio.Lock:
        """Return the lock that serializes creating the event ``event_key``.

        Locks are per event loop because an ``asyncio.Lock`` cannot be shared
        between loops.
        """
        loop_key = (id(asyncio.get_running_loop()), event_key)
        with self._lock:
            return self._event_locks.setdefault(loop_key, asyncio.Lock())

    def event_id(self, event_key: str) -> str | None:
        with self._lock:
            return self.events.get(event_key)

    def record_event(self, event_key: str, event_id: str) -> None:
        with self._lock:
            self.events[event_key] = event_id
            self._save()

    def step_id(self, idempotency_key: str, step: str) -> str | None:
        with self._lock:
            return self.steps.get(idempotency_key, {}).get(step)

    # TODO: steps gains one entry per delivered record and is never pruned;
    # drop entries older than the runtime's idempotency TTL.
    def record_step(self, idempotency_key: str, step: str, result_id: str) -> None:
        with self._lock:
            self.steps.setdefault(idempotency_key, {})[step] = result_id
            self._save()

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # Starting empty can create a second event for a day, never a
            # lost record, so an unreadable file is logged and replaced.
            logger.warning(
                "Goodera send ledger %s is unreadable (%s); starting empty.",
                path,
                type(exc).__name__,
            )
            return
        self.events = dict(data.get("events", {}))
        self.steps = {key: dict(value) for key, value in data.get("steps", {}).items()}

    def _save(self) -> None:
        if self.path is None:
            return
        data: dict[str, Any] = {"events": self.events, "steps": self.steps}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Write a sibling file, then rename it over the old one, so a crash
        # mid-write leaves the previous ledger intact.
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, sort_keys=True)
        os.replace(temporary, self.path)


_LEDGERS: dict[tuple[str, str, str], SendLedger] = {}
_LEDGERS_LOCK = threading.Lock()


def ledger_for(tenant: str, base_url: str, cache_dir: Path | None) -> SendLedger:
    """Return the process-wide ledger of ``tenant`` on ``base_url``."""
    key = (tenant, base_url.rstrip("/"), str(cache_dir or ""))
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(key)
        if ledger is None:
            path = None
            if cache_dir is not None:
                digest = hashlib.sha256(f"{key[0]}\n{key[1]}".encode()).hexdigest()
                path = cache_dir / f"goodera-ledger-{digest[:16]}.json"
            ledger = SendLedger(path)
            _LEDGERS[key] = ledger
        return ledger


def reset_ledgers() -> None:
    """Forget every in-memory ledger; files under ``cache_dir`` stay."""
    with _LEDGERS_LOCK:
        _LEDGERS.clear()
