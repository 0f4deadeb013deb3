"""The delivery pipeline against the echo simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from echo_connector import INFO as ECHO_INFO
from echo_connector import EchoPlugin

from impactin_core import (
    ConfigError,
    ImpactRecord,
    PermanentError,
    RateLimited,
    RecordInvalid,
    RecordKind,
    SendOutcome,
    StoreError,
    hookimpl,
)
from impactin_core._config import EnvSecrets, parse_config
from impactin_core._crypto import generate_key
from impactin_core._errors import MAX_RETRY_AFTER
from impactin_core._input import read_records
from impactin_core._logging import scrub_known
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core._stats import RunReport
from impactin_core.sandbox import SandboxServer, Simulator

Echo = tuple[SandboxServer, Simulator]


class FakeTime:
    """A clock that only moves when the runtime sleeps."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_runtime(
    tmp_path: Path,
    url: str,
    *,
    retry: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
    clock: FakeTime | None = None,
    options: dict[str, Any] | None = None,
    concurrency: int | None = None,
    rate_limit: dict[str, Any] | None = None,
    redaction: dict[str, Any] | None = None,
    mirror: bool = False,
    hook_timeout: float | None = None,
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
                        "retry": retry or {"base_delay": 0.5, "max_attempts": 5},
                        "breaker": breaker or {"threshold": 50},
                        "options": options or {},
                        "redaction": redaction or {},
                    }
                },
            }
        },
    }
    if concurrency is not None:
        data["runtime"] = {"concurrency": concurrency}
    if hook_timeout is not None:
        data.setdefault("runtime", {})["hook_timeout"] = hook_timeout
    if rate_limit is not None:
        data["tenants"]["acme"]["platforms"]["echo"]["rate_limit"] = rate_limit
    platforms = data["tenants"]["acme"]["platforms"]
    if mirror:
        platforms["mirror"] = {**platforms["echo"], "redaction": {}}
    config = parse_config(data, base_dir=tmp_path)
    host = PluginHost()
    host.register(EchoPlugin(), name="echo")
    if mirror:
        host.register(MirrorPlugin(), name="mirror")
    host.finish()
    clock = clock or FakeTime()
    return Runtime(
        config,
        plugins=host,
        secrets=EnvSecrets(environ),
        clock=clock.time,
        sleep=clock.sleep,
    )


class MirrorPlugin:
    """A second platform, "mirror", that sends like echo and rejects 2500."""

    echo = EchoPlugin()

    @hookimpl
    def impactin_register_platforms(self, register: Any) -> None:
        register(attrs.evolve(ECHO_INFO, id="mirror", name="Mirror", simulator=None))

    # pluggy passes a hook only the arguments its signature names.
    @hookimpl
    def impactin_map(
        self, platform: Any, records: Any, settings: Any, idempotency_keys: Any
    ) -> Any:
        if platform.id != "mirror":
            return None
        requests = self.echo.impactin_map(
            platform=ECHO_INFO,
            records=records,
            settings=settings,
            idempotency_keys=idempotency_keys,
        )
        return [attrs.evolve(request, platform="mirror") for request in requests]

    @hookimpl
    def impactin_authenticate(self, platform: Any, settings: Any, context: Any) -> Any:
        if platform.id != "mirror":
            return None
        return self.echo.impactin_authenticate(
            platform=ECHO_INFO, settings=settings, context=context
        )

    @hookimpl
    def impactin_send(
        self, platform: Any, request: Any, credentials: Any, context: Any
    ) -> Any:
        if platform.id != "mirror":
            return None
        if request.payload["amount"] == 2500:

            async def reject() -> None:
                raise PermanentError("Mirror rejects 2500", platform="mirror")

            return reject()
        return self.echo.impactin_send(
            platform=ECHO_INFO,
            request=request,
            credentials=credentials,
            context=context,
        )


def record(source_id: str = "a-1", **changes: Any) -> ImpactRecord:
    values: dict[str, Any] = {
        "source_id": source_id,
        "tenant": "acme",
        "kind": RecordKind.DONATION,
        "activity_date": dt.date(2026, 3, 1),
        "employee_id": "E-004217",
        "employee_email": "maria.lopez@example.org",
        "employee_name": "Maria Lopez",
        "amount_minor": 2500,
        "currency": "USD",
        "description": "Gift for the food bank",
    }
    values.update(changes)
    return ImpactRecord(**values)


def set_faults(server: SandboxServer, **plan: Any) -> None:
    response = httpx.put(f"{server.url}/_sandbox/faults", json=plan)
    assert response.status_code == 200, response.text


async def test_deliver_one_record(tmp_path: Path, echo_simulator: Echo) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)

    report = await runtime.deliver([record()])

    assert report.platforms["echo"].delivered == 1
    assert len(simulator.journal.entries) == 1
    row = runtime.store.list_deliveries()[0]
    assert row["status"] == "delivered"
    assert row["response_id"] == "echo-1"


async def test_deliver_sends_kept_records_without_reading_them_back(
    tmp_path: Path, echo_simulator: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records past the kept limit, and pending ones of earlier runs, are read."""
    from impactin_core import _pipeline

    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=1)
    runtime.submit(
        [record("old-1")], run_id="earlier", report=RunReport(run_id="earlier")
    )
    monkeypatch.setattr(_pipeline, "KEPT_RECORDS", 2)
    read: list[str] = []
    load_record = runtime.store.load_record

    def counting_load(delivery_id: str) -> dict[str, Any]:
        read.append(delivery_id)
        return load_record(delivery_id)

    monkeypatch.setattr(runtime.store, "load_record", counting_load)

    report = await runtime.deliver([record(f"a-{n}") for n in range(4)])

    assert report.platforms["echo"].delivered == 5
    sent = sorted(entry["body"]["source"] for entry in simulator.journal.entries)
    assert sent == ["a-0", "a-1", "a-2", "a-3", "old-1"]
    by_id = {row["id"]: row["source_id"] for row in runtime.store.list_deliveries()}
    assert sorted(by_id[delivery_id] for delivery_id in read) == ["a-2", "a-3", "old-1"]


async def test_kept_record_ignores_later_metadata_changes(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """What is sent matches what was stored, even if the caller's dict changes."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=1)
    shared: dict[str, Any] = {}
    records = [record(f"m-{n}", metadata={"n": n}) for n in range(6)]
    records.append(record("m-empty", metadata=shared))

    def change_metadata() -> None:
        for item in records:
            item.metadata["n"] = 99  # type: ignore[index]

    await runtime.deliver(records, on_done=change_metadata)

    sent = {
        entry["body"]["source"]: entry["body"]["metadata"]
        for entry in simulator.journal.entries
    }
    assert sent == {**{f"m-{n}": {"n": n} for n in range(6)}, "m-empty": {}}


async def test_deliver_keeps_records_within_json_budget(
    tmp_path: Path, echo_simulator: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large record is read back instead of kept, so memory stays bounded."""
    from impactin_core import _pipeline

    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=1)
    monkeypatch.setattr(_pipeline, "KEPT_JSON_BYTES", 5000)
    read: list[str] = []
    load_record = runtime.store.load_record

    def counting_load(delivery_id: str) -> dict[str, Any]:
        read.append(delivery_id)
        return load_record(delivery_id)

    monkeypatch.setattr(runtime.store, "load_record", counting_load)
    large = record("big-1", description="Food bank shift. " * 400)

    report = await runtime.deliver([record("small-1"), large, record("small-2")])

    assert report.platforms["echo"].delivered == 3
    assert len(simulator.journal.entries) == 3
    by_id = {row["id"]: row["source_id"] for row in runtime.store.list_deliveries()}
    assert [by_id[delivery_id] for delivery_id in read] == ["big-1"]


async def test_allow_beyond_connector_stops_run(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(
        tmp_path, server.url, redaction={"allow": ["employee_phone"]}
    )

    with pytest.raises(ConfigError) as caught:
        await runtime.deliver([record()])

    assert caught.value.key == "tenants.acme.platforms.echo.redaction.allow"
    assert "lists employee_phone" in str(caught.value)
    assert simulator.journal.entries == []


async def test_evidence_hash_is_sha256_of_sent_bytes(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)

    await runtime.deliver([record()])

    sent = simulator.journal.entries[0]["raw"].encode("utf-8")
    row = runtime.store.list_deliveries()[0]
    assert row["evidence_hash"] == hashlib.sha256(sent).hexdigest()


async def test_second_run_skips_duplicates(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    await runtime.deliver([record("a-1"), record("a-2")])

    report = await runtime.deliver([record("a-2"), record("a-1")])

    assert report.platforms["echo"].duplicates == 2
    assert report.platforms["echo"].delivered == 0
    assert len(simulator.journal.entries) == 2


async def test_changed_content_is_a_conflict(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    await runtime.deliver([record("a-1")])

    report = await runtime.deliver([record("a-1", amount_minor=9900)])

    assert report.platforms["echo"].quarantined == 1
    reasons = [row["reason"] for row in runtime.store.quarantined()]
    assert "different content" in reasons[0]


@pytest.mark.parametrize(
    ("changes", "duplicates", "quarantined"),
    [
        pytest.param({}, 1, 0, id="case-only"),
        pytest.param({"amount_minor": 99}, 0, 1, id="case-and-amount"),
    ],
)
async def test_email_in_other_case_is_a_duplicate(
    tmp_path: Path,
    echo_simulator: Echo,
    changes: dict[str, Any],
    duplicates: int,
    quarantined: int,
) -> None:
    """An export that changes only the email's letter case sends nothing."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    await runtime.deliver([record("a-1")])

    report = await runtime.deliver(
        [record("a-1", employee_email="Maria.Lopez@Example.org", **changes)]
    )

    assert report.platforms["echo"].duplicates == duplicates
    assert report.platforms["echo"].quarantined == quarantined
    assert len(runtime.store.quarantined()) == quarantined
    assert len(simulator.journal.entries) == 1


async def test_conflict_from_a_file_keeps_its_line(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)

    def write(name: str, amounts: dict[str, int]) -> Path:
        rows = [
            {
                "source_id": source_id,
                "tenant": "acme",
                "kind": "donation",
                "activity_date": "2026-03-01",
                "employee_id": "E-004217",
                "amount_minor": amount,
                "currency": "USD",
            }
            for source_id, amount in amounts.items()
        ]
        path = tmp_path / name
        text = "".join(json.dumps(row) + "\n" for row in rows)
        path.write_text(text, encoding="utf-8")
        return path

    first = write("first.jsonl", {"a-1": 2500, "a-2": 2500})
    await runtime.deliver(read_records(first, tenant="acme"))
    again = write("again.jsonl", {"a-2": 2500, "a-1": 9900})

    report = await runtime.deliver(read_records(again, tenant="acme"))

    (entry,) = runtime.store.quarantined()
    assert report.platforms["echo"].quarantined == 1
    assert (entry["source_id"], entry["line"]) == ("a-1", 2)
    assert "different content" in entry["reason"]


async def test_two_activities_same_day_get_two_keys(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)

    first = runtime.idempotency_key(record("a-1"), "echo")
    second = runtime.idempotency_key(record("a-2"), "echo")

    assert first != second


async def test_retries_503_then_delivers(tmp_path: Path, echo_simulator: Echo) -> None:
    server, _ = echo_simulator
    clock = FakeTime()
    runtime = make_runtime(tmp_path, server.url, clock=clock)
    set_faults(server, script=["503", "503"])

    report = await runtime.deliver([record()])

    assert report.platforms["echo"].delivered == 1
    assert report.platforms["echo"].retried == 2
    assert len(clock.sleeps) == 2
    assert len(runtime.store.attempts(runtime.store.list_deliveries()[0]["id"])) == 3


async def test_retry_after_is_honoured(tmp_path: Path, echo_simulator: Echo) -> None:
    server, _ = echo_simulator
    clock = FakeTime()
    runtime = make_runtime(tmp_path, server.url, clock=clock)
    set_faults(server, script=["429"], retry_after="7")

    await runtime.deliver([record()])

    assert 7.0 in clock.sleeps


async def test_always_429_ends_at_deadline(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    clock = FakeTime()
    retry = {"max_attempts": 1000, "base_delay": 1, "max_delay": 8, "deadline": 60}
    runtime = make_runtime(tmp_path, server.url, clock=clock, retry=retry)
    set_faults(server, throttle_rate=1.0, retry_after="5")

    report = await runtime.deliver([record()])

    row = runtime.store.list_deliveries()[0]
    assert report.platforms["echo"].dead_lettered == 1
    assert row["status"] == "dead_lettered"
    assert "deadline of 60 s" in row["error"]
    assert sum(clock.sleeps) <= 60


async def test_retry_after_beyond_deadline_defers(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    clock = FakeTime()
    runtime = make_runtime(tmp_path, server.url, clock=clock, retry={"deadline": 60})
    set_faults(server, script=["429"], retry_after="86400")

    report = await runtime.deliver([record()])

    row = runtime.store.list_deliveries()[0]
    assert report.platforms["echo"].deferred == 1
    assert row["status"] == "pending"
    assert row["next_attempt_at"] >= clock.now + 86_000
    assert clock.sleeps == []


async def test_permanent_error_is_not_retried(
    tmp_path: Path, echo_simulator: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    set_faults(server, script=["400"])

    report = await runtime.deliver([record("a-2")])

    row = runtime.store.list_deliveries(filters={"source_id": "a-2"})[0]
    assert report.platforms["echo"].dead_lettered == 1
    assert row["attempts"] == 1
    assert row["error_kind"] == "permanent"
    # The log line gives the stored reason, not only its kind.
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.endswith(f"after 1 attempt(s) (permanent): {row['error']}")


async def test_resubmitted_failure_counted_not_sent(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A record whose delivery failed earlier waits for a replay instead."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    set_faults(server, script=["400"])
    await runtime.deliver([record("a-2")])

    report = await runtime.deliver([record("a-2")])

    stats = report.platforms["echo"]
    assert stats.failed_earlier == 1
    assert stats.queued == 0
    assert stats.delivered == 0
    assert len(simulator.journal.entries) == 0


async def test_dead_letter_replay_links_parent(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, retry={"max_attempts": 2})
    set_faults(server, error_rate=1.0, error_status=500)
    await runtime.deliver([record()])
    failed = runtime.store.list_deliveries()[0]
    set_faults(server)

    report = await runtime.retry([failed["id"]])

    assert failed["status"] == "dead_lettered"
    assert report.platforms["echo"].delivered == 1
    replay = runtime.store.list_deliveries(filters={"parent_id": failed["id"]})[0]
    assert replay["status"] == "delivered"
    assert len(simulator.journal.entries) == 1


async def test_resume_finishes_in_flight(tmp_path: Path, echo_simulator: Echo) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    from impactin_core._stats import RunReport

    runtime.submit([record()], run_id="crashed", report=RunReport(run_id="crashed"))
    delivery = runtime.store.list_deliveries()[0]
    runtime.store.update_delivery(delivery["id"], status="in_flight")

    report = await runtime.resume()

    assert report.platforms["echo"].delivered == 1
    assert len(simulator.journal.entries) == 1


async def test_replayed_send_after_lost_answer_is_single(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A connection dropped after the platform acted is retried with the same key."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    set_faults(server, script=["drop_after"])

    report = await runtime.deliver([record()])

    assert report.platforms["echo"].delivered == 1
    assert len(simulator.journal.entries) == 1
    assert sum(simulator.journal.repeats.values()) == 1


async def test_personal_data_is_minimized(tmp_path: Path, echo_simulator: Echo) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    noisy = record(
        description="Call Maria Lopez on 07700 900123 or maria.lopez@example.org",
        metadata={"contact": {"phone": "+44 7700 900123"}},
    )

    await runtime.deliver([noisy])

    body = simulator.journal.entries[0]["body"]
    sent = json.dumps(body)
    assert body["email"] == "maria.lopez@example.org"
    assert body["employee"].startswith("psn_")
    assert "07700" not in sent
    assert "Maria" not in sent
    assert "7700 900123" not in sent


async def test_leak_scan_blocks_undeclared_field(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    # The source id reaches the payload unscrubbed, so a phone number there is
    # a leak. The model rejects a source id with an email address.
    leaky = record(source_id="212-555-0147")

    report = await runtime.deliver([leaky])

    row = runtime.store.list_deliveries()[0]
    assert report.platforms["echo"].blocked == 1
    assert row["error_kind"] == "personal_data"
    assert "phone at source" in row["error"]
    assert "212-555-0147" not in row["error"]
    assert simulator.journal.entries == []


async def test_store_file_holds_no_personal_value(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    await runtime.deliver([record()])
    runtime.close()

    raw = b"".join(path.read_bytes() for path in tmp_path.glob("state.db*"))

    assert b"maria.lopez" not in raw
    assert b"E-004217" not in raw
    assert b"Maria Lopez" not in raw


async def test_unsupported_kind_is_quarantined(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    runtime.config.tenants["acme"].platforms["echo"]
    object.__setattr__(
        runtime.config.tenants["acme"].platforms["echo"], "enabled", False
    )

    report = await runtime.deliver([record()])

    reason = runtime.store.quarantined()[0]["reason"]
    assert report.unrouted_quarantined == 1
    assert "'donation'" in reason


async def test_circuit_opens_and_defers(tmp_path: Path, echo_simulator: Echo) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(
        tmp_path,
        server.url,
        retry={"max_attempts": 10, "deadline": 1000},
        breaker={"threshold": 3, "reset_timeout": 600},
    )
    set_faults(server, error_rate=1.0, error_status=503)

    report = await runtime.deliver([record()])

    row = runtime.store.list_deliveries()[0]
    assert report.platforms["echo"].deferred == 1
    assert row["status"] == "pending"
    assert runtime.breakers.states()[0].state == "opened"
    assert simulator.journal.request_count == 3


async def test_two_runtimes_send_once(tmp_path: Path, echo_simulator: Echo) -> None:
    """Two processes on one store never send the same delivery twice."""
    import asyncio

    from impactin_core._stats import RunReport

    server, simulator = echo_simulator
    first = make_runtime(tmp_path, server.url)
    set_faults(server, latency_seconds=0.01)
    report = RunReport(run_id="shared")
    first.submit(
        [record(f"a-{index}") for index in range(30)], run_id="r", report=report
    )
    second = Runtime(
        first.config,
        plugins=first.plugins,
        secrets=first.secrets,
        clock=first.clock,
        sleep=first.sleep,
    )
    second._owner = "other-host:1"  # a live owner that is not this process

    await asyncio.gather(
        first.process(RunReport(run_id="one")), second.process(RunReport(run_id="two"))
    )

    assert len(simulator.journal.entries) == 30
    assert simulator.journal.repeats == {}


async def test_retry_all_failed_replays_once(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url, retry={"max_attempts": 1})
    set_faults(server, script=["500"])
    await runtime.deliver([record()])
    failed = runtime.store.list_deliveries(filters={"status": "dead_lettered"})[0]

    await runtime.retry([failed["id"]])

    parent = runtime.store.get_delivery(failed["id"])
    assert parent is not None
    assert parent["replayed_by"] is not None
    with pytest.raises(StoreError, match="already replayed"):
        await runtime.retry([failed["id"]])


async def test_unknown_tenant_row_is_quarantined(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)

    report = await runtime.deliver([record("x-1", tenant="globex"), record("a-1")])

    reasons = [row["reason"] for row in runtime.store.quarantined()]
    assert report.platforms["echo"].delivered == 1
    assert "'globex' is not configured" in reasons[0]


async def test_unknown_platform_is_config_error(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    platforms = dict(runtime.config.tenants["acme"].platforms)
    platforms["benevlty"] = platforms["echo"]
    object.__setattr__(runtime.config.tenants["acme"], "platforms", platforms)

    with pytest.raises(ConfigError, match="benevlty"):
        await runtime.deliver([record()])


# A value of the record that a connector's exception text quotes. The
# stored error, the logs and the spans must not repeat it.
QUOTED = "maria.lopez@example.org"


class BrokenConnector:
    """Hooks that run before the echo connector's and fail for source id a-2."""

    def __init__(self, where: str) -> None:
        self.where = where

    @hookimpl(tryfirst=True)
    def impactin_map(self, records: Any, **kwargs: Any) -> Any:
        if records[0].source_id != "a-2":
            return None
        if self.where == "map":
            raise KeyError(QUOTED)
        if self.where == "map-dict":
            return {"payload": QUOTED}
        if self.where == "map-cancel":
            raise asyncio.CancelledError(QUOTED)
        if self.where == "map-exit":
            raise SystemExit(QUOTED)
        return None

    @hookimpl
    def impactin_redact(self, request: Any, **kwargs: Any) -> Any:
        if self.where == "redact-str" and request.payload["source"] == "a-2":
            return QUOTED
        if self.where == "redact-negative" and request.payload["source"] == "a-2":
            return -100
        return None

    @hookimpl(tryfirst=True)
    def impactin_send(self, request: Any, **kwargs: Any) -> Any:
        if request.payload["source"] != "a-2":
            return None
        if self.where == "send":
            raise AttributeError(f"{QUOTED} has no attribute 'get'")
        if self.where == "send-cancel":

            async def cancelled() -> None:
                raise asyncio.CancelledError(QUOTED)

            return cancelled()
        if self.where == "send-dict":

            async def send() -> dict[str, str]:
                return {"id": "x"}

            return send()
        if self.where == "send-sync":
            return SendOutcome(status_code=201, response_id="x")
        return None


@pytest.mark.parametrize(
    ("where", "status", "message"),
    [
        pytest.param("map", "blocked", "impactin_map raised KeyError at", id="map"),
        pytest.param(
            "send",
            "dead_lettered",
            "impactin_send raised AttributeError at",
            id="send-raises",
        ),
        pytest.param(
            "send-dict", "dead_lettered", "returned dict, not SendOutcome", id="dict"
        ),
        pytest.param(
            "map-dict", "blocked", "impactin_map returned dict where", id="map-dict"
        ),
        pytest.param(
            "redact-str", "blocked", "impactin_redact returned str", id="redact-str"
        ),
        pytest.param(
            "redact-negative",
            "blocked",
            "impactin_redact returned -100 where the number of values it redacted "
            "belongs; return an int of 0 or more",
            id="redact-negative",
        ),
        pytest.param(
            "map-cancel", "blocked", "raised CancelledError at", id="map-cancel"
        ),
        pytest.param("map-exit", "blocked", "raised SystemExit at", id="map-exit"),
        pytest.param(
            "send-cancel", "dead_lettered", "raised CancelledError at", id="send-cancel"
        ),
        pytest.param(
            "send-sync",
            "dead_lettered",
            "Define impactin_send with async def",
            id="sync",
        ),
    ],
)
async def test_connector_bug_stops_one_delivery(
    tmp_path: Path,
    echo_simulator: Echo,
    caplog: pytest.LogCaptureFixture,
    where: str,
    status: str,
    message: str,
) -> None:
    """A connector that fails on one record costs that delivery, not the run."""
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    runtime.plugins.pm.register(BrokenConnector(where), name="broken")
    caplog.set_level(logging.DEBUG)

    report = await runtime.deliver([record("a-1"), record("a-2"), record("a-3")])

    by_source = {row["source_id"]: row for row in runtime.store.list_deliveries()}
    failed = runtime.store.get_delivery(by_source["a-2"]["id"])
    assert failed is not None
    assert failed["status"] == status
    assert failed["error_kind"] == "plugin_error"
    assert message in failed["error"]
    assert "impactin deliveries retry" in failed["error"]
    assert QUOTED not in failed["error"]
    assert QUOTED not in caplog.text
    assert by_source["a-1"]["status"] == "delivered"
    assert by_source["a-3"]["status"] == "delivered"
    assert report.platforms["echo"].delivered == 2
    assert (
        report.platforms["echo"].blocked + report.platforms["echo"].dead_lettered == 1
    )


async def test_connector_bug_replays_once_fixed(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    broken = BrokenConnector("send")
    runtime.plugins.pm.register(broken, name="broken")
    await runtime.deliver([record("a-2")])
    (failed,) = runtime.store.list_deliveries(filters={"status": "dead_lettered"})
    attempts = runtime.store.attempts(failed["id"])
    runtime.plugins.pm.unregister(broken)

    report = await runtime.retry([failed["id"]])

    assert [attempt["outcome"] for attempt in attempts] == ["plugin_error"]
    assert report.platforms["echo"].delivered == 1
    assert simulator.journal.request_count == 1


class QuotingConnector:
    """Send hooks that quote the platform's API key in their errors."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    @hookimpl(tryfirst=True)
    def impactin_send(self, credentials: Any, **kwargs: Any) -> Any:
        async def send() -> None:
            key = credentials.headers["x-api-key"]
            raise self.error(f"The platform refused key {key} for this tenant")

        return send()


@pytest.mark.parametrize("error", [PermanentError, ConfigError])
async def test_connector_error_loses_quoted_secret(
    tmp_path: Path,
    echo_simulator: Echo,
    caplog: pytest.LogCaptureFixture,
    error: type[Exception],
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    runtime.plugins.pm.register(QuotingConnector(error), name="quoting")
    caplog.set_level(logging.DEBUG)

    try:
        await runtime.deliver([record("a-1")])
    except ConfigError as exc:
        shown = str(exc)
    else:
        (row,) = runtime.store.list_deliveries()
        stored = runtime.store.get_delivery(row["id"])
        assert stored is not None
        shown = stored["error"]

    assert "The platform refused key [secret] for this tenant" in shown
    assert "echo-sandbox-key" not in shown
    assert "echo-sandbox-key" not in caplog.text


async def test_record_twice_in_one_input_counts_as_duplicate(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)

    report = await runtime.deliver([record("a-1"), record("a-1"), record("a-2")])

    assert report.platforms["echo"].delivered == 2
    assert report.platforms["echo"].duplicates == 1
    assert report.platforms["echo"].resumed == 0
    assert simulator.journal.request_count == 2


async def test_correction_on_two_platforms_names_both(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """Echo took the first content and mirror rejected it; then a correction."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, mirror=True)
    await runtime.deliver([record("a-1", amount_minor=2500)])

    report = await runtime.deliver([record("a-1", amount_minor=2600)])

    by_platform: dict[str, list[str]] = {}
    for row in runtime.store.list_deliveries():
        by_platform.setdefault(row["platform"], []).append(row["status"])
    (entry,) = runtime.store.quarantined()
    assert sorted(by_platform["mirror"]) == ["dead_lettered", "delivered"]
    assert by_platform["echo"] == ["delivered"]
    assert report.platforms["mirror"].delivered == 1
    assert report.platforms["echo"].quarantined == 1
    assert "replaces the failed delivery on 'mirror'" in entry["reason"]
    assert "Correct the activity on 'echo' by hand" in entry["reason"]
    assert "would send it to 'mirror' again" in entry["reason"]
    assert simulator.journal.request_count == 2


class ThrottlingConnector:
    """A send hook for a-2 that fails in the way ``self.failure`` names."""

    def __init__(self, failure: str) -> None:
        self.failure = failure

    @hookimpl(tryfirst=True)
    def impactin_send(self, request: Any) -> Any:
        if request.payload["source"] != "a-2":
            return None

        async def send() -> None:
            if self.failure == "text":
                raise RateLimited("Slow down", retry_after="7")  # type: ignore[arg-type]
            if self.failure == "set-nan":
                error = RateLimited("Slow down", retry_after=1.0, sent=False)
                error.retry_after = math.nan
                raise error
            if self.failure == "invalid":
                raise RecordInvalid("The platform takes no amount above 100")
            if self.failure == "forever":
                raise RateLimited("Slow down", retry_after=math.inf, sent=False)
            await asyncio.sleep(3600)

        return send()


async def test_retry_after_text_ends_one_delivery(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    runtime.plugins.pm.register(ThrottlingConnector("text"), name="throttling")

    report = await runtime.deliver([record("a-1"), record("a-2"), record("a-3")])

    by_source = {row["source_id"]: row for row in runtime.store.list_deliveries()}
    failed = runtime.store.get_delivery(by_source["a-2"]["id"])
    assert failed is not None
    assert failed["error_kind"] == "plugin_error"
    assert "raised TypeError" in failed["error"]
    assert report.platforms["echo"].delivered == 2


async def test_retry_after_set_later_falls_back_to_backoff(
    tmp_path: Path, echo_simulator: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = echo_simulator
    clock = FakeTime()
    runtime = make_runtime(tmp_path, server.url, clock=clock)
    runtime.plugins.pm.register(ThrottlingConnector("set-nan"), name="throttling")

    report = await runtime.deliver([record("a-1"), record("a-2")])

    assert report.platforms["echo"].delivered == 1
    assert report.platforms["echo"].dead_lettered == 1
    assert all(math.isfinite(delay) for delay in clock.sleeps)
    assert "Ignored the retry_after of a RateLimited error" in caplog.text


async def test_record_invalid_from_send_is_a_rejection(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    runtime.plugins.pm.register(ThrottlingConnector("invalid"), name="throttling")

    await runtime.deliver([record("a-2")])

    (row,) = runtime.store.list_deliveries()
    rejected = runtime.store.get_delivery(row["id"])
    assert rejected is not None
    assert rejected["status"] == "dead_lettered"
    assert rejected["error_kind"] == "permanent"
    assert "The platform takes no amount above 100" in rejected["error"]
    assert simulator.journal.request_count == 0


async def test_endless_retry_after_is_capped(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    runtime.plugins.pm.register(ThrottlingConnector("forever"), name="throttling")

    await runtime.deliver([record("a-2")])

    (row,) = runtime.store.list_deliveries()
    deferred = runtime.store.get_delivery(row["id"])
    assert deferred is not None
    assert deferred["status"] == "pending"
    assert deferred["next_attempt_at"] <= runtime.clock() + MAX_RETRY_AFTER


async def test_hung_send_is_cancelled_at_the_hook_timeout(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(
        tmp_path, server.url, hook_timeout=0.2, retry={"max_attempts": 2}
    )
    runtime.plugins.pm.register(ThrottlingConnector("hang"), name="throttling")

    report = await asyncio.wait_for(
        runtime.deliver([record("a-1"), record("a-2"), record("a-3")]), 30
    )

    by_source = {row["source_id"]: row for row in runtime.store.list_deliveries()}
    hung = runtime.store.get_delivery(by_source["a-2"]["id"])
    assert hung is not None
    assert hung["status"] == "dead_lettered"
    assert "impactin_send did not finish within 0.2 s" in hung["error"]
    assert report.platforms["echo"].delivered == 2


class StalledTime(FakeTime):
    """A clock whose sleeps never end, like a limiter wait of a whole period."""

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.Event().wait()


async def test_stop_ends_limiter_wait_unclaimed(
    tmp_path: Path, echo_simulator: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    """Deliveries that wait for a rate-limit slot are still pending at a stop."""
    caplog.set_level(logging.INFO, logger="impactin.runtime")
    server, simulator = echo_simulator
    runtime = make_runtime(
        tmp_path,
        server.url,
        clock=StalledTime(),
        concurrency=3,
        rate_limit={"calls": 1, "period": 60},
    )

    report = await asyncio.wait_for(
        runtime.deliver(
            [record("a-1"), record("a-2"), record("a-3")],
            on_done=runtime.request_stop,
        ),
        timeout=30,
    )

    assert sorted(status_elsewhere(runtime)) == ["delivered", "pending", "pending"]
    assert report.platforms["echo"].delivered == 1
    assert len(simulator.journal.entries) == 1
    # Two deliveries waited, and the wait was logged once.
    messages = [entry.getMessage() for entry in caplog.records]
    waits = [message for message in messages if "rate limit" in message]
    assert waits == [
        "Deliveries of tenant acme on echo wait for the rate limit, which allows "
        "1 calls in any 60 s"
    ]


def status_elsewhere(runtime: Runtime) -> list[str]:
    """Read every delivery's status through a separate SQLite connection."""
    conn = sqlite3.connect(runtime.store.path)
    try:
        rows = conn.execute("SELECT status FROM deliveries ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


def _echo_runtime(
    tmp_path: Path,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    honours_keys: bool,
    concurrency: int,
) -> Runtime:
    """Return a runtime whose echo platform honours idempotency keys or not."""
    import echo_connector

    info = attrs.evolve(echo_connector.INFO, honours_idempotency_key=honours_keys)
    monkeypatch.setattr(echo_connector, "INFO", info)
    return make_runtime(tmp_path, url, concurrency=concurrency)


@pytest.mark.parametrize("honours_keys", [True, False], ids=["keys", "no-keys"])
async def test_success_committed_before_next_send(
    tmp_path: Path,
    echo_simulator: Echo,
    monkeypatch: pytest.MonkeyPatch,
    honours_keys: bool,
) -> None:
    """A success's deferred writes are committed before the next request goes out."""
    from impactin_core import hookimpl

    server, _ = echo_simulator
    runtime = _echo_runtime(tmp_path, server.url, monkeypatch, honours_keys, 1)
    at_send: list[list[str]] = []

    class Watcher:
        @hookimpl(tryfirst=True)
        def impactin_send(self, platform: Any, **kwargs: Any) -> None:
            at_send.append(status_elsewhere(runtime))

    runtime.plugins.pm.register(Watcher(), name="watcher")
    report = await runtime.deliver([record("a-1"), record("a-2"), record("a-3")])

    assert report.platforms["echo"].delivered == 3
    assert at_send[0] == ["in_flight", "pending", "pending"]
    assert at_send[1] == ["delivered", "in_flight", "pending"]
    assert at_send[2] == ["delivered", "delivered", "in_flight"]
    assert status_elsewhere(runtime) == ["delivered"] * 3


@pytest.mark.parametrize("honours_keys", [True, False], ids=["keys", "no-keys"])
async def test_concurrent_runs_share_nothing(
    tmp_path: Path,
    echo_simulator: Echo,
    monkeypatch: pytest.MonkeyPatch,
    honours_keys: bool,
) -> None:
    """Two deliver() calls on one runtime each skip what the other is sending."""
    server, simulator = echo_simulator
    runtime = _echo_runtime(tmp_path, server.url, monkeypatch, honours_keys, 4)
    first = [record(f"a-{number}") for number in range(30)]
    second = [record(f"b-{number}") for number in range(30)]

    reports = await asyncio.gather(runtime.deliver(first), runtime.deliver(second))

    stats = [report.platforms["echo"] for report in reports]
    assert sum(item.delivered for item in stats) == 60
    assert [item.dead_lettered for item in stats] == [0, 0]
    assert status_elsewhere(runtime) == ["delivered"] * 60
    assert len(simulator.journal.entries) == 60
    attempts = [row["attempts"] for row in runtime.store.list_deliveries(limit=100)]
    assert attempts == [1] * 60


async def test_workers_bounded_by_due_count(
    tmp_path: Path, echo_simulator: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker opens a connection, so no more start than deliveries are due."""
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=500)
    clients: list[httpx.AsyncClient] = []
    build_client = runtime._client

    def counted_client() -> httpx.AsyncClient:
        client = build_client()
        clients.append(client)
        return client

    monkeypatch.setattr(runtime, "_client", counted_client)
    report = await runtime.deliver([record("a-1"), record("a-2"), record("a-3")])

    assert report.platforms["echo"].delivered == 3
    assert len(clients) == 3


async def test_map_error_blocks_and_sends_nothing(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A connector whose map always fails blocks every delivery and sends none."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)

    class BrokenMapper:
        @hookimpl(tryfirst=True)
        def impactin_map(self, platform: Any, **kwargs: Any) -> Any:
            raise KeyError("mapping-table")

    runtime.plugins.pm.register(BrokenMapper(), name="broken-mapper")

    report = await runtime.deliver([record("a-1"), record("a-2")])

    assert status_elsewhere(runtime) == ["blocked", "blocked"]
    assert report.platforms["echo"].blocked == 2
    assert simulator.journal.entries == []


def test_submit_spans_several_batches(tmp_path: Path) -> None:
    from impactin_core._pipeline import SUBMIT_BATCH
    from impactin_core._stats import RunReport

    runtime = make_runtime(tmp_path, "http://127.0.0.1:9")
    count = SUBMIT_BATCH * 2 + 7
    report = RunReport(run_id="run-batches")

    runtime.submit(
        (record(f"b-{index}") for index in range(count)),
        run_id=report.run_id,
        report=report,
    )

    assert report.platforms["echo"].queued == count
    assert runtime.store.count_due(runtime.clock()) == count
    runtime.close()


async def test_runs_share_one_tls_context(tmp_path: Path) -> None:
    """Each run opens a client, and all of them reuse the first TLS context."""
    runtime = make_runtime(tmp_path, "http://127.0.0.1:9")
    contexts = []
    for _ in range(2):
        async with runtime._client() as client:
            transport = client._transport
            assert isinstance(transport, httpx.AsyncHTTPTransport)
            contexts.append(transport._pool._ssl_context)
    runtime.close()
    assert contexts[0] is not None
    assert contexts[0] is contexts[1]


async def test_deleted_delivery_is_skipped(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A due delivery deleted before its request is built is not sent."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=1)
    from impactin_core._stats import RunReport

    report = RunReport(run_id="run-deleted")
    runtime.submit([record("a-1"), record("a-2")], run_id="run-deleted", report=report)
    first, _ = runtime.store.list_deliveries()
    with runtime.store.transaction() as conn:
        conn.execute("DELETE FROM deliveries WHERE id = ?", (first["id"],))

    await runtime.process(report)

    assert report.platforms["echo"].delivered == 1
    assert len(simulator.journal.entries) == 1
    (left,) = runtime.store.list_deliveries()
    assert left["status"] == "delivered"


async def _cancel_when(
    runtime: Runtime, records: list[ImpactRecord], statuses: list[str]
) -> None:
    """Deliver ``records`` and cancel the run once the store shows ``statuses``."""
    run = asyncio.create_task(runtime.deliver(records))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while status_elsewhere(runtime) != statuses:
        assert loop.time() < deadline, f"statuses never became {statuses}"
        await asyncio.sleep(0.01)
    # Let the stalled step settle into its wait before the run is cancelled.
    await asyncio.sleep(0.2)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


async def _interrupt_one(
    runtime: Runtime,
    *,
    server: asyncio.AbstractServer | None = None,
    connections: list[asyncio.StreamWriter] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cancel one record's run once it is in flight; return its delivery and attempt.

    ``server`` and its ``connections`` are closed after the run.
    """
    try:
        await _cancel_when(runtime, [record("a-1")], ["in_flight"])
    finally:
        for writer in connections or []:
            writer.close()
        if server is not None:
            server.close()
            await server.wait_closed()
    (delivery,) = runtime.store.list_deliveries()
    (attempt,) = runtime.store.attempts(delivery["id"])
    return delivery, attempt


async def test_cancelled_unsent_delivery_back_to_pending(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A run stopped before a request left keeps that delivery sendable."""
    from impactin_core import hookimpl

    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=1)
    never = asyncio.Event()

    class Stall:
        @hookimpl(tryfirst=True)
        def impactin_send(self, platform: Any, request: Any, **kwargs: Any) -> Any:
            if request.source_ids != ("a-2",):
                return None

            async def wait() -> None:
                await never.wait()

            return wait()

    runtime.plugins.pm.register(Stall(), name="stall")
    await _cancel_when(
        runtime, [record("a-1"), record("a-2")], ["delivered", "in_flight"]
    )

    assert status_elsewhere(runtime) == ["delivered", "pending"]
    second = runtime.store.list_deliveries(filters={"status": "pending"})[0]
    (attempt,) = runtime.store.attempts(second["id"])
    assert attempt["outcome"] == "interrupted"

    runtime.plugins.pm.unregister(name="stall")
    report = await runtime.resume()

    assert report.platforms["echo"].delivered == 1
    assert len(simulator.journal.entries) == 2
    numbers = [row["number"] for row in runtime.store.attempts(second["id"])]
    assert numbers == [1, 2]
    assert runtime.store.get_delivery(second["id"])["attempts"] == 2  # type: ignore[index]


async def test_cancelled_while_connecting_pending(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A run stopped while the connection opens has written nothing."""
    import httpcore

    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=1)
    never = asyncio.Event()

    class StallingBackend(httpcore.AsyncNetworkBackend):
        async def connect_tcp(self, *args: Any, **kwargs: Any) -> Any:
            await never.wait()

    # httpx's own transport, so httpcore reports its steps as in production,
    # over a network backend whose connections never open.
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(network_backend=StallingBackend())
    runtime.transport = transport

    delivery, attempt = await _interrupt_one(runtime)

    assert delivery["status"] == "pending"
    assert attempt["outcome"] == "interrupted"
    assert simulator.journal.entries == []


async def test_cancelled_during_proxy_tls_pending(tmp_path: Path) -> None:
    """A CONNECT to a proxy carries nothing of the delivery to the platform."""
    tunnels: list[asyncio.StreamWriter] = []

    async def accept_connect(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Accept the CONNECT, then never reply to the TLS handshake.
        tunnels.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

    proxy = await asyncio.start_server(accept_connect, "127.0.0.1", 0)
    proxy_port = proxy.sockets[0].getsockname()[1]
    # The platform address is only named in the CONNECT; nothing connects to it.
    runtime = make_runtime(tmp_path, "https://127.0.0.1:9", concurrency=1)
    runtime.transport = httpx.AsyncHTTPTransport(proxy=f"http://127.0.0.1:{proxy_port}")

    delivery, attempt = await _interrupt_one(runtime, server=proxy, connections=tunnels)

    assert tunnels
    assert delivery["status"] == "pending"
    assert attempt["outcome"] == "interrupted"


async def test_cancelled_after_write_stays_in_flight(tmp_path: Path) -> None:
    """A run stopped while waiting for the reply may have delivered the record."""
    received = asyncio.Event()
    connections: list[asyncio.StreamWriter] = []

    async def read_and_hold(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connections.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        received.set()

    server = await asyncio.start_server(read_and_hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    runtime = make_runtime(tmp_path, f"http://127.0.0.1:{port}", concurrency=1)

    delivery, attempt = await _interrupt_one(
        runtime, server=server, connections=connections
    )

    assert received.is_set()
    assert delivery["status"] == "in_flight"
    assert attempt["outcome"] == "interrupted"


async def test_stored_record_now_invalid_is_blocked(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A stored record that the model rejects today is blocked, not retried."""
    from impactin_core._converter import converter
    from impactin_core._stats import RunReport

    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    report = RunReport(run_id="run-old")
    runtime.submit([record("a-1")], run_id="run-old", report=report)
    (delivery,) = runtime.store.list_deliveries()
    stored = converter.unstructure(record("a-1"))
    stored["amount_minor"] = 10**15
    with runtime.store.transaction() as conn:
        conn.execute(
            "UPDATE deliveries SET record_ct = ? WHERE id = ?",
            (runtime.store.seal_json(stored), delivery["id"]),
        )

    await runtime.process(report)

    row = runtime.store.get_delivery(delivery["id"])
    assert row is not None
    assert row["status"] == "blocked"
    assert row["error_kind"] == "invalid"
    assert "no longer valid" in row["error"]
    assert simulator.journal.entries == []


async def test_cancelled_during_token_request_pending(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A request made while authenticating does not count as the delivery's."""
    from impactin_core import hookimpl

    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=1)
    never = asyncio.Event()

    class StallingAuth:
        @hookimpl(tryfirst=True)
        def impactin_authenticate(self, platform: Any, context: Any, **_: Any) -> Any:
            async def token() -> None:
                # A token endpoint that responds, then a wait that never ends.
                await context.client.get(f"{server.url}/_sandbox/journal")
                await never.wait()

            return token()

    runtime.plugins.pm.register(StallingAuth(), name="stalling-auth")
    await _cancel_when(runtime, [record("a-1")], ["in_flight"])

    assert status_elsewhere(runtime) == ["pending"]
    assert simulator.journal.entries == []


async def test_requests_built_while_a_send_waits(
    tmp_path: Path, echo_simulator: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first two, each request is built while another awaits its response."""
    from impactin_core import _pipeline

    server, _ = echo_simulator
    set_faults(server, latency_seconds=0.02)
    runtime = make_runtime(tmp_path, server.url, concurrency=1)
    waiting_at_build: list[int] = []
    build = runtime._prepare_row

    def watched_build(row: Any) -> Any:
        pacer = _pipeline._pacer.get()
        assert pacer is not None
        waiting_at_build.append(pacer.awaiting)
        return build(row)

    monkeypatch.setattr(runtime, "_prepare_row", watched_build)
    report = await runtime.deliver([record(f"a-{n}") for n in range(12)])

    assert report.platforms["echo"].delivered == 12
    assert len(waiting_at_build) == 12
    # The first is built before anything is sent, the second when the
    # worker takes the first, before its request is written.
    assert waiting_at_build[:2] == [0, 0]
    assert all(count == 1 for count in waiting_at_build[2:]), waiting_at_build


class UntracedTransport(httpx.AsyncBaseTransport):
    """A host's transport that reports none of httpcore's steps."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions.pop("trace", None)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_untraced_transport_delivers_all(
    tmp_path: Path, echo_simulator: Echo, concurrency: int
) -> None:
    """Without trace events the builder runs whenever the workers run dry."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url, concurrency=concurrency)
    runtime.transport = UntracedTransport()

    report = await runtime.deliver([record(f"a-{n}") for n in range(30)])

    assert report.platforms["echo"].delivered == 30
    assert len(simulator.journal.entries) == 30
    assert status_elsewhere(runtime) == ["delivered"] * 30


async def test_success_committed_while_others_wait(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A worker that runs out of deliveries commits its success before it ends."""
    server, simulator = echo_simulator
    set_faults(server, script=["slow", "ok"], slow_seconds=3.0)
    runtime = make_runtime(tmp_path, server.url, concurrency=2)
    run = asyncio.create_task(runtime.deliver([record("a-1"), record("a-2")]))
    seen: list[str] = []
    for _ in range(100):
        await asyncio.sleep(0.02)
        seen = status_elsewhere(runtime)
        if "delivered" in seen:
            break
    still_running = not run.done()
    report = await run

    assert still_running
    assert sorted(seen) == ["delivered", "in_flight"]
    assert report.platforms["echo"].delivered == 2
    assert len(simulator.journal.entries) == 2


def two_tenant_runtime(
    tmp_path: Path, url: str, environ: dict[str, str], *, concurrency: int = 4
) -> Runtime:
    """Return a runtime with tenants acme and globex, both sending to echo."""

    def tenant(key_env: str, api_key_env: str) -> dict[str, Any]:
        return {
            "key_env": key_env,
            "platforms": {
                "echo": {
                    "base_url": url,
                    "credentials": {"api_key": api_key_env},
                    "retry": {"base_delay": 0.5, "max_attempts": 5},
                }
            },
        }

    data = {
        "store": {"path": "state.db", "key_env": "STORE_KEY"},
        "runtime": {"concurrency": concurrency},
        "tenants": {
            "acme": tenant("ACME_KEY", "ECHO_KEY"),
            "globex": tenant("GLOBEX_KEY", "GLOBEX_ECHO_KEY"),
        },
    }
    config = parse_config(data, base_dir=tmp_path)
    host = PluginHost()
    host.register(EchoPlugin(), name="echo")
    host.finish()
    return Runtime(config, plugins=host, secrets=EnvSecrets(environ))


def two_tenant_environ() -> dict[str, str]:
    return {
        "STORE_KEY": generate_key(),
        "ACME_KEY": "acme-secret-key",
        "GLOBEX_KEY": "globex-secret-key",
        "ECHO_KEY": "echo-sandbox-key",
    }


async def test_missing_secret_spares_other_tenant(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """One tenant's missing credential leaves its deliveries pending, no others."""
    server, simulator = echo_simulator
    set_faults(server, latency_seconds=0.2)
    runtime = two_tenant_runtime(tmp_path, server.url, two_tenant_environ())
    batch = [record(f"a-{n}") for n in range(6)]
    batch.insert(2, record("g-1", tenant="globex"))

    with pytest.raises(ConfigError) as caught:
        await runtime.deliver(batch)

    statuses = {
        row["source_id"]: row["status"]
        for row in runtime.store.list_deliveries(limit=20)
    }
    message = str(caught.value)
    assert "GLOBEX_ECHO_KEY" in message
    assert "1 of tenant 'globex' on 'echo'" in message
    assert statuses.pop("g-1") == "pending"
    assert set(statuses.values()) == {"delivered"}
    assert len(statuses) == 6
    assert len(simulator.journal.entries) == 6


async def test_removed_tenant_spares_the_rest(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A pending delivery of a tenant no longer configured does not stop the run."""
    server, simulator = echo_simulator
    environ = two_tenant_environ()
    runtime = two_tenant_runtime(tmp_path, server.url, environ)
    from impactin_core._stats import RunReport

    batch = [record("g-1", tenant="globex"), record("a-1"), record("a-2")]
    runtime.submit(batch, run_id="submit", report=RunReport(run_id="submit"))
    tenants = {"acme": runtime.config.tenants["acme"]}
    runtime.close()
    later = two_tenant_runtime(tmp_path, server.url, environ)
    object.__setattr__(later.config, "tenants", tenants)

    with pytest.raises(ConfigError, match="'globex' is not configured"):
        await later.resume()

    rows = later.store.list_deliveries()
    statuses = {row["source_id"]: row["status"] for row in rows}
    assert statuses == {"g-1": "pending", "a-1": "delivered", "a-2": "delivered"}
    assert len(simulator.journal.entries) == 2


async def test_request_stop_lets_sends_finish(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A stop claims nothing more, and the requests already sent get responses."""
    server, simulator = echo_simulator
    set_faults(server, latency_seconds=0.3)
    runtime = make_runtime(tmp_path, server.url, concurrency=2)
    asyncio.get_running_loop().call_later(0.1, runtime.request_stop)

    report = await runtime.deliver([record(f"a-{n}") for n in range(10)])

    statuses = status_elsewhere(runtime)
    assert report.platforms["echo"].delivered == 2
    assert statuses.count("delivered") == 2
    assert statuses.count("pending") == 8
    assert len(simulator.journal.entries) == 2

    later = await runtime.resume()

    assert later.platforms["echo"].delivered == 8
    assert status_elsewhere(runtime) == ["delivered"] * 10


async def test_request_stop_skips_retry_wait(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A stopping run defers a delivery whose send needs a retry."""
    server, simulator = echo_simulator
    set_faults(server, script=["503"], latency_seconds=0.3)
    clock = FakeTime()
    runtime = make_runtime(tmp_path, server.url, clock=clock)
    asyncio.get_running_loop().call_later(0.1, runtime.request_stop)

    report = await runtime.deliver([record("a-1")])

    row = runtime.store.list_deliveries()[0]
    assert report.platforms["echo"].deferred == 1
    assert clock.sleeps == []
    assert row["status"] == "pending"
    assert row["error_kind"] == "deferred"
    assert row["next_attempt_at"] > clock.now
    assert simulator.journal.entries == []


class RealTime:
    """The wall clock, for tests that need a sleep to take its time."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_request_stop_ends_retry_wait(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """A stop during a retry's wait defers the delivery to when the retry was due."""
    server, simulator = echo_simulator
    set_faults(server, script=["429"], retry_after="20")
    runtime = make_runtime(tmp_path, server.url, clock=RealTime())  # type: ignore[arg-type]
    asyncio.get_running_loop().call_later(0.5, runtime.request_stop)
    started = time.monotonic()

    report = await runtime.deliver([record("a-1")])

    elapsed = time.monotonic() - started
    row = runtime.store.list_deliveries()[0]
    assert elapsed < 10
    assert report.platforms["echo"].deferred == 1
    assert row["status"] == "pending"
    assert row["error_kind"] == "deferred"
    assert row["next_attempt_at"] > time.time() + 15
    assert simulator.journal.entries == []


def test_runtime_rejects_config_path() -> None:
    with pytest.raises(TypeError, match=r"pass load_config\(path\)"):
        Runtime("impactin.toml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param("gifts.jsonl", "not a path", id="path"),
        pytest.param([{"source_id": "a-1"}], "not dict", id="dict"),
        pytest.param([1], "not int", id="int"),
    ],
)
async def test_deliver_rejects_other_types(
    tmp_path: Path, rows: Any, message: str
) -> None:
    runtime = make_runtime(tmp_path, "http://127.0.0.1:9")

    with pytest.raises(TypeError, match=message):
        await runtime.deliver(rows)
    runtime.close()


async def test_retry_rejects_one_string(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, "http://127.0.0.1:9")

    with pytest.raises(TypeError, match=r"pass \['abc'\]"):
        await runtime.retry("abc")
    runtime.close()


async def test_closed_runtime_rejects_runs(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, "http://127.0.0.1:9")
    runtime.close()
    runtime.close()

    with pytest.raises(RuntimeError, match="Runtime is closed"):
        await runtime.deliver([record()])
    with pytest.raises(RuntimeError, match="Runtime is closed"):
        await runtime.resume()


async def test_unencodable_record_quarantined_batch_goes_on(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """An int longer than JSON encoding allows stops only its own record."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    huge = record("a-2", metadata={"team": "blue", "score": 10**5000})

    report = await runtime.deliver([record("a-1"), huge, record("a-3")])

    delivered = sorted(row["source_id"] for row in runtime.store.list_deliveries())
    (entry,) = runtime.store.quarantined()
    assert delivered == ["a-1", "a-3"]
    assert report.platforms["echo"].delivered == 2
    assert len(simulator.journal.entries) == 2
    assert entry["source_id"] == "a-2"
    assert entry["field"] == "metadata"
    assert "metadata cannot be stored" in entry["reason"]
    raw = runtime.store.quarantined_raw(entry["id"])
    assert "metadata" not in raw
    assert raw["amount_minor"] == 2500


async def test_unencodable_record_of_unknown_tenant(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    huge = record("x-1", tenant="globex", metadata={"score": 10**5000})

    report = await runtime.deliver([huge, record("a-1")])

    (entry,) = runtime.store.quarantined()
    assert report.platforms["echo"].delivered == 1
    assert "'globex' is not configured" in entry["reason"]
    assert "metadata" not in runtime.store.quarantined_raw(entry["id"])


async def test_email_source_id_not_stored_in_clear(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    server, _ = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    rows = [
        {
            "source_id": "zelda39.quux@example.org",
            "tenant": "acme",
            "kind": "donation",
            "activity_date": "2026-03-01",
            "employee_id": "E-004217",
            "amount_minor": 2500,
            "currency": "USD",
        }
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    report = await runtime.deliver(read_records(path, tenant="acme"))
    (entry,) = runtime.store.quarantined()
    runtime.close()

    stored = b"".join(file.read_bytes() for file in tmp_path.glob("state.db*"))
    assert report.platforms["echo"].quarantined == 1
    assert entry["source_id"] is None
    assert entry["field"] == "source_id"
    assert b"zelda39" not in stored


async def test_decoded_escape_in_scrubbed_text_is_sent_safely(
    tmp_path: Path, echo_simulator: Echo
) -> None:
    """Scrubbing decodes "%00" into a NUL, which the sent text must not carry."""
    server, simulator = echo_simulator
    runtime = make_runtime(tmp_path, server.url)
    escaped = record("a-1", description="Write to ana.ruiz%40example.org %00 today")

    report = await runtime.deliver([escaped, record("a-2")])

    sent = [entry["body"]["description"] for entry in simulator.journal.entries]
    assert report.platforms["echo"].delivered == 2
    assert "Write to [email]   today" in sent
    assert not any("\x00" in (text or "") for text in sent)
    assert not any("ana.ruiz" in (text or "") for text in sent)


def test_base64_of_configured_secret_is_scrubbed(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, "http://127.0.0.1:9")
    runtime.settings("acme", "echo")
    encoded = base64.b64encode(b"echo-sandbox-key").decode()

    assert scrub_known(f"basic {encoded} refused") == "basic [secret] refused"
