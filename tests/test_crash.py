"""Crash recovery: SIGKILL ``impactin deliver`` at random points, then resume.

The three simulators run in the test process on 127.0.0.1 for the whole
test. Each run delivers a new batch in a child process and kills it with
SIGKILL once the simulators have received a random number of requests. It
then runs ``impactin resume --all`` and delivers the same file again, which
adds rows the killed process never read. Every record must then be
recorded exactly once by each simulator it routes to, and every delivery
must be delivered. Benevity and Goodera honour no idempotency key, so the
tenant sets ``options.replay_safe``; the simulators match repeats on the
record's key and count them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from impactin_core._crypto import generate_key
from impactin_core._demo import load_simulator
from impactin_core._plugins import PluginHost
from impactin_core.sandbox import FaultPlan, SandboxServer, Simulator

PLATFORMS = ("benevity", "goodera", "workday")
OPTIONS: dict[str, dict[str, Any]] = {
    "benevity": {"foundation_id": "crash-foundation", "replay_safe": True},
    "goodera": {"opportunity_id": "64b7f0c2a1d3e4f5a6b7c8d9", "replay_safe": True},
    "workday": {"version": "v26.1"},
}
BATCH = 10

Served = dict[str, tuple[SandboxServer, Simulator]]


@pytest.fixture(scope="module")
def servers() -> Iterator[Served]:
    plugins = PluginHost.from_entry_points()
    missing = [name for name in PLATFORMS if name not in plugins.platforms]
    if missing:
        pytest.skip(f"connectors not installed: {', '.join(missing)}")
    started: Served = {}
    try:
        for platform in PLATFORMS:
            # A little latency keeps requests open long enough to be cut.
            plan = FaultPlan(latency_seconds=0.01)
            simulator = load_simulator(plugins, platform, plan)
            started[platform] = (SandboxServer(simulator.app).start(), simulator)
        yield started
    finally:
        for server, _ in started.values():
            server.stop()


def inline_table(values: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + " }"


def write_config(folder: Path, servers: Served) -> tuple[Path, dict[str, str]]:
    environ = {"CRASH_STORE_KEY": generate_key(), "CRASH_ACME_KEY": "k" * 40}
    lines = [
        "[store]",
        'path = "crash.db"',
        'key_env = "CRASH_STORE_KEY"',
        "[runtime]",
        "concurrency = 4",
        "[tenants.acme]",
        'key_env = "CRASH_ACME_KEY"',
    ]
    for platform, (server, simulator) in servers.items():
        credentials = {}
        for name, value in simulator.credentials.items():
            env_name = f"CRASH_{platform.upper()}_{name.upper()}"
            environ[env_name] = value
            credentials[name] = env_name
        options = {**OPTIONS[platform], **simulator.options}
        state = getattr(simulator, "state", None)
        if platform == "workday" and "tenant_name" not in options:
            options["tenant_name"] = getattr(state, "tenant_name", "sandbox")
        lines += [
            f"[tenants.acme.platforms.{platform}]",
            f'base_url = "{server.url}"',
            f'protocol = "{"soap" if platform == "workday" else "rest"}"',
            f"credentials = {inline_table(credentials)}",
            f"options = {inline_table(options)}",
            "retry = { base_delay = 0.01, max_delay = 0.05, deadline = 30 }",
            "rate_limit = { calls = 10000, period = 60 }",
        ]
    path = folder / "impactin.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, environ


def batch_rows(run: int) -> list[dict[str, Any]]:
    rows = []
    for number in range(BATCH):
        row: dict[str, Any] = {
            "source_id": f"run{run:02d}-{number:02d}",
            "tenant": "acme",
            "activity_date": "2025-04-14",
            "employee_id": f"E-{run:02d}{number:04d}",
            "employee_email": f"crash{run:02d}{number:02d}@example.org",
            "organization_id": "ORG-1701",
        }
        if number % 2:
            row.update(kind="volunteer_time", hours=2.0)
        else:
            row.update(kind="donation", amount_minor=1500, currency="USD")
        rows.append(row)
    return rows


def request_count(servers: Served) -> int:
    return sum(sim.journal.snapshot()["request_count"] for _, sim in servers.values())


def cli(config: Path, environ: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "impactin_core._cli", "--config", str(config)]
    return subprocess.Popen(
        [*command, *args],
        env={**os.environ, **environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_at_random_point(
    process: subprocess.Popen[bytes], servers: Served, target: int
) -> bool:
    """SIGKILL ``process`` once the simulators saw ``target`` more requests.

    Returns whether the process was still running when killed.
    """
    start = request_count(servers)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if request_count(servers) - start >= target:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.001)
    process.wait()
    return False


def unfinished_count(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT COUNT(*) FROM deliveries WHERE status IN ('pending', 'in_flight')"
        ).fetchone()
    return int(row[0])


def journal_identities(servers: Served) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for platform, (_, simulator) in servers.items():
        counter: Counter[str] = Counter()
        for entry in simulator.journal.snapshot()["entries"]:
            if platform == "goodera":
                if entry.get("kind") == "participation":
                    counter[entry["body"]["email"]] += 1
            elif entry.get("key") is not None:
                counter[entry["key"]] += 1
        counts[platform] = counter
    return counts


def run_crashes(tmp_path: Path, servers: Served, runs: int, seed: int) -> None:
    config, environ = write_config(tmp_path, servers)
    database = tmp_path / "crash.db"
    rng = random.Random(seed)
    interrupted = 0
    for run in range(runs):
        rows = batch_rows(run)
        batch = tmp_path / f"batch{run}.jsonl"
        batch.write_text("".join(json.dumps(row) + "\n" for row in rows))
        # Two routes per record, plus token requests: up to about 25.
        target = rng.randint(0, 2 * BATCH)
        killed = kill_at_random_point(
            cli(config, environ, "deliver", str(batch)), servers, target
        )
        if killed and database.exists() and unfinished_count(database):
            interrupted += 1

        # A kill during reading leaves later rows unread: resume finishes what
        # was stored, and delivering the file again adds the rest and skips
        # every delivered row by its idempotency key.
        for command in (("resume", "--all"), ("deliver", str(batch))):
            finish = cli(config, environ, *command)
            _, stderr = finish.communicate(timeout=120)
            assert finish.returncode == 0, stderr.decode()

    with sqlite3.connect(database) as connection:
        rows_db = connection.execute(
            "SELECT platform, source_id, idempotency_key, status FROM deliveries"
        ).fetchall()
    statuses = Counter(status for _, _, _, status in rows_db)
    recorded = journal_identities(servers)
    expected_keys: dict[str, set[str]] = {"benevity": set(), "workday": set()}
    for platform, _, key, _ in rows_db:
        if platform in expected_keys:
            expected_keys[platform].add(key)

    assert interrupted > 0, "no run was killed with deliveries unfinished"
    assert set(statuses) == {"delivered"}, statuses
    assert len({(p, s) for p, s, _, _ in rows_db}) == runs * BATCH * 2
    assert len(rows_db) == runs * BATCH * 2
    for platform in ("benevity", "workday"):
        counts = recorded[platform]
        assert set(counts) == expected_keys[platform], platform
        assert set(counts.values()) == {1}, platform
    goodera = recorded["goodera"]
    assert len(goodera) == runs * BATCH // 2
    assert set(goodera.values()) == {1}


def test_crash_then_resume_quick(tmp_path: Path, servers: Served) -> None:
    for _, simulator in servers.values():
        simulator.journal.clear()
    run_crashes(tmp_path, servers, runs=2, seed=11)


@pytest.mark.slow
def test_crash_then_resume_twenty_runs(tmp_path: Path, servers: Served) -> None:
    for _, simulator in servers.values():
        simulator.journal.clear()
    run_crashes(tmp_path, servers, runs=20, seed=2026)
