"""Plugin loading: entry points, platform registration and per-platform hooks."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from . import hookspecs
from ._errors import PluginError
from ._models import CORE_API_VERSION, InvalidPlatformInfo, PlatformInfo

__all__ = ["LoadError", "PluginHost", "RegisteredPlatform"]

logger = logging.getLogger("impactin.plugins")

ENTRY_POINT_GROUP = "impactin"
#: Comma-separated entry-point names to load; unset loads all, empty loads none.
LOAD_PLUGINS_ENV = "IMPACTIN_LOAD_PLUGINS"


@attrs.frozen
class LoadError:
    """A plugin that was skipped, and why."""

    name: str
    distribution: str | None
    reason: str


@attrs.frozen
class RegisteredPlatform:
    """A platform and the plugin that registered it."""

    info: PlatformInfo
    plugin: Any = attrs.field(eq=False, repr=False)
    plugin_name: str
    distribution: str | None
    version: str | None


class PluginHost:
    """Load connector plugins and call a platform's hooks on its own connector."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.load_errors: list[LoadError] = []
        self.platforms: dict[str, RegisteredPlatform] = {}
        #: Platforms whose connector was skipped at load time, with the reason.
        self.skipped_platforms: dict[str, str] = {}
        self._distributions: dict[str, tuple[str | None, str | None]] = {}
        # Hook callers by platform and hook name. The runtime calls four
        # hooks per delivery, so each caller is built once. Registering a
        # plugin or a platform empties the cache.
        self._callers: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_entry_points(cls, extra: Iterable[tuple[str, object]] = ()) -> PluginHost:
        host = cls()
        host.load_entry_points()
        for name, plugin in extra:
            host.register(plugin, name=name)
        host.finish()
        return host

    def load_entry_points(self) -> None:
        selected = _selected_names()
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if selected is not None and entry_point.name not in selected:
                continue
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            try:
                plugin = entry_point.load()
            except InvalidPlatformInfo as exc:
                self._skip(entry_point.name, dist_name, f"invalid declaration: {exc}")
                continue
            except Exception as exc:
                reason = f"import failed: {type(exc).__name__}: {exc}"
                self._skip(entry_point.name, dist_name, reason)
                continue
            self.register(
                plugin, name=entry_point.name, distribution=(dist_name, version)
            )

    def register(
        self,
        plugin: object,
        *,
        name: str,
        distribution: tuple[str | None, str | None] = (None, None),
    ) -> None:
        if self.pm.get_plugin(name) is not None:
            return
        self._callers.clear()
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            self._skip(name, distribution[0], f"registration failed: {exc}")
            return
        self._distributions[name] = distribution

    def _skip(self, name: str, distribution: str | None, reason: str) -> None:
        logger.warning("Skipped the impactin plugin %s: %s", name, reason)
        self.load_errors.append(LoadError(name, distribution, reason))

    def finish(self) -> None:
        """Check hook names and collect the registered platforms."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            message = f"A plugin implements an unknown hook: {exc}. Fix the hook name."
            raise PluginError(message) from exc
        caller = self.pm.hook.impactin_register_platforms
        for impl in caller.get_hookimpls():
            self._collect(impl)

    def _collect(self, impl: pluggy.HookImpl) -> None:
        name = impl.plugin_name
        dist_name, version = self._distributions.get(name, (None, None))
        declared: list[PlatformInfo] = []
        try:
            impl.function(register=declared.append)
        except InvalidPlatformInfo as exc:
            self._reject_plugin(impl, dist_name, f"invalid declaration: {exc}")
            return
        for info in declared:
            if info.core_api != CORE_API_VERSION:
                reason = (
                    f"platform {info.id!r} targets core API {info.core_api}, but this "
                    f"impactin-core provides API {CORE_API_VERSION}; install a "
                    "matching "
                    "connector version"
                )
                self.skipped_platforms[info.id] = reason
                self._reject_plugin(impl, dist_name, reason)
                return
            existing = self.platforms.get(info.id)
            if existing is not None:
                raise _duplicate_error(info.id, existing, name, dist_name)
            self._callers.clear()
            self.platforms[info.id] = RegisteredPlatform(
                info=info,
                plugin=impl.plugin,
                plugin_name=name,
                distribution=dist_name,
                version=version,
            )

    def _reject_plugin(
        self, impl: pluggy.HookImpl, distribution: str | None, reason: str
    ) -> None:
        self._skip(impl.plugin_name, distribution, reason)
        self._callers.clear()
        self.pm.unregister(impl.plugin)

    def platform(self, platform_id: str) -> RegisteredPlatform:
        try:
            return self.platforms[platform_id]
        except KeyError:
            pass
        reason = self.skipped_platforms.get(platform_id)
        if reason is None:
            # Entry points are usually named after their platform.
            reason = next(
                (
                    error.reason
                    for error in self.load_errors
                    if error.name == platform_id
                ),
                None,
            )
        if reason is not None:
            message = (
                f"The connector for platform {platform_id!r} is installed but was "
                f"skipped: {reason}."
            )
            raise PluginError(message)
        known = ", ".join(sorted(self.platforms)) or "none"
        message = (
            f"No connector for platform {platform_id!r} is installed (installed: "
            f"{known}); check the platform name, or install the package of "
            "its connector."
        )
        raise PluginError(message)

    def hook(self, platform_id: str, hook_name: str) -> Any:
        """Return a hook caller for the platform's connector and cross-cutting ones."""
        caller = self._callers.get((platform_id, hook_name))
        if caller is None:
            owner = self.platform(platform_id).plugin
            others = [
                registered.plugin
                for registered in self.platforms.values()
                if registered.plugin is not owner
            ]
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            self._callers[(platform_id, hook_name)] = caller
        return caller


def _duplicate_error(
    platform_id: str,
    existing: RegisteredPlatform,
    plugin_name: str,
    distribution: str | None,
) -> PluginError:
    first = existing.distribution or existing.plugin_name
    second = distribution or plugin_name
    if first == second:
        message = (
            f"Platform {platform_id!r} is registered twice by {first!r}; call "
            "register() once per platform, from one entry point."
        )
    else:
        message = (
            f"Platform {platform_id!r} is registered by both {first!r} and "
            f"{second!r}; uninstall one of them or limit loading with "
            f"{LOAD_PLUGINS_ENV}."
        )
    return PluginError(message, plugin=plugin_name)


def _selected_names() -> set[str] | None:
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}
