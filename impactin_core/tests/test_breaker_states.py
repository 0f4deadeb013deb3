"""Circuit states in the store: shown by ``impactin health``, reset across processes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from echo_connector import EchoPlugin

from impactin_core import ImpactRecord, RecordKind
from impactin_core._breaker_states import breaker_rows, record_reset
from impactin_core._cli import main
from impactin_core._config import EnvSecrets, parse_config
from impactin_core._crypto import generate_key
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core.sandbox import SandboxServer, Simulator

Echo = tuple[SandboxServer, Simulator]
START = 1_800_000_000.0


class FakeTime:
    """A clock that moves only when the runtime sleeps or a test advances it."""

    def __init__(self) -> None:
        self.now = START

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _config_data(url: str) -> dict[str, Any]:
    return {
        "store": {"path": "state.db", "key_env": "BREAKER_STORE_KEY"},
        "tenants": {
            "acme": {
                "key_env": "BREAKER_ACME_KEY",
                "platforms": {
                    "echo": {
                        "base_url": url,
                        "credentials": {"api_key": "BREAKER_ECHO_KEY"},
                        "retry": {"max_attempts": 10, "deadline": 1000},
                        "breaker": {"threshold": 3, "reset_timeout": 600},
                    }
                },
            }
        },
    }


ENVIRON = {
    "BREAKER_STORE_KEY": generate_key(),
    "BREAKER_ACME_KEY": "acme-secret-key",
    "BREAKER_ECHO_KEY": "echo-sandbox-key",
}


def _runtime(tmp_path: Path, url: str, clock: FakeTime) -> Runtime:
    config = parse_config(_config_data(url), base_dir=tmp_path)
    host = PluginHost()
    host.register(EchoPlugin(), name="echo")
    host.finish()
    return Runtime(
        config,
        plugins=host,
        secrets=EnvSecrets(ENVIRON),
        clock=clock.time,
        sleep=clock.sleep,
    )


def _record(source_id: str) -> ImpactRecord:
    return ImpactRecord(
        source_id=source_id,
        tenant="acme",
        kind=RecordKind.DONATION,
        activity_date=dt.date(2026, 3, 1),
        employee_id="E-004217",
        amount_minor=2500,
        currency="USD",
    )


def _set_faults(server: SandboxServer, **plan: Any) -> None:
    response = httpx.put(f"{server.url}/_sandbox/faults", json=plan)
    assert response.status_code == 200, response.text


async def _open_circuit(tmp_path: Path, server: SandboxServer) -> Runtime:
    runtime = _runtime(tmp_path, server.url, FakeTime())
    _set_faults(server, error_rate=1.0, error_status=503)
    await runtime.deliver([_record("a-1")])
    _set_faults(server)
    return runtime


async def test_opened_state_stored(tmp_path: Path, echo_simulator: Echo) -> None:
    server, _ = echo_simulator
    runtime = await _open_circuit(tmp_path, server)
    rows = breaker_rows(runtime.store)
    runtime.close()
    assert len(rows) == 1
    assert rows[0]["tenant"] == "acme"
    assert rows[0]["platform"] == "echo"
    assert rows[0]["state"] == "opened"
    assert rows[0]["failure_count"] == 3
    assert rows[0]["reopens_at"] == rows[0]["opened_at"] + 600
    assert rows[0]["reset_at"] is None


async def test_reset_applied_before_call(tmp_path: Path, echo_simulator: Echo) -> None:
    server, simulator = echo_simulator
    runtime = await _open_circuit(tmp_path, server)
    requests_before = simulator.journal.request_count
    record_reset(runtime.store, "acme", "echo", now=START + 1)

    report = await runtime.deliver([_record("a-2")])

    states = {state.name: state.state for state in runtime.breakers.states()}
    rows = breaker_rows(runtime.store)
    runtime.close()
    assert states["acme/echo"] == "closed"
    assert report.platforms["echo"].delivered >= 1
    assert simulator.journal.request_count > requests_before
    assert rows[0]["state"] == "closed"
    assert rows[0]["reset_at"] == START + 1


async def test_reset_applied_once(tmp_path: Path, echo_simulator: Echo) -> None:
    server, _ = echo_simulator
    runtime = await _open_circuit(tmp_path, server)
    record_reset(runtime.store, "acme", "echo", now=START + 1)

    first = runtime.breaker_sync.apply_reset("acme", "echo")
    second = runtime.breaker_sync.apply_reset("acme", "echo")
    runtime.close()
    assert first is True
    assert second is False


async def test_old_reset_ignored(tmp_path: Path, echo_simulator: Echo) -> None:
    """A reset stored before a runtime's first call is older than its circuit."""
    server, _ = echo_simulator
    runtime = _runtime(tmp_path, server.url, FakeTime())
    record_reset(runtime.store, "acme", "echo", now=START - 100)
    _set_faults(server, error_rate=1.0, error_status=503)

    await runtime.deliver([_record("a-1")])

    states = {state.name: state.state for state in runtime.breakers.states()}
    runtime.close()
    assert states["acme/echo"] == "opened"


def _write_config(tmp_path: Path, url: str) -> Path:
    lines = [
        "[store]",
        'path = "state.db"',
        'key_env = "BREAKER_STORE_KEY"',
        "[tenants.acme]",
        'key_env = "BREAKER_ACME_KEY"',
        "[tenants.acme.platforms.echo]",
        f'base_url = "{url}"',
        'credentials = { api_key = "BREAKER_ECHO_KEY" }',
    ]
    path = tmp_path / "impactin.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cli(tmp_path: Path, url: str, *arguments: str) -> Any:
    """Run ``impactin`` with a configuration for the echo simulator at ``url``."""
    config = _write_config(tmp_path, url)
    return CliRunner().invoke(main, ["--config", str(config), *arguments])


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)


async def test_health_shows_stored_state(
    tmp_path: Path, echo_simulator: Echo, environ: None
) -> None:
    server, _ = echo_simulator
    runtime = await _open_circuit(tmp_path, server)
    runtime.close()
    config = _write_config(tmp_path, server.url)

    result = CliRunner().invoke(main, ["--config", str(config), "health"])

    assert result.exit_code == 0, result.output
    assert "circuit acme/echo: opened (3 failures" in result.output
    assert "probe after" in result.output


async def test_cli_reset_recorded(
    tmp_path: Path, echo_simulator: Echo, environ: None
) -> None:
    server, _ = echo_simulator
    runtime = await _open_circuit(tmp_path, server)
    config = _write_config(tmp_path, server.url)

    result = CliRunner().invoke(
        main, ["--config", str(config), "breaker", "reset", "acme", "echo"]
    )
    applied = runtime.breaker_sync.apply_reset("acme", "echo")
    runtime.close()
    health = CliRunner().invoke(main, ["--config", str(config), "health"])

    assert result.exit_code == 0, result.output
    assert "Recorded a manual reset" in result.output
    assert applied is True
    assert "circuit acme/echo: closed" in health.output


@pytest.mark.parametrize(
    ("tenant", "platform", "expected"),
    [
        pytest.param("acme", "benevity", "no platform 'benevity'", id="platform"),
        pytest.param("globex", "echo", "'globex' is not configured", id="tenant"),
    ],
)
def test_cli_reset_unknown_circuit(
    tmp_path: Path, environ: None, tenant: str, platform: str, expected: str
) -> None:
    config = _write_config(tmp_path, "http://127.0.0.1:9")

    result = CliRunner().invoke(
        main, ["--config", str(config), "breaker", "reset", tenant, platform]
    )

    assert result.exit_code != 0
    assert expected in result.output


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["--tenant", "acme", "--platform", "echo"], id="options"),
        pytest.param(["--tenant", "acme", "echo"], id="option-and-argument"),
    ],
)
async def test_cli_reset_with_options(
    tmp_path: Path, echo_simulator: Echo, environ: None, arguments: list[str]
) -> None:
    server, _ = echo_simulator
    runtime = await _open_circuit(tmp_path, server)
    config = _write_config(tmp_path, server.url)

    result = CliRunner().invoke(
        main, ["--config", str(config), "breaker", "reset", *arguments]
    )
    applied = runtime.breaker_sync.apply_reset("acme", "echo")
    runtime.close()

    assert result.exit_code == 0, result.output
    assert applied is True


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param([], "Missing tenant", id="nothing"),
        pytest.param(["acme"], "Missing platform", id="no-platform"),
        pytest.param(
            ["acme", "echo", "--tenant", "globex"],
            "given twice, as 'acme' and --tenant 'globex'",
            id="conflict",
        ),
    ],
)
def test_cli_reset_names_circuit_once(
    tmp_path: Path, environ: None, arguments: list[str], expected: str
) -> None:
    config = _write_config(tmp_path, "http://127.0.0.1:9")

    result = CliRunner().invoke(
        main, ["--config", str(config), "breaker", "reset", *arguments]
    )

    assert result.exit_code == 2
    assert expected in result.output


async def test_later_process_stores_closed(
    tmp_path: Path, echo_simulator: Echo, environ: None
) -> None:
    """A new process that delivers replaces the open state an earlier one left."""
    server, _ = echo_simulator
    (await _open_circuit(tmp_path, server)).close()
    later = _runtime(tmp_path, server.url, FakeTime())

    report = await later.deliver([_record("a-2")])
    rows = breaker_rows(later.store)
    later.close()
    health = _cli(tmp_path, server.url, "health")

    assert report.platforms["echo"].delivered == 1
    assert [row["state"] for row in rows] == ["closed"]
    assert "circuit acme/echo: closed" in health.output
