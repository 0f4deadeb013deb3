"""The send ledger in SQLite: kept across restarts and shared by processes."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from impactin_core import ConfigError
from impactin_goodera._send import _ensure_event
from impactin_goodera._state import SendLedger, ledger_for


def test_entries_survive_a_new_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = SendLedger(path)
    first.record_event('["opp", 1, 2, "UTC", "US"]', "a" * 24)
    first.record_step("key-1", "registration", "b" * 24)
    first.close()

    second = SendLedger(path)

    assert second.event_id('["opp", 1, 2, "UTC", "US"]') == "a" * 24
    assert second.step_id("key-1", "registration") == "b" * 24
    assert second.step_id("key-1", "participation") is None


def test_two_ledgers_on_one_file_see_each_other(tmp_path: Path) -> None:
    # Two processes on one cache folder open one file each.
    path = tmp_path / "ledger.sqlite"
    one, other = SendLedger(path), SendLedger(path)

    one.record_step("key-1", "participation", "c" * 24)

    assert other.step_id("key-1", "participation") == "c" * 24


def test_ledger_without_folder_is_kept_in_memory() -> None:
    ledger = SendLedger()
    ledger.record_step("key-1", "owner", "key-1")

    assert ledger.step_id("key-1", "owner") == "key-1"
    assert ledger.path is None


def test_json_ledger_of_earlier_versions_is_imported(tmp_path: Path) -> None:
    legacy = tmp_path / "ledger.json"
    legacy.write_text(
        json.dumps(
            {
                "events": {"event-key": "d" * 24},
                "steps": {"key-1": {"registration": "e" * 24, "participation": "f"}},
            }
        ),
        encoding="utf-8",
    )

    ledger = SendLedger(tmp_path / "ledger.sqlite")

    assert ledger.event_id("event-key") == "d" * 24
    assert ledger.step_id("key-1", "registration") == "e" * 24
    assert ledger.step_id("key-1", "participation") == "f"
    assert not legacy.exists()


def test_unreadable_json_ledger_is_left_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = tmp_path / "ledger.json"
    legacy.write_text("{not json", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="impactin.goodera"):
        ledger = SendLedger(tmp_path / "ledger.sqlite")

    assert ledger.event_id("event-key") is None
    assert legacy.exists()
    assert "did not import it" in caplog.text


def test_unreadable_ledger_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"this is not a SQLite database, but long enough " * 4)

    with caplog.at_level(logging.WARNING, logger="impactin.goodera"):
        ledger = SendLedger(path)
    ledger.record_step("key-1", "registration", "a" * 24)

    (aside,) = tmp_path.glob("ledger.sqlite.unreadable-*")
    assert aside.read_bytes().startswith(b"this is not a SQLite database")
    assert "started empty" in caplog.text
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM steps").fetchone() == (1,)


def test_folder_that_cannot_be_written_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "impactin-cache"
    blocker.write_text("a file where the cache folder should be", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        ledger_for("acme", "http://127.0.0.1:1", blocker)

    assert str(blocker) in str(caught.value)
    assert "writable" in str(caught.value)


def test_event_locks_go_with_their_loop() -> None:
    ledger = SendLedger()

    async def take() -> None:
        async with ledger.event_lock("event-key"):
            pass

    for _ in range(3):
        asyncio.run(take())
    gc.collect()

    assert len(ledger._event_locks) == 0


class SlowCaller:
    """Stands in for the HTTP caller: creating an event takes a while."""

    tenant = "acme"

    def __init__(self) -> None:
        self.posts = 0

    async def post(self, path: str, body: dict[str, object]) -> tuple[str, int]:
        self.posts += 1
        await asyncio.sleep(0.3)
        return f"{self.posts:024x}", 201


def test_two_processes_create_one_event(tmp_path: Path) -> None:
    # Each process opens the ledger file on its own.
    path = tmp_path / "ledger.sqlite"
    first, second = SendLedger(path), SendLedger(path)
    caller = SlowCaller()
    event = {
        "opportunityId": "64b7f0c2a1d3e4f5a6b7c8d9",
        "startTimeStamp": "2026-08-15T09:00:00+00:00",
        "endTimeStamp": "2026-08-15T17:00:00+00:00",
        "timezone": "UTC",
        "country": "US",
    }

    async def both() -> list[str]:
        return list(
            await asyncio.gather(
                _ensure_event(caller, first, event),  # type: ignore[arg-type]
                _ensure_event(caller, second, event),  # type: ignore[arg-type]
            )
        )

    ids = asyncio.run(both())

    assert caller.posts == 1
    assert ids[0] == ids[1]


def test_stale_event_claim_is_taken_over(tmp_path: Path) -> None:
    ledger = SendLedger(tmp_path / "ledger.sqlite")

    assert ledger.claim_event("event-key", "crashed", now=1000.0)
    assert not ledger.claim_event("event-key", "other", now=1000.0 + 60)
    assert ledger.claim_event("event-key", "other", now=1000.0 + 121)


def test_owner_claim_keeps_the_first(tmp_path: Path) -> None:
    ledger = SendLedger(tmp_path / "ledger.sqlite")

    first = ledger.claim_step("attendee:1", "owner", "key-1")
    second = ledger.claim_step("attendee:1", "owner", "key-2")
    ledger.release_step("attendee:1", "owner", "key-1")
    third = ledger.claim_step("attendee:1", "owner", "key-2")

    assert (first, second, third) == ("key-1", "key-1", "key-2")


def test_claim_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    ledger = SendLedger(tmp_path / "ledger.sqlite")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        conn.execute(
            "INSERT INTO event_claims VALUES (?, ?, ?)",
            ("event-key", f"gone@{host}:{child.pid}", 1000.0),
        )

    assert ledger.claim_event("event-key", "next", now=1001.0)
