"""Fixtures for the runtime's tests: the echo connector and its simulator."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from echo_connector import EchoPlugin, create_simulator

from impactin_core.sandbox import FaultPlan, SandboxServer, Simulator


@pytest.fixture
def echo_simulator() -> Iterator[tuple[SandboxServer, Simulator]]:
    simulator = create_simulator(plan=FaultPlan())
    with SandboxServer(simulator.app) as server:
        yield server, simulator


@pytest.fixture
def echo_plugin() -> EchoPlugin:
    return EchoPlugin()
