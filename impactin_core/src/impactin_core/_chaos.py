"""The chaos run: many records against faulty simulators, then an audit.

``run_chaos`` serves the Benevity, Goodera and Workday simulators on
127.0.0.1 with injected faults (5xx responses, timeouts, dropped connections
and bursts of 429 with ``Retry-After``), delivers generated records through
a real ``Runtime``, resumes until nothing is pending, and then compares the
store with what each simulator recorded. ``ChaosFigures`` holds the result.

The runtime runs on ``FastClock``, which runs ``speedup`` times faster than
the wall clock, so backoff waits, ``Retry-After`` pauses and circuit reset
timeouts pass in milliseconds. HTTP timeouts stay in real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
from starlette.requests import ClientDisconnect

from ._config import EnvSecrets, parse_config
from ._crypto import generate_key
from ._demo import load_simulator
from ._models import ImpactRecord, RecordKind
from ._pipeline import Runtime
from ._plugins import PluginHost
from .sandbox import ASGIApp, FaultPlan, SandboxServer, Simulator

__all__ = [
    "ChaosFigures",
    "ChaosPlan",
    "FastClock",
    "GroupFigures",
    "chaos_records",
    "run_chaos",
]

PLATFORMS = ("benevity", "goodera", "workday")

#: Connector options the simulators need, per platform.
_OPTIONS: dict[str, dict[str, Any]] = {
    "benevity": {"foundation_id": "chaos-foundation"},
    "goodera": {"opportunity_id": "64b7f0c2a1d3e4f5a6b7c8d9"},
    "workday": {"version": "v26.1"},
}

#: Tenants of the chaos run: (tenant, platform, record kind, replay_safe).
#: Benevity and Goodera honour no idempotency key, so each runs once with
#: the default (ambiguous failures dead-letter) and once with
#: ``options.replay_safe``. Workday's SOAP call is safe to repeat.
TENANTS: tuple[tuple[str, str, RecordKind, bool], ...] = (
    ("bn-strict", "benevity", RecordKind.DONATION, False),
    ("bn-replay", "benevity", RecordKind.DONATION, True),
    ("gd-strict", "goodera", RecordKind.VOLUNTEER_TIME, False),
    ("gd-replay", "goodera", RecordKind.VOLUNTEER_TIME, True),
    ("wd-time", "workday", RecordKind.VOLUNTEER_TIME, False),
    ("wd-gift", "workday", RecordKind.DONATION, False),
)


@attrs.frozen(kw_only=True)
class ChaosPlan:
    """Size, faults and retry settings of a chaos run.

    Rates are shares of the requests each simulator receives, drawn per
    request. Half of ``drop_rate`` closes the connection before the
    simulator handles the request and half after it handled it. A timeout
    is a request the simulator holds for ``slow_seconds``, longer than
    ``timeout`` (real seconds), and handles after the client gave up.
    """

    records: int = 10_000
    seed: int = 1
    error_rate: float = 0.20
    error_status: int = 500
    timeout_rate: float = 0.05
    drop_rate: float = 0.05
    #: Every ``burst_every`` requests, the next ``burst_length`` get 429.
    burst_every: int = 400
    burst_length: int = 15
    retry_after: str = "2"
    timeout: float = 0.2
    slow_seconds: float = 0.4
    speedup: float = 1000.0
    concurrency: int = 16
    max_attempts: int = 8
    breaker_threshold: int = 10
    breaker_reset: float = 60.0
    #: Resume rounds after the first pass before giving up.
    max_rounds: int = 200

    def fault_plan(self, platform_index: int) -> FaultPlan:
        return FaultPlan(
            error_rate=self.error_rate,
            error_status=self.error_status,
            slow_rate=self.timeout_rate,
            slow_seconds=self.slow_seconds,
            drop_rate=self.drop_rate / 2,
            drop_after_rate=self.drop_rate / 2,
            seed=self.seed * 31 + platform_index,
        )


@attrs.define
class GroupFigures:
    """The audit of one tenant on one platform."""

    tenant: str
    platform: str
    replay_safe: bool
    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    blocked: int = 0
    #: Deliveries left pending or in flight; 0 after a finished run.
    unfinished: int = 0
    #: Records with no delivery row and no quarantine row.
    unaccounted: int = 0
    #: Dead-lettered deliveries whose ``error`` is empty.
    without_reason: int = 0
    #: Delivered records the simulator did not record.
    delivered_missing: int = 0
    #: Records the simulator recorded more than once.
    duplicates: int = 0
    #: Dead-lettered records the simulator recorded anyway: requests whose
    #: response was lost after the platform acted on them.
    dead_but_recorded: int = 0
    #: Writes the simulator recognised as repeats of a recorded one. A
    #: platform that honours no idempotency key would have duplicated these.
    repeats: int = 0
    reasons: Counter[str] = attrs.field(factory=Counter)

    @property
    def problems(self) -> list[str]:
        found = []
        for name in (
            "unfinished",
            "unaccounted",
            "without_reason",
            "delivered_missing",
            "duplicates",
        ):
            if getattr(self, name):
                found.append(f"{name}={getattr(self, name)}")
        if self.delivered + self.dead_lettered + self.blocked != self.records:
            found.append("final states do not add up to the records")
        if not self.replay_safe and self.platform != "workday" and self.repeats:
            found.append(f"repeats={self.repeats} on a platform without keys")
        return found


@attrs.define
class ChaosFigures:
    """The result of a chaos run."""

    plan: ChaosPlan
    groups: list[GroupFigures] = attrs.field(factory=list)
    rounds: int = 0
    retried: int = 0
    deferred: int = 0
    requests: dict[str, int] = attrs.field(factory=dict)
    wall_seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        return [
            f"{group.tenant}/{group.platform}: {problem}"
            for group in self.groups
            for problem in group.problems
        ]

    @property
    def ok(self) -> bool:
        return not self.problems


class FastClock:
    """A clock that runs ``speedup`` times faster than the wall clock.

    ``sleep`` waits the matching share of real time, so every reader sees
    the same time and sleepers wake in order.
    """

    def __init__(self, speedup: float) -> None:
        if not speedup > 0:
            message = f"speedup must be above 0, not {speedup!r}."
            raise ValueError(message)
        self.speedup = speedup
        self._start_real = time.monotonic()
        self._start = time.time()

    def __call__(self) -> float:
        return self._start + (time.monotonic() - self._start_real) * self.speedup

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speedup)


class _BurstMiddleware:
    """Return 429 with ``Retry-After`` to bursts of consecutive requests."""

    def __init__(self, app: ASGIApp, every: int, length: int, retry_after: str):
        self.app = app
        self.every = every
        self.length = length
        self.retry_after = retry_after.encode("ascii")
        self.count = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox/"):
            await self.app(scope, receive, send)
            return
        self.count += 1
        if self.every and self.count % self.every < self.length:
            body = b'{"message": "Too Many Requests"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", self.retry_after),
            ]
            await send(
                {"type": "http.response.start", "status": 429, "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            # The client gave up on a held request; uvicorn would log it.
            return


class _QuietDroppedConnections(logging.Filter):
    """Drop uvicorn's reports of the connections the faults close on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Exception in ASGI application")


class _TimeoutTransport(httpx.AsyncBaseTransport):
    """An HTTP transport that gives every request the same short timeout.

    Connectors pass their own timeouts per request; the chaos run needs a
    timeout shorter than the simulators' slow responses. The inner pool is
    made again after the runtime's client closes it, so one runtime can
    process the outbox several times.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = httpx.Timeout(timeout).as_dict()
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
            self._inner = httpx.AsyncHTTPTransport(limits=limits)
        request.extensions["timeout"] = self.timeout
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.aclose()


def chaos_records(count: int, seed: int) -> list[ImpactRecord]:
    """Return ``count`` valid records spread over the chaos tenants.

    Each record has its own employee and email, because Goodera's
    simulator keys a participation by event and email.
    """
    rng = random.Random(seed)
    first_day = dt.date(2025, 1, 6)
    records = []
    for number in range(count):
        tenant, _, kind, _ = TENANTS[number % len(TENANTS)]
        fields: dict[str, Any] = {
            "source_id": f"chaos-{number:06d}",
            "tenant": tenant,
            "kind": kind,
            "activity_date": first_day + dt.timedelta(days=rng.randrange(28)),
            "employee_id": f"E-{number:06d}",
            "employee_email": f"employee{number:06d}@example.org",
            "organization_id": f"ORG-{1000 + rng.randrange(50)}",
            "organization_name": "Community Food Bank",
            "cause": "Hunger",
        }
        if kind is RecordKind.DONATION:
            fields["amount_minor"] = rng.randrange(500, 50_000)
            fields["currency"] = "USD"
        else:
            fields["hours"] = float(rng.randrange(1, 16)) / 2
        records.append(ImpactRecord(**fields))
    return records


@contextlib.contextmanager
def _simulators(
    plugins: PluginHost, plan: ChaosPlan
) -> Iterator[dict[str, tuple[SandboxServer, Simulator, _BurstMiddleware]]]:
    started: dict[str, tuple[SandboxServer, Simulator, _BurstMiddleware]] = {}
    try:
        for index, platform in enumerate(PLATFORMS):
            simulator = load_simulator(plugins, platform, plan.fault_plan(index))
            bursty = _BurstMiddleware(
                simulator.app, plan.burst_every, plan.burst_length, plan.retry_after
            )
            server = SandboxServer(bursty).start()
            started[platform] = (server, simulator, bursty)
        yield started
    finally:
        for server, _, _ in started.values():
            server.stop()


def _config(
    folder: Path,
    servers: Mapping[str, tuple[SandboxServer, Simulator, _BurstMiddleware]],
    plan: ChaosPlan,
    environ: dict[str, str],
) -> Any:
    environ["IMPACTIN_CHAOS_STORE_KEY"] = generate_key()
    tenants: dict[str, Any] = {}
    for tenant, platform, _, replay_safe in TENANTS:
        server, simulator, _ = servers[platform]
        credentials = {}
        for name, value in simulator.credentials.items():
            env_name = f"IMPACTIN_CHAOS_{platform.upper()}_{name.upper()}"
            environ[env_name] = value
            credentials[name] = env_name
        options = {**_OPTIONS[platform], **simulator.options}
        state = getattr(simulator, "state", None)
        if platform == "workday" and "tenant_name" not in options:
            options["tenant_name"] = getattr(state, "tenant_name", "sandbox")
        if replay_safe:
            options["replay_safe"] = True
        key_env = f"IMPACTIN_CHAOS_{tenant.upper().replace('-', '_')}_KEY"
        environ[key_env] = uuid.uuid4().hex + uuid.uuid4().hex
        tenants[tenant] = {
            "key_env": key_env,
            "platforms": {
                platform: {
                    "base_url": server.url,
                    "protocol": "soap" if platform == "workday" else "rest",
                    "credentials": credentials,
                    "options": options,
                    "retry": {
                        "max_attempts": plan.max_attempts,
                        "base_delay": 0.5,
                        "max_delay": 30.0,
                        "deadline": 86_400.0,
                    },
                    "breaker": {
                        "threshold": plan.breaker_threshold,
                        "reset_timeout": plan.breaker_reset,
                    },
                    # The simulators have no quota of their own.
                    "rate_limit": {"calls": 100_000, "period": 60},
                },
            },
        }
    data = {
        "store": {"path": "chaos.db", "key_env": "IMPACTIN_CHAOS_STORE_KEY"},
        "runtime": {"concurrency": plan.concurrency},
        "tenants": tenants,
    }
    return parse_config(data, base_dir=folder)


async def _deliver_until_settled(
    runtime: Runtime, records: list[ImpactRecord], clock: FastClock, figures: Any
) -> None:
    report = await runtime.deliver(records)
    reports = [report]
    while figures.rounds < figures.plan.max_rounds:
        unfinished = runtime.store.due_deliveries(clock(), include_future=True)
        if not unfinished:
            break
        figures.rounds += 1
        # Deferred deliveries wait for their circuit or Retry-After time.
        waits = [row["next_attempt_at"] or 0.0 for row in unfinished]
        await clock.sleep(min(waits) - clock())
        reports.append(await runtime.resume())
    for each in reports:
        for stats in each.platforms.values():
            figures.retried += stats.retried
            figures.deferred += stats.deferred


def _journal_identity(platform: str, entry: Mapping[str, Any]) -> str | None:
    """Return the record identity of an accepted write, None for other writes."""
    if platform == "goodera":
        if entry.get("kind") != "participation":
            return None
        return str(entry["body"]["email"]).casefold()
    key = entry.get("key")
    return str(key) if key is not None else None


def _delivery_identity(platform: str, row: Mapping[str, Any], runtime: Runtime) -> str:
    if platform == "goodera":
        email = runtime.store.load_record(row["id"]).get("employee_email") or ""
        return str(email).casefold()
    return str(row["idempotency_key"])


def _audit(
    runtime: Runtime,
    records: list[ImpactRecord],
    servers: Mapping[str, tuple[SandboxServer, Simulator, _BurstMiddleware]],
    figures: ChaosFigures,
) -> None:
    sources_by_tenant: dict[str, set[str]] = {}
    for record in records:
        sources_by_tenant.setdefault(record.tenant, set()).add(record.source_id)
    quarantined = {
        (row["tenant"], row["source_id"]) for row in runtime.store.quarantined()
    }
    for tenant, platform, _, replay_safe in TENANTS:
        group = GroupFigures(tenant=tenant, platform=platform, replay_safe=replay_safe)
        journal = servers[platform][1].journal.snapshot()
        recorded: Counter[str] = Counter()
        key_identity: dict[str, str] = {}
        for entry in journal["entries"]:
            identity = _journal_identity(platform, entry)
            if identity is not None:
                recorded[identity] += 1
                if entry.get("key") is not None:
                    key_identity[str(entry["key"])] = identity
        rows = runtime.store.list_deliveries(
            filters={"tenant": tenant, "platform": platform}, limit=None
        )
        sources = sources_by_tenant.get(tenant, set())
        group.records = len(sources)
        delivered_sources = {row["source_id"] for row in rows}
        group.unaccounted = len(
            {s for s in sources - delivered_sources if (tenant, s) not in quarantined}
        )
        own_identities = set()
        for row in rows:
            identity = _delivery_identity(platform, row, runtime)
            own_identities.add(identity)
            seen = recorded.get(identity, 0)
            status = row["status"]
            if seen > 1:
                group.duplicates += 1
            if status == "delivered":
                group.delivered += 1
                if seen == 0:
                    group.delivered_missing += 1
            elif status == "dead_lettered":
                group.dead_lettered += 1
                group.reasons[row["error_kind"] or "(none)"] += 1
                if not row["error"]:
                    group.without_reason += 1
                if seen:
                    group.dead_but_recorded += 1
            elif status == "blocked":
                group.blocked += 1
            else:
                group.unfinished += 1
        group.repeats = sum(
            count
            for key, count in journal["repeats"].items()
            if key_identity.get(key) in own_identities
        )
        figures.groups.append(group)
    for platform, (_, simulator, _) in servers.items():
        figures.requests[platform] = simulator.journal.snapshot()["request_count"]


def run_chaos(plan: ChaosPlan, folder: Path) -> ChaosFigures:
    """Run the chaos scenario with its store in ``folder`` and audit it."""
    started = time.monotonic()
    figures = ChaosFigures(plan=plan)
    plugins = PluginHost.from_entry_points()
    missing = [name for name in PLATFORMS if name not in plugins.platforms]
    if missing:
        message = (
            f"The chaos run needs the {', '.join(missing)} connector(s); install "
            "impactin-benevity, impactin-goodera and impactin-workday."
        )
        raise LookupError(message)
    records = chaos_records(plan.records, plan.seed)
    clock = FastClock(plan.speedup)
    quiet = _QuietDroppedConnections()
    server_log = logging.getLogger("uvicorn.error")
    server_log.addFilter(quiet)
    with contextlib.ExitStack() as stack:
        stack.callback(server_log.removeFilter, quiet)
        servers = stack.enter_context(_simulators(plugins, plan))
        environ: dict[str, str] = {}
        config = _config(folder, servers, plan, environ)
        runtime = Runtime(
            config,
            plugins=plugins,
            secrets=EnvSecrets(environ),
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(plan.seed),
            transport=_TimeoutTransport(plan.timeout),
        )
        try:
            asyncio.run(_deliver_until_settled(runtime, records, clock, figures))
            # Slow requests still held by a simulator may land after the
            # run; wait for them so the audit includes every accepted write.
            time.sleep(plan.slow_seconds + 0.1)
            _audit(runtime, records, servers, figures)
        finally:
            runtime.close()
    figures.wall_seconds = time.monotonic() - started
    return figures
