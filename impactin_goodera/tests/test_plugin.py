"""The Goodera plugin: registration, entry point, foreign platforms."""

from __future__ import annotations

from typing import Any

import httpx
import pluggy
import pytest

import impactin_goodera
from impactin_core import (
    AuthContext,
    ConfigError,
    Credentials,
    MemoryTokenStore,
    PlatformInfo,
    PlatformRequest,
    SendContext,
    TokenCache,
    hookspecs,
)
from impactin_goodera import PLATFORM_INFO
from impactin_goodera import _plugin as plugin

OTHER = PlatformInfo(
    id="benevity",
    name="Benevity",
    kinds=frozenset(),
    auth_kinds=("oauth2",),  # type: ignore[arg-type]
)


def test_entry_point_loads_plugin() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    loaded = manager.load_setuptools_entrypoints("impactin", name="goodera")
    manager.check_pending()
    declared: list[PlatformInfo] = []
    manager.hook.impactin_register_platforms(register=declared.append)
    assert loaded == 1
    assert manager.get_plugin("goodera") is plugin
    assert [info.id for info in declared] == ["goodera"]


def test_platform_declares_facts() -> None:
    info = PLATFORM_INFO
    assert [kind.value for kind in info.kinds] == ["volunteer_time"]
    assert info.personal_fields == frozenset({"employee_email"})
    assert info.honours_idempotency_key is False
    assert info.batch_limit == 1
    assert info.simulator == "impactin_goodera.simulator:create_simulator"


def _isort_key(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions, as ruff's RUF022 orders them.
    if name.isupper():
        return (0, name)
    return (1 if name[0].isupper() else 2, name)


def test_all_is_sorted() -> None:
    names = impactin_goodera.__all__
    assert names == sorted(names, key=_isort_key)


def test_version_is_set() -> None:
    assert impactin_goodera.__version__ == "0.1.0"


async def test_hooks_ignore_other_platform(make_settings: Any) -> None:
    settings = make_settings()
    async with httpx.AsyncClient() as client:
        auth_context = AuthContext(client=client, tokens=TokenCache(MemoryTokenStore()))
        send_context = SendContext(client=client, settings=settings)
        request = PlatformRequest(
            platform="benevity",
            tenant="acme",
            operation="donation",
            idempotency_key="k",
            source_ids=("s",),  # type: ignore[arg-type]
            payload={},
        )
        credentials = Credentials(kind="api_key")
        results = {
            "authenticate": plugin.impactin_authenticate(
                platform=OTHER, settings=settings, context=auth_context
            ),
            "map": plugin.impactin_map(
                platform=OTHER, records=[], settings=settings, idempotency_keys=[]
            ),
            "send": plugin.impactin_send(
                platform=OTHER,
                request=request,
                credentials=credentials,
                context=send_context,
            ),
            "verify_webhook": plugin.impactin_verify_webhook(
                platform=OTHER, headers={}, body=b"", secrets=[], options={}
            ),
        }
    for name, result in results.items():
        assert result is None, name


async def test_authenticate_sends_api_key_header(make_settings: Any) -> None:
    settings = make_settings(api_key="key-123")
    async with httpx.AsyncClient() as client:
        context = AuthContext(client=client, tokens=TokenCache(MemoryTokenStore()))
        pending = plugin.impactin_authenticate(
            platform=PLATFORM_INFO, settings=settings, context=context
        )
        assert pending is not None
        credentials = await pending
    assert credentials.headers == {"x-api-key": "key-123"}


async def test_authenticate_missing_key_names_setting(make_settings: Any) -> None:
    settings = make_settings()
    settings = type(settings)(
        tenant=settings.tenant, platform="goodera", base_url=settings.base_url
    )
    async with httpx.AsyncClient() as client:
        context = AuthContext(client=client, tokens=TokenCache(MemoryTokenStore()))
        pending = plugin.impactin_authenticate(
            platform=PLATFORM_INFO, settings=settings, context=context
        )
        assert pending is not None
        with pytest.raises(ConfigError) as caught:
            await pending
    assert caught.value.key == "tenants.acme.platforms.goodera.credentials.api_key"
