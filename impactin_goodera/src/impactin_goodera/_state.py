"""Send ledger: state kept between sends to one tenant's Goodera.

Goodera publishes no idempotency key and no way to find an event again
by its opportunity and date, so the connector keeps two maps itself:

- the event id created for each (opportunity, time window, timezone,
  country), so every record of that day joins one event;
- per idempotency key, the registration and participation ids already
  confirmed, so a repeated send skips the calls that succeeded.

The maps hold ObjectIds, idempotency keys and keyed hashes only, never an
email. They live in a SQLite file under ``SendContext.cache_dir`` when the
runtime provides one, so a restarted worker, or another process on the
same folder, reuses the same events. Each step is one small transaction,
so the cost of a write does not grow with the number of records sent.
Without a folder they live in an in-memory database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

from impactin_core import ConfigError, drop_closed_loops, owner_alive, process_owner

__all__ = ["SendLedger", "ledger_for", "reset_ledgers"]

logger = logging.getLogger("impactin.goodera")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events ("
    " event_key TEXT PRIMARY KEY, event_id TEXT NOT NULL, recorded_at REAL)",
    "CREATE TABLE IF NOT EXISTS steps ("
    " key TEXT NOT NULL, step TEXT NOT NULL, result_id TEXT NOT NULL,"
    " recorded_at REAL, PRIMARY KEY (key, step))",
    "CREATE TABLE IF NOT EXISTS event_claims ("
    " event_key TEXT PRIMARY KEY, owner TEXT NOT NULL, claimed_at REAL NOT NULL)",
)

#: Seconds after which a claim to create an event is taken over: the
#: process that made it has stopped. One POST takes at most 30 s.
CLAIM_STALE_AFTER = 120.0


class SendLedger:
    """Event ids and completed steps of one tenant on one Goodera base URL."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Locks of closed loops are dropped, so a host that runs many event
        # loops in one process does not keep them all.
        self._event_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()
        self._conn = _open(path)

    def event_lock(self, event_key: str) -> asyncio.Lock:
        """Return the lock that serializes creating the event ``event_key``.

        Locks are per event loop because an ``asyncio.Lock`` cannot be shared
        between loops.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            locks = self._event_locks.get(loop)
            if locks is None:
                drop_closed_loops(self._event_locks)
                locks = self._event_locks[loop] = {}
            return locks.setdefault(event_key, asyncio.Lock())

    def event_id(self, event_key: str) -> str | None:
        return self._one(
            "SELECT event_id FROM events WHERE event_key = ?", (event_key,)
        )

    def record_event(self, event_key: str, event_id: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO events VALUES (?, ?, ?)",
            (event_key, event_id, time.time()),
        )

    def step_id(self, idempotency_key: str, step: str) -> str | None:
        return self._one(
            "SELECT result_id FROM steps WHERE key = ? AND step = ?",
            (idempotency_key, step),
        )

    def record_step(self, idempotency_key: str, step: str, result_id: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?)",
            (idempotency_key, step, result_id, time.time()),
        )

    def claim_event(self, event_key: str, owner: str, now: float) -> bool:
        """Claim the creation of event ``event_key``; return whether ``owner`` won.

        Processes on one cache folder share the file, so only one of them
        creates the event, and the others wait for its id.
        """
        owner = f"{owner}@{process_owner()}"
        with self._lock, self._conn:
            self._conn.execute(
                "DELETE FROM event_claims WHERE event_key = ? AND claimed_at < ?",
                (event_key, now - CLAIM_STALE_AFTER),
            )
            row = self._conn.execute(
                "SELECT owner FROM event_claims WHERE event_key = ?", (event_key,)
            ).fetchone()
            # A process of this host that was killed leaves its claim behind,
            # so the claim is taken over at once instead of going stale.
            if row is not None and not owner_alive(str(row[0]).partition("@")[2]):
                self._conn.execute(
                    "DELETE FROM event_claims WHERE event_key = ?", (event_key,)
                )
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO event_claims VALUES (?, ?, ?)",
                (event_key, owner, now),
            )
            return cursor.rowcount == 1

    def release_event(self, event_key: str, owner: str) -> None:
        self._write(
            "DELETE FROM event_claims WHERE event_key = ? AND owner = ?",
            (event_key, f"{owner}@{process_owner()}"),
        )

    def claim_step(self, key: str, step: str, result_id: str) -> str:
        """Record ``result_id`` for a step unless one exists; return the one kept."""
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO steps VALUES (?, ?, ?, ?)",
                (key, step, result_id, time.time()),
            )
            row = self._conn.execute(
                "SELECT result_id FROM steps WHERE key = ? AND step = ?", (key, step)
            ).fetchone()
        return str(row[0])

    def release_step(self, key: str, step: str, result_id: str) -> None:
        self._write(
            "DELETE FROM steps WHERE key = ? AND step = ? AND result_id = ?",
            (key, step, result_id),
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _one(self, sql: str, parameters: tuple[str, ...]) -> str | None:
        with self._lock:
            row = self._conn.execute(sql, parameters).fetchone()
        return None if row is None else str(row[0])

    def _write(self, sql: str, parameters: tuple[object, ...]) -> None:
        with self._lock, self._conn:
            self._conn.execute(sql, parameters)


def _open(path: Path | None) -> sqlite3.Connection:
    if path is None:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        _create(conn)
        return conn
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
    except (OSError, sqlite3.OperationalError) as exc:
        message = (
            f"The Goodera send ledger {path} cannot be opened ({exc}); make "
            f"the folder {path.parent} writable, or free space on its disk."
        )
        raise ConfigError(message) from exc
    except sqlite3.DatabaseError as exc:
        # Starting empty can create a second event for a day, never a lost
        # record, so an unreadable file is moved aside, kept, and replaced.
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        logger.warning(
            "Goodera send ledger %s is unreadable (%s); moved it to %s and "
            "started empty.",
            path,
            type(exc).__name__,
            aside.name,
        )
        os.replace(path, aside)
        conn = _connect(path)
    _import_json_ledger(conn, path.with_suffix(".json"))
    return conn


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        _create(conn)
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def _create(conn: sqlite3.Connection) -> None:
    with conn:
        for statement in _SCHEMA:
            conn.execute(statement)


def _import_json_ledger(conn: sqlite3.Connection, legacy: Path) -> None:
    """Move the entries of a ledger that earlier versions kept as JSON."""
    try:
        data = json.loads(legacy.read_text(encoding="utf-8"))
        events = dict(data.get("events", {}))
        steps = {key: dict(value) for key, value in data.get("steps", {}).items()}
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        logger.warning(
            "Goodera send ledger %s is unreadable (%s); left it in place and "
            "did not import it.",
            legacy,
            type(exc).__name__,
        )
        return
    now = time.time()
    with conn:
        conn.executemany(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?)",
            [(key, str(value), now) for key, value in events.items()],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO steps VALUES (?, ?, ?, ?)",
            [
                (key, step, str(result), now)
                for key, done in steps.items()
                for step, result in done.items()
            ],
        )
    # Another process may have imported and removed it meanwhile.
    legacy.unlink(missing_ok=True)


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
                path = cache_dir / f"goodera-ledger-{digest[:16]}.sqlite"
            ledger = SendLedger(path)
            _LEDGERS[key] = ledger
        return ledger


def reset_ledgers() -> None:
    """Close and forget every ledger; files under ``cache_dir`` stay."""
    with _LEDGERS_LOCK:
        for ledger in _LEDGERS.values():
            ledger.close()
        _LEDGERS.clear()
