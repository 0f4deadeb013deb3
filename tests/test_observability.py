"""Spans, trace ids and metrics of real deliveries to the three simulators.

The runtime gets its own SDK tracer and meter providers through
``Instruments``, with the in-memory span exporter and metric reader, so no
global OpenTelemetry state changes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from impactin_core._cli import main
from impactin_core._config import EnvSecrets, parse_config
from impactin_core._crypto import generate_key
from impactin_core._demo import demo_dataset, load_simulator
from impactin_core._input import ParsedRow, read_records
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core._telemetry import METRIC_NAMES, Instruments
from impactin_core.sandbox import SandboxServer, Simulator

PLATFORMS = ("benevity", "goodera", "workday")
OPTIONS: dict[str, dict[str, Any]] = {
    "benevity": {"foundation_id": "demo-foundation"},
    "goodera": {"opportunity_id": "64b7f0c2a1d3e4f5a6b7c8d9"},
    "workday": {"version": "v26.1"},
}
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


class HeaderRecorder:
    """An ASGI wrapper that keeps the path and traceparent of each request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            traceparent = headers.get(b"traceparent")
            self.seen.append(
                (scope["path"], traceparent.decode() if traceparent else None)
            )
        await self.app(scope, receive, send)


Servers = dict[str, tuple[SandboxServer, Simulator, HeaderRecorder]]


@pytest.fixture
def servers() -> Iterator[Servers]:
    plugins = PluginHost.from_entry_points()
    missing = [name for name in PLATFORMS if name not in plugins.platforms]
    if missing:
        pytest.skip(f"connectors not installed: {', '.join(missing)}")
    started: Servers = {}
    try:
        for name in PLATFORMS:
            simulator = load_simulator(plugins, name, None)
            recorder = HeaderRecorder(simulator.app)
            server = SandboxServer(recorder).start()
            started[name] = (server, simulator, recorder)
        yield started
    finally:
        for server, _, _ in started.values():
            server.stop()


def config_data(servers: Servers, environ: dict[str, str]) -> dict[str, Any]:
    environ["OBS_STORE_KEY"] = generate_key()
    environ["OBS_ACME_KEY"] = "acme-tenant-key-for-observability-tests"
    platforms: dict[str, Any] = {}
    for name, (server, simulator, _) in servers.items():
        credentials = {}
        for field, value in simulator.credentials.items():
            env_name = f"OBS_{name.upper()}_{field.upper()}"
            environ[env_name] = value
            credentials[field] = env_name
        options = {**OPTIONS[name], **simulator.options}
        state: Any = getattr(simulator, "state", None)
        if "tenant_name" not in options and hasattr(state, "tenant_name"):
            options["tenant_name"] = state.tenant_name
        platforms[name] = {
            "base_url": server.url,
            "protocol": "soap" if name == "workday" else "rest",
            "credentials": credentials,
            "options": options,
            "retry": {"base_delay": 0.01, "max_delay": 0.05, "deadline": 30.0},
            "rate_limit": {"calls": 6000, "period": 60},
        }
    return {
        "store": {"path": "observed.db", "key_env": "OBS_STORE_KEY"},
        "tenants": {"acme": {"key_env": "OBS_ACME_KEY", "platforms": platforms}},
    }


def acme_rows(count: int) -> list[ParsedRow]:
    rows = read_records(demo_dataset(), tenant=None)
    parsed = (
        row
        for row in rows
        if isinstance(row, ParsedRow) and row.record.tenant == "acme"
    )
    return list(itertools.islice(parsed, count))


class Observed:
    """A runtime wired to in-memory span and metric exporters."""

    def __init__(self, tmp_path: Path, servers: Servers) -> None:
        self.environ: dict[str, str] = {}
        self.data = config_data(servers, self.environ)
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer_provider = tracer_provider
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        instruments = Instruments(
            meter_provider=self.meter_provider, tracer_provider=tracer_provider
        )
        self.runtime = Runtime(
            parse_config(self.data, base_dir=tmp_path),
            plugins=PluginHost.from_entry_points(),
            secrets=EnvSecrets(self.environ),
            instruments=instruments,
        )

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def metric_points(self) -> dict[str, list[Any]]:
        points: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points

    def close(self) -> None:
        self.runtime.close()
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


@pytest.fixture
def observed(tmp_path: Path, servers: Servers) -> Iterator[Observed]:
    result = Observed(tmp_path, servers)
    yield result
    result.close()


@pytest.fixture
def delivered(observed: Observed) -> tuple[Observed, list[ParsedRow]]:
    rows = acme_rows(9)
    asyncio.run(observed.runtime.deliver(rows))
    return observed, rows


def test_delivery_spans_carry_ids(delivered: tuple[Observed, list[ParsedRow]]) -> None:
    observed, _ = delivered
    spans = observed.named("impactin.delivery")
    rows = {row["id"]: row for row in observed.runtime.store.list_deliveries()}

    assert len(spans) == len(rows)
    for span in spans:
        attributes = dict(span.attributes or {})
        row = rows[attributes["delivery_id"]]
        assert attributes["tenant_id"] == "acme"
        assert attributes["platform"] == row["platform"]
        assert attributes["correlation_id"] == row["correlation_id"]


def test_attempt_spans_are_children(
    delivered: tuple[Observed, list[ParsedRow]],
) -> None:
    observed, _ = delivered
    parents = {
        span.context.span_id: span for span in observed.named("impactin.delivery")
    }
    attempts = observed.named("impactin.attempt")

    assert attempts
    for attempt in attempts:
        assert attempt.parent is not None
        parent = parents[attempt.parent.span_id]
        parent_attributes = dict(parent.attributes or {})
        attributes = dict(attempt.attributes or {})
        assert attributes["delivery_id"] == parent_attributes["delivery_id"]
        assert attributes["correlation_id"] == parent_attributes["correlation_id"]


def test_trace_id_stored_per_delivery(
    delivered: tuple[Observed, list[ParsedRow]],
) -> None:
    observed, _ = delivered
    trace_ids = {
        dict(span.attributes or {})["delivery_id"]: format(
            span.context.trace_id, "032x"
        )
        for span in observed.named("impactin.delivery")
    }

    for row in observed.runtime.store.list_deliveries():
        assert row["trace_id"] == trace_ids[row["id"]]
        for attempt in observed.runtime.store.attempts(row["id"]):
            assert attempt["trace_id"] == row["trace_id"]


def test_every_call_carries_traceparent(
    delivered: tuple[Observed, list[ParsedRow]], servers: Servers
) -> None:
    observed, _ = delivered
    trace_ids = {
        format(span.context.trace_id, "032x")
        for span in observed.named("impactin.delivery")
    }

    for name, (_, _, recorder) in servers.items():
        calls = [(path, value) for path, value in recorder.seen if path != "/"]
        assert calls, name
        for path, value in calls:
            assert value is not None, f"{name} {path}"
            match = TRACEPARENT.fullmatch(value)
            assert match is not None, value
            assert match.group(1) in trace_ids, f"{name} {path}"


def test_workday_soap_call_carries_traceparent(
    delivered: tuple[Observed, list[ParsedRow]], servers: Servers
) -> None:
    observed, _ = delivered
    workday = observed.runtime.config.tenant("acme").platforms["workday"]
    _, _, recorder = servers["workday"]
    # Workday Web Services take SOAP at /ccx/service/<tenant>/<service>/<version>.
    soap_calls = [
        value for path, value in recorder.seen if path.startswith("/ccx/service/")
    ]

    assert workday.protocol == "soap"
    assert soap_calls, recorder.seen
    assert all(value and TRACEPARENT.fullmatch(value) for value in soap_calls)


def test_metric_names_are_declared(
    delivered: tuple[Observed, list[ParsedRow]],
) -> None:
    observed, _ = delivered
    names = set(observed.metric_points())

    assert names <= set(METRIC_NAMES)
    for expected in (
        "impact_in_deliveries_total",
        "impact_in_delivery_latency_seconds",
        "impact_in_attempts_total",
        "impact_in_idempotency_keys",
        "impact_in_circuit_breaker_state",
    ):
        assert expected in names


def test_metric_labels_carry_no_personal_data(
    delivered: tuple[Observed, list[ParsedRow]],
) -> None:
    observed, rows = delivered
    personal = set()
    for row in rows:
        record = row.record
        for value in (record.employee_id, record.employee_email, record.employee_name):
            if value:
                personal.add(str(value).lower())
    points = observed.metric_points()

    assert points
    for name, data_points in points.items():
        for point in data_points:
            for label, value in dict(point.attributes or {}).items():
                text = str(value)
                assert re.fullmatch(r"[a-z0-9_.-]+", text), f"{name} {label}={text}"
                assert text.lower() not in personal, f"{name} {label}"


def test_token_gauges_follow_the_store(
    delivered: tuple[Observed, list[ParsedRow]],
) -> None:
    observed, _ = delivered
    tokens = observed.runtime.store.token_rows()
    points = observed.metric_points()
    if not tokens:
        pytest.skip("no connector in this run stored an OAuth token")
    ages = points["impact_in_oauth_token_age_seconds"]
    expiries = points["impact_in_oauth_token_expiry_timestamp_seconds"]
    refreshes = points["impact_in_oauth_token_refreshes_total"]
    expected = {(row["tenant"], row["platform"]) for row in tokens}

    assert {
        (p.attributes["tenant"], p.attributes["platform"]) for p in ages
    } == expected
    assert all(point.value >= 0 for point in ages)
    assert {p.value for p in expiries} == {row["expires_at"] for row in tokens}
    assert sum(point.value for point in refreshes) >= len(tokens)


async def test_retry_and_rate_limit_events(
    observed: Observed, servers: Servers
) -> None:
    server, _, _ = servers["goodera"]
    plan = {"script": ["503", "429"], "retry_after": "0"}
    answer = httpx.put(f"{server.url}/_sandbox/faults", json=plan)
    assert answer.status_code == 200, answer.text
    rows = [
        row for row in acme_rows(40) if "goodera" in observed.runtime.routes(row.record)
    ]

    await observed.runtime.deliver(rows[:1])

    events = [
        event.name
        for span in observed.named("impactin.delivery")
        + observed.named("impactin.attempt")
        if dict(span.attributes or {}).get("platform") == "goodera"
        for event in span.events
    ]
    assert "retry_attempt" in events
    assert "rate_limit_hit" in events
    hits = observed.metric_points()["impact_in_rate_limit_hits_total"]
    assert sum(point.value for point in hits) == 1


async def test_idempotency_hit_event(observed: Observed) -> None:
    rows = acme_rows(2)
    await observed.runtime.deliver(rows)
    host_tracer = observed.tracer_provider.get_tracer("host")

    with host_tracer.start_as_current_span("host.upload"):
        await observed.runtime.deliver(rows)

    (host,) = observed.named("host.upload")
    hits = [event for event in host.events if event.name == "idempotency_hit"]
    deliveries = len(observed.runtime.store.list_deliveries())
    assert len(hits) == deliveries
    counted = observed.metric_points()["impact_in_idempotency_hits_total"]
    assert sum(point.value for point in counted) == deliveries


def write_toml(path: Path, data: dict[str, Any]) -> None:
    lines: list[str] = []

    def table(prefix: str, values: dict[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {json.dumps(value)}")
        for key, value in tables.items():
            table(f"{prefix}.{key}" if prefix else key, value)

    table("", data)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_deliveries_show_prints_trace_id(
    delivered: tuple[Observed, list[ParsedRow]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    observed, _ = delivered
    row = observed.runtime.store.list_deliveries()[0]
    config_path = tmp_path / "impactin.toml"
    write_toml(config_path, observed.data)
    for name, value in observed.environ.items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(
        main, ["--config", str(config_path), "deliveries", "show", row["id"]]
    )

    assert result.exit_code == 0, result.output
    assert re.search(rf"trace_id\W+{row['trace_id']}", result.output)


# -- impactin webhooks verify --------------------------------------------------------

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOK_BODY = b'{"id":"evt_1","type":"donation.created","note":"private body"}'


def signed_request(secret: str = WEBHOOK_SECRET, body: bytes = WEBHOOK_BODY) -> bytes:
    import time

    from impactin_core.webhooks import sign_standard_webhooks

    headers = sign_standard_webhooks(secret, "msg_42", int(time.time()), body)
    head = "POST /hooks/benevity?token=not-for-logs HTTP/1.1\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("ascii") + b"\r\n" + body + b"\n"


def verify(arguments: list[str], request: bytes, **environ: str) -> Any:
    pytest.importorskip("impactin_benevity")
    return CliRunner().invoke(
        main, ["webhooks", "verify", *arguments], input=request, env=environ
    )


def test_webhooks_verify_accepts_signed_request() -> None:
    result = verify(
        ["--platform", "benevity", "--secret-env", "WH"],
        signed_request(),
        WH=WEBHOOK_SECRET,
    )

    assert result.exit_code == 0, result.output
    assert "verified: yes" in result.output
    assert "event id: msg_42" in result.output


def test_webhooks_verify_rejects_wrong_secret() -> None:
    other = "whsec_" + "A" * 32
    result = verify(
        ["--platform", "benevity", "--secret-env", "WH"],
        signed_request(),
        WH=other,
    )

    assert result.exit_code == 1, result.output
    assert "rejected: bad_signature" in result.output
    assert other not in result.output
    assert "private body" not in result.output
    assert "not-for-logs" not in result.output


def test_webhooks_verify_accepts_rotated_secret() -> None:
    result = verify(
        ["--platform", "benevity", "--secret-env", "NEW", "--secret-env", "OLD"],
        signed_request(),
        NEW="whsec_" + "B" * 32,
        OLD=WEBHOOK_SECRET,
    )

    assert result.exit_code == 0, result.output


def test_webhooks_verify_rejects_tampered_body() -> None:
    request = signed_request().replace(b"private body", b"private bodx")

    result = verify(
        ["--platform", "benevity", "--secret-env", "WH"], request, WH=WEBHOOK_SECRET
    )

    assert result.exit_code == 1, result.output
    assert "rejected: bad_signature" in result.output


def test_webhooks_verify_conflicting_duplicate_header() -> None:
    request = signed_request().replace(b"\r\n\r\n", b"\r\nWebhook-Id: msg_43\r\n\r\n")

    result = verify(
        ["--platform", "benevity", "--secret-env", "WH"], request, WH=WEBHOOK_SECRET
    )

    assert result.exit_code == 1, result.output
    assert "rejected: malformed_header" in result.output
    assert "webhook-id header appears twice" in result.output


def test_webhooks_verify_repeated_equal_header() -> None:
    request = signed_request().replace(b"\r\n\r\n", b"\r\nwebhook-id: msg_42\r\n\r\n")

    result = verify(
        ["--platform", "benevity", "--secret-env", "WH"], request, WH=WEBHOOK_SECRET
    )

    assert result.exit_code == 0, result.output
    assert "event id: msg_42" in result.output


def test_webhooks_verify_chunked_body() -> None:
    head, _, _ = signed_request().partition(b"\r\n\r\n")
    head = head.replace(
        f"Content-Length: {len(WEBHOOK_BODY)}".encode(), b"Transfer-Encoding: chunked"
    )
    first, second = WEBHOOK_BODY[:10], WEBHOOK_BODY[10:]
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        len(first),
        first,
        len(second),
        second,
    )

    result = verify(
        ["--platform", "benevity", "--secret-env", "WH"],
        head + b"\r\n\r\n" + chunks,
        WH=WEBHOOK_SECRET,
    )

    assert result.exit_code == 0, result.output
    assert f"body: {len(WEBHOOK_BODY)} bytes" in result.output
    assert "verified: yes" in result.output


def test_webhooks_verify_non_ascii_header() -> None:
    request = signed_request().replace(b"v1,", "v1,\u00e9".encode(), 1)

    result = verify(
        ["--platform", "benevity", "--secret-env", "WH"], request, WH=WEBHOOK_SECRET
    )

    assert result.exit_code != 0
    assert "Traceback" not in result.output


def test_webhooks_verify_unset_secret_env() -> None:
    result = verify(["--platform", "benevity", "--secret-env", "UNSET_VAR"], b"")

    assert result.exit_code == 2
    assert "UNSET_VAR" in result.output


def test_webhooks_verify_literal_secret_hidden() -> None:
    secret = "whsec_" + "k3yMaterial" * 3
    result = verify(["--platform", "benevity", "--secret-env", secret], b"")

    assert result.exit_code == 2
    assert "upper-case name of an environment variable" in result.output
    assert "k3yMaterial" not in result.output


def test_webhooks_verify_unset_key_like_name_hidden() -> None:
    result = verify(
        ["--platform", "benevity", "--secret-env", "QX7LK2P9ZR4TBN8WJ3MV"], b""
    )

    assert result.exit_code == 2
    assert "the environment variable named by --secret-env" in result.output
    assert "QX7LK2P9ZR4TBN8WJ3MV" not in result.output


def test_webhooks_verify_workday_needs_scheme() -> None:
    pytest.importorskip("impactin_workday")
    arguments = ["--platform", "workday", "--secret-env", "WH"]

    without = verify(arguments, signed_request(), WH=WEBHOOK_SECRET)
    with_scheme = verify(
        [*arguments, "--scheme", "standard_webhooks"],
        signed_request(),
        WH=WEBHOOK_SECRET,
    )

    assert without.exit_code == 2
    assert "--scheme" in without.output
    assert with_scheme.exit_code == 0, with_scheme.output
