"""The SQLite store: claims, TTLs, encryption at rest, schema and purges."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from impactin_core import OAuthToken, StoreError
from impactin_core._crypto import Sealer, generate_key
from impactin_core._store import (
    DEFAULT_KEY_TTL,
    MIGRATIONS,
    SCHEMA_VERSION,
    Store,
    new_delivery_id,
)

KEY_NAME = "IMPACTIN_STORE_KEY"
NOW = 1_700_000_000.0
DAY = 86400.0

EMPLOYEE_ID = "EMP-778812"
EMAIL = "jane.doe@example.com"
ACCESS_TOKEN = "at-4f1c9e0b7d2a6f3e"
REFRESH_TOKEN = "rt-9a8b7c6d5e4f3a2b"


def _sealer(*keys: str) -> Sealer:
    return Sealer(list(keys), key_name=KEY_NAME)


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
def store(tmp_path: Path, key: str) -> Any:
    opened = Store(tmp_path / "state.db", _sealer(key))
    yield opened
    opened.close()


def _delivery(
    key: str = "ik_1", content: str = "hash-a", **extra: Any
) -> dict[str, Any]:
    return {
        "id": new_delivery_id(),
        "run_id": "run-1",
        "correlation_id": "corr-1",
        "tenant": "acme",
        "platform": "bv",
        "kind": "donation",
        "source_id": "src-1",
        "idempotency_key": key,
        "content_hash": content,
        **extra,
    }


RECORD = {"employee_id": EMPLOYEE_ID, "email": EMAIL, "amount": 2500}


def _enqueue(
    store: Store, key: str = "ik_1", content: str = "hash-a", **kw: Any
) -> Any:
    now = kw.pop("now", NOW)
    return store.enqueue(_delivery(key, content), RECORD, now=now, **kw)


def _finish(store: Store, delivery_id: str, status: str, when: float) -> None:
    store.finish_delivery(
        delivery_id,
        store.get_delivery(delivery_id)["idempotency_key"],  # type: ignore[index]
        delivered=status == "delivered",
        status=status,
        finished_at=when,
    )


# -- claims and the outbox ----------------------------------------------------------


def test_claim_new(store: Store) -> None:
    claim = _enqueue(store)
    row = store.get_delivery(claim.delivery_id)
    assert claim.state == "new"
    assert row is not None
    assert row["status"] == "pending"


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "read-write"])
def test_claim_delivery_lease(
    store: Store, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    # SQLite older than 3.35 has no UPDATE ... RETURNING, so both ways run.
    monkeypatch.setattr("impactin_core._store._HAS_RETURNING", returning)
    delivery_id = _enqueue(store).delivery_id

    first = store.claim_delivery(delivery_id, owner="w1", now=NOW, lease=60.0)
    second_claim = store.claim_delivery(
        delivery_id, owner="w2", now=NOW + 1, lease=60.0
    )
    stored = store.get_delivery(delivery_id)
    # A lease that ran out frees the delivery for another worker.
    again = store.claim_delivery(delivery_id, owner="w2", now=NOW + 61, lease=60.0)

    assert first is not None
    assert first["status"] == "pending"
    assert first["id"] == delivery_id
    assert first["attempts"] == 0
    assert "lease_owner" not in first
    assert second_claim is None
    assert stored is not None
    assert stored["status"] == "in_flight"
    assert again is not None
    assert again["status"] == "in_flight"


def test_claim_unfinished(store: Store) -> None:
    first = _enqueue(store)
    second = _enqueue(store)
    assert second.state == "unfinished"
    assert second.delivery_id == first.delivery_id


def test_claim_duplicate(store: Store) -> None:
    first = _enqueue(store)
    _finish(store, first.delivery_id, "delivered", NOW)
    second = _enqueue(store, now=NOW + 60)
    assert second.state == "duplicate"
    assert second.delivery_id == first.delivery_id


def test_claim_conflict(store: Store) -> None:
    first = _enqueue(store)
    second = _enqueue(store, content="hash-b")
    assert second.state == "conflict"
    assert second.delivery_id == first.delivery_id


@pytest.mark.parametrize(
    ("status", "error_kind", "state"),
    [
        pytest.param("blocked", "personal_data", "corrected", id="blocked"),
        pytest.param("dead_lettered", "permanent", "corrected", id="rejected"),
        pytest.param("dead_lettered", "exhausted", "conflict", id="exhausted"),
        pytest.param("dead_lettered", "interrupted", "conflict", id="interrupted"),
        pytest.param("dead_lettered", "plugin_error", "conflict", id="plugin-error"),
    ],
)
def test_claim_correction_of_failed(
    store: Store, status: str, error_kind: str, state: str
) -> None:
    """New content replaces a failed delivery only where nothing was created."""
    first = _enqueue(store)
    _finish(store, first.delivery_id, status, NOW)
    store.update_delivery(first.delivery_id, error_kind=error_kind)

    corrected = _enqueue(store, content="hash-b")
    same_again = _enqueue(store, content="hash-b")

    old = store.get_delivery(first.delivery_id)
    assert old is not None
    assert corrected.state == state
    if state == "corrected":
        new = store.get_delivery(corrected.delivery_id)
        assert new is not None
        assert new["parent_id"] == first.delivery_id
        assert new["status"] == "pending"
        assert old["replayed_by"] == corrected.delivery_id
        assert same_again.state == "unfinished"
        assert same_again.delivery_id == corrected.delivery_id
    else:
        assert corrected.delivery_id == first.delivery_id
        assert old["replayed_by"] is None


def test_failed_key_outlives_ttl(store: Store) -> None:
    """A dead letter may have arrived, so its record waits for a replay."""
    first = _enqueue(store)
    _finish(store, first.delivery_id, "dead_lettered", NOW)
    store.update_delivery(first.delivery_id, error_kind="interrupted")
    before = _enqueue(store, now=NOW + DEFAULT_KEY_TTL - 1)
    after = _enqueue(store, now=NOW + 10 * DEFAULT_KEY_TTL)
    assert DEFAULT_KEY_TTL == 24 * 3600
    assert before.state == "failed"
    assert after.state == "failed"
    assert after.delivery_id == first.delivery_id


def test_failed_key_goes_with_its_delivery(store: Store) -> None:
    first = _enqueue(store)
    _finish(store, first.delivery_id, "dead_lettered", NOW)
    store.purge(older_than=DAY, now=NOW + 2 * DAY)

    again = _enqueue(store, now=NOW + 2 * DAY)

    assert again.state == "new"


def test_replay_refused_while_record_delivered_elsewhere(store: Store) -> None:
    first = _enqueue(store)
    _finish(store, first.delivery_id, "dead_lettered", NOW)
    # A later delivery under the same key, as a store written by an older
    # version could hold after its key expired.
    store.db.conn.execute("DELETE FROM idempotency_keys")
    store.db.conn.commit()
    second = _enqueue(store, now=NOW + 2 * DAY)
    _finish(store, second.delivery_id, "delivered", NOW + 2 * DAY)

    with pytest.raises(StoreError) as caught:
        store.replay(first.delivery_id, run_id="r2", now=NOW + 3 * DAY)

    assert f"delivery {second.delivery_id} of the same record is delivered" in str(
        caught.value
    )


def test_replay_claims_a_missing_key(store: Store) -> None:
    first = _enqueue(store)
    _finish(store, first.delivery_id, "dead_lettered", NOW)
    store.db.conn.execute("DELETE FROM idempotency_keys")
    store.db.conn.commit()

    replay = store.replay(first.delivery_id, run_id="r2", now=NOW + DAY)
    again = _enqueue(store, now=NOW + DAY)

    assert again.state == "unfinished"
    assert again.delivery_id == replay


def test_delivered_stays_duplicate_past_ttl(store: Store) -> None:
    """The delivery log outlives the key's TTL, so a re-run sends nothing."""
    first = _enqueue(store)
    _finish(store, first.delivery_id, "delivered", NOW)

    later = _enqueue(store, now=NOW + 10 * DEFAULT_KEY_TTL)

    assert later.state == "duplicate"
    assert later.delivery_id == first.delivery_id


def test_claim_keeps_unfinished_past_ttl(store: Store) -> None:
    """An expired key whose delivery may still go out is not claimed again."""
    first = _enqueue(store, ttl=60.0)
    second = _enqueue(store, now=NOW + 3600)
    assert second.state == "unfinished"
    assert second.delivery_id == first.delivery_id


@pytest.mark.parametrize(
    "ttl",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1.0, id="negative"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinite"),
    ],
)
def test_claim_rejects_ttl(store: Store, ttl: float) -> None:
    with pytest.raises(ValueError, match="TTL"):
        _enqueue(store, ttl=ttl)


def test_purge_expired_keys(store: Store) -> None:
    delivered = _enqueue(store, "ik_delivered", ttl=60.0)
    _finish(store, delivered.delivery_id, "delivered", NOW)
    failed = _enqueue(store, "ik_failed", ttl=60.0)
    _finish(store, failed.delivery_id, "dead_lettered", NOW)
    _enqueue(store, "ik_claimed", ttl=60.0)
    _enqueue(store, "ik_fresh", ttl=DAY)
    purged = store.purge_expired_keys(NOW + 120)
    keys = [row[0] for row in store.db.conn.execute("SELECT key FROM idempotency_keys")]
    assert purged == 1
    assert sorted(keys) == ["ik_claimed", "ik_failed", "ik_fresh"]


# Each racing process is a new interpreter: forking a pytest worker that runs
# threads of its own can copy a held lock into the child and hang it.
_CLAIM_SCRIPT = """
import json, sys, threading, time, traceback
from pathlib import Path
from impactin_core._crypto import Sealer
from impactin_core._store import Store, new_delivery_id

path, key, go, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
store = Store(path, Sealer([key], key_name="IMPACTIN_STORE_KEY"))
record = {"employee_id": "EMP-778812", "email": "jane.doe@example.com", "amount": 1}
outcomes, errors = [], []
start = threading.Barrier(8)

def claim_all():
    try:
        start.wait()
        for n in range(count):
            name = f"ik_{n}"
            delivery = {
                "id": new_delivery_id(), "run_id": "run-1",
                "correlation_id": "corr-1", "tenant": "acme", "platform": "bv",
                "kind": "donation", "source_id": "src-1",
                "idempotency_key": name, "content_hash": "hash-a",
            }
            claim = store.enqueue(delivery, record, now=1_700_000_000.0)
            outcomes.append((name, claim.state))
    except Exception:
        errors.append(traceback.format_exc())

threads = [threading.Thread(target=claim_all) for _ in range(8)]
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
store.close()
print(json.dumps({"outcomes": outcomes, "errors": errors}))
"""


def test_claim_race_processes(tmp_path: Path, key: str) -> None:
    """2 processes x 8 threads claim the same keys: one winner per key."""
    path = str(tmp_path / "race.db")
    go = tmp_path / "go"
    count = 25
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM_SCRIPT, path, key, str(go), str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.touch()
    gathered = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        gathered.append(json.loads(out))
    outcomes = [tuple(item) for found in gathered for item in found["outcomes"]]
    errors = [error for found in gathered for error in found["errors"]]
    assert errors == []
    assert len(outcomes) == 2 * 8 * count
    for n in range(count):
        name = f"ik_{n}"
        states = sorted(state for key_name, state in outcomes if key_name == name)
        assert states.count("new") == 1, name
        assert states.count("unfinished") == 15, name
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
    assert rows == count


# -- encryption at rest --------------------------------------------------------------


def _file_bytes(path: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            data += part.read_bytes()
    return data


def _fill_with_secrets(store: Store) -> None:
    _enqueue(store)
    store.save_token(
        "acme",
        "bv",
        OAuthToken(
            access_token=ACCESS_TOKEN,
            refresh_token=REFRESH_TOKEN,
            expires_at=NOW + 3600,
            obtained_at=NOW,
        ),
    )
    store.quarantine(
        run_id="run-1",
        tenant="acme",
        source_id="src-2",
        line=3,
        field="email",
        reason="The email is malformed.",
        raw={"employee_id": EMPLOYEE_ID, "email": EMAIL},
        now=NOW,
    )


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(ACCESS_TOKEN, id="access-token"),
        pytest.param(REFRESH_TOKEN, id="refresh-token"),
        pytest.param(EMPLOYEE_ID, id="employee-id"),
        pytest.param(EMAIL, id="email"),
    ],
)
def test_file_has_no_plaintext(store: Store, secret: str) -> None:
    _fill_with_secrets(store)
    in_wal = _file_bytes(store.path)
    store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpointed = _file_bytes(store.path)
    assert len(in_wal) > 0
    assert secret.encode() not in in_wal
    assert secret.encode() not in checkpointed


def test_sealed_values_read_back(store: Store) -> None:
    _fill_with_secrets(store)
    delivery_id = store.list_deliveries()[0]["id"]
    token = store.load_token("acme", "bv")
    quarantined = store.quarantined()[0]
    assert store.load_record(delivery_id)["employee_id"] == EMPLOYEE_ID
    assert token is not None
    assert token.access_token == ACCESS_TOKEN
    assert store.quarantined_raw(quarantined["id"])["email"] == EMAIL


def test_rotate_key_drops_old(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    path = tmp_path / "state.db"
    with_old = Store(path, _sealer(old))
    _fill_with_secrets(with_old)
    with_old.close()
    rotating = Store(path, _sealer(new, old))
    rotated = rotating.rotate_key()
    rotating.close()
    with_new = Store(path, _sealer(new))
    delivery_id = with_new.list_deliveries()[0]["id"]
    quarantined_id = with_new.quarantined()[0]["id"]
    token = with_new.load_token("acme", "bv")
    # Three sealed rows plus the store's key check.
    assert rotated == 4
    assert with_new.load_record(delivery_id)["email"] == EMAIL
    assert with_new.quarantined_raw(quarantined_id)["employee_id"] == EMPLOYEE_ID
    assert token is not None
    assert token.refresh_token == REFRESH_TOKEN
    with_new.close()


def test_other_key_cannot_open(tmp_path: Path) -> None:
    """A key other than the store's is refused at open, before any write."""
    path = tmp_path / "state.db"
    with_old = Store(path, _sealer(generate_key()))
    _enqueue(with_old)
    with_old.close()

    with pytest.raises(StoreError, match="written with another key"):
        Store(path, _sealer(generate_key()))


# -- schema ---------------------------------------------------------------------------


def test_schema_version_recorded(store: Store) -> None:
    rows = store.db.conn.execute("SELECT version FROM schema_version").fetchall()
    assert store.schema_version == SCHEMA_VERSION
    assert [row[0] for row in rows] == list(range(1, SCHEMA_VERSION + 1))


def test_schema_reopen_keeps_version(tmp_path: Path, key: str) -> None:
    path = tmp_path / "state.db"
    Store(path, _sealer(key)).close()
    reopened = Store(path, _sealer(key))
    rows = reopened.db.conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()
    assert rows[0] == SCHEMA_VERSION
    reopened.close()


def test_schema_newer_rejected(tmp_path: Path, key: str) -> None:
    path = tmp_path / "state.db"
    Store(path, _sealer(key)).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO schema_version VALUES (?, ?)", (SCHEMA_VERSION + 1, NOW)
        )
    with pytest.raises(StoreError, match="newer than this impactin"):
        Store(path, _sealer(key))


def test_not_a_database(tmp_path: Path, key: str) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a readable impactin database") as caught:
        Store(path, _sealer(key))

    assert "point store.path at a new file" in str(caught.value)


# -- retention purge -----------------------------------------------------------------


def _aged(store: Store, status: str, finished: float | None) -> str:
    claim = store.enqueue(_delivery(f"ik_{new_delivery_id()}"), RECORD, now=NOW)
    store.add_attempt(
        {
            "delivery_id": claim.delivery_id,
            "number": 1,
            "started_at": NOW,
            "duration_s": 0.1,
            "outcome": "retryable",
        }
    )
    if finished is not None:
        _finish(store, claim.delivery_id, status, finished)
    else:
        store.update_delivery(claim.delivery_id, status=status)
    return claim.delivery_id


def test_purge_deletes_old_finished(store: Store) -> None:
    later = NOW + 100 * DAY
    old = [
        _aged(store, status, NOW)
        for status in ("delivered", "dead_lettered", "blocked")
    ]
    retained = [
        _aged(store, "delivered", later - DAY),
        _aged(store, "pending", None),
        _aged(store, "in_flight", None),
    ]
    purged = store.purge(older_than=90 * DAY, now=later)
    remaining = {row["id"] for row in store.list_deliveries(limit=None)}
    attempts = {
        row[0] for row in store.db.conn.execute("SELECT delivery_id FROM attempts")
    }
    assert purged == 3
    assert remaining == set(retained)
    assert attempts == set(retained)
    assert not remaining & set(old)


def test_purge_keeps_unfinished(store: Store) -> None:
    pending = _aged(store, "pending", None)
    store.update_delivery(pending, updated_at=NOW)
    purged = store.purge(older_than=0, now=NOW + 1000 * DAY)
    assert purged == 0
    assert store.get_delivery(pending) is not None


def test_purge_forgets_old_webhook_ids(store: Store) -> None:
    store.seen("bv", "evt-old", NOW, tenant="acme")
    store.seen("bv", "evt-new", NOW + 2 * DAY, tenant="acme")

    store.purge(older_than=DAY, now=NOW + 2 * DAY + 1)

    assert store.seen("bv", "evt-old", NOW + 2 * DAY + 2, tenant="acme") is False
    assert store.seen("bv", "evt-new", NOW + 2 * DAY + 2, tenant="acme") is True


def test_purge_resolved_quarantine(store: Store) -> None:
    rows = {}
    for name in ("old_resolved", "new_resolved", "open"):
        rows[name] = store.quarantine(
            run_id="run-1",
            tenant="acme",
            source_id=name,
            line=1,
            field="email",
            reason="The email is malformed.",
            raw={"email": EMAIL},
            now=NOW,
        )
    store.resolve_quarantined(rows["old_resolved"], NOW)
    store.resolve_quarantined(rows["new_resolved"], NOW + 95 * DAY)
    purged = store.purge(older_than=90 * DAY, now=NOW + 100 * DAY)
    remaining = {row["source_id"] for row in store.quarantined(include_resolved=True)}
    assert purged == 1
    assert remaining == {"new_resolved", "open"}


@pytest.mark.parametrize(
    "older_than",
    [
        pytest.param(-1.0, id="negative"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinite"),
    ],
)
def test_purge_rejects_age(store: Store, older_than: float) -> None:
    with pytest.raises(ValueError, match="older_than"):
        store.purge(older_than=older_than, now=NOW)


# -- other store behaviour -----------------------------------------------------------


def test_update_rejects_unknown_column(store: Store) -> None:
    claim = _enqueue(store)
    with pytest.raises(ValueError, match="unknown delivery columns: nope"):
        store.update_delivery(claim.delivery_id, nope=1)


def test_get_delivery_by_prefix(store: Store) -> None:
    claim = _enqueue(store)
    found = store.get_delivery(claim.delivery_id[:8])
    assert found is not None
    assert found["id"] == claim.delivery_id


def test_get_delivery_no_wildcards(store: Store) -> None:
    _enqueue(store)
    assert store.get_delivery("%") is None
    assert store.get_delivery("_") is None


def test_replay_dead_lettered(store: Store) -> None:
    claim = _enqueue(store)
    _finish(store, claim.delivery_id, "dead_lettered", NOW)
    new_id = store.replay(claim.delivery_id, run_id="run-2", now=NOW + 10)
    replayed = store.get_delivery(new_id)
    assert replayed is not None
    assert replayed["parent_id"] == claim.delivery_id
    assert replayed["status"] == "pending"
    assert store.load_record(new_id) == RECORD


def test_replay_rejects_delivered(store: Store) -> None:
    claim = _enqueue(store)
    _finish(store, claim.delivery_id, "delivered", NOW)
    with pytest.raises(StoreError, match="only dead-lettered or blocked"):
        store.replay(claim.delivery_id, run_id="run-2", now=NOW)


def test_webhook_seen(store: Store) -> None:
    first = store.seen("bv", "evt-1", NOW)
    second = store.seen("bv", "evt-1", NOW + 1)
    assert first is False
    assert second is True


def test_webhook_seen_keyed_by_tenant(store: Store) -> None:
    first = store.seen("bv", "evt-1", NOW, tenant="acme")
    other_tenant = store.seen("bv", "evt-1", NOW, tenant="globex")
    no_tenant = store.seen("bv", "evt-1", NOW)
    again = store.seen("bv", "evt-1", NOW + 1, tenant="acme")
    assert first is False
    assert other_tenant is False
    assert no_tenant is False
    assert again is True


def _store_at_version_4(path: Path) -> None:
    """Write a store as impactin-core with schema version 4 left it."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "CREATE TABLE schema_version "
            "(version INTEGER NOT NULL, applied_at REAL NOT NULL)"
        )
        for version in range(1, 5):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, NOW))
        conn.execute("INSERT INTO webhook_events VALUES ('bv', 'evt-old', ?)", (NOW,))
    conn.close()


def test_migration_keeps_webhook_ids(tmp_path: Path, key: str) -> None:
    path = tmp_path / "state.db"
    _store_at_version_4(path)
    store = Store(path, _sealer(key))
    try:
        row = store.db.conn.execute(
            "SELECT tenant, platform, event_id, seen_at FROM webhook_events"
        ).fetchone()
        assert store.schema_version == SCHEMA_VERSION
        assert tuple(row) == ("", "bv", "evt-old", NOW)
        assert store.seen("bv", "evt-old", NOW + 1) is True
        assert store.seen("bv", "evt-old", NOW + 1, tenant="acme") is False
    finally:
        store.close()


def test_token_delete(store: Store) -> None:
    _fill_with_secrets(store)
    store.delete_token("acme", "bv")
    assert store.load_token("acme", "bv") is None


def test_rolled_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute(
            "INSERT INTO webhook_events (platform, event_id, seen_at) "
            "VALUES ('bv', 'evt-9', 0)"
        )
        raise RuntimeError("stop")
    assert store.seen("bv", "evt-9", NOW) is False


# -- nested transactions and deferred writes -------------------------------------


def _status_seen_elsewhere(path: Path, delivery_id: str) -> str:
    """Read a delivery's status through a separate SQLite connection."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT status FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
    finally:
        conn.close()
    return str(row[0])


def _attempt(delivery_id: str) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "number": 1,
        "started_at": NOW,
        "duration_s": 0.1,
        "outcome": "success",
    }


def test_nested_error_rolls_back_inner(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO webhook_events (platform, event_id, seen_at) "
            "VALUES ('bv', 'evt-outer', 0)"
        )
        with pytest.raises(RuntimeError), store.transaction() as inner:
            inner.execute(
                "INSERT INTO webhook_events (platform, event_id, seen_at) "
                "VALUES ('bv', 'evt-inner', 0)"
            )
            raise RuntimeError("stop")
    assert store.seen("bv", "evt-outer", NOW) is True
    assert store.seen("bv", "evt-inner", NOW) is False


def test_nested_commits_with_outer(store: Store, tmp_path: Path) -> None:
    with store.transaction():
        claim = _enqueue(store)
        assert claim.state == "new"
        conn = sqlite3.connect(tmp_path / "state.db")
        try:
            count = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
        finally:
            conn.close()
        assert count == 0
    assert _status_seen_elsewhere(tmp_path / "state.db", claim.delivery_id) == (
        "pending"
    )


def test_deferred_finish_waits_for_transaction(store: Store, tmp_path: Path) -> None:
    first = _enqueue(store, "ik_1").delivery_id
    second = _enqueue(store, "ik_2").delivery_id
    store.finish_delivery(
        first, "ik_1", delivered=True, status="delivered", finished_at=NOW, defer=True
    )
    path = tmp_path / "state.db"
    assert _status_seen_elsewhere(path, first) == "pending"
    store.update_delivery(second, status="in_flight")
    assert _status_seen_elsewhere(path, first) == "delivered"
    assert store.get_delivery(first)["status"] == "delivered"  # type: ignore[index]


def test_deferred_attempt_written_by_flush(store: Store) -> None:
    delivery_id = _enqueue(store).delivery_id
    attempt = _attempt(delivery_id)
    store.add_attempt(attempt, attempts=1, defer=True)
    assert store.attempts(delivery_id) == []
    store.flush()
    (row,) = store.attempts(delivery_id)
    assert row["outcome"] == "success"
    assert store.get_delivery(delivery_id)["attempts"] == 1  # type: ignore[index]


def test_close_commits_deferred_writes(tmp_path: Path, key: str) -> None:
    store = Store(tmp_path / "state.db", _sealer(key))
    delivery_id = _enqueue(store).delivery_id
    store.finish_delivery(
        delivery_id, "ik_1", delivered=True, status="delivered", defer=True
    )
    store.close()
    assert _status_seen_elsewhere(tmp_path / "state.db", delivery_id) == "delivered"


def test_failing_deferred_write_dropped(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    delivery_id = _enqueue(store).delivery_id
    store.add_attempt(_attempt("no-such-delivery"), defer=True)
    store.add_attempt(_attempt(delivery_id), defer=True)
    store.flush()
    assert "Dropped a deferred store write that failed (INSERT INTO" in caplog.text
    assert len(store.attempts(delivery_id)) == 1
    store.update_delivery(delivery_id, status="in_flight")
    assert store.get_delivery(delivery_id)["status"] == "in_flight"  # type: ignore[index]
