"""Spans, events and metrics of the runtime, against the echo simulator.

Each test builds its own SDK providers and hands them to ``Instruments``, so
the global OpenTelemetry providers stay untouched.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import click
import httpx
import pytest
from echo_connector import EchoPlugin
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from impactin_core import ImpactRecord, OAuthToken, RecordKind
from impactin_core._cli_observe import RawRequestError, parse_raw_request
from impactin_core._config import EnvSecrets, parse_config
from impactin_core._crypto import generate_key
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core._reliability import BreakerBoard
from impactin_core._telemetry import (
    BREAKER_STATE_VALUES,
    METRIC_NAMES,
    Instruments,
    safe_attributes,
    safe_labels,
)
from impactin_core._tokens import MemoryTokenStore
from impactin_core.sandbox import SandboxServer, Simulator

Echo = tuple[SandboxServer, Simulator]
TESTS = Path(__file__).parent


class Telemetry:
    """SDK providers with in-memory exporters, handed to ``Instruments``."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.instruments = Instruments(
            meter_provider=self.meter_provider, tracer_provider=self.tracer_provider
        )

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def events(self, name: str) -> list[Any]:
        return [
            event
            for span in self.spans.get_finished_spans()
            for event in span.events
            if event.name == name
        ]

    def points(self) -> dict[str, list[Any]]:
        result: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return result
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    result.setdefault(metric.name, []).extend(metric.data.data_points)
        return result

    def total(self, name: str, **labels: str) -> float:
        return sum(
            point.value
            for point in self.points().get(name, [])
            if all(point.attributes.get(k) == v for k, v in labels.items())
        )


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    result = Telemetry()
    yield result
    result.meter_provider.shutdown()
    result.tracer_provider.shutdown()


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_runtime(
    tmp_path: Path,
    url: str,
    telemetry: Telemetry,
    *,
    breaker: dict[str, Any] | None = None,
) -> Runtime:
    environ = {
        "STORE_KEY": generate_key(),
        "ACME_KEY": "acme-secret-key",
        "ECHO_KEY": "echo-sandbox-key",
    }
    data = {
        "store": {"path": "state.db", "key_env": "STORE_KEY"},
        "tenants": {
            "acme": {
                "key_env": "ACME_KEY",
                "platforms": {
                    "echo": {
                        "base_url": url,
                        "credentials": {"api_key": "ECHO_KEY"},
                        "retry": {"base_delay": 0.5, "max_attempts": 4},
                        "breaker": breaker or {"threshold": 50},
                    }
                },
            }
        },
    }
    host = PluginHost()
    host.register(EchoPlugin(), name="echo")
    host.finish()
    clock = FakeTime()
    return Runtime(
        parse_config(data, base_dir=tmp_path),
        plugins=host,
        secrets=EnvSecrets(environ),
        clock=clock.time,
        sleep=clock.sleep,
        instruments=telemetry.instruments,
    )


def record(source_id: str = "a-1") -> ImpactRecord:
    return ImpactRecord(
        source_id=source_id,
        tenant="acme",
        kind=RecordKind.DONATION,
        activity_date=dt.date(2026, 3, 1),
        employee_id="E-004217",
        employee_email="maria.lopez@example.org",
        employee_name="Maria Lopez",
        amount_minor=2500,
        currency="USD",
    )


def set_faults(server: SandboxServer, **plan: Any) -> None:
    response = httpx.put(f"{server.url}/_sandbox/faults", json=plan)
    assert response.status_code == 200, response.text


# -- allow lists ------------------------------------------------------------------


def test_safe_attributes_drop_unknown_names() -> None:
    kept = safe_attributes(
        {"platform": "echo", "employee_email": "a@example.org", "attempt": None}
    )

    assert kept == {"platform": "echo"}


def test_safe_labels_drop_unknown_names() -> None:
    kept = safe_labels({"platform": "echo", "employee_id": "E-1", "status": 3})

    assert kept == {"platform": "echo", "status": "3"}


# -- instruments ----------------------------------------------------------------------


class FakeStore:
    def __init__(self, tokens: list[dict[str, Any]]) -> None:
        self.tokens = tokens

    def token_rows(self) -> list[dict[str, Any]]:
        return self.tokens


@attrs.define
class FakeRuntime:
    store: Any
    breakers: Any
    clock: Any


def test_metric_names_match_instruments(telemetry: Telemetry) -> None:
    instruments = telemetry.instruments
    for value in vars(instruments).values():
        if hasattr(value, "add"):
            value.add(1, {"platform": "echo"})
        elif hasattr(value, "record"):
            value.record(1.0, {"platform": "echo"})
    token = {"tenant": "acme", "platform": "echo", "obtained_at": 0.0}
    store = FakeStore([{**token, "expires_at": 3600.0}])
    runtime = FakeRuntime(store, BreakerBoard(), lambda: 60.0)
    instruments.watch(runtime)

    names = set(telemetry.points())

    instruments.unwatch(runtime)
    # The idempotency gauge reads SQL, which the fake store lacks, and the
    # board has no circuit yet, so those two gauges report no point here.
    expected = set(METRIC_NAMES) - {
        "impact_in_idempotency_keys",
        "impact_in_circuit_breaker_state",
    }
    assert names == expected


def test_token_gauges_read_the_store(telemetry: Telemetry) -> None:
    token = {"tenant": "acme", "platform": "echo", "obtained_at": 100.0}
    store = FakeStore([{**token, "expires_at": 3700.0}])
    runtime = FakeRuntime(store, BreakerBoard(), lambda: 160.0)
    telemetry.instruments.watch(runtime)

    points = telemetry.points()

    telemetry.instruments.unwatch(runtime)
    (age,) = points["impact_in_oauth_token_age_seconds"]
    (expiry,) = points["impact_in_oauth_token_expiry_timestamp_seconds"]
    assert age.value == 60.0
    assert dict(age.attributes) == {"tenant": "acme", "platform": "echo"}
    assert expiry.value == 3700.0


def test_unwatched_runtime_reports_nothing(telemetry: Telemetry) -> None:
    store = FakeStore([{"tenant": "a", "platform": "b", "obtained_at": 0.0}])
    runtime = FakeRuntime(store, BreakerBoard(), lambda: 1.0)
    telemetry.instruments.watch(runtime)
    telemetry.instruments.unwatch(runtime)

    points = telemetry.points()

    assert "impact_in_oauth_token_age_seconds" not in points


def test_counting_token_store_counts_saves(telemetry: Telemetry) -> None:
    store = telemetry.instruments.counting_token_store(MemoryTokenStore())
    token = OAuthToken(access_token="not-a-real-token", expires_at=10.0)

    store.save_token("acme", "echo", token)
    store.save_token("acme", "echo", token)

    assert store.load_token("acme", "echo") == token
    total = telemetry.total("impact_in_oauth_token_refreshes_total", tenant="acme")
    assert total == 2


def test_webhook_rejection_counted_by_reason(telemetry: Telemetry) -> None:
    telemetry.instruments.count_webhook_rejection("echo", "bad_signature")

    points = telemetry.points()["impact_in_webhook_verification_failures_total"]

    assert [dict(point.attributes) for point in points] == [
        {"platform": "echo", "reason": "bad_signature"}
    ]


# -- the runtime against the echo simulator ---------------------------------------


async def test_spans_and_trace_id(
    tmp_path: Path, echo_simulator: Echo, telemetry: Telemetry
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, telemetry)

    await runtime.deliver([record()])

    (delivery,) = telemetry.named("impactin.delivery")
    (attempt,) = telemetry.named("impactin.attempt")
    row = runtime.store.list_deliveries()[0]
    trace_id = format(delivery.context.trace_id, "032x")
    sent = simulator.journal.entries[0]["headers"]["traceparent"]
    assert dict(delivery.attributes or {})["delivery_id"] == row["id"]
    assert attempt.parent is not None
    assert attempt.parent.span_id == delivery.context.span_id
    assert row["trace_id"] == trace_id
    assert sent.split("-")[1] == trace_id


async def test_retry_event_and_counter(
    tmp_path: Path, echo_simulator: Echo, telemetry: Telemetry
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url, telemetry)
    set_faults(server, script=["503"])

    await runtime.deliver([record()])

    (event,) = telemetry.events("retry_attempt")
    assert dict(event.attributes or {})["attempt"] == 1
    assert telemetry.total("impact_in_retries_total") == 1
    assert telemetry.total("impact_in_attempts_total", outcome="retryable") == 1
    assert telemetry.total("impact_in_attempts_total", outcome="success") == 1


async def test_429_is_a_rate_limit_hit(
    tmp_path: Path, echo_simulator: Echo, telemetry: Telemetry
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url, telemetry)
    set_faults(server, script=["429"], retry_after="2")

    await runtime.deliver([record()])

    (event,) = telemetry.events("rate_limit_hit")
    assert dict(event.attributes or {})["detected_by"] == "platform"
    assert telemetry.total("impact_in_rate_limit_hits_total", platform="echo") == 1


async def test_circuit_opened_event_and_gauge(
    tmp_path: Path, echo_simulator: Echo, telemetry: Telemetry
) -> None:
    server, _ = echo_simulator
    breaker = {"threshold": 2, "reset_timeout": 600}
    runtime = make_runtime(tmp_path, server.url, telemetry, breaker=breaker)
    set_faults(server, error_rate=1.0, error_status=503)

    await runtime.deliver([record()])

    (event,) = telemetry.events("circuit_opened")
    (state,) = telemetry.points()["impact_in_circuit_breaker_state"]
    assert dict(event.attributes or {}) == {"tenant_id": "acme", "platform": "echo"}
    assert state.value == BREAKER_STATE_VALUES["opened"]
    assert dict(state.attributes) == {"tenant": "acme", "platform": "echo"}


async def test_duplicate_counted_and_keys_gauged(
    tmp_path: Path, echo_simulator: Echo, telemetry: Telemetry
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url, telemetry)
    await runtime.deliver([record("a-1"), record("a-2")])

    await runtime.deliver([record("a-1")])

    (keys,) = telemetry.points()["impact_in_idempotency_keys"]
    hits = telemetry.total("impact_in_idempotency_hits_total", detected_by="store")
    assert hits == 1
    assert keys.value == 2


async def test_leak_counted_as_pii_blocked(
    tmp_path: Path, echo_simulator: Echo, telemetry: Telemetry
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url, telemetry)

    await runtime.deliver([record(source_id="212-555-0147")])

    assert telemetry.total("impact_in_pii_blocked_total", platform="echo") == 1
    assert telemetry.total("impact_in_deliveries_total", status="blocked") == 1


async def test_span_attributes_carry_no_personal_data(
    tmp_path: Path, echo_simulator: Echo, telemetry: Telemetry
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url, telemetry)
    set_faults(server, script=["503", "429"], retry_after="1")

    await runtime.deliver([record()])

    personal = ("E-004217", "maria.lopez", "Maria Lopez")
    spans = telemetry.spans.get_finished_spans()
    texts = [str(value) for span in spans for value in (span.attributes or {}).values()]
    texts += [
        str(value)
        for span in spans
        for event in span.events
        for value in (event.attributes or {}).values()
    ]
    assert spans
    for text in texts:
        for value in personal:
            assert value not in text


# -- without the SDK --------------------------------------------------------------

NO_SDK_SCRIPT = """
import asyncio, sys, datetime as dt
from pathlib import Path
from importlib.abc import MetaPathFinder

class BlockSdk(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, BlockSdk())
TESTS, FOLDER = sys.argv[1], sys.argv[2]
sys.path.insert(0, TESTS)

from echo_connector import EchoPlugin, create_simulator
from opentelemetry import metrics, trace
from impactin_core import ImpactRecord, RecordKind
from impactin_core._config import EnvSecrets, parse_config
from impactin_core._crypto import generate_key
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core.sandbox import SandboxServer

simulator = create_simulator()
with SandboxServer(simulator.app) as server:
    environ = {
        "STORE_KEY": generate_key(), "ACME_KEY": "k", "ECHO_KEY": "echo-sandbox-key"
    }
    data = {
        "store": {"path": "state.db", "key_env": "STORE_KEY"},
        "tenants": {"acme": {"key_env": "ACME_KEY", "platforms": {"echo": {
            "base_url": server.url, "credentials": {"api_key": "ECHO_KEY"}}}}},
    }
    host = PluginHost()
    host.register(EchoPlugin(), name="echo")
    host.finish()
    config = parse_config(data, base_dir=Path(FOLDER))
    runtime = Runtime(config, plugins=host, secrets=EnvSecrets(environ))
    record = ImpactRecord(source_id="a-1", tenant="acme", kind=RecordKind.DONATION,
                          activity_date=dt.date(2026, 3, 1), amount_minor=100,
                          currency="USD", employee_id="E-1")
    report = asyncio.run(runtime.deliver([record]))
    row = runtime.store.list_deliveries()[0]
    headers = simulator.journal.entries[0]["headers"]
    runtime.close()

print("delivered", report.platforms["echo"].delivered)
print("trace_id", row["trace_id"])
print("traceparent", "traceparent" in headers)
print("tracer_provider", type(trace.get_tracer_provider()).__name__)
print("meter_provider", type(metrics.get_meter_provider()).__name__)
sdk = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))
print("sdk_modules", sdk)
"""


def test_without_sdk_everything_is_noop(tmp_path: Path) -> None:
    script = textwrap.dedent(NO_SDK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}

    result = subprocess.run(
        [sys.executable, "-c", script, str(TESTS), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["delivered"] == "1"
    assert lines["trace_id"] == "None"
    assert lines["traceparent"] == "False"
    assert lines["tracer_provider"] == "ProxyTracerProvider"
    assert lines["meter_provider"] == "_ProxyMeterProvider"
    assert lines["sdk_modules"] == "[]"


# -- tracing setup ----------------------------------------------------------------


def test_otlp_without_exporter_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the OTLP exporter is installed, so no error is raised")
    from impactin_core._tracing_setup import console_tracing

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")

    with pytest.raises(click.ClickException, match="opentelemetry-exporter-otlp"):
        console_tracing()


# -- raw request parsing for 'impactin webhooks verify' -----------------------------


def test_parse_raw_request_crlf() -> None:
    data = b"POST /hook HTTP/1.1\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n{}\n"

    line, headers, body = parse_raw_request(data)

    assert line == "POST /hook HTTP/1.1"
    assert headers == [("X-A", "1"), ("Content-Length", "2")]
    assert body == b"{}"


def test_parse_raw_request_lf_keeps_body() -> None:
    _, _, body = parse_raw_request(b"POST /hook HTTP/1.1\nX-A: 1\n\n{}\r\n")

    assert body == b"{}\r\n"


CHUNKED_HEAD = b"POST /hook HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param(b"2\r\n{}\r\n0\r\n\r\n", b"{}", id="one-chunk"),
        pytest.param(
            b'5\r\n{"a":\r\nA;name=value\r\n"0123456"}\r\n0\r\n\r\n',
            b'{"a":"0123456"}',
            id="two-chunks-extension",
        ),
        pytest.param(b"3\r\n\r\n\n\r\n0\r\n\r\n", b"\r\n\n", id="line-breaks-in-data"),
        pytest.param(b"2\n{}\n0\n\n", b"{}", id="lf-lines"),
        pytest.param(b"2\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n", b"{}", id="trailer"),
        pytest.param(b"0\r\n\r\n", b"", id="empty"),
        pytest.param(b"2\r\n{}\r\n0\r\n", b"{}", id="no-blank-line-at-end"),
        pytest.param(b"2\r\n{}\r\n0\r\n\r\n\r\n", b"{}", id="editor-newline"),
    ],
)
def test_parse_raw_request_chunked(chunks: bytes, expected: bytes) -> None:
    _, _, body = parse_raw_request(CHUNKED_HEAD + chunks)

    assert body == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
            id="chunked-and-length",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "only 'chunked'",
            id="gzip",
        ),
        pytest.param(
            CHUNKED_HEAD + b"zz\r\n{}\r\n0\r\n\r\n", "size line", id="bad-size"
        ),
        pytest.param(
            CHUNKED_HEAD + b"20\r\n{}\r\n0\r\n\r\n",
            "Chunk 1 is 32 bytes",
            id="past-end",
        ),
        pytest.param(
            CHUNKED_HEAD + b"1\r\n{}\r\n0\r\n\r\n", "line break", id="size-too-small"
        ),
        pytest.param(CHUNKED_HEAD + b"2\r\n{}\r\n", "chunk 2", id="no-last-chunk"),
        pytest.param(
            CHUNKED_HEAD + b"2\r\n{}\r\n0\r\n\r\nPOST / HTTP/1.1\r\n",
            "more bytes after the last chunk",
            id="second-request",
        ),
        pytest.param(
            CHUNKED_HEAD + b"2\r\n{}\r\n0\r\nnot a field\r\n\r\n",
            "Line 1 after the last chunk",
            id="bad-trailer",
        ),
        pytest.param(
            CHUNKED_HEAD + b"2\r\n{}\r\n0\r\nGET http://127.0.0.1/x HTTP/1.1\r\n"
            b"Host: y\r\n\r\n",
            "Line 1 after the last chunk",
            id="request-after-last-chunk",
        ),
        pytest.param(
            CHUNKED_HEAD + b"2\r\n{}\r\n0\r\n\r\n \t",
            "2 more bytes after the last chunk",
            id="spaces-after-last-chunk",
        ),
    ],
)
def test_parse_raw_request_chunked_rejects(data: bytes, message: str) -> None:
    with pytest.raises(RawRequestError, match=message):
        parse_raw_request(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"POST /hook HTTP/1.1\r\nX-A: 1\r\n", id="no-blank-line"),
        pytest.param(b"garbage\r\n\r\n{}", id="no-request-line"),
        pytest.param(b"POST / HTTP/1.1\r\nno colon\r\n\r\n", id="bad-header"),
        pytest.param(b"POST / HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n", id="non-ascii"),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n{}", id="short-body"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n{}", id="bad-length"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}{}\n", id="long-body"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}  ", id="spaces-after"
        ),
        pytest.param(b"POST / HTTP/1.1\r\nBad Name: v\r\n\r\n{}", id="space-in-name"),
    ],
)
def test_parse_raw_request_rejects(data: bytes) -> None:
    with pytest.raises(RawRequestError):
        parse_raw_request(data)
