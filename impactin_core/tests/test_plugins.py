"""Plugin loading: entry points, broken plugins, duplicates, API versions."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
from echo_connector import INFO, EchoPlugin

from impactin_core import PluginError, hookimpl
from impactin_core._plugins import PluginHost
from impactin_core.hookspecs import impactin_register_platforms


class FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self._target = target
        self.dist = None

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


class Impostor:
    @hookimpl
    def impactin_register_platforms(self, register: Any) -> None:
        register(INFO)


class FutureConnector:
    @hookimpl
    def impactin_register_platforms(self, register: Any) -> None:
        import attrs

        register(attrs.evolve(INFO, id="future", core_api=99))


class Misspelled:
    @hookimpl
    def impactin_sendd(self) -> None:
        """A hook name no spec declares."""


def host_with(
    entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch
) -> PluginHost:
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: entry_points if group == "impactin" else [],
    )
    host = PluginHost()
    host.load_entry_points()
    host.finish()
    return host


def test_broken_plugin_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    points = [
        FakeEntryPoint("broken", ImportError("No module named 'nowhere'")),
        FakeEntryPoint("echo", EchoPlugin()),
    ]

    host = host_with(points, monkeypatch)

    assert list(host.platforms) == ["echo"]
    assert host.load_errors[0].name == "broken"
    assert "nowhere" in host.load_errors[0].reason


def test_load_plugins_env_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPACTIN_LOAD_PLUGINS", "other")

    host = host_with([FakeEntryPoint("echo", EchoPlugin())], monkeypatch)

    assert host.platforms == {}


def test_duplicate_platform_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    points = [
        FakeEntryPoint("echo", EchoPlugin()),
        FakeEntryPoint("impostor", Impostor()),
    ]

    with pytest.raises(PluginError) as caught:
        host_with(points, monkeypatch)

    assert "'echo'" in str(caught.value)
    assert "'impostor'" in str(caught.value)


class Twice:
    @hookimpl
    def impactin_register_platforms(self, register: Any) -> None:
        register(INFO)
        register(INFO)


class BadId:
    @hookimpl
    def impactin_register_platforms(self, register: Any) -> None:
        import attrs

        register(attrs.evolve(INFO, id="Bad-Id"))


def invalid_declaration() -> Any:
    from impactin_core import PlatformInfo

    return PlatformInfo(
        id="acme",
        name="Acme",
        kinds=["donation"],
        auth_kinds=["none"],
        webhook_scheme="acme_hmac",
    )


class BadScheme:
    @hookimpl
    def impactin_register_platforms(self, register: Any) -> None:
        register(invalid_declaration())


def test_platform_registered_twice_by_one_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(PluginError) as caught:
        host_with([FakeEntryPoint("twice", Twice())], monkeypatch)

    assert "registered twice by 'twice'" in str(caught.value)
    assert "both" not in str(caught.value)


def test_invalid_platform_id_names_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    host = host_with([FakeEntryPoint("bad", BadId())], monkeypatch)

    assert host.platforms == {}
    reason = host.load_errors[0].reason
    assert reason.startswith("invalid declaration: PlatformInfo.id 'Bad-Id'")
    assert "^[a-z][a-z0-9_]{1,31}$" in reason
    assert "Attribute" not in reason


def test_invalid_id_at_import_is_declaration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from impactin_core._models import InvalidPlatformInfo

    error = InvalidPlatformInfo("PlatformInfo.id 'Bad-Id' is invalid")
    host = host_with([FakeEntryPoint("bad", error)], monkeypatch)

    assert host.load_errors[0].reason.startswith("invalid declaration:")
    assert "import failed" not in host.load_errors[0].reason


def test_unknown_webhook_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    host = host_with([FakeEntryPoint("acme", BadScheme())], monkeypatch)

    reason = host.load_errors[0].reason
    assert "'acme_hmac'" in reason
    assert "'github', 'standard_webhooks', 'stripe', or None" in reason


def test_skipped_platform_lookup_gives_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = host_with([FakeEntryPoint("future", FutureConnector())], monkeypatch)

    with pytest.raises(PluginError) as caught:
        host.platform("future")

    assert "was skipped" in str(caught.value)
    assert "core API 99" in str(caught.value)
    assert "No connector" not in str(caught.value)


def test_incompatible_core_api_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    host = host_with([FakeEntryPoint("future", FutureConnector())], monkeypatch)

    assert "future" not in host.platforms
    assert "core API 99" in host.load_errors[0].reason


def test_misspelled_hook_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PluginError, match="impactin_sendd"):
        host_with([FakeEntryPoint("typo", Misspelled())], monkeypatch)


def test_hooks_skip_other_connectors(monkeypatch: pytest.MonkeyPatch) -> None:
    import attrs

    calls: list[str] = []

    class Other:
        @hookimpl
        def impactin_register_platforms(self, register: Any) -> None:
            register(attrs.evolve(INFO, id="other"))

        @hookimpl
        def impactin_redact(self, platform: Any, request: Any, policy: Any) -> int:
            calls.append(platform.id)
            return 0

    host = host_with(
        [FakeEntryPoint("echo", EchoPlugin()), FakeEntryPoint("other", Other())],
        monkeypatch,
    )

    host.hook("echo", "impactin_redact")(platform=INFO, request=None, policy=None)

    assert calls == []


def test_every_hookspec_has_a_docstring() -> None:
    from impactin_core import hookspecs

    specs = [name for name in dir(hookspecs) if name.startswith("impactin_")]
    assert len(specs) == 6
    for name in specs:
        assert getattr(hookspecs, name).__doc__, name
    assert impactin_register_platforms.__doc__


def test_every_hookspec_is_documented_and_tested() -> None:
    """Each hook has an entry in docs/hooks.md and appears in some test."""
    from pathlib import Path

    from impactin_core import hookspecs

    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "hooks.md").read_text(encoding="utf-8")
    tests = "".join(
        path.read_text(encoding="utf-8")
        for path in root.glob("*/tests/**/*.py")
        if path.name != Path(__file__).name
    )
    for name in (name for name in dir(hookspecs) if name.startswith("impactin_")):
        assert f"## `{name}(" in docs, name
        assert name in tests, name
