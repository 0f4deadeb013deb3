"""The demo: three simulators on loopback ports and the bundled dataset.

The demo keeps its store and keys in a folder of its own (``--dir``), so a
second run finds every record already delivered and skips it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._config import Config, parse_config
from ._crypto import generate_key
from ._plugins import PluginHost
from .sandbox import FaultPlan, SandboxServer, Simulator

__all__ = ["DEMO_TENANTS", "demo_config", "demo_dataset", "running_simulators"]

DEMO_TENANTS = ("acme", "globex", "initech")

#: Options each connector needs in the demo, per platform id.
_DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "benevity": {"foundation_id": "demo-foundation"},
    "goodera": {"opportunity_id": "64b7f0c2a1d3e4f5a6b7c8d9"},
    "workday": {"version": "v26.1"},
}

#: Faults the demo simulators inject, so retries show in the summary.
DEMO_FAULTS = FaultPlan(error_rate=0.04, throttle_rate=0.02, retry_after="1", seed=7)


def demo_dataset() -> Path:
    """Return the path of the bundled demo dataset."""
    resource = (
        importlib.resources.files("impactin_core") / "data" / "demo_records.jsonl"
    )
    return Path(str(resource))


def _demo_keys(folder: Path) -> dict[str, str]:
    """Load or create the demo's keys, kept next to its store (demo only)."""
    path = folder / "demo-keys.json"
    if path.exists():
        keys: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return keys
    keys = {"IMPACTIN_DEMO_STORE_KEY": generate_key()}
    for tenant in DEMO_TENANTS:
        keys[f"IMPACTIN_DEMO_{tenant.upper()}_KEY"] = secrets.token_urlsafe(32)
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(keys, file)
    return keys


def load_simulator(
    plugins: PluginHost, platform: str, plan: FaultPlan | None
) -> Simulator:
    """Build the simulator a connector declares for its platform."""
    info = plugins.platform(platform).info
    if info.simulator is None:
        message = f"The {platform} connector ships no simulator."
        raise LookupError(message)
    module_name, _, attribute = info.simulator.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    simulator: Simulator = factory(plan=plan)
    return simulator


def simulator_options(platform: str, simulator: Simulator) -> dict[str, Any]:
    """Return the connector options with which records reach ``simulator``.

    They include what the sample records need, such as the Goodera
    opportunity that volunteer hours are logged against.
    """
    options = {**_DEMO_OPTIONS.get(platform, {}), **simulator.options}
    state: Any = getattr(simulator, "state", None)
    if "tenant_name" not in options and hasattr(state, "tenant_name"):
        options["tenant_name"] = state.tenant_name
    return options


@contextlib.contextmanager
def running_simulators(
    plugins: PluginHost, platforms: list[str], plan: FaultPlan | None
) -> Iterator[dict[str, tuple[SandboxServer, Simulator]]]:
    """Serve one simulator per platform on free 127.0.0.1 ports."""
    started: dict[str, tuple[SandboxServer, Simulator]] = {}
    try:
        for platform in platforms:
            simulator = load_simulator(plugins, platform, plan)
            server = SandboxServer(simulator.app).start()
            started[platform] = (server, simulator)
        yield started
    finally:
        for server, _ in started.values():
            server.stop()


def demo_config(
    folder: Path,
    servers: dict[str, tuple[SandboxServer, Simulator]],
    environ: dict[str, str],
) -> Config:
    """Write the demo's secrets into ``environ`` and return its configuration."""
    keys = _demo_keys(folder)
    environ.update(keys)
    tenants: dict[str, Any] = {}
    for tenant in DEMO_TENANTS:
        platforms: dict[str, Any] = {}
        for platform, (server, simulator) in servers.items():
            credentials = {}
            for name, value in simulator.credentials.items():
                env_name = f"IMPACTIN_DEMO_{platform.upper()}_{name.upper()}"
                environ[env_name] = value
                credentials[name] = env_name
            options = simulator_options(platform, simulator)
            platforms[platform] = {
                "base_url": server.url,
                "protocol": "soap" if platform == "workday" else "rest",
                "credentials": credentials,
                "options": options,
                "retry": {"base_delay": 0.05, "max_delay": 2.0, "deadline": 60.0},
                # The simulators have no quota; the connectors' defaults are
                # conservative guesses for the real platforms.
                "rate_limit": {"calls": 6000, "period": 60},
            }
        tenants[tenant] = {
            "key_env": f"IMPACTIN_DEMO_{tenant.upper()}_KEY",
            "platforms": platforms,
        }
    data = {
        "store": {"path": "impactin-demo.db", "key_env": "IMPACTIN_DEMO_STORE_KEY"},
        "runtime": {"concurrency": 8},
        "tenants": tenants,
    }
    return parse_config(data, base_dir=folder)
