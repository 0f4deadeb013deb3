"""Fixtures: the Workday simulator on 127.0.0.1 and helpers that call the hooks."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from impactin_core import (
    AuthContext,
    ImpactRecord,
    MemoryTokenStore,
    PlatformRequest,
    PlatformSettings,
    SendContext,
    SendOutcome,
    TokenCache,
)
from impactin_core.sandbox import SandboxServer
from impactin_workday import PLATFORM, _plugin
from impactin_workday.simulator import (
    SANDBOX_TENANT,
    WorkdaySimulator,
    create_simulator,
)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
EMPLOYEE_ID = "21001"


def fixture_path(*parts: str) -> Path:
    """Return a shared fixture path, or skip the test when it is absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixture {'/'.join(parts)} is not present next to the repository")
    return path


def make_record(**changes: Any) -> ImpactRecord:
    values: dict[str, Any] = {
        "source_id": "act-1",
        "tenant": "acme",
        "kind": "volunteer_time",
        "activity_date": dt.date(2026, 11, 3),
        "employee_id": EMPLOYEE_ID,
        "hours": 3.5,
        "cause": "Food bank",
        "organization_name": "City Harvest",
    }
    values.update(changes)
    return ImpactRecord(**values)


class Harness:
    """Call the connector's hooks the way the runtime does."""

    def __init__(self, sim: WorkdaySimulator, url: str) -> None:
        self.sim = sim
        self.url = url
        self.tokens = TokenCache(MemoryTokenStore())

    def settings(self, protocol: str = "soap", **options: Any) -> PlatformSettings:
        secrets = dict(self.sim.credentials)
        secrets.update(options.pop("secrets", {}))
        return PlatformSettings(
            tenant="acme",
            platform="workday",
            base_url=self.url,
            protocol=protocol,
            secrets=secrets,
            options={"tenant_name": SANDBOX_TENANT, **options},
        )

    def map(
        self,
        settings: PlatformSettings,
        record: ImpactRecord | None = None,
        key: str = "key-1",
    ) -> PlatformRequest:
        requests = _plugin.impactin_map(
            platform=PLATFORM,
            records=[record or make_record()],
            settings=settings,
            idempotency_keys=[key],
        )
        assert requests is not None
        return requests[0]

    async def send(
        self,
        settings: PlatformSettings,
        request: PlatformRequest | None = None,
        *,
        force_refresh: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> SendOutcome:
        request = request or self.map(settings)
        async with httpx.AsyncClient(timeout=10) as client:
            auth = AuthContext(
                client=client,
                tokens=self.tokens,
                force_refresh=force_refresh,
                clock=clock,
            )
            pending = _plugin.impactin_authenticate(
                platform=PLATFORM, settings=settings, context=auth
            )
            assert pending is not None
            credentials = await pending
            context = SendContext(client=client, settings=settings)
            sending = _plugin.impactin_send(
                platform=PLATFORM,
                request=request,
                credentials=credentials,
                context=context,
            )
            assert sending is not None
            return await sending


@pytest.fixture
def serve() -> Iterator[Callable[..., Harness]]:
    """Start a simulator built with the given arguments; stop it after the test."""
    servers: list[SandboxServer] = []

    def start(**arguments: Any) -> Harness:
        sim = create_simulator(**arguments)
        server = SandboxServer(sim.app).start()
        servers.append(server)
        return Harness(sim, server.url)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def harness(serve: Callable[..., Harness]) -> Harness:
    return serve()
