"""Fixtures for the Benevity connector tests: a fake clock, the simulator
served in process through ``httpx.ASGITransport``, and record factories."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from impactin_benevity import create_simulator
from impactin_core import (
    AuthContext,
    ImpactRecord,
    MemoryTokenStore,
    PlatformSettings,
    SendContext,
    TokenCache,
)
from impactin_core.sandbox import Simulator

BASE_URL = "http://benevity.test"


class FakeClock:
    """A clock that moves only when a test advances it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def simulator(clock: FakeClock) -> Simulator:
    return create_simulator(clock=clock)


@pytest.fixture
def settings(simulator: Simulator) -> PlatformSettings:
    return PlatformSettings(
        tenant="acme",
        platform="benevity",
        base_url=BASE_URL,
        secrets=simulator.credentials,
    )


@pytest.fixture
async def client(simulator: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=simulator.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


@pytest.fixture
def tokens(clock: FakeClock) -> TokenCache:
    return TokenCache(MemoryTokenStore(), clock=clock)


@pytest.fixture
def auth_context(
    client: httpx.AsyncClient, tokens: TokenCache, clock: FakeClock
) -> Callable[..., AuthContext]:
    def build(*, force_refresh: bool = False) -> AuthContext:
        return AuthContext(
            client=client, tokens=tokens, clock=clock, force_refresh=force_refresh
        )

    return build


@pytest.fixture
def send_context(client: httpx.AsyncClient, settings: PlatformSettings) -> SendContext:
    return SendContext(client=client, settings=settings, timeout=5.0)


@pytest.fixture
def make_record() -> Callable[..., ImpactRecord]:
    def build(**overrides: Any) -> ImpactRecord:
        fields: dict[str, Any] = {
            "source_id": "gift-1001",
            "tenant": "acme",
            "kind": "donation",
            "activity_date": dt.date(2026, 11, 3),
            "employee_id": "E-20417",
            "employee_email": "dana.reyes@acme.example",
            "amount_minor": 2500,
            "currency": "USD",
            "organization_id": "124-1234ABCD",
            "cause": "Food security",
        }
        fields.update(overrides)
        return ImpactRecord(**fields)

    return build
