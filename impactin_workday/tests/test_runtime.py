"""The Workday connector driven by the Runtime against the simulator, per protocol."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from impactin_core import ImpactRecord
from impactin_core._config import EnvSecrets, parse_config
from impactin_core._crypto import generate_key
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core.sandbox import SandboxServer
from impactin_workday import _plugin
from impactin_workday.simulator import (
    SANDBOX_TENANT,
    WorkdaySimulator,
    create_simulator,
)

from .conftest import EMPLOYEE_ID

PROTOCOLS = [pytest.param("soap", id="soap"), pytest.param("rest", id="rest")]


class Deployment:
    """A simulator on 127.0.0.1 and a factory of runtimes that share one store."""

    def __init__(self, sim: WorkdaySimulator, url: str, folder: Path) -> None:
        self.sim = sim
        self.url = url
        self.folder = folder
        self.environ = {
            "STORE_KEY": generate_key(),
            "ACME_KEY": "acme-tenant-key",
            **{f"WD_{name.upper()}": value for name, value in sim.credentials.items()},
        }
        self.runtimes: list[Runtime] = []

    def config_data(self, protocol: str, **options: Any) -> dict[str, Any]:
        names = ("username", "password", "client_id", "client_secret", "refresh_token")
        return {
            "store": {"path": "state.db", "key_env": "STORE_KEY"},
            "tenants": {
                "acme": {
                    "key_env": "ACME_KEY",
                    "platforms": {
                        "workday": {
                            "base_url": self.url,
                            "protocol": protocol,
                            "credentials": {n: f"WD_{n.upper()}" for n in names},
                            "retry": {"base_delay": 0.01, "max_attempts": 3},
                            "options": {
                                "tenant_name": SANDBOX_TENANT,
                                "rest_path": "volunteerActivities",
                                **options,
                            },
                        }
                    },
                }
            },
        }

    def runtime(
        self, protocol: str, *, instruments: Any = None, **options: Any
    ) -> Runtime:
        config = parse_config(
            self.config_data(protocol, **options), base_dir=self.folder
        )
        host = PluginHost()
        host.register(_plugin, name="workday")
        host.finish()
        runtime = Runtime(
            config,
            plugins=host,
            secrets=EnvSecrets(self.environ),
            instruments=instruments,
        )
        self.runtimes.append(runtime)
        return runtime


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    sim = create_simulator()
    with SandboxServer(sim.app) as server:
        deployment = Deployment(sim, server.url, tmp_path)
        yield deployment
        for runtime in deployment.runtimes:
            runtime.close()


def record(source_id: str = "act-1", **changes: Any) -> ImpactRecord:
    values: dict[str, Any] = {
        "source_id": source_id,
        "tenant": "acme",
        "kind": "volunteer_time",
        "activity_date": dt.date(2026, 11, 3),
        "employee_id": EMPLOYEE_ID,
        "hours": 2.0,
        "cause": "Food bank",
    }
    values.update(changes)
    return ImpactRecord(**values)


def statuses(runtime: Runtime) -> list[tuple[str, str | None]]:
    rows = runtime.store.list_deliveries(filters={}, limit=100, offset=0)
    return [(row["status"], row["error_kind"]) for row in rows]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_runtime_delivers(deployment: Deployment, protocol: str) -> None:
    runtime = deployment.runtime(protocol)
    report = await runtime.deliver([record()])
    entries = deployment.sim.journal.snapshot()["entries"]
    assert report.platform("workday").delivered == 1
    assert len(entries) == 1
    assert entries[0]["protocol" if protocol == "rest" else "employee_id"] == (
        "rest" if protocol == "rest" else EMPLOYEE_ID
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_runtime_skips_redelivery(deployment: Deployment, protocol: str) -> None:
    runtime = deployment.runtime(protocol)
    await runtime.deliver([record()])
    report = await runtime.deliver([record()])
    assert report.platform("workday").duplicates == 1
    assert len(deployment.sim.journal.snapshot()["entries"]) == 1


@pytest.mark.parametrize(
    ("protocol", "script", "repeated"),
    [
        pytest.param("soap", ["500"], True, id="soap-write"),
        pytest.param("rest", ["ok", "500"], False, id="rest-write"),
        pytest.param("rest", ["500"], True, id="rest-token"),
    ],
)
async def test_runtime_retries_plain_500(
    deployment: Deployment, protocol: str, script: list[str], repeated: bool
) -> None:
    """A 500 is retried where repeating cannot duplicate a write.

    The SOAP write rewrites the same row, and a failed REST token request
    carried no write, but a REST write that got a 500 may have been stored.
    """
    runtime = deployment.runtime(protocol)
    deployment.sim.app.state.replace_plan(  # type: ignore[attr-defined]
        _plan(script=script)
    )
    report = await runtime.deliver([record()])
    stats = report.platform("workday")
    assert stats.retried == (1 if repeated else 0)
    assert stats.delivered == (1 if repeated else 0)
    assert stats.dead_lettered == (0 if repeated else 1)


def _plan(**arguments: Any) -> Any:
    from impactin_core.sandbox import FaultPlan

    return FaultPlan(**arguments)


async def test_rest_401_refreshes_once(deployment: Deployment) -> None:
    runtime = deployment.runtime("rest")
    await runtime.deliver([record("act-1")])
    assert deployment.sim.state is not None
    deployment.sim.state.expire_access_tokens()
    report = await runtime.deliver([record("act-2")])
    assert report.platform("workday").delivered == 1
    assert deployment.sim.state.grants == 2


async def test_rest_second_401_is_authentication(deployment: Deployment) -> None:
    runtime = deployment.runtime("rest")
    state = deployment.sim.state
    assert state is not None
    state.accept_access_tokens = False
    report = await runtime.deliver([record()])
    (row,) = runtime.store.list_deliveries(filters={}, limit=10, offset=0)
    assert report.platform("workday").dead_lettered == 1
    assert row["error_kind"] == "authentication"
    assert row["attempts"] == 2
    assert state.grants == 2


async def test_soap_auth_fault_not_breaker_failure(deployment: Deployment) -> None:
    deployment.environ["WD_PASSWORD"] = "wrong-password"
    runtime = deployment.runtime("soap")
    await runtime.deliver([record()])
    (row,) = runtime.store.list_deliveries(filters={}, limit=10, offset=0)
    breaker = [s for s in runtime.breakers.states() if s.name == "acme/workday"]
    assert row["error_kind"] == "authentication"
    assert "wrong-password" not in (row["error"] or "")
    assert all(state.failure_count == 0 for state in breaker)


async def test_rest_token_survives_restart(deployment: Deployment) -> None:
    first = deployment.runtime("rest")
    await first.deliver([record("act-1")])
    first.close()
    second = deployment.runtime("rest")
    report = await second.deliver([record("act-2")])
    assert report.platform("workday").delivered == 1
    assert deployment.sim.state is not None
    assert deployment.sim.state.grants == 1


async def test_stored_refresh_token_wins(deployment: Deployment) -> None:
    """After rotation the configured refresh token is revoked; the stored one works."""
    runtime = deployment.runtime("rest")
    await runtime.deliver([record("act-1")])
    assert deployment.sim.state is not None
    deployment.sim.state.expire_access_tokens()
    report = await runtime.deliver([record("act-2")])
    assert report.platform("workday").delivered == 1
    assert deployment.environ["WD_REFRESH_TOKEN"] not in (
        deployment.sim.state.refresh_tokens
    )


async def test_new_configured_refresh_token_wins(deployment: Deployment) -> None:
    """An operator's new refresh token replaces a stored, revoked chain."""
    runtime = deployment.runtime("rest")
    await runtime.deliver([record("act-1")])
    state = deployment.sim.state
    assert state is not None
    state.refresh_tokens.clear()
    state.expire_access_tokens()
    state.refresh_tokens.add("operator-issued-token")
    deployment.environ["WD_REFRESH_TOKEN"] = "operator-issued-token"
    fresh = deployment.runtime("rest")
    report = await fresh.deliver([record("act-2")])
    assert report.platform("workday").delivered == 1


async def test_rest_invalid_grant_dead_letters(deployment: Deployment) -> None:
    deployment.environ["WD_REFRESH_TOKEN"] = "revoked-token-value"
    runtime = deployment.runtime("rest")
    await runtime.deliver([record()])
    (row,) = runtime.store.list_deliveries(filters={}, limit=10, offset=0)
    assert row["error_kind"] == "authentication"
    assert "invalid_grant" in row["error"]
    assert "'acme'" in row["error"]
    assert "revoked-token-value" not in row["error"]


_SECOND_PROCESS = textwrap.dedent(
    """
    import asyncio, logging, sys
    from pathlib import Path
    from impactin_core import Credentials, PlatformSettings
    from impactin_workday._options import WorkdayOptions
    from impactin_workday._soap import _client_for

    logging.basicConfig(level=logging.DEBUG, stream=sys.stdout)
    settings = PlatformSettings(
        tenant="acme", platform="workday", base_url=sys.argv[1], protocol="soap",
        options={"tenant_name": sys.argv[2], "wsdl": sys.argv[3]},
    )
    options = WorkdayOptions.from_settings(settings)
    asyncio.run(_client_for(options, "acme", Path(sys.argv[4])))
    """
)


def test_wsdl_cache_spares_second_fetch(deployment: Deployment, tmp_path: Path) -> None:
    wsdl = f"{deployment.url}/ccx/service/{SANDBOX_TENANT}/Staffing/v26.1?wsdl"
    arguments = [deployment.url, SANDBOX_TENANT, wsdl, str(tmp_path / "cache")]
    outputs = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", _SECOND_PROCESS, *arguments],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.append(result.stdout)
    assert deployment.sim.state is not None
    assert deployment.sim.state.wsdl_requests == 1
    assert "(the full WSDL)" in outputs[0]
    assert "(the reduced copy cached on disk)" in outputs[1]


def test_wsdl_cache_expires(deployment: Deployment, tmp_path: Path) -> None:
    wsdl = f"{deployment.url}/ccx/service/{SANDBOX_TENANT}/Staffing/v26.1?wsdl"
    script = _SECOND_PROCESS.replace(
        '"wsdl": sys.argv[3]}', '"wsdl": sys.argv[3], "wsdl_cache_ttl": 0}'
    )
    arguments = [deployment.url, SANDBOX_TENANT, wsdl, str(tmp_path / "cache")]
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", script, *arguments],
            capture_output=True,
            check=True,
            timeout=60,
        )
    assert deployment.sim.state is not None
    assert deployment.sim.state.wsdl_requests == 2


async def test_same_date_second_row_rejected(deployment: Deployment) -> None:
    runtime = deployment.runtime("soap")
    report = await runtime.deliver([record("act-1"), record("act-2", hours=1.0)])
    rows = runtime.store.list_deliveries(filters={}, limit=10, offset=0)
    failed = [row for row in rows if row["status"] == "dead_lettered"]
    assert report.platform("workday").delivered == 1
    assert len(failed) == 1
    assert failed[0]["error_kind"] == "permanent"
    assert "already holds this worker's entry for 2026-11-03" in failed[0]["error"]
    assert EMPLOYEE_ID not in failed[0]["error"]
    assert len(deployment.sim.journal.snapshot()["entries"]) == 1


async def test_same_date_other_day_accepted(deployment: Deployment) -> None:
    runtime = deployment.runtime("soap")
    later = record("act-2", activity_date=dt.date(2026, 11, 4))
    report = await runtime.deliver([record("act-1"), later])
    assert report.platform("workday").delivered == 2


async def test_same_date_guard_can_be_disabled(deployment: Deployment) -> None:
    runtime = deployment.runtime("soap", same_date_guard=False)
    report = await runtime.deliver([record("act-1"), record("act-2", hours=1.0)])
    assert report.platform("workday").delivered == 2


async def test_same_date_slot_freed_after_rejection(
    deployment: Deployment,
) -> None:
    """A write Workday rejected does not block the next activity of that date."""
    state = deployment.sim.state
    assert state is not None
    state.write_permission = False
    runtime = deployment.runtime("soap")
    await runtime.deliver([record("act-1")])
    state.write_permission = True
    report = await runtime.deliver([record("act-2")])
    assert report.platform("workday").delivered == 1


def metric_points(reader: Any, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


async def test_refresh_metrics_recorded(deployment: Deployment) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from impactin_core._telemetry import Instruments

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = Instruments(meter_provider=provider)
    runtime = deployment.runtime("rest", instruments=instruments)
    await runtime.deliver([record("act-1")])
    assert deployment.sim.state is not None
    deployment.sim.state.expire_access_tokens()
    await runtime.deliver([record("act-2")])
    refreshes = metric_points(reader, "impact_in_oauth_token_refreshes_total")
    ages = metric_points(reader, "impact_in_oauth_token_age_seconds")
    instruments.unwatch(runtime)
    provider.shutdown()
    assert [point.value for point in refreshes] == [2]
    assert dict(refreshes[0].attributes) == {"tenant": "acme", "platform": "workday"}
    assert len(ages) == 1
    assert ages[0].value >= 0


async def test_soap_bad_password_sent_once(deployment: Deployment) -> None:
    """A WS-Security password cannot be refreshed, so it is not resent."""
    deployment.environ["WD_PASSWORD"] = "wrong-password"
    runtime = deployment.runtime("soap")

    report = await runtime.deliver([record()])

    (row,) = runtime.store.list_deliveries(filters={}, limit=10, offset=0)
    assert report.platform("workday").dead_lettered == 1
    assert row["error_kind"] == "authentication"
    assert row["attempts"] == 1
