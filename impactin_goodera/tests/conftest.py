"""Fixtures: the Goodera simulator served on 127.0.0.1, records, settings.

Test modules are imported with pytest's importlib mode and cannot import
each other, so shared helpers are session fixtures that return callables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
from impactin_core.sandbox import SandboxServer, Simulator
from impactin_goodera import PLATFORM_INFO
from impactin_goodera import _plugin as plugin
from impactin_goodera._state import reset_ledgers
from impactin_goodera.simulator import DEFAULT_API_KEY, create_simulator

OPPORTUNITY = "65f96d1e1d38620012d38261"
EMAIL = "ada.lovelace@example.org"

RecordFactory = Callable[..., ImpactRecord]
SettingsFactory = Callable[..., PlatformSettings]
Send = Callable[..., Awaitable[SendOutcome]]


def _make_record(**changes: Any) -> ImpactRecord:
    values: dict[str, Any] = {
        "source_id": "activity-1",
        "tenant": "acme",
        "kind": "volunteer_time",
        "activity_date": dt.date(2026, 3, 14),
        "employee_id": "psn_0123456789abcdef",
        "employee_email": EMAIL,
        "hours": 2.5,
        "organization_id": OPPORTUNITY,
        "organization_name": "City Food Bank",
    }
    values.update(changes)
    return ImpactRecord(**values)


def _make_settings(
    base_url: str = "http://127.0.0.1:9",
    *,
    api_key: str = DEFAULT_API_KEY,
    **options: Any,
) -> PlatformSettings:
    return PlatformSettings(
        tenant="acme",
        platform="goodera",
        base_url=base_url,
        secrets={"api_key": api_key},
        options=options,
    )


def map_one(record: ImpactRecord, settings: PlatformSettings) -> PlatformRequest:
    """Map one record through the hook, keyed by its source id."""
    requests = plugin.impactin_map(
        platform=PLATFORM_INFO,
        records=[record],
        settings=settings,
        idempotency_keys=["key-" + record.source_id],
    )
    assert requests is not None
    return requests[0]


async def send_record(
    client: httpx.AsyncClient,
    settings: PlatformSettings,
    record: ImpactRecord,
    cache_dir: Path | None = None,
) -> SendOutcome:
    """Map, authenticate and send ``record`` the way the runtime does."""
    request = map_one(record, settings)
    auth_context = AuthContext(client=client, tokens=TokenCache(MemoryTokenStore()))
    pending_credentials = plugin.impactin_authenticate(
        platform=PLATFORM_INFO, settings=settings, context=auth_context
    )
    assert pending_credentials is not None
    credentials = await pending_credentials
    context = SendContext(
        client=client, settings=settings, timeout=5.0, cache_dir=cache_dir
    )
    pending_outcome = plugin.impactin_send(
        platform=PLATFORM_INFO,
        request=request,
        credentials=credentials,
        context=context,
    )
    assert pending_outcome is not None
    return await pending_outcome


@pytest.fixture(scope="session")
def make_record() -> RecordFactory:
    return _make_record


@pytest.fixture(scope="session")
def make_settings() -> SettingsFactory:
    return _make_settings


@pytest.fixture(scope="session")
def map_record() -> Callable[[ImpactRecord, PlatformSettings], PlatformRequest]:
    return map_one


@pytest.fixture(autouse=True)
def _fresh_ledgers() -> Iterator[None]:
    reset_ledgers()
    yield
    reset_ledgers()


@pytest.fixture
def simulator() -> Simulator:
    return create_simulator()


@pytest.fixture
def server(simulator: Simulator) -> Iterator[SandboxServer]:
    with SandboxServer(simulator.app) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def send(server: SandboxServer, client: httpx.AsyncClient) -> Send:
    """Send a record (by default the standard one) to the served simulator."""

    async def run(
        record: ImpactRecord | None = None,
        *,
        cache_dir: Path | None = None,
        base_url: str | None = None,
        **settings: Any,
    ) -> SendOutcome:
        tenant_settings = _make_settings(base_url or server.url, **settings)
        return await send_record(
            client, tenant_settings, record or _make_record(), cache_dir
        )

    return run


@pytest.fixture(scope="session")
def journal_entries() -> Callable[[Simulator, str], list[dict[str, Any]]]:
    def select(simulator: Simulator, kind: str) -> list[dict[str, Any]]:
        snapshot = simulator.journal.snapshot()
        return [entry for entry in snapshot["entries"] if entry["kind"] == kind]

    return select


@pytest.fixture(scope="session")
def send_with() -> Callable[..., Awaitable[SendOutcome]]:
    """``send_record`` for tests that serve their own simulator."""
    return send_record
