"""The embedded state store: one SQLite file in WAL mode through sqlite-utils.

It holds the outbox and delivery log, delivery attempts, idempotency keys,
quarantined rows, OAuth tokens and webhook event ids. Records and tokens are
encrypted with the store key before they are written, so the file holds no
personal value and no token in clear.

Every write is one transaction. Claims of idempotency keys use
``INSERT OR IGNORE`` inside ``BEGIN IMMEDIATE``, so concurrent processes
produce exactly one winner per key.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import sqlite_utils

from ._crypto import Sealer
from ._errors import StoreError
from ._tokens import OAuthToken

logger = logging.getLogger("impactin.store")

__all__ = ["Claim", "Store"]

SCHEMA_VERSION = 6

#: Seconds an idempotency key stays claimed after it is first claimed.
DEFAULT_KEY_TTL = 24 * 3600.0

#: The condition under which an idempotency key row may be deleted, with the
#: current time as its one parameter. A delivered key goes once its TTL has
#: passed, since the delivery log still marks the record as delivered. A
#: failed key stays while its delivery is in the log: a dead letter may have
#: reached the platform, so the same record must wait for an operator's
#: replay instead of going out again when a TTL runs out.
_KEY_EXPIRED = (
    "expires_at <= ? AND (state = 'delivered' OR (state = 'failed' AND NOT "
    "EXISTS (SELECT 1 FROM deliveries WHERE deliveries.id = "
    "idempotency_keys.delivery_id)))"
)

#: Delivery states that no process works on any more.
FINISHED_STATUSES = ("delivered", "dead_lettered", "blocked")

_SCHEMA_V1 = """
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    parent_id TEXT,
    tenant TEXT NOT NULL,
    platform TEXT NOT NULL,
    kind TEXT NOT NULL,
    source_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    record_ct BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    latency_s REAL,
    response_id TEXT,
    error_kind TEXT,
    error TEXT,
    evidence_hash TEXT,
    redacted_count INTEGER,
    trace_id TEXT
);
CREATE INDEX deliveries_status ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_tenant ON deliveries (tenant, platform, created_at);
CREATE INDEX deliveries_correlation ON deliveries (correlation_id);
CREATE INDEX deliveries_evidence ON deliveries (evidence_hash);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    number INTEGER NOT NULL,
    started_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER,
    retry_after REAL,
    delay_s REAL,
    error TEXT,
    trace_id TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    platform TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);
CREATE TABLE quarantine (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    source_id TEXT,
    line INTEGER,
    field TEXT,
    reason TEXT NOT NULL,
    raw_ct BLOB NOT NULL,
    created_at REAL NOT NULL,
    resolved_at REAL
);
CREATE TABLE tokens (
    tenant TEXT NOT NULL,
    platform TEXT NOT NULL,
    token_ct BLOB NOT NULL,
    obtained_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    has_refresh_token INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, platform)
);
CREATE TABLE webhook_events (
    platform TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (platform, event_id)
);
"""

# Version 2 adds delivery leases, so two processes never send one delivery at
# once. It also records the replay of a delivery and keeps a value that
# checks the store key is the one the file was written with.
_SCHEMA_V2 = """
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until REAL;
ALTER TABLE deliveries ADD COLUMN replayed_by TEXT;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
)
"""

# Version 3: the latest circuit breaker state per tenant and platform, so
# ``impactin health`` shows it from any process, and operators' manual resets
# (``reset_at``), which running workers apply before their next call.
_SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS breaker_states (
    tenant TEXT NOT NULL,
    platform TEXT NOT NULL,
    state TEXT NOT NULL,
    failure_count INTEGER NOT NULL DEFAULT 0,
    opened_at REAL,
    reopens_at REAL,
    updated_at REAL NOT NULL,
    reset_at REAL,
    PRIMARY KEY (tenant, platform)
)
"""

# Version 4: an index on the idempotency key, which every enqueue and replay
# looks up. Without it each enqueue read every delivered row, so a store with
# 100,000 deliveries took 18 ms per new record. Quarantining a row looks for
# the same open row by tenant and source id, which read the whole table.
_SCHEMA_V4 = """
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries (idempotency_key, status);
CREATE INDEX IF NOT EXISTS quarantine_source ON quarantine (tenant, source_id)
"""

# Version 5 keys webhook event ids by tenant as well, so two tenants of one
# platform whose senders number events the same way do not reject each
# other's events as replays. SQLite cannot change a primary key in place, so
# the table is copied. Ids recorded before the upgrade get the tenant '',
# which is also the tenant of callers that name none.
_SCHEMA_V5 = """
CREATE TABLE webhook_events_v5 (
    tenant TEXT NOT NULL DEFAULT '',
    platform TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (tenant, platform, event_id)
);
INSERT INTO webhook_events_v5 (tenant, platform, event_id, seen_at)
    SELECT '', platform, event_id, seen_at FROM webhook_events;
DROP TABLE webhook_events;
ALTER TABLE webhook_events_v5 RENAME TO webhook_events
"""

# Version 6 indexes the idempotency key alone. With the status in the
# index, as version 4 had it, every claim and every success rewrote an index
# entry, at about 0.04 ms of CPU per delivery. A key has few deliveries, so
# the status is checked on the rows the key finds.
_SCHEMA_V6 = """
DROP INDEX IF EXISTS deliveries_key;
CREATE INDEX IF NOT EXISTS deliveries_idempotency ON deliveries (idempotency_key)
"""

MIGRATIONS: dict[int, str] = {
    1: _SCHEMA_V1,
    2: _SCHEMA_V2,
    3: _SCHEMA_V3,
    4: _SCHEMA_V4,
    5: _SCHEMA_V5,
    6: _SCHEMA_V6,
}

#: Plain text sealed into ``meta`` to check the store key on open.
_KEY_CHECK = b"impactin store key check"


@attrs.frozen
class Claim:
    """The result of claiming an idempotency key.

    ``state`` is ``"new"`` (this caller owns it), ``"corrected"`` (this
    caller owns it, and its delivery replaces one that failed with other
    content), ``"duplicate"`` (delivered within its TTL, same content),
    ``"conflict"`` (same key, other content),
    ``"failed"`` (its delivery was dead-lettered or blocked, and waits for a
    replay) or ``"unfinished"`` (claimed earlier and not finished yet).
    """

    state: str
    delivery_id: str
    #: The run that created the delivery, for ``"unfinished"``: the same run
    #: means the input held the record twice.
    run_id: str | None = None


def _insert_pending(
    conn: sqlite3.Connection, delivery: Mapping[str, Any], sealed: bytes, *, now: float
) -> None:
    """Insert ``delivery`` into the outbox as pending and due at ``now``."""
    columns = {
        **delivery,
        "record_ct": sealed,
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        "next_attempt_at": now,
    }
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    conn.execute(
        f"INSERT INTO deliveries ({names}) VALUES ({marks})",
        tuple(columns.values()),
    )


def _never_accepted(conn: sqlite3.Connection, delivery_id: str) -> bool:
    """Return whether a failed delivery surely created nothing on the platform.

    That holds for a delivery blocked before its send, and for one the
    platform rejected with an error that is not a retry or an interrupted
    send (error kind ``permanent``).
    """
    row = conn.execute(
        "SELECT status, error_kind, replayed_by FROM deliveries WHERE id = ?",
        (delivery_id,),
    ).fetchone()
    if row is None or row["replayed_by"]:
        return False
    if row["status"] == "blocked":
        return True
    return bool(row["status"] == "dead_lettered" and row["error_kind"] == "permanent")


class Store:
    """The SQLite store. One instance per process; it is thread-safe."""

    def __init__(self, path: str | Path, sealer: Sealer) -> None:
        self.path = Path(path)
        self.sealer = sealer
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: The last token read per tenant and platform, with its ciphertext.
        self._opened_tokens: dict[tuple[str, str], tuple[bytes, OAuthToken]] = {}
        self._migrate()

    # -- connections -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            message = (
                f"Cannot open the store {str(self.path)!r}: {exc}; check the path."
            )
            raise StoreError(message) from exc
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 60000")
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        database = getattr(self._local, "db", None)
        if database is None:
            conn = self._connect()
            with self._lock:
                self._connections.append(conn)
            database = self._local.db = sqlite_utils.Database(conn)
        return database

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements in one ``BEGIN IMMEDIATE`` transaction.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so the statements
        inside never wait for another writer. A wait for the lock that passes
        the 60 s busy timeout raises ``StoreError``. Writes deferred with
        ``defer=True`` on this thread run first, in the same transaction.
        Inside another transaction of the same thread, this one is a
        savepoint: its statements commit with the outer transaction, and an
        error rolls back only its own statements.
        """
        conn = self.db.conn
        depth = getattr(self._local, "depth", 0)
        if depth:
            with self._savepoint(conn, depth):
                yield conn
            return
        self._execute_control(conn, "BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            ran = self._run_deferred(conn)
            yield conn
        except BaseException:
            # SQLite ends the transaction itself after some errors.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._local.depth = 0
        self._execute_control(conn, "COMMIT")
        del self._deferred()[:ran]

    @contextmanager
    def _savepoint(self, conn: sqlite3.Connection, depth: int) -> Iterator[None]:
        name = f"nested_{depth}"
        conn.execute(f"SAVEPOINT {name}")
        self._local.depth = depth + 1
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        finally:
            self._local.depth = depth
        conn.execute(f"RELEASE {name}")

    def _deferred(self) -> list[tuple[str, tuple[Any, ...]]]:
        pending: list[tuple[str, tuple[Any, ...]]] | None = getattr(
            self._local, "deferred", None
        )
        if pending is None:
            pending = self._local.deferred = []
        return pending

    def _run_deferred(self, conn: sqlite3.Connection) -> int:
        """Run this thread's deferred writes and return how many ran."""
        pending = self._deferred()
        for statement, parameters in pending:
            try:
                conn.execute(statement, parameters)
            except sqlite3.Error as exc:
                # Keeping a failing write would fail every later transaction,
                # so it is dropped and the others still run.
                logger.error(
                    "Dropped a deferred store write that failed (%s): %s",
                    " ".join(statement.split(" ", 3)[:3]),
                    exc,
                )
        return len(pending)

    def flush(self) -> None:
        """Commit the writes this thread deferred with ``defer=True``."""
        if self._deferred():
            with self.transaction():
                pass

    def _execute_control(self, conn: sqlite3.Connection, statement: str) -> None:
        try:
            conn.execute(statement)
        except sqlite3.OperationalError as exc:
            if statement == "COMMIT" and conn.in_transaction:
                conn.execute("ROLLBACK")
            message = (
                f"The store {str(self.path)!r} could not run {statement}: {exc}; "
                "check that no other program holds it locked and that the disk "
                "has space."
            )
            raise StoreError(message) from exc

    def close(self) -> None:
        if getattr(self._local, "db", None) is not None:
            self.flush()
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        try:
            self._apply_migrations()
            self._check_key()
        except sqlite3.DatabaseError as exc:
            message = (
                f"The store {str(self.path)!r} is not a readable impactin "
                f"database: {exc}; point store.path at a new file or restore it."
            )
            raise StoreError(message) from exc

    def _apply_migrations(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER NOT NULL, applied_at REAL NOT NULL)"
            )
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                message = (
                    f"The store {str(self.path)!r} has schema version {current}, newer "
                    f"than this impactin ({SCHEMA_VERSION}); upgrade impactin-core."
                )
                raise StoreError(message)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?)", (version, time.time())
                )

    def _check_key(self) -> None:
        """Refuse a store key other than the one the file was written with.

        Without this check a new key would write rows that the old key cannot
        read, and the mix would only show when an old row is read back.
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT value FROM meta WHERE key = 'key_check'"
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta VALUES ('key_check', ?)",
                    (self.sealer.seal(_KEY_CHECK),),
                )
                return
        try:
            self.sealer.open(row[0])
        except StoreError:
            message = (
                f"The store key does not open the store {str(self.path)!r}, which "
                "was written with another key; set the key it was written with, "
                "or list it after the new one (comma-separated) to rotate."
            )
            raise StoreError(message) from None

    @property
    def schema_version(self) -> int:
        row = self.db.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0])

    # -- sealed JSON -------------------------------------------------------

    def seal_json(self, value: Any) -> bytes:
        return self.sealer.seal(json.dumps(value, sort_keys=True).encode("utf-8"))

    def open_json(self, token: bytes) -> Any:
        return json.loads(self.sealer.open(token))

    # -- idempotency and the outbox ----------------------------------------

    def enqueue(
        self,
        delivery: Mapping[str, Any],
        record: Mapping[str, Any],
        *,
        now: float,
        ttl: float = DEFAULT_KEY_TTL,
    ) -> Claim:
        """Claim the delivery's idempotency key and, if new, add it to the outbox.

        Both happen in one transaction, so a crash leaves either both or
        neither. A key whose TTL has passed is claimed afresh, unless its
        delivery is still unfinished: that delivery may be sent yet, so a
        second one would duplicate it. A record with new content replaces a
        delivery that was blocked before its send or that the platform
        rejected (error kind ``permanent``). The new delivery takes over the
        key and records the old one as its parent, so a corrected record
        keeps its source id.
        """
        if not (isinstance(ttl, (int, float)) and math.isfinite(ttl) and ttl > 0):
            message = (
                "The idempotency key TTL must be a finite number of seconds "
                f"above 0, not {ttl!r}."
            )
            raise ValueError(message)
        _check_columns(delivery, "enqueue")
        key = delivery["idempotency_key"]
        sealed = self.seal_json(record)
        with self.transaction() as conn:
            conn.execute(
                f"DELETE FROM idempotency_keys WHERE key = ? AND {_KEY_EXPIRED}",
                (key, now),
            )
            # The delivery log outlives the key's TTL: a record already
            # delivered stays a duplicate until retention purges its delivery.
            earlier = conn.execute(
                "SELECT id, content_hash FROM deliveries WHERE idempotency_key = ? "
                "AND status = 'delivered' ORDER BY created_at DESC LIMIT 1",
                (key,),
            ).fetchone()
            if earlier is not None:
                if earlier["content_hash"] != delivery["content_hash"]:
                    return Claim("conflict", earlier["id"])
                return Claim("duplicate", earlier["id"])
            inserted = conn.execute(
                "INSERT OR IGNORE INTO idempotency_keys "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    delivery["tenant"],
                    delivery["platform"],
                    delivery["content_hash"],
                    delivery["id"],
                    "claimed",
                    now,
                    now + ttl,
                ),
            ).rowcount
            if not inserted:
                row = conn.execute(
                    "SELECT content_hash, delivery_id, state FROM idempotency_keys "
                    "WHERE key = ?",
                    (key,),
                ).fetchone()
                correctable = row["state"] == "failed" and _never_accepted(
                    conn, row["delivery_id"]
                )
                if row["content_hash"] != delivery["content_hash"]:
                    if not correctable:
                        return Claim("conflict", row["delivery_id"])
                    return self._insert_correction(
                        conn, delivery, sealed, row["delivery_id"], now=now, ttl=ttl
                    )
                if row["state"] == "delivered":
                    return Claim("duplicate", row["delivery_id"])
                if row["state"] == "failed":
                    return Claim("failed", row["delivery_id"])
                owner = conn.execute(
                    "SELECT run_id FROM deliveries WHERE id = ?", (row["delivery_id"],)
                ).fetchone()
                run_id = None if owner is None else owner["run_id"]
                return Claim("unfinished", row["delivery_id"], run_id)
            _insert_pending(conn, delivery, sealed, now=now)
        return Claim("new", delivery["id"])

    def _insert_correction(
        self,
        conn: sqlite3.Connection,
        delivery: Mapping[str, Any],
        sealed: bytes,
        parent_id: str,
        *,
        now: float,
        ttl: float,
    ) -> Claim:
        conn.execute(
            "UPDATE idempotency_keys SET content_hash = ?, delivery_id = ?, "
            "state = 'claimed', created_at = ?, expires_at = ? WHERE key = ?",
            (
                delivery["content_hash"],
                delivery["id"],
                now,
                now + ttl,
                delivery["idempotency_key"],
            ),
        )
        _insert_pending(conn, {**delivery, "parent_id": parent_id}, sealed, now=now)
        conn.execute(
            "UPDATE deliveries SET replayed_by = ? WHERE id = ?",
            (delivery["id"], parent_id),
        )
        return Claim("corrected", delivery["id"])

    def replay(self, parent_id: str, *, run_id: str, now: float) -> str:
        """Copy a finished delivery into a new pending one linked to it."""
        parent = self.get_delivery(parent_id)
        if parent is None:
            message = (
                f"Delivery {parent_id!r} does not exist; list them with "
                "'impactin deliveries list'."
            )
            raise StoreError(message)
        if parent["status"] not in ("dead_lettered", "blocked"):
            message = (
                f"Delivery {parent_id!r} is {parent['status']}; only dead-lettered or "
                "blocked deliveries can be replayed."
            )
            raise StoreError(message)
        if parent["replayed_by"]:
            message = (
                f"Delivery {parent_id!r} was already replayed as "
                f"{parent['replayed_by']}; retry that delivery instead."
            )
            raise StoreError(message)
        parent_id = parent["id"]
        raw = self.db.conn.execute(
            "SELECT record_ct FROM deliveries WHERE id = ?", (parent_id,)
        ).fetchone()[0]
        new_id = new_delivery_id()
        with self.transaction() as conn:
            # Another delivery of the same record under the same key, by a
            # later run, was delivered or may still be: a replay could
            # deliver the record twice.
            other = conn.execute(
                "SELECT id, status FROM deliveries WHERE idempotency_key = ? "
                "AND id != ? AND status IN ('delivered', 'pending', 'in_flight') "
                "LIMIT 1",
                (parent["idempotency_key"], parent_id),
            ).fetchone()
            if other is not None:
                message = (
                    f"Delivery {parent_id!r} is not replayed: delivery "
                    f"{other['id']} of the same record is {other['status']}; "
                    f"see 'impactin deliveries show {other['id']}'."
                )
                raise StoreError(message)
            conn.execute(
                "INSERT INTO deliveries (id, run_id, correlation_id, parent_id, "
                "tenant, platform, kind, source_id, idempotency_key, content_hash, "
                "record_ct, status, attempts, next_attempt_at, created_at, "
                "updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                (
                    new_id,
                    run_id,
                    parent["correlation_id"],
                    parent_id,
                    parent["tenant"],
                    parent["platform"],
                    parent["kind"],
                    parent["source_id"],
                    parent["idempotency_key"],
                    parent["content_hash"],
                    raw,
                    now,
                    now,
                    now,
                ),
            )
            # The key row may be gone (purged, or left by an older version),
            # so it is written whole: the replay must hold the key, or a new
            # run could claim it and send the record alongside the replay.
            conn.execute(
                "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?, 'claimed', ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET delivery_id = excluded.delivery_id, "
                "state = 'claimed', content_hash = excluded.content_hash, "
                "expires_at = max(expires_at, excluded.expires_at)",
                (
                    parent["idempotency_key"],
                    parent["tenant"],
                    parent["platform"],
                    parent["content_hash"],
                    new_id,
                    now,
                    now + DEFAULT_KEY_TTL,
                ),
            )
            conn.execute(
                "UPDATE deliveries SET replayed_by = ? WHERE id = ?",
                (new_id, parent_id),
            )
        return new_id

    def claim_delivery(
        self,
        delivery_id: str,
        *,
        owner: str,
        now: float,
        lease: float,
        trace_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Take a due delivery for this process, or return None if another has it.

        A delivery is free when it is pending, or in flight under a lease
        that expired or whose owner process is gone (``owner_alive``). The
        row is returned with the status it had before the claim, so the
        caller can tell whether an earlier attempt was interrupted.
        ``trace_id`` (the trace of this claim, or None outside a trace) is
        stored in the same write.
        """
        with self.transaction() as conn:
            if _HAS_RETURNING:
                # A pending delivery, the usual case, is claimed in one
                # statement. It had no lease, so only these columns change.
                claimed = conn.execute(
                    "UPDATE deliveries SET status = 'in_flight', lease_owner = ?, "
                    "lease_until = ?, updated_at = ?, trace_id = ? "
                    f"WHERE id = ? AND status = 'pending' RETURNING {_LIST_COLUMNS}",
                    (owner, now + lease, now, trace_id, delivery_id),
                ).fetchall()
                if claimed:
                    values = dict(claimed[0])
                    values["status"] = "pending"
                    return values
            row = conn.execute(
                f"SELECT {_LIST_COLUMNS}, lease_owner, lease_until FROM deliveries "
                "WHERE id = ?",
                (delivery_id,),
            ).fetchone()
            if row is None or row["status"] not in ("pending", "in_flight"):
                return None
            leased_elsewhere = (
                row["status"] == "in_flight"
                and row["lease_owner"] is not None
                and row["lease_owner"] != owner
                and (row["lease_until"] or 0) > now
                and owner_alive(row["lease_owner"])
            )
            if leased_elsewhere:
                return None
            conn.execute(
                "UPDATE deliveries SET status = 'in_flight', lease_owner = ?, "
                "lease_until = ?, updated_at = ?, trace_id = ? WHERE id = ?",
                (owner, now + lease, now, trace_id, delivery_id),
            )
        values = dict(row)
        values.pop("lease_owner")
        values.pop("lease_until")
        return values

    def load_record(self, delivery_id: str) -> dict[str, Any]:
        """Return the delivery's record, decrypted; ``StoreError`` if it is gone."""
        row = self.db.conn.execute(
            "SELECT record_ct FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        if row is None:
            message = f"Delivery {delivery_id} is not in the store {str(self.path)!r}."
            raise StoreError(message)
        result: dict[str, Any] = self.open_json(row[0])
        return result

    def update_delivery(self, delivery_id: str, **fields: Any) -> None:
        _check_columns(fields, "update_delivery")
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE deliveries SET {assignments} WHERE id = ?",
                (*fields.values(), delivery_id),
            )

    def finish_delivery(
        self,
        delivery_id: str,
        key: str,
        *,
        delivered: bool,
        defer: bool = False,
        **fields: Any,
    ) -> None:
        """Record a delivery's final state, end its lease and settle its key.

        With ``defer=True`` the write waits for this thread's next
        transaction or ``flush()``. A process that stops before then leaves
        the delivery in flight, and the next run treats it as interrupted,
        so defer only where repeating the request is safe.
        """
        _check_columns(fields, "finish_delivery")
        fields["updated_at"] = time.time()
        fields["lease_owner"] = None
        fields["lease_until"] = None
        assignments = ", ".join(f"{name} = ?" for name in fields)
        statements = [
            (
                f"UPDATE deliveries SET {assignments} WHERE id = ?",
                (*fields.values(), delivery_id),
            ),
            (
                "UPDATE idempotency_keys SET state = ? "
                "WHERE key = ? AND delivery_id = ?",
                ("delivered" if delivered else "failed", key, delivery_id),
            ),
        ]
        self._write(statements, defer=defer)

    def add_attempt(
        self, attempt: Mapping[str, Any], *, defer: bool = False, **delivery_fields: Any
    ) -> None:
        """Insert one attempt row, and update its delivery in the same transaction.

        ``delivery_fields`` are delivery columns to set, such as ``attempts``;
        ``updated_at`` is set with them. ``defer`` works as in
        ``finish_delivery``.
        """
        unknown = sorted(set(attempt) - _ATTEMPT_COLUMNS)
        if unknown:
            names = ", ".join(unknown)
            message = f"Store.add_attempt got unknown attempt columns: {names}."
            raise ValueError(message)
        _check_columns(delivery_fields, "add_attempt")
        names = ", ".join(attempt)
        marks = ", ".join("?" for _ in attempt)
        statements = [
            (
                f"INSERT INTO attempts ({names}) VALUES ({marks})",
                tuple(attempt.values()),
            )
        ]
        if delivery_fields:
            fields = {**delivery_fields, "updated_at": time.time()}
            assignments = ", ".join(f"{name} = ?" for name in fields)
            statements.append(
                (
                    f"UPDATE deliveries SET {assignments} WHERE id = ?",
                    (*fields.values(), attempt["delivery_id"]),
                )
            )
        self._write(statements, defer=defer)

    def _write(
        self, statements: list[tuple[str, tuple[Any, ...]]], *, defer: bool
    ) -> None:
        if defer:
            self._deferred().extend(statements)
            return
        with self.transaction() as conn:
            for statement, parameters in statements:
                conn.execute(statement, parameters)

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        return list(
            self.db["attempts"].rows_where(
                "delivery_id = ?", [delivery_id], order_by="number"
            )
        )

    def due_deliveries(
        self, now: float, *, include_future: bool = False, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Deliveries not finished: pending, or in flight when a process died."""
        where = _due_condition(include_future)
        args: list[Any] = [] if include_future else [now]
        if tenant is not None:
            where += " AND tenant = ?"
            args.append(tenant)
        return list(
            self.db["deliveries"].rows_where(
                where, args, order_by="created_at", select=_LIST_COLUMNS
            )
        )

    def iter_due_deliveries(
        self, now: float, *, include_future: bool = False, page_size: int = 500
    ) -> Iterator[dict[str, Any]]:
        """Yield the deliveries ``due_deliveries`` returns, ``page_size`` rows a read.

        Pages follow the rowid, which is insertion order, so memory stays
        flat however large the outbox is and no row is yielded twice. A row
        that becomes due while the pages are read is yielded if its rowid
        is still ahead.
        """
        query = (
            f"SELECT rowid AS row_number, {_LIST_COLUMNS} FROM deliveries "
            f"WHERE rowid > ? AND {_due_condition(include_future)} "
            "ORDER BY rowid LIMIT ?"
        )
        last = 0
        while True:
            args: tuple[Any, ...] = (last, page_size)
            if not include_future:
                args = (last, now, page_size)
            page = self.db.conn.execute(query, args).fetchall()
            for row in page:
                values = dict(row)
                last = values.pop("row_number")
                yield values
            if len(page) < page_size:
                return

    def count_due(self, now: float, *, include_future: bool = False) -> int:
        """Return how many deliveries ``iter_due_deliveries`` would yield now."""
        row = self.db.conn.execute(
            f"SELECT COUNT(*) FROM deliveries WHERE {_due_condition(include_future)}",
            () if include_future else (now,),
        ).fetchone()
        return int(row[0])

    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        rows = list(
            self.db["deliveries"].rows_where(
                "id = ? OR id LIKE ? ESCAPE '\\'",
                [delivery_id, f"{_escape_like(delivery_id)}%"],
                select=_LIST_COLUMNS,
                limit=2,
            )
        )
        return rows[0] if len(rows) == 1 else None

    def list_deliveries(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for name, value in (filters or {}).items():
            if value is not None:
                clauses.append(f"{name} = ?")
                args.append(value)
        if since is not None:
            clauses.append("created_at >= ?")
            args.append(since)
        if until is not None:
            clauses.append("created_at < ?")
            args.append(until)
        where = " AND ".join(clauses) or "1 = 1"
        return list(
            self.db["deliveries"].rows_where(
                where,
                args,
                order_by="created_at DESC, id",
                select=_LIST_COLUMNS,
                limit=limit,
                offset=offset or None,
            )
        )

    def count_by_status(
        self, run_id: str | None = None
    ) -> dict[tuple[str, str], dict[str, int]]:
        sql = "SELECT platform, tenant, status, COUNT(*) FROM deliveries"
        args: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id = ?"
            args = (run_id,)
        sql += " GROUP BY platform, tenant, status"
        result: dict[tuple[str, str], dict[str, int]] = {}
        for platform, tenant, status, count in self.db.conn.execute(sql, args):
            result.setdefault((platform, tenant), {})[status] = count
        return result

    def purge_expired_keys(self, now: float) -> int:
        """Delete keys past their TTL and return the number deleted.

        Keys of unfinished deliveries stay, whatever their age, and so do
        keys of failed deliveries still in the log (see ``_KEY_EXPIRED``).
        """
        with self.transaction() as conn:
            return conn.execute(
                f"DELETE FROM idempotency_keys WHERE {_KEY_EXPIRED}", (now,)
            ).rowcount

    def purge(self, older_than: float, now: float) -> int:
        """Delete old finished deliveries and resolved quarantine rows.

        Deletes deliveries in a finished state (delivered, dead-lettered,
        blocked) whose ``finished_at`` (or ``updated_at`` when unset) is more
        than ``older_than`` seconds before ``now``, with their attempts, and
        quarantine rows resolved before that cutoff, and webhook event ids
        first seen before it. Pending and in-flight deliveries stay whatever
        their age, and so do idempotency keys, which ``purge_expired_keys``
        handles. Returns the number of deliveries and quarantine rows
        deleted.
        """
        if not (isinstance(older_than, (int, float)) and math.isfinite(older_than)):
            message = (
                f"older_than must be a finite number of seconds, not {older_than!r}."
            )
            raise ValueError(message)
        if older_than < 0:
            message = f"older_than must be 0 or more seconds, not {older_than!r}."
            raise ValueError(message)
        cutoff = now - older_than
        marks = ", ".join("?" for _ in FINISHED_STATUSES)
        old_deliveries = (
            f"SELECT id FROM deliveries WHERE status IN ({marks}) "
            "AND COALESCE(finished_at, updated_at) < ?"
        )
        args = (*FINISHED_STATUSES, cutoff)
        with self.transaction() as conn:
            conn.execute(
                f"DELETE FROM attempts WHERE delivery_id IN ({old_deliveries})", args
            )
            deliveries = conn.execute(
                f"DELETE FROM deliveries WHERE id IN ({old_deliveries})", args
            ).rowcount
            quarantined = conn.execute(
                "DELETE FROM quarantine WHERE resolved_at IS NOT NULL "
                "AND resolved_at < ?",
                (cutoff,),
            ).rowcount
            # A signed timestamp older than the retention is stale anyway, so
            # only replays of a scheme without timestamps could still match.
            conn.execute("DELETE FROM webhook_events WHERE seen_at < ?", (cutoff,))
        return int(deliveries + quarantined)

    # -- quarantine --------------------------------------------------------

    def quarantine(
        self,
        *,
        run_id: str,
        tenant: str,
        source_id: str | None,
        line: int | None,
        field: str | None,
        reason: str,
        raw: Mapping[str, Any],
        now: float,
    ) -> str:
        """Keep a row that cannot be delivered, with its reason.

        The same row quarantined again for the same reason (a file read
        twice) is not added twice; the id of the open row is returned.
        """
        row_id = new_delivery_id()
        with self.transaction() as conn:
            same = conn.execute(
                "SELECT id FROM quarantine WHERE resolved_at IS NULL AND tenant = ? "
                "AND source_id IS ? AND line IS ? AND field IS ? AND reason = ?",
                (tenant, source_id, line, field, reason),
            ).fetchone()
            if same is not None:
                return str(same[0])
            self.db.table("quarantine").insert(
                {
                    "id": row_id,
                    "run_id": run_id,
                    "tenant": tenant,
                    "source_id": source_id,
                    "line": line,
                    "field": field,
                    "reason": reason,
                    "raw_ct": self.seal_json(dict(raw)),
                    "created_at": now,
                    "resolved_at": None,
                }
            )
        return row_id

    def quarantined(
        self, *, run_id: str | None = None, include_resolved: bool = False
    ) -> list[dict[str, Any]]:
        clauses = [] if include_resolved else ["resolved_at IS NULL"]
        args: list[Any] = []
        if run_id is not None:
            clauses.append("run_id = ?")
            args.append(run_id)
        where = " AND ".join(clauses) or "1 = 1"
        columns = (
            "id, run_id, tenant, source_id, line, field, reason, created_at, "
            "resolved_at"
        )
        return list(
            self.db["quarantine"].rows_where(
                where, args, order_by="created_at", select=columns
            )
        )

    def quarantined_raw(self, row_id: str) -> dict[str, Any]:
        row = self.db.conn.execute(
            "SELECT raw_ct FROM quarantine WHERE id = ?", (row_id,)
        ).fetchone()
        if row is None:
            message = (
                f"Quarantined row {row_id!r} does not exist; list them with "
                "'impactin quarantine list'."
            )
            raise StoreError(message)
        result: dict[str, Any] = self.open_json(row[0])
        return result

    def resolve_quarantined(self, row_id: str, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE quarantine SET resolved_at = ? WHERE id = ?", (now, row_id)
            )

    # -- tokens (the TokenStore protocol) -----------------------------------

    def load_token(self, tenant: str, platform: str) -> OAuthToken | None:
        row = self.db.conn.execute(
            "SELECT token_ct FROM tokens WHERE tenant = ? AND platform = ?",
            (tenant, platform),
        ).fetchone()
        if row is None:
            return None
        # Each send reads the token, so the decrypted token is kept per
        # ciphertext. Fernet output differs on every save, so a token that
        # another process saved is decrypted afresh.
        sealed = bytes(row[0])
        cached = self._opened_tokens.get((tenant, platform))
        if cached is not None and cached[0] == sealed:
            return cached[1]
        token = OAuthToken(**self.open_json(sealed))
        self._opened_tokens[(tenant, platform)] = (sealed, token)
        return token

    def save_token(self, tenant: str, platform: str, token: OAuthToken) -> None:
        sealed = self.seal_json(attrs.asdict(token))
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    platform,
                    sealed,
                    token.obtained_at,
                    token.expires_at,
                    int(token.refresh_token is not None),
                    time.time(),
                ),
            )

    def delete_token(self, tenant: str, platform: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM tokens WHERE tenant = ? AND platform = ?",
                (tenant, platform),
            )

    def try_lock_token(
        self, tenant: str, platform: str, owner: str, until: float
    ) -> bool:
        """Take the refresh lease of a tenant and platform for ``owner``.

        Returns False while another owner holds a lease that ends after now.
        ``BEGIN IMMEDIATE`` serializes the check and the write across
        processes. The lease is a row, not an open transaction, so other
        writers are not blocked while the holder waits for the token server.
        """
        now = time.time()
        with self.transaction() as conn:
            # Created here rather than in a schema migration, so stores made
            # by schema version 1 get the table without a version bump.
            conn.execute(_TOKEN_LOCKS_TABLE)
            row = conn.execute(
                "SELECT owner, until FROM token_locks "
                "WHERE tenant = ? AND platform = ?",
                (tenant, platform),
            ).fetchone()
            if row is not None and row["owner"] != owner and row["until"] > now:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO token_locks VALUES (?, ?, ?, ?)",
                (tenant, platform, owner, until),
            )
        return True

    def unlock_token(self, tenant: str, platform: str, owner: str) -> None:
        """Release the refresh lease if ``owner`` still holds it."""
        with self.transaction() as conn:
            conn.execute(_TOKEN_LOCKS_TABLE)
            conn.execute(
                "DELETE FROM token_locks "
                "WHERE tenant = ? AND platform = ? AND owner = ?",
                (tenant, platform, owner),
            )

    def token_rows(self) -> list[dict[str, Any]]:
        columns = (
            "tenant, platform, obtained_at, expires_at, has_refresh_token, updated_at"
        )
        return list(
            self.db["tokens"].rows_where(select=columns, order_by="tenant, platform")
        )

    def rotate_key(self) -> int:
        """Re-encrypt every sealed value under the newest store key."""
        count = 0
        with self.transaction() as conn:
            for table, column, key_columns in _SEALED_COLUMNS:
                keys = ", ".join(key_columns)
                rows = conn.execute(f"SELECT {keys}, {column} FROM {table}").fetchall()
                for row in rows:
                    where = " AND ".join(f"{name} = ?" for name in key_columns)
                    conn.execute(
                        f"UPDATE {table} SET {column} = ? WHERE {where}",
                        (
                            self.sealer.rotate(row[column]),
                            *[row[name] for name in key_columns],
                        ),
                    )
                    count += 1
        return count

    # -- webhooks (the ReplayStore protocol) --------------------------------

    def seen(
        self, platform: str, event_id: str, now: float, *, tenant: str = ""
    ) -> bool:
        with self.transaction() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO webhook_events "
                "(tenant, platform, event_id, seen_at) VALUES (?, ?, ?, ?)",
                (tenant, platform, event_id, now),
            ).rowcount
        return not inserted


def _due_condition(include_future: bool) -> str:
    """Return the SQL condition that a delivery is unfinished and due.

    Without ``include_future`` the condition takes one parameter, the time.
    """
    condition = "status IN ('pending', 'in_flight')"
    if include_future:
        return condition
    return condition + " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"


#: ``UPDATE ... RETURNING`` needs SQLite 3.35 or newer. With an older
#: library a delivery is claimed with a read and a write.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

_LIST_COLUMNS = (
    "id, run_id, correlation_id, parent_id, tenant, platform, kind, source_id, "
    "idempotency_key, content_hash, status, attempts, next_attempt_at, created_at, "
    "updated_at, finished_at, latency_s, response_id, error_kind, error, "
    "evidence_hash, redacted_count, trace_id, replayed_by"
)

#: Refresh leases of the token cache: ``until`` is the Unix time the lease ends.
_TOKEN_LOCKS_TABLE = """
CREATE TABLE IF NOT EXISTS token_locks (
    tenant TEXT NOT NULL,
    platform TEXT NOT NULL,
    owner TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (tenant, platform)
)
"""

_SEALED_COLUMNS: Sequence[tuple[str, str, tuple[str, ...]]] = (
    ("deliveries", "record_ct", ("id",)),
    ("quarantine", "raw_ct", ("id",)),
    ("tokens", "token_ct", ("tenant", "platform")),
    ("meta", "value", ("key",)),
)


_DELIVERY_COLUMNS = frozenset(
    {name.strip() for name in _LIST_COLUMNS.split(",")}
    | {"record_ct", "lease_owner", "lease_until"}
)


_ATTEMPT_COLUMNS = frozenset(
    {
        "delivery_id",
        "number",
        "started_at",
        "duration_s",
        "outcome",
        "status_code",
        "retry_after",
        "delay_s",
        "error",
        "trace_id",
    }
)


def _check_columns(fields: Mapping[str, Any], method: str) -> None:
    # Column names go into the SQL text, so only known ones may pass.
    unknown = sorted(set(fields) - _DELIVERY_COLUMNS)
    if unknown:
        message = f"Store.{method} got unknown delivery columns: {', '.join(unknown)}."
        raise ValueError(message)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _enable_wal(conn: sqlite3.Connection, wait: float = 60.0) -> None:
    """Switch the file to WAL mode, waiting while another process holds it.

    SQLite does not call the busy handler for a change of journal mode, so
    a process that opens a new store while another one creates its tables
    gets "database is locked" at once. The change is tried again until
    ``wait`` seconds have passed.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def process_owner() -> str:
    """Return an id of this process for delivery leases: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str) -> bool:
    """Return whether a lease owner may still run.

    A process on this host is checked with signal 0. One on another host
    is assumed alive, and its lease holds until it expires.
    """
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_delivery_id() -> str:
    return uuid.uuid4().hex
