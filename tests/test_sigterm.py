"""SIGTERM stops ``impactin deliver`` without leaving deliveries in flight.

Service managers stop a process with SIGTERM. The command claims no more
deliveries and waits a grace period for the requests already sent. Then it
cancels the run, so a delivery that was claimed but not sent goes back to
pending instead of staying in flight, where a later run would dead-letter
it as interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from impactin_core._cli_stop import SIGTERM_EXIT_CODE
from impactin_core._crypto import generate_key

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGTERM handlers need a POSIX event loop"
)


class SilentServer:
    """A TCP server on 127.0.0.1 that reads requests and never responds."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = threading.Event()
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            if connection.recv(65536):
                self.received.set()

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def _benevity_config(tmp_path: Path, url: str, concurrency: int) -> Path:
    config = tmp_path / "impactin.toml"
    config.write_text(
        "\n".join(
            [
                "[store]",
                'path = "term.db"',
                'key_env = "TERM_STORE_KEY"',
                "[runtime]",
                f"concurrency = {concurrency}",
                "[tenants.acme]",
                'key_env = "TERM_TENANT_KEY"',
                "[tenants.acme.platforms.benevity]",
                f'base_url = "{url}"',
                'credentials = { client_id = "TERM_CLIENT_ID", '
                'client_secret = "TERM_CLIENT_SECRET" }',
                'options = { foundation_id = "term-foundation" }',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return config


def _environ(**extra: str) -> dict[str, str]:
    """Return the process environment with fresh keys for one test's store."""
    return {
        **os.environ,
        "TERM_STORE_KEY": generate_key(),
        "TERM_TENANT_KEY": "k" * 40,
        "TERM_CLIENT_ID": "client",
        "TERM_CLIENT_SECRET": "secret",
        **extra,
    }


def _start(
    config: Path, *arguments: str, environ: dict[str, str]
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "impactin_core._cli", "--config", str(config)]
    return subprocess.Popen(
        [*command, *arguments],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _terminate_when(
    process: subprocess.Popen[str], ready: Callable[[], bool], timeout: float
) -> str:
    """Send SIGTERM once ``ready()`` is true (or after 60 s); return stderr."""
    try:
        for _ in range(1200):
            if ready():
                break
            threading.Event().wait(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return stderr


def _write_donations(path: Path, count: int, prefix: str) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for number in range(count):
            row = {
                "source_id": f"{prefix}-{number}",
                "tenant": "acme",
                "kind": "donation",
                "activity_date": "2026-03-01",
                "employee_id": "E-000101",
                "organization_id": "ORG-1701",
                "amount_minor": 1500,
                "currency": "USD",
            }
            file.write(json.dumps(row) + "\n")
    return path


def _statuses(store: Path) -> list[str]:
    with sqlite3.connect(store) as conn:
        return [row[0] for row in conn.execute("SELECT status FROM deliveries")]


def test_sigterm_returns_unsent_delivery_to_pending(
    tmp_path: Path, silent_server: SilentServer
) -> None:
    url = f"http://127.0.0.1:{silent_server.port}"
    config = _benevity_config(tmp_path, url, concurrency=8)
    records = _write_donations(tmp_path / "records.jsonl", 1, "term")
    # The silent server sends no response, so the grace period runs out.
    environ = _environ(IMPACTIN_STOP_GRACE="0.5")
    process = _start(config, "deliver", str(records), environ=environ)

    # The first request is the token request: the delivery is claimed, and
    # nothing of it has been sent.
    stderr = _terminate_when(process, silent_server.received.is_set, timeout=60)

    assert process.returncode == SIGTERM_EXIT_CODE, stderr
    assert "Stopped by SIGTERM" in stderr
    assert _statuses(tmp_path / "term.db") == ["pending"]


def test_sigterm_lets_sent_requests_finish(tmp_path: Path) -> None:
    """After SIGTERM the requests already sent get their responses, none in flight."""
    pytest.importorskip("impactin_benevity")
    from impactin_benevity import create_simulator
    from impactin_core.sandbox import FaultPlan, SandboxServer

    simulator = create_simulator(plan=FaultPlan(latency_seconds=1.0))
    environ = _environ(
        TERM_CLIENT_ID=simulator.credentials["client_id"],
        TERM_CLIENT_SECRET=simulator.credentials["client_secret"],
        IMPACTIN_STOP_GRACE="30",
    )
    records = _write_donations(tmp_path / "records.jsonl", 12, "term")
    store = tmp_path / "term.db"
    with SandboxServer(simulator.app) as server:
        config = _benevity_config(tmp_path, server.url, concurrency=3)
        process = _start(config, "deliver", str(records), environ=environ)
        # Requests wait 1 s at the simulator, so the donation requests
        # counted here have no response yet when SIGTERM arrives.
        stderr = _terminate_when(
            process, lambda: simulator.journal.request_count >= 3, timeout=60
        )
        stopped = _statuses(store)
        sent_before = len(simulator.journal.entries)
        resumed = _start(config, "resume", environ=environ)
        _, resume_errors = resumed.communicate(timeout=120)
        final = _statuses(store)
        entries = len(simulator.journal.entries)
        repeats = sum(simulator.journal.repeats.values())

    assert process.returncode == SIGTERM_EXIT_CODE, stderr
    assert "after the requests already sent got their responses" in stderr
    assert "in_flight" not in stopped
    assert stopped.count("delivered") == sent_before
    assert sent_before >= 1
    assert stopped.count("pending") == 12 - sent_before
    assert resumed.returncode == 0, resume_errors
    assert final == ["delivered"] * 12
    assert entries == 12
    assert repeats == 0


def test_invalid_grace_is_rejected(tmp_path: Path) -> None:
    config = _benevity_config(tmp_path, "http://127.0.0.1:9", concurrency=1)
    process = _start(config, "resume", environ=_environ(IMPACTIN_STOP_GRACE="soon"))

    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 2
    assert "IMPACTIN_STOP_GRACE is 'soon'" in stderr


def test_sigterm_while_reading_stores_rows_read(
    tmp_path: Path, silent_server: SilentServer
) -> None:
    """SIGTERM during the reading of a large file stops reading, sends nothing."""
    url = f"http://127.0.0.1:{silent_server.port}"
    config = _benevity_config(tmp_path, url, concurrency=4)
    total = 100_000
    records = _write_donations(tmp_path / "records.jsonl", total, "read")
    process = _start(config, "deliver", str(records), environ=_environ())
    store = tmp_path / "term.db"

    def stored() -> int:
        if not store.exists():
            return 0
        with sqlite3.connect(store, timeout=30) as conn:
            try:
                row = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()
            except sqlite3.OperationalError:
                return 0
        return int(row[0])

    stderr = _terminate_when(process, lambda: stored() >= 500, timeout=120)

    statuses = _statuses(store)
    assert process.returncode == SIGTERM_EXIT_CODE, stderr
    assert "while reading the input" in stderr
    assert 500 <= len(statuses) < total
    assert set(statuses) == {"pending"}
    assert not silent_server.received.is_set()


_AFTER_RUN_SCRIPT = """
import asyncio, os, signal
import click
from impactin_core._cli_stop import Stopper

stopper = Stopper(drain=lambda: None)

async def run(case):
    if case == "twice":
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.1)
    return "done"

@click.command()
@click.argument("case")
def main(case):
    print(stopper.run(run(case)), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    print("summary printed", flush=True)
    stopper.exit_if_stopped()

main()
"""


@pytest.mark.parametrize(
    ("case", "printed"),
    [
        pytest.param("once", "done\nsummary printed\n", id="first-sigterm"),
        pytest.param("twice", "done\n", id="second-sigterm"),
    ],
)
def test_sigterm_after_run_exits_143(case: str, printed: str) -> None:
    """A SIGTERM that lands while the summary prints still exits with 143."""
    process = subprocess.run(
        [sys.executable, "-c", _AFTER_RUN_SCRIPT, case],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert process.returncode == SIGTERM_EXIT_CODE, process.stderr
    assert process.stdout == printed
