"""Run a connector's hooks and the runtime against the connector's own simulator."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import importlib
import inspect
import random
import re
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pytest

from .._config import EnvSecrets, parse_config
from .._context import AuthContext, SendContext
from .._crypto import generate_key
from .._models import (
    Credentials,
    ImpactRecord,
    PlatformInfo,
    PlatformRequest,
    PlatformSettings,
    RecordKind,
    SendOutcome,
)
from .._pipeline import Runtime
from .._plugins import PluginHost, RegisteredPlatform
from .._redaction import RedactionPolicy, minimize_record
from .._stats import PlatformStats
from .._tokens import MemoryTokenStore, TokenCache
from ..sandbox import SandboxServer, Simulator
from ._target import ConformanceTarget

__all__ = [
    "PERSONAL_VALUES",
    "FakeClock",
    "Harness",
    "HookReturnError",
    "RuleTimeout",
    "rule_deadline",
    "running_harness",
    "simulator_options",
]

T = TypeVar("T")

TENANT = "conformance"
TENANT_KEY = "conformance-tenant-key-0123456789abcdef"
#: A 24-hex organization id; platforms that use MongoDB ObjectIds accept it.
ORGANIZATION_ID = "64b7f0c2a1d3e4f5a6b7c8d9"

#: Personal values the suite puts into records and then searches for in
#: payloads and logs. They are fictitious.
PERSONAL_VALUES = {
    "employee_id": "E-CONF-77310",
    "employee_email": "ana.conformance@example.org",
    "employee_name": "Ana Quintessa Conformance",
    "employee_phone": "+1 415 555 0199",
}

_host: PluginHost | None = None


def plugin_host() -> PluginHost:
    """Return the plugins installed in this environment, loaded once per process."""
    global _host
    if _host is None:
        _host = PluginHost.from_entry_points()
    return _host


class FakeClock:
    """A clock that moves only when the runtime sleeps or a test advances it."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


class HookReturnError(TypeError):
    """A hook returned a wrong type; the message names the hook and the fix."""


_RETURN_FIXES = {
    "impactin_map": (
        "a list of PlatformRequest",
        "return a list with one PlatformRequest per batch, "
        "for example 'return [request]'",
    ),
    "impactin_authenticate": (
        "an awaitable of Credentials",
        "define the function that does the work with 'async def' and return "
        "its coroutine without awaiting it: 'return _authenticate(settings, "
        "context)'",
    ),
    "impactin_send": (
        "an awaitable of SendOutcome",
        "define the function that does the work with 'async def' and return "
        "its coroutine without awaiting it: 'return _send(request, "
        "credentials, context)'",
    ),
}


def hook_return_error(name: str, value: object) -> HookReturnError:
    """Return the error for hook ``name`` returning ``value`` of the wrong type."""
    expected, fix = _RETURN_FIXES[name]
    message = (
        f"Conformance rule 'hook return types' failed: {name} returned "
        f"{type(value).__name__}, not {expected}.\nFix: {fix}."
    )
    return HookReturnError(message)


def load_simulator(info: PlatformInfo) -> Simulator:
    """Build the simulator that ``info.simulator`` names."""
    if info.simulator is None:
        message = (
            f"Platform {info.id!r} declares no simulator; set PlatformInfo.simulator "
            "to 'module:function' of a factory that returns an "
            "impactin_core.sandbox.Simulator."
        )
        raise LookupError(message)
    module_name, _, attribute = info.simulator.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    simulator = factory(plan=None)
    if not isinstance(simulator, Simulator):
        message = (
            f"{info.simulator} returned {type(simulator).__name__}, not an "
            "impactin_core.sandbox.Simulator; return Simulator(app=..., journal=...)."
        )
        raise TypeError(message)
    return simulator


def simulator_options(simulator: Simulator) -> dict[str, Any]:
    """Return the connector options that talking to ``simulator`` needs."""
    return dict(simulator.options)


def _date_for(source_id: str) -> dt.date:
    offset = int(hashlib.sha256(source_id.encode("utf-8")).hexdigest()[:6], 16) % 3000
    return dt.date(2018, 1, 1) + dt.timedelta(days=offset)


def _env_name(credential: str) -> str:
    return "IMPACTIN_CONFORMANCE_" + re.sub(r"\W", "_", credential).upper()


@attrs.define
class Harness:
    """One platform, one transport, one running simulator and a fake clock."""

    target: ConformanceTarget
    transport: str
    registered: RegisteredPlatform
    host: PluginHost
    simulator: Simulator
    url: str
    folder: Path
    clock: FakeClock
    #: Token cache of direct hook calls; the runtime keeps its own in its store.
    tokens: TokenCache = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.tokens = TokenCache(MemoryTokenStore(), clock=self.clock)

    @property
    def info(self) -> PlatformInfo:
        return self.registered.info

    @property
    def options(self) -> dict[str, Any]:
        return {
            **simulator_options(self.simulator),
            **self.target.options_for(self.transport),
        }

    @property
    def secret_values(self) -> list[str]:
        return [value for value in self.simulator.credentials.values() if value]

    def settings(self) -> PlatformSettings:
        return PlatformSettings(
            tenant=TENANT,
            platform=self.info.id,
            base_url=self.url,
            protocol=self.transport,
            secrets=dict(self.simulator.credentials),
            options=self.options,
        )

    def hook(self, name: str) -> Any:
        return self.host.hook(self.info.id, name)

    def policy(self) -> RedactionPolicy:
        return RedactionPolicy.for_platform(self.info, TENANT, TENANT_KEY.encode())

    # -- records ---------------------------------------------------------------

    def sample_record(
        self, source_id: str, *, personal: bool = False, **changes: Any
    ) -> ImpactRecord:
        """Return a valid record of the platform's first kind (sorted by name)."""
        kind = sorted(self.info.kinds, key=lambda item: item.value)[0]
        values: dict[str, Any] = {
            "source_id": source_id,
            "tenant": TENANT,
            "kind": kind,
            # One date per source id, so that platforms which key writes on
            # the employee and the day see each sample record as new.
            "activity_date": _date_for(source_id),
            "employee_id": PERSONAL_VALUES["employee_id"],
            "employee_email": PERSONAL_VALUES["employee_email"],
            "cause": "Food bank",
            "organization_name": "City Harvest",
            "organization_id": ORGANIZATION_ID,
        }
        if kind is RecordKind.VOLUNTEER_TIME:
            values["hours"] = 2.5
        else:
            values["amount_minor"] = 2500
            values["currency"] = "USD"
        if personal:
            values["employee_name"] = PERSONAL_VALUES["employee_name"]
            values["employee_phone"] = PERSONAL_VALUES["employee_phone"]
            values["description"] = (
                f"Sorted cans with {PERSONAL_VALUES['employee_name']}, call "
                f"{PERSONAL_VALUES['employee_phone']} or write to "
                f"{PERSONAL_VALUES['employee_email']}."
            )
            values["location"] = "Warehouse 4"
            values["metadata"] = {"contact": PERSONAL_VALUES["employee_email"]}
        values.update(self.target.record_fields)
        values.update(changes)
        return ImpactRecord(**values)

    def map_records(
        self, records: list[ImpactRecord], keys: list[str]
    ) -> list[PlatformRequest]:
        """Minimize records as the runtime does, then call ``impactin_map``."""
        policy = self.policy()
        minimized = [minimize_record(record, policy)[0] for record in records]
        requests: list[PlatformRequest] = self.hook("impactin_map")(
            platform=self.info,
            records=minimized,
            settings=self.settings(),
            idempotency_keys=keys,
        )
        if not isinstance(requests, list):
            raise hook_return_error("impactin_map", requests)
        for request in requests:
            if not isinstance(request, PlatformRequest):
                raise hook_return_error("impactin_map", request)
        return requests

    def redact(self, request: PlatformRequest) -> None:
        self.hook("impactin_redact")(
            platform=self.info, request=request, policy=self.policy()
        )

    # -- direct hook calls -------------------------------------------------------

    async def authenticate(
        self, client: httpx.AsyncClient, tokens: TokenCache, *, force: bool = False
    ) -> Credentials:
        context = AuthContext(
            client=client, tokens=tokens, clock=self.clock, force_refresh=force
        )
        awaitable = self.hook("impactin_authenticate")(
            platform=self.info, settings=self.settings(), context=context
        )
        if not inspect.isawaitable(awaitable):
            raise hook_return_error("impactin_authenticate", awaitable)
        credentials: Credentials = await track_hook("impactin_authenticate", awaitable)
        return credentials

    async def send(
        self,
        client: httpx.AsyncClient,
        request: PlatformRequest,
        credentials: Credentials,
    ) -> SendOutcome:
        context = SendContext(
            client=client,
            settings=self.settings(),
            cache_dir=self.folder / "impactin-cache",
            clock=self.clock,
        )
        awaitable = self.hook("impactin_send")(
            platform=self.info,
            request=request,
            credentials=credentials,
            context=context,
        )
        if not inspect.isawaitable(awaitable):
            raise hook_return_error("impactin_send", awaitable)
        outcome: SendOutcome = await track_hook("impactin_send", awaitable)
        return outcome

    def check_hook_returns(self, *, authenticate: bool = False) -> None:
        """Raise ``HookReturnError`` when map, authenticate or send returns bad types.

        The send gets placeholder credentials unless ``authenticate`` is set.
        With it, the check fetches credentials first, so a send that does its
        work when called returns its outcome and is caught. The fetch uses
        the simulator's first refresh token, which a rotating platform
        accepts only once. Other errors of these calls are left to the rules,
        which report them with the input and the fix. Coroutines are closed
        unawaited, so the check sends nothing itself.
        """
        record = self.sample_record("conformance-return-types-1")
        try:
            requests = self.map_records([record], ["ik_conformance_return_types_1"])
        except HookReturnError:
            raise
        except Exception:
            requests = []
        request = requests[0] if requests else _placeholder_request(self.info.id)
        credentials = Credentials(kind="none")
        if authenticate:

            async def fetch_credentials() -> Credentials:
                async with httpx.AsyncClient(timeout=30.0) as client:
                    return await self.authenticate(client, self.new_tokens())

            try:
                credentials = run(fetch_credentials())
            except HookReturnError:
                raise
            except Exception:
                pass
        else:
            context = AuthContext(
                client=httpx.AsyncClient(), tokens=self.new_tokens(), clock=self.clock
            )
            awaitable = self.hook("impactin_authenticate")(
                platform=self.info, settings=self.settings(), context=context
            )
            _close_awaitable("impactin_authenticate", awaitable)
        send_context = SendContext(
            client=httpx.AsyncClient(timeout=30.0),
            settings=self.settings(),
            cache_dir=self.folder / "impactin-cache",
        )
        try:
            awaitable = self.hook("impactin_send")(
                platform=self.info,
                request=request,
                credentials=credentials,
                context=send_context,
            )
        except Exception:
            # A send that does its work when called can fail here; the
            # rules that send report the error.
            return
        finally:
            # A send that ran its own event loop on the client leaves
            # connections bound to that closed loop, and closing them fails.
            with contextlib.suppress(RuntimeError):
                run(send_context.client.aclose())
        _close_awaitable("impactin_send", awaitable)

    def new_tokens(self) -> TokenCache:
        return TokenCache(MemoryTokenStore(), clock=self.clock)

    # -- the simulator's admin routes ----------------------------------------------

    def set_faults(self, **plan: Any) -> None:
        response = httpx.put(f"{self.url}/_sandbox/faults", json=plan, timeout=10.0)
        response.raise_for_status()

    def journal(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_sandbox/journal", timeout=10.0)
        response.raise_for_status()
        snapshot: dict[str, Any] = response.json()
        return snapshot

    # -- the runtime ---------------------------------------------------------------

    def runtime(self) -> Runtime:
        """Return a runtime with a fresh store in the harness folder and fake clock."""
        environ = {
            "IMPACTIN_CONFORMANCE_STORE_KEY": generate_key(),
            "IMPACTIN_CONFORMANCE_TENANT_KEY": TENANT_KEY,
        }
        credentials = {}
        for name, value in self.simulator.credentials.items():
            environ[_env_name(name)] = value
            credentials[name] = _env_name(name)
        platform = {
            "base_url": self.url,
            "protocol": self.transport,
            "credentials": credentials,
            "options": self.options,
            "retry": {
                "max_attempts": 4,
                "base_delay": 0.05,
                "max_delay": 2.0,
                "deadline": 3600.0,
            },
            "rate_limit": {"calls": 100000, "period": 60},
        }
        data = {
            "store": {
                "path": str(self.folder / f"conformance-{random.getrandbits(32)}.db"),
                "key_env": "IMPACTIN_CONFORMANCE_STORE_KEY",
            },
            "runtime": {"concurrency": 1},
            "tenants": {
                TENANT: {
                    "key_env": "IMPACTIN_CONFORMANCE_TENANT_KEY",
                    "platforms": {self.info.id: platform},
                }
            },
        }
        config = parse_config(data, base_dir=self.folder)
        runtime = Runtime(
            config,
            plugins=_TrackingHost(self.host),
            secrets=EnvSecrets(environ),
            clock=self.clock,
            sleep=self.clock.sleep,
            rng=random.Random(0),
        )
        # The runtime continues the token of earlier direct calls, because a
        # platform that rotates refresh tokens revokes the one used first.
        token = self.tokens.load(TENANT, self.info.id)
        if token is not None:
            runtime.store.save_token(TENANT, self.info.id, token)
        return runtime

    def deliver(self, runtime: Runtime, records: list[ImpactRecord]) -> PlatformStats:
        report = run(runtime.deliver(records))
        return report.platform(self.info.id)


class _TrackingHost(PluginHost):
    """A view of a plugin host whose async hooks are listed while they run."""

    _TRACKED = ("impactin_authenticate", "impactin_send")

    def __init__(self, host: PluginHost) -> None:
        # Shares the loaded plugins and platforms instead of loading again.
        self.__dict__.update(host.__dict__)

    def hook(self, platform_id: str, hook_name: str) -> Any:
        caller = super().hook(platform_id, hook_name)
        if hook_name not in self._TRACKED:
            return caller

        def call(**kwargs: Any) -> Any:
            result = caller(**kwargs)
            if inspect.isawaitable(result):
                return track_hook(hook_name, result)
            return result

        return call


def _close_awaitable(hook: str, value: object) -> None:
    """Close the coroutine a hook returned, or raise if it returned no awaitable."""
    if inspect.iscoroutine(value):
        value.close()
    elif not inspect.isawaitable(value):
        raise hook_return_error(hook, value)


def _placeholder_request(platform: str) -> PlatformRequest:
    return PlatformRequest(
        platform=platform,
        tenant=TENANT,
        operation="conformance_return_types",
        idempotency_key="ik_conformance_return_types_1",
        source_ids=["conformance-return-types-1"],
        payload={},
    )


#: Names of the async hooks whose awaitables are running, innermost last.
_running_hooks: list[str] = []
#: ``time.monotonic()`` by which the current rule must finish, if any.
_rule_deadline: float | None = None
_rule_seconds = 0.0
#: Seconds a run waits for a task it cancelled at the rule deadline.
_CANCEL_GRACE = 5.0


async def track_hook(name: str, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` while ``name`` is listed as a running hook."""
    _running_hooks.append(name)
    try:
        return await awaitable
    finally:
        _running_hooks.remove(name)


@contextmanager
def rule_deadline(seconds: float) -> Iterator[None]:
    """Make each ``run`` inside the block stop ``seconds`` after it starts."""
    global _rule_deadline, _rule_seconds
    _rule_deadline = time.monotonic() + seconds
    _rule_seconds = seconds
    try:
        yield
    finally:
        _rule_deadline = None


def run(awaitable: Awaitable[T]) -> T:
    """Run a coroutine to completion in a new event loop.

    Inside ``rule_deadline``, a coroutine still running at the deadline is
    cancelled and the rule fails with the names of the hooks that were
    running. Without a deadline the run waits as long as the coroutine.
    """
    deadline = _rule_deadline

    async def wrapper() -> T:
        if deadline is None:
            return await awaitable
        task = asyncio.ensure_future(awaitable)
        remaining = max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait({task}, timeout=remaining)
        if task in done:
            return task.result()
        running = list(_running_hooks)
        task.cancel()
        await asyncio.wait({task}, timeout=_CANCEL_GRACE)
        raise RuleTimeout(running, _rule_seconds)

    try:
        return asyncio.run(wrapper())
    except RuleTimeout as exc:
        pytest.fail(exc.explain(), pytrace=False)


class RuleTimeout(Exception):
    """A rule reached its deadline; ``hooks`` are the hooks that were running."""

    def __init__(self, hooks: list[str], seconds: float) -> None:
        super().__init__(hooks, seconds)
        self.hooks = hooks
        self.seconds = seconds

    def explain(self) -> str:
        if self.hooks:
            # The innermost hook is the one that did not return.
            observed = f"{self.hooks[-1]} did not finish within {self.seconds:g} s"
        else:
            observed = f"the rule did not finish within {self.seconds:g} s"
        return (
            f"Conformance rule 'hooks finish in time' failed: {observed}.\n"
            "Fix: give every network call of the connector a timeout (pass "
            "context.timeout to httpx), and do not wait on events that the "
            "simulator never sends. A slow simulator can be given more time "
            "with ConformanceTarget(rule_timeout=SECONDS) or "
            "--impactin-rule-timeout=SECONDS."
        )


@contextmanager
def running_harness(
    target: ConformanceTarget, transport: str, folder: Path
) -> Iterator[Harness]:
    """Start the platform's simulator on 127.0.0.1 and yield a harness for it."""
    host = plugin_host()
    registered = host.platform(target.platform)
    simulator = load_simulator(registered.info)
    with SandboxServer(simulator.app) as server:
        yield Harness(
            target=target,
            transport=transport,
            registered=registered,
            host=host,
            simulator=simulator,
            url=server.url,
            folder=folder,
            clock=FakeClock(time.time()),
        )
