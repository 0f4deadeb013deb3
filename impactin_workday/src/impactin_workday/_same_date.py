"""Guard against two activities of one worker replacing each other on one date.

``Edit_Worker_Additional_Data`` replaces a worker's custom object data
effective on a date with what the request carries. A second activity of the
same worker, custom object and date would therefore silently replace the
first one. This ledger remembers which row id occupies each such slot, so the
connector rejects the second write with a clear error instead.

Slots are stored as HMAC-SHA256 digests keyed by a tenant secret, so the
ledger file contains no Employee_ID.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from pathlib import Path

__all__ = ["SameDateLedger", "slot_digest"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS slots (slot TEXT PRIMARY KEY, row_id TEXT NOT NULL)"
)


def slot_digest(key: bytes, *parts: str) -> str:
    """Return the keyed digest of one worker, custom object and date."""
    message = "\x1f".join(parts).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class SameDateLedger:
    """The row id written per slot, in a SQLite file shared by processes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute(_SCHEMA)
        return conn

    def claim(self, slot: str, row_id: str) -> str:
        """Claim ``slot`` for ``row_id`` unless taken; return its holder's row id."""
        conn = self._connect()
        try:
            conn.execute("INSERT OR IGNORE INTO slots VALUES (?, ?)", (slot, row_id))
            row = conn.execute(
                "SELECT row_id FROM slots WHERE slot = ?", (slot,)
            ).fetchone()
        finally:
            conn.close()
        return str(row[0])

    def release(self, slot: str, row_id: str) -> None:
        """Free ``slot`` if ``row_id`` occupies it, after a write that surely failed."""
        conn = self._connect()
        try:
            conn.execute(
                "DELETE FROM slots WHERE slot = ? AND row_id = ?", (slot, row_id)
            )
        finally:
            conn.close()
