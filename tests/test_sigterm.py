"""SIGTERM stops ``impactin deliver`` the way Ctrl-C does.

Service managers stop a process with SIGTERM. The command cancels its run,
so a delivery that was claimed but not sent goes back to pending instead of
staying in flight, where a later run would dead-letter it as interrupted.
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
from collections.abc import Iterator
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


def test_sigterm_returns_unsent_delivery_to_pending(
    tmp_path: Path, silent_server: SilentServer
) -> None:
    environ = {
        "TERM_STORE_KEY": generate_key(),
        "TERM_TENANT_KEY": "k" * 40,
        "TERM_CLIENT_ID": "client",
        "TERM_CLIENT_SECRET": "secret",
    }
    config = tmp_path / "impactin.toml"
    config.write_text(
        "\n".join(
            [
                "[store]",
                'path = "term.db"',
                'key_env = "TERM_STORE_KEY"',
                "[tenants.acme]",
                'key_env = "TERM_TENANT_KEY"',
                "[tenants.acme.platforms.benevity]",
                f'base_url = "http://127.0.0.1:{silent_server.port}"',
                'credentials = { client_id = "TERM_CLIENT_ID", '
                'client_secret = "TERM_CLIENT_SECRET" }',
                'options = { foundation_id = "term-foundation" }',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    row = {
        "source_id": "term-1",
        "tenant": "acme",
        "kind": "donation",
        "activity_date": "2026-03-01",
        "employee_id": "E-000101",
        "employee_email": "term01@example.org",
        "organization_id": "ORG-1701",
        "amount_minor": 1500,
        "currency": "USD",
    }
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(row) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "impactin_core._cli", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "deliver", str(records)],
        env={**os.environ, **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The first request is the token request: the delivery is claimed,
        # and nothing of it has been sent.
        assert silent_server.received.wait(timeout=60), "no request arrived"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    with sqlite3.connect(tmp_path / "term.db") as conn:
        statuses = [row[0] for row in conn.execute("SELECT status FROM deliveries")]
    assert process.returncode == SIGTERM_EXIT_CODE, stderr
    assert "Stopped by SIGTERM" in stderr
    assert statuses == ["pending"]
