"""Circuit breaker states shared between processes through the store.

``BreakerBoard`` keeps circuits in process memory. ``BreakerSync`` writes each
state change into the store's ``breaker_states`` table, so ``impactin health``
in another process shows it, and applies a manual reset that
``impactin breaker reset`` recorded there. The table contains one row per tenant
and platform with the latest change any process reported, so with several
workers the row shows the last writer's view.
"""

from __future__ import annotations

import logging
from typing import Any

from ._errors import StoreError
from ._reliability import BreakerBoard
from ._store import Store

__all__ = ["BreakerSync", "breaker_rows", "record_reset"]

logger = logging.getLogger("impactin.breaker")

#: The ``state`` a manual reset writes until a worker applies it.
RESET_STATE = "reset"

_UPSERT_STATE = """
INSERT INTO breaker_states
    (tenant, platform, state, failure_count, opened_at, reopens_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant, platform) DO UPDATE SET
    state = excluded.state,
    failure_count = excluded.failure_count,
    opened_at = excluded.opened_at,
    reopens_at = excluded.reopens_at,
    updated_at = excluded.updated_at
"""

_UPSERT_RESET = """
INSERT INTO breaker_states
    (tenant, platform, state, failure_count, opened_at, reopens_at, updated_at,
     reset_at)
VALUES (?, ?, ?, 0, NULL, NULL, ?, ?)
ON CONFLICT (tenant, platform) DO UPDATE SET
    state = excluded.state,
    failure_count = 0,
    opened_at = NULL,
    reopens_at = NULL,
    updated_at = excluded.updated_at,
    reset_at = excluded.reset_at
"""


def record_reset(store: Store, tenant: str, platform: str, now: float) -> None:
    """Store a manual reset of one circuit; workers apply it before their next call."""
    with store.transaction() as conn:
        conn.execute(_UPSERT_RESET, (tenant, platform, RESET_STATE, now, now))


def breaker_rows(store: Store) -> list[dict[str, Any]]:
    """Return every stored circuit state, sorted by tenant and platform."""
    rows = store.db.conn.execute(
        "SELECT tenant, platform, state, failure_count, opened_at, reopens_at, "
        "updated_at, reset_at FROM breaker_states ORDER BY tenant, platform"
    ).fetchall()
    return [dict(row) for row in rows]


class BreakerSync:
    """Mirror one runtime's ``BreakerBoard`` into the store and back."""

    def __init__(self, store: Store, board: BreakerBoard) -> None:
        self.store = store
        self.board = board
        # The reset_at of each circuit when this process last looked. Absent
        # until the first call, which comes before the circuit exists here,
        # so resets recorded before that call are never applied.
        self._resets_seen: dict[str, float | None] = {}
        # The stored state of each circuit at this process's last look. It
        # can come from an earlier process, whose open circuit this process
        # never had.
        self._stored_states: dict[str, str | None] = {}

    def save_change(self, name: str, now: float) -> None:
        """Write the board's current state of circuit ``name`` (``tenant/platform``).

        A store failure is logged and ignored, because the table only
        mirrors the state and must not stop a delivery.
        """
        state = next((item for item in self.board.states() if item.name == name), None)
        if state is None:
            return
        tenant, _, platform = name.rpartition("/")
        failures = state.failure_count
        if state.state == "opened":
            # purgatory clears its count when a circuit opens, and only a
            # streak of ``threshold`` failures opens one.
            failures = max(failures, state.threshold)
        values = (
            tenant,
            platform,
            state.state,
            failures,
            state.opened_at,
            state.reopens_at,
            now,
        )
        try:
            with self.store.transaction() as conn:
                conn.execute(_UPSERT_STATE, values)
        except StoreError as exc:
            logger.warning(
                "Could not store the circuit state of tenant %s on %s: %s",
                tenant,
                platform,
                exc,
            )

    def apply_reset(self, tenant: str, platform: str) -> bool:
        """Reset the circuit if the store contains a reset this process has not seen.

        Returns True when the circuit was reset.
        """
        name = f"{tenant}/{platform}"
        row = self.store.db.conn.execute(
            "SELECT state, reset_at FROM breaker_states "
            "WHERE tenant = ? AND platform = ?",
            (tenant, platform),
        ).fetchone()
        reset_at = None if row is None else row["reset_at"]
        self._stored_states[name] = None if row is None else row["state"]
        if name not in self._resets_seen:
            self._resets_seen[name] = reset_at
            return False
        if reset_at is None or reset_at == self._resets_seen[name]:
            return False
        self._resets_seen[name] = reset_at
        logger.warning(
            "Applying a manual reset of the circuit of tenant %s on %s",
            tenant,
            platform,
        )
        return self.board.reset(tenant, platform)

    def note_success(self, tenant: str, platform: str, now: float) -> None:
        """Store this process's closed circuit over a stale state after a success.

        A circuit changes state only in the process whose calls change it, so
        a circuit an earlier process left open would stay open in the store
        while this process's closed circuit delivers.
        """
        name = f"{tenant}/{platform}"
        if self._stored_states.get(name) in (None, "closed"):
            return
        state = next((item for item in self.board.states() if item.name == name), None)
        if state is not None and state.state == "closed":
            self.save_change(name, now)
            self._stored_states[name] = "closed"
