"""The audit log: queries, pages, CSV export, SLA status, retention and the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from echo_connector import EchoPlugin

from impactin_core import ImpactRecord, RecordKind
from impactin_core._audit import (
    AuditLog,
    DeliveryQuery,
    SlaTargets,
    Targets,
    parse_duration,
    parse_time,
    sla_status,
)
from impactin_core._cli import main
from impactin_core._config import EnvSecrets, parse_config
from impactin_core._crypto import generate_key
from impactin_core._errors import ConfigError
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core.sandbox import SandboxServer, Simulator

Echo = tuple[SandboxServer, Simulator]
START = 1_800_000_000.0
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def environment() -> dict[str, str]:
    return {
        "STORE_KEY": generate_key(),
        "ACME_KEY": "acme-secret-key",
        "ECHO_KEY": "echo-sandbox-key",
    }


def config_data(url: str) -> dict[str, Any]:
    platform = {
        "base_url": url,
        "credentials": {"api_key": "ECHO_KEY"},
        "retry": {"base_delay": 0.5, "max_attempts": 3},
    }
    return {
        "store": {"path": "state.db", "key_env": "STORE_KEY"},
        "tenants": {"acme": {"key_env": "ACME_KEY", "platforms": {"echo": platform}}},
    }


def make_runtime(
    tmp_path: Path, url: str, environ: dict[str, str], clock: Clock
) -> Runtime:
    host = PluginHost()
    host.register(EchoPlugin(), name="echo")
    host.finish()
    return Runtime(
        parse_config(config_data(url), base_dir=tmp_path),
        plugins=host,
        secrets=EnvSecrets(environ),
        clock=clock.time,
        sleep=clock.sleep,
    )


def record(source_id: str, **changes: Any) -> ImpactRecord:
    values: dict[str, Any] = {
        "source_id": source_id,
        "tenant": "acme",
        "kind": RecordKind.DONATION,
        "activity_date": dt.date(2026, 3, 1),
        "employee_id": "E-004217",
        "employee_email": "maria.lopez@example.org",
        "employee_phone": "+44 7700 900123",
        "amount_minor": 2500,
        "currency": "USD",
        "description": "Gift; call me on 07700 900 123",
    }
    values.update(changes)
    return ImpactRecord(**values)


@pytest.fixture
def audited(tmp_path: Path, echo_simulator: Echo) -> dict[str, Any]:
    """Deliver five records on two days, the last one after three 503 answers."""
    server, simulator = echo_simulator
    environ = environment()
    clock = Clock()
    runtime = make_runtime(tmp_path, server.url, environ, clock)
    import asyncio

    asyncio.run(runtime.deliver([record("a-1"), record("a-2")]))
    clock.now += DAY
    asyncio.run(runtime.deliver([record("b-1"), record("b-2")]))
    clock.now += DAY
    simulator.journal.entries.clear()
    import httpx

    httpx.put(
        f"{server.url}/_sandbox/faults", json={"script": ["503", "503", "503"]}
    ).raise_for_status()
    asyncio.run(runtime.deliver([record("c-1")]))
    return {
        "runtime": runtime,
        "clock": clock,
        "environ": environ,
        "url": server.url,
        "tmp_path": tmp_path,
    }


def test_entry_has_audit_fields(audited: dict[str, Any]) -> None:
    runtime = audited["runtime"]
    row = runtime.audit.page(DeliveryQuery(source_id="a-1"))[0]

    entry = runtime.audit.entry(row["id"])

    assert entry["correlation_id"]
    assert len(entry["evidence_hash"]) == 64
    assert entry["idempotency_key"].startswith("ik_")
    assert entry["source_id"] == "a-1"
    assert entry["redacted_count"] >= 3
    assert entry["attempts_detail"][0]["outcome"] == "success"


def test_dead_letter_records_each_attempt(audited: dict[str, Any]) -> None:
    runtime = audited["runtime"]
    row = runtime.audit.page(DeliveryQuery(source_id="c-1"))[0]

    entry = runtime.audit.entry(row["id"])
    outcomes = [attempt["outcome"] for attempt in entry["attempts_detail"]]

    assert entry["status"] == "dead_lettered"
    assert outcomes == ["retryable", "retryable", "retryable"]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param("correlation_id", 1, id="correlation-id"),
        pytest.param("evidence_hash", 1, id="evidence-hash"),
        pytest.param("idempotency_key", 1, id="idempotency-key"),
        pytest.param("tenant", 5, id="tenant"),
        pytest.param("platform", 5, id="platform"),
        pytest.param("status", 4, id="status"),
    ],
)
def test_query_by_field(audited: dict[str, Any], field: str, expected: int) -> None:
    audit: AuditLog = audited["runtime"].audit
    value = audit.page(DeliveryQuery(source_id="a-1"))[0][field]

    assert audit.count(DeliveryQuery(**{field: value})) == expected


def test_query_by_date_range(audited: dict[str, Any]) -> None:
    audit: AuditLog = audited["runtime"].audit
    query = DeliveryQuery(since=START + DAY, until=START + 2 * DAY)

    rows = audit.page(query)

    assert sorted(row["source_id"] for row in rows) == ["b-1", "b-2"]


def test_query_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="status 'done' is unknown"):
        DeliveryQuery(status="done")


def test_pages_cover_every_row_once(audited: dict[str, Any]) -> None:
    audit: AuditLog = audited["runtime"].audit

    pages = [audit.page(page=number, size=2) for number in (1, 2, 3, 4)]
    ids = [row["id"] for page in pages for row in page]

    assert [len(page) for page in pages] == [2, 2, 1, 0]
    assert len(set(ids)) == 5


def test_iter_batches_match_one_query(audited: dict[str, Any]) -> None:
    audit: AuditLog = audited["runtime"].audit

    batched = [row["id"] for row in audit.iter(batch=2)]

    assert batched == [row["id"] for row in audit.page(size=100)]


def test_csv_export_has_attempt_outcomes(audited: dict[str, Any]) -> None:
    audit: AuditLog = audited["runtime"].audit
    output = io.StringIO()

    count = audit.write_csv(DeliveryQuery(status="dead_lettered"), output)
    rows = list(csv.DictReader(io.StringIO(output.getvalue())))

    assert count == 1
    assert rows[0]["source_id"] == "c-1"
    assert (
        rows[0]["attempt_outcomes"] == "1:retryable:503;2:retryable:503;3:retryable:503"
    )


def test_export_holds_no_personal_value(audited: dict[str, Any]) -> None:
    output = io.StringIO()

    audited["runtime"].audit.write_csv(DeliveryQuery(), output)
    text = output.getvalue()

    assert "E-004217" not in text
    assert "maria.lopez" not in text
    assert "7700" not in text


def test_sla_counts_per_platform(audited: dict[str, Any]) -> None:
    report = audited["runtime"].audit.sla()[0]

    assert (report.tenant, report.platform) == ("acme", "echo")
    assert report.delivered == 4
    assert report.dead_lettered == 1
    assert report.success_rate == pytest.approx(0.8)
    assert report.max_retries == 2
    assert report.status == "breach"


def test_sla_window_excludes_old_rows(audited: dict[str, Any]) -> None:
    audit: AuditLog = audited["runtime"].audit

    report = audit.sla(since=START, until=START + 2 * DAY)[0]

    assert report.delivered == 4
    assert report.status == "healthy"


@pytest.mark.parametrize(
    ("rate", "p95", "status"),
    [
        pytest.param(1.0, 10.0, "healthy", id="healthy"),
        pytest.param(0.985, 10.0, "warning", id="rate-warning"),
        pytest.param(0.97, 10.0, "breach", id="rate-breach"),
        pytest.param(1.0, 250.0, "warning", id="p95-warning"),
        pytest.param(1.0, 301.0, "breach", id="p95-breach"),
        pytest.param(0.98, 300.0, "warning", id="at-targets"),
        pytest.param(None, None, "no_data", id="no-data"),
    ],
)
def test_sla_status(rate: float | None, p95: float | None, status: str) -> None:
    assert sla_status(rate, p95, Targets())[0] == status


def test_sla_targets_from_config() -> None:
    table = {"success_rate": 0.95, "platforms": {"workday": {"p95_latency_s": 900}}}

    targets = SlaTargets.from_config(table)

    assert targets.for_platform("benevity").success_rate == 0.95
    assert targets.for_platform("workday").p95_latency_s == 900
    assert targets.for_platform("workday").success_rate == 0.95
    assert targets.for_platform("workday").warning_p95_latency_s == 720
    assert targets.for_platform("benevity").warning_success_rate == 0.96


@pytest.mark.parametrize(
    ("table", "key"),
    [
        pytest.param({"success_rate": 98}, "sla.success_rate", id="rate-above-1"),
        pytest.param({"p95_latency_s": "5m"}, "sla.p95_latency_s", id="text"),
        pytest.param({"target": 1}, "sla.target", id="unknown"),
        pytest.param({"window": "soon"}, "sla.window", id="window"),
        pytest.param(
            {"p95_latency_s": float("nan")}, "sla.p95_latency_s", id="latency-nan"
        ),
        pytest.param(
            {"warning_p95_latency_s": float("inf")},
            "sla.warning_p95_latency_s",
            id="warning-latency-inf",
        ),
        pytest.param(
            {"platforms": {"goodera": {"p95_latency_s": float("inf")}}},
            "sla.platforms.goodera.p95_latency_s",
            id="platform-latency-inf",
        ),
        pytest.param(
            {"platforms": {"goodera": {"p99": 1}}},
            "sla.platforms.goodera.p99",
            id="platform-unknown",
        ),
    ],
)
def test_sla_targets_reject(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SlaTargets.from_config(table)

    assert caught.value.key == key


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param(
            {"target": 1},
            "sla.target is not a known setting; use one of p95_latency_s, "
            "platforms, success_rate, warning_p95_latency_s, "
            "warning_success_rate, window.",
            id="unknown",
        ),
        pytest.param(
            {"p95_latency_s": True},
            "sla.p95_latency_s is true; set it to a number.",
            id="bool",
        ),
    ],
)
def test_sla_error_reads_as_toml(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SlaTargets.from_config(table)

    assert str(caught.value) == message


def test_config_keeps_sla_table(tmp_path: Path) -> None:
    data = {**config_data("http://127.0.0.1:9"), "sla": {"success_rate": 0.9}}

    config = parse_config(data, base_dir=tmp_path)

    assert config.sla == {"success_rate": 0.9}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("90d", 90 * DAY, id="days"),
        pytest.param("12h", 12 * 3600.0, id="hours"),
        pytest.param("2w", 14 * DAY, id="weeks"),
        pytest.param("30min", 1800.0, id="minutes"),
        pytest.param("45s", 45.0, id="seconds"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("ninety days", id="words"),
        pytest.param("90", id="no-unit"),
        pytest.param("1m", id="ambiguous-m"),
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_time_reads_iso_and_durations() -> None:
    assert parse_time("2027-01-15T08:00:00") == START
    assert parse_time("1d", now=START) == START - DAY


def test_purge_keeps_recent_rows(audited: dict[str, Any]) -> None:
    runtime = audited["runtime"]
    clock = audited["clock"]
    clock.now = START + 90 * DAY + DAY / 2

    removed = runtime.audit.purge(90 * DAY)

    assert removed["deliveries_and_quarantine"] == 2
    assert runtime.audit.count() == 3


def test_purge_rejects_zero(audited: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="above 0"):
        audited["runtime"].audit.purge(0)


# -- command line -------------------------------------------------------------


def write_config(audited: dict[str, Any]) -> Path:
    path = audited["tmp_path"] / "impactin.toml"
    path.write_text(
        "[store]\n"
        'path = "state.db"\n'
        'key_env = "STORE_KEY"\n'
        "[sla]\n"
        "success_rate = 0.5\n"
        "[tenants.acme]\n"
        'key_env = "ACME_KEY"\n'
        "[tenants.acme.platforms.echo]\n"
        f'base_url = "{audited["url"]}"\n',
        encoding="utf-8",
    )
    audited["runtime"].close()
    return path


def invoke(audited: dict[str, Any], *args: str) -> Any:
    config = write_config(audited)
    runner = CliRunner()
    return runner.invoke(main, ["--config", str(config), *args], env=audited["environ"])


def test_cli_list_filters_and_pages(audited: dict[str, Any]) -> None:
    result = invoke(
        audited, "deliveries", "list", "--status", "delivered", "--limit", "3", "--json"
    )
    rows = [json.loads(line) for line in result.output.splitlines()]

    assert result.exit_code == 0, result.output
    assert len(rows) == 3
    assert {row["status"] for row in rows} == {"delivered"}


def test_cli_list_reports_page_count(audited: dict[str, Any]) -> None:
    result = invoke(audited, "deliveries", "list", "--limit", "2", "--page", "3")

    assert result.exit_code == 0, result.output
    assert "Page 3 of 3, 5 deliveries match." in result.output


def test_cli_list_page_past_the_end(audited: dict[str, Any]) -> None:
    result = invoke(audited, "deliveries", "list", "--limit", "2", "--page", "9")

    assert result.exit_code == 1
    assert "Page 9 is past the last page, 3: 5 deliveries match" in result.output


def test_cli_list_rejects_bad_date(audited: dict[str, Any]) -> None:
    result = invoke(audited, "deliveries", "list", "--since", "yesterday")

    assert result.exit_code == 2
    assert "neither an ISO 8601 date" in result.output


def test_cli_export_streams_csv(audited: dict[str, Any]) -> None:
    result = invoke(audited, "deliveries", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.output)))

    assert result.exit_code == 0, result.output
    assert len(rows) == 5
    assert "attempt_outcomes" in rows[0]


def test_cli_export_evidence_filter(audited: dict[str, Any]) -> None:
    evidence = audited["runtime"].audit.page(DeliveryQuery(source_id="b-2"))[0][
        "evidence_hash"
    ]

    result = invoke(audited, "deliveries", "export", "--evidence-hash", evidence)
    rows = list(csv.DictReader(io.StringIO(result.output)))

    assert [row["source_id"] for row in rows] == ["b-2"]


def test_cli_sla_uses_config_targets(audited: dict[str, Any]) -> None:
    result = invoke(audited, "sla", "--since", "2020-01-01", "--json")
    reports = json.loads(result.output)

    assert result.exit_code == 0, result.output
    assert reports[0]["status"] == "healthy"
    assert reports[0]["success_rate"] == pytest.approx(0.8)


def test_cli_sla_check_fails_on_breach(audited: dict[str, Any]) -> None:
    config = write_config(audited)
    text = config.read_text(encoding="utf-8").replace("0.5", "0.9")
    config.write_text(text, encoding="utf-8")

    result = CliRunner().invoke(
        main,
        ["--config", str(config), "sla", "--since", "2020-01-01", "--check"],
        env=audited["environ"],
    )

    assert result.exit_code == 1
    assert "breach" in result.output


def test_cli_purge_older_than(audited: dict[str, Any]) -> None:
    result = invoke(audited, "purge", "--older-than", "90d")

    assert result.exit_code == 0, result.output
    assert "Deleted 0 deliveries" in result.output


def test_cli_purge_rejects_bad_duration(audited: dict[str, Any]) -> None:
    result = invoke(audited, "purge", "--older-than", "ninety")

    assert result.exit_code == 2
    assert "not a duration" in result.output


def test_evidence_hash_matches_sent_bytes(
    audited: dict[str, Any], echo_simulator: Echo
) -> None:
    _, simulator = echo_simulator
    sent = simulator.journal.entries
    runtime = audited["runtime"]
    delivered = runtime.audit.page(DeliveryQuery(status="delivered"), size=10)
    hashes = {row["evidence_hash"] for row in delivered}

    # The journal was cleared before the failing delivery; check what remains.
    for entry in sent:
        digest = hashlib.sha256(entry["raw"].encode("utf-8")).hexdigest()
        assert digest in hashes
