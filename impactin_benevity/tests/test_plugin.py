"""The plugin's registration, entry point and platform declaration."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Any

import httpx
import pluggy
import pytest

import impactin_benevity
from impactin_benevity import PLATFORM, _plugin
from impactin_core import (
    AuthContext,
    Credentials,
    MemoryTokenStore,
    PlatformInfo,
    PlatformRequest,
    PlatformSettings,
    RecordKind,
    RedactionPolicy,
    SendContext,
    TokenCache,
    hookspecs,
)

OTHER = PlatformInfo(
    id="goodera",
    name="Goodera",
    kinds=[RecordKind.VOLUNTEER_TIME],
    auth_kinds=["api_key"],
)


def _plugin_manager(plugin: object) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name="benevity")
    manager.check_pending()
    return manager


def test_entry_point_loads_plugin() -> None:
    found = {
        entry.name: entry for entry in importlib.metadata.entry_points(group="impactin")
    }
    assert "benevity" in found
    plugin = found["benevity"].load()
    assert plugin is _plugin

    registered: list[PlatformInfo] = []
    manager = _plugin_manager(plugin)
    manager.hook.impactin_register_platforms(register=registered.append)
    assert registered == [PLATFORM]


def test_every_hookspec_implemented() -> None:
    manager = _plugin_manager(_plugin)
    implemented = {hook.name for hook in manager.get_hookcallers(_plugin) or []}
    specified = {name for name in dir(hookspecs) if name.startswith("impactin_")}
    assert implemented == specified


def test_platform_declaration() -> None:
    assert PLATFORM.id == "benevity"
    assert PLATFORM.kinds == frozenset({RecordKind.DONATION})
    assert PLATFORM.auth_kinds == ("oauth2_client_credentials",)
    assert PLATFORM.batch_limit == 1
    assert PLATFORM.personal_fields == frozenset({"employee_email"})
    assert PLATFORM.honours_idempotency_key is False
    assert PLATFORM.webhook_scheme == "standard_webhooks"


def test_simulator_reference_resolves() -> None:
    assert PLATFORM.simulator is not None
    module_name, _, function_name = PLATFORM.simulator.partition(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    assert factory is impactin_benevity.create_simulator


def test_public_names_present() -> None:
    assert len(set(impactin_benevity.__all__)) == len(impactin_benevity.__all__)
    for name in impactin_benevity.__all__:
        assert hasattr(impactin_benevity, name), name


def _hook_calls() -> list[Any]:
    settings = PlatformSettings(tenant="acme", platform="goodera", base_url="http://x")
    client = httpx.AsyncClient()
    policy = RedactionPolicy(
        platform="goodera",
        tenant="acme",
        keep=frozenset(),
        pseudonymize=frozenset(),
        key=b"k" * 32,
    )
    request = PlatformRequest(
        platform="goodera",
        tenant="acme",
        operation="x",
        idempotency_key="k",
        source_ids=["s"],
        payload={},
    )
    auth = AuthContext(client=client, tokens=TokenCache(MemoryTokenStore()))
    send = SendContext(client=client, settings=settings)
    credentials = Credentials(kind="api_key")
    return [
        pytest.param(
            _plugin.impactin_authenticate,
            {"settings": settings, "context": auth},
            id="authenticate",
        ),
        pytest.param(
            _plugin.impactin_map,
            {"records": [], "settings": settings, "idempotency_keys": []},
            id="map",
        ),
        pytest.param(
            _plugin.impactin_redact,
            {"request": request, "policy": policy},
            id="redact",
        ),
        pytest.param(
            _plugin.impactin_send,
            {"request": request, "credentials": credentials, "context": send},
            id="send",
        ),
        pytest.param(
            _plugin.impactin_verify_webhook,
            {"headers": {}, "body": b"{}", "secrets": [], "options": {}},
            id="verify_webhook",
        ),
    ]


@pytest.mark.parametrize(("hook", "arguments"), _hook_calls())
def test_hook_ignores_other_platform(
    hook: Callable[..., Any], arguments: dict[str, Any]
) -> None:
    assert hook(platform=OTHER, **arguments) is None
