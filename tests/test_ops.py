"""Operator commands against the Benevity simulator on 127.0.0.1.

Covers ``impactin deliveries retry`` (one id and ``--all-failed``),
``impactin quarantine list`` and ``resubmit``, and what ``resume`` does with
a delivery that a stopped process left in flight.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from impactin_core import load_config
from impactin_core._cli import main
from impactin_core._crypto import generate_key
from impactin_core._pipeline import Runtime
from impactin_core.sandbox import FaultPlan, SandboxServer, Simulator

pytest.importorskip("impactin_benevity")

from impactin_benevity import create_simulator

Served = tuple[SandboxServer, Simulator]


@pytest.fixture
def benevity() -> Iterator[Served]:
    simulator = create_simulator(plan=FaultPlan())
    with SandboxServer(simulator.app) as server:
        yield server, simulator


def write_config(
    folder: Path, url: str, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> Path:
    monkeypatch.setenv("OPS_STORE_KEY", generate_key())
    monkeypatch.setenv("OPS_ACME_KEY", "ops-tenant-key-" + "x" * 32)
    monkeypatch.setenv("OPS_CLIENT_ID", "sandbox-client-id")
    monkeypatch.setenv("OPS_CLIENT_SECRET", "sandbox-client-secret")
    extra = "".join(
        f", {name} = {json.dumps(value)}" for name, value in options.items()
    )
    path = folder / "impactin.toml"
    path.write_text(
        f"""
[store]
path = "ops.db"
key_env = "OPS_STORE_KEY"

[tenants.acme]
key_env = "OPS_ACME_KEY"

[tenants.acme.platforms.benevity]
base_url = "{url}"
credentials = {{ client_id = "OPS_CLIENT_ID", client_secret = "OPS_CLIENT_SECRET" }}
options = {{ foundation_id = "ops-foundation"{extra} }}
retry = {{ max_attempts = 2, base_delay = 0.01, max_delay = 0.02, deadline = 5 }}
breaker = {{ threshold = 50 }}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def config(tmp_path: Path, benevity: Served, monkeypatch: pytest.MonkeyPatch) -> Path:
    server, simulator = benevity
    path = write_config(tmp_path, server.url, monkeypatch)
    monkeypatch.setenv("OPS_CLIENT_ID", simulator.credentials["client_id"])
    monkeypatch.setenv("OPS_CLIENT_SECRET", simulator.credentials["client_secret"])
    return path


def donation(source_id: str, **changes: Any) -> dict[str, Any]:
    row = {
        "source_id": source_id,
        "tenant": "acme",
        "kind": "donation",
        "activity_date": "2025-03-01",
        "employee_id": "E-000101",
        "employee_email": "ana.silva@example.org",
        "amount_minor": 2500,
        "currency": "USD",
        "organization_id": "ORG-1701",
    }
    row.update(changes)
    return row


def write_rows(folder: Path, rows: list[dict[str, Any]]) -> Path:
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def set_faults(server: SandboxServer, **plan: Any) -> None:
    httpx.put(f"{server.url}/_sandbox/faults", json=plan).raise_for_status()


def deliveries(config: Path) -> list[dict[str, Any]]:
    runtime = Runtime(load_config(config))
    try:
        return runtime.store.list_deliveries(limit=None)
    finally:
        runtime.close()


def quarantined(config: Path, include_resolved: bool = False) -> list[dict[str, Any]]:
    runtime = Runtime(load_config(config))
    try:
        return runtime.store.quarantined(include_resolved=include_resolved)
    finally:
        runtime.close()


# -- deliveries retry -----------------------------------------------------------


def test_retry_replays_one_delivery(config: Path, benevity: Served) -> None:
    server, simulator = benevity
    set_faults(server, error_rate=1.0, error_status=503)
    invoke(config, "deliver", str(write_rows(config.parent, [donation("gift-1")])))
    failed = deliveries(config)[0]
    set_faults(server)

    result = invoke(config, "deliveries", "retry", failed["id"][:12])

    assert result.exit_code == 0, result.output
    assert failed["status"] == "dead_lettered"
    replay = [row for row in deliveries(config) if row["parent_id"] == failed["id"]]
    assert len(replay) == 1
    assert replay[0]["status"] == "delivered"
    assert len(simulator.journal.entries) == 1


def test_retry_all_failed(config: Path, benevity: Served) -> None:
    server, simulator = benevity
    set_faults(server, error_rate=1.0, error_status=503)
    rows = [donation(f"gift-{n}") for n in range(3)]
    invoke(config, "deliver", str(write_rows(config.parent, rows)))
    set_faults(server)

    result = invoke(config, "deliveries", "retry", "--all-failed")

    assert result.exit_code == 0, result.output
    statuses = [row["status"] for row in deliveries(config)]
    assert statuses.count("dead_lettered") == 3
    assert statuses.count("delivered") == 3
    assert len(simulator.journal.entries) == 3


def test_retry_all_failed_twice(config: Path, benevity: Served) -> None:
    server, simulator = benevity
    set_faults(server, error_rate=1.0, error_status=503)
    invoke(config, "deliver", str(write_rows(config.parent, [donation("gift-1")])))
    set_faults(server)
    invoke(config, "deliveries", "retry", "--all-failed")

    again = invoke(config, "deliveries", "retry", "--all-failed")

    assert again.exit_code == 0, again.output
    assert "Nothing to replay" in again.output
    assert len(simulator.journal.entries) == 1
    assert len(deliveries(config)) == 2


def test_retry_keeps_parent_untouched(config: Path, benevity: Served) -> None:
    server, _ = benevity
    set_faults(server, error_rate=1.0, error_status=503)
    invoke(config, "deliver", str(write_rows(config.parent, [donation("gift-1")])))
    set_faults(server)
    failed = deliveries(config)[0]

    invoke(config, "deliveries", "retry", failed["id"])

    parent = next(row for row in deliveries(config) if row["id"] == failed["id"])
    assert parent["status"] == "dead_lettered"
    assert parent["error"]


def test_retry_of_delivered_is_rejected(config: Path) -> None:
    invoke(config, "deliver", str(write_rows(config.parent, [donation("gift-1")])))
    delivered = deliveries(config)[0]

    result = invoke(config, "deliveries", "retry", delivered["id"])

    assert result.exit_code != 0
    assert "only dead-lettered or blocked" in result.output


def test_retry_needs_ids(config: Path) -> None:
    result = invoke(config, "deliveries", "retry")

    assert result.exit_code == 2
    assert "--all-failed" in result.output


# -- resume after a stopped process ---------------------------------------------


def test_interrupted_send_is_not_repeated(config: Path, benevity: Served) -> None:
    """Benevity honours no idempotency key, so an in-flight send is not resent."""
    _, simulator = benevity
    runtime = Runtime(load_config(config))
    from impactin_core._stats import RunReport

    report = RunReport(run_id="stopped")
    rows = list(_records([donation("gift-1")]))
    runtime.submit(rows, run_id="stopped", report=report)
    delivery = runtime.store.list_deliveries()[0]
    runtime.store.update_delivery(delivery["id"], status="in_flight")

    asyncio.run(runtime.resume())

    row = runtime.store.get_delivery(delivery["id"])
    runtime.close()
    assert row is not None
    assert row["status"] == "dead_lettered"
    assert row["error_kind"] == "interrupted"
    assert simulator.journal.request_count == 0


def test_interrupted_send_resent_when_replay_safe(
    tmp_path: Path, benevity: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, simulator = benevity
    path = write_config(tmp_path, server.url, monkeypatch, replay_safe=True)
    monkeypatch.setenv("OPS_CLIENT_ID", simulator.credentials["client_id"])
    monkeypatch.setenv("OPS_CLIENT_SECRET", simulator.credentials["client_secret"])
    runtime = Runtime(load_config(path))
    from impactin_core._stats import RunReport

    runtime.submit(
        list(_records([donation("gift-1")])),
        run_id="stopped",
        report=RunReport(run_id="stopped"),
    )
    delivery = runtime.store.list_deliveries()[0]
    runtime.store.update_delivery(delivery["id"], status="in_flight")

    asyncio.run(runtime.resume())

    row = runtime.store.get_delivery(delivery["id"])
    runtime.close()
    assert row is not None
    assert row["status"] == "delivered"
    assert len(simulator.journal.entries) == 1


def _records(rows: list[dict[str, Any]]) -> Iterator[Any]:
    from impactin_core import ImpactRecord
    from impactin_core._converter import converter

    for row in rows:
        yield converter.structure(row, ImpactRecord)


# -- quarantine -----------------------------------------------------------------


@pytest.fixture
def rejected(config: Path) -> dict[str, Any]:
    rows = [donation("gift-ok"), donation("gift-bad", amount_minor=-5)]
    invoke(config, "deliver", str(write_rows(config.parent, rows)))
    return quarantined(config)[0]


def test_quarantine_list_shows_reason(config: Path, rejected: dict[str, Any]) -> None:
    result = invoke(config, "quarantine", "list")

    assert result.exit_code == 0, result.output
    assert rejected["id"][:12] in result.output
    assert "amount_minor" in result.output


def test_resubmit_with_set(
    config: Path, benevity: Served, rejected: dict[str, Any]
) -> None:
    _, simulator = benevity

    result = invoke(
        config,
        "quarantine",
        "resubmit",
        rejected["id"][:12],
        "--set",
        "amount_minor=700",
    )

    assert result.exit_code == 0, result.output
    assert quarantined(config) == []
    sent = [entry["payload"] for entry in simulator.journal.entries]
    assert len(sent) == 2
    delivered = [row["source_id"] for row in deliveries(config)]
    assert "gift-bad" in delivered


def test_resubmit_with_file(config: Path, rejected: dict[str, Any]) -> None:
    corrected = config.parent / "corrected.jsonl"
    corrected.write_text(json.dumps(donation("gift-bad", amount_minor=900)) + "\n")

    result = invoke(
        config, "quarantine", "resubmit", rejected["id"], "--file", str(corrected)
    )

    assert result.exit_code == 0, result.output
    statuses = {row["source_id"]: row["status"] for row in deliveries(config)}
    assert statuses["gift-bad"] == "delivered"


def test_resubmit_still_invalid(config: Path, rejected: dict[str, Any]) -> None:
    result = invoke(
        config, "quarantine", "resubmit", rejected["id"], "--set", "amount_minor=0"
    )

    assert result.exit_code == 1
    assert "still invalid" in result.output
    assert [row["id"] for row in quarantined(config)] == [rejected["id"]]


def test_resubmit_twice_is_rejected(config: Path, rejected: dict[str, Any]) -> None:
    invoke(config, "quarantine", "resubmit", rejected["id"], "--set", "amount_minor=7")

    result = invoke(
        config, "quarantine", "resubmit", rejected["id"], "--set", "amount_minor=7"
    )

    assert result.exit_code == 1
    assert "already re-submitted" in result.output


def test_resubmit_quarantined_again_stays_listed(
    config: Path, benevity: Served
) -> None:
    invoke(config, "deliver", str(write_rows(config.parent, [donation("gift-c")])))
    changed = [donation("gift-c", amount_minor=4200)]
    invoke(config, "deliver", str(write_rows(config.parent, changed)))
    (conflict,) = quarantined(config)

    result = invoke(
        config, "quarantine", "resubmit", conflict["id"], "--set", "amount_minor=4300"
    )

    still_open = quarantined(config)
    assert result.exit_code == 1, result.output
    assert "quarantined again" in result.output
    assert len(still_open) == 1
    assert still_open[0]["id"] != conflict["id"]
    assert still_open[0]["source_id"] == "gift-c"
    assert "different content" in still_open[0]["reason"]


def test_resubmit_cannot_change_tenant(config: Path, rejected: dict[str, Any]) -> None:
    result = invoke(
        config,
        "quarantine",
        "resubmit",
        rejected["id"],
        "--set",
        "amount_minor=700",
        "--set",
        "tenant=globex",
    )

    assert result.exit_code == 2
    assert "cannot move it to tenant 'globex'" in result.output
    assert [row["id"] for row in quarantined(config)] == [rejected["id"]]


def test_corrected_blocked_record_keeps_source_id(
    config: Path, benevity: Served
) -> None:
    """A record blocked for personal data is sent once corrected, same source id."""
    _, simulator = benevity
    phone_like = [donation("gift-p", organization_id="2125550147")]
    invoke(config, "deliver", str(write_rows(config.parent, phone_like)))
    (blocked,) = deliveries(config)

    corrected = [donation("gift-p", organization_id="ORG-2125")]
    result = invoke(config, "deliver", str(write_rows(config.parent, corrected)))

    by_id = {row["id"]: row for row in deliveries(config)}
    assert result.exit_code == 0, result.output
    assert blocked["status"] == "blocked"
    assert by_id[blocked["id"]]["replayed_by"] is not None
    assert by_id[by_id[blocked["id"]]["replayed_by"]]["status"] == "delivered"
    assert quarantined(config) == []
    assert len(simulator.journal.entries) == 1


def test_resubmit_unknown_id(config: Path, rejected: dict[str, Any]) -> None:
    result = invoke(config, "quarantine", "resubmit", "nope", "--set", "hours=1")

    assert result.exit_code == 1
    assert "no quarantined row matches" in result.output


def test_read_command_needs_existing_store(config: Path) -> None:
    """A mistyped store.path is reported instead of creating an empty store."""
    result = invoke(config, "deliveries", "list")

    store = load_config(config).store_path
    assert result.exit_code == 1
    assert f"No store at {store}" in result.output
    assert "check store.path" in result.output
    assert not store.exists()


def test_read_command_rejects_empty_store_file(config: Path) -> None:
    store = load_config(config).store_path
    store.touch()

    result = invoke(config, "health")

    assert result.exit_code == 1
    assert f"No store at {store}" in result.output
    assert store.stat().st_size == 0


def test_resubmit_needs_a_change(config: Path, rejected: dict[str, Any]) -> None:
    result = invoke(config, "quarantine", "resubmit", rejected["id"])

    assert result.exit_code == 2
    assert "--set" in result.output


def test_resubmit_rejects_bad_assignment(
    config: Path, rejected: dict[str, Any]
) -> None:
    result = invoke(config, "quarantine", "resubmit", rejected["id"], "--set", "x")

    assert result.exit_code == 2
    assert "FIELD=VALUE" in result.output


CSV_HEADER = (
    "source_id,tenant,kind,activity_date,employee_id,employee_email,"
    "amount_minor,currency,organization_id,metadata.team\n"
)


def write_csv(folder: Path, *rows: str) -> Path:
    path = folder / "rows.csv"
    path.write_text(CSV_HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def stored_records(config: Path) -> dict[str, dict[str, Any]]:
    runtime = Runtime(load_config(config))
    try:
        return {
            row["source_id"]: runtime.store.load_record(row["id"])
            for row in runtime.store.list_deliveries(limit=None)
        }
    finally:
        runtime.close()


def resubmit(config: Path, row_id: str, *assignments: str) -> Result:
    """Run ``quarantine resubmit`` with one ``--set`` per assignment."""
    options = [part for text in assignments for part in ("--set", text)]
    return invoke(config, "quarantine", "resubmit", row_id, *options)


@pytest.fixture
def rejected_csv(config: Path) -> dict[str, Any]:
    path = write_csv(
        config.parent,
        "gift-1,acme,donation,2025-03-01,E-000101,ana.silva@example.org,"
        "2500,USD,ORG-1701,blue",
        "gift-2,acme,donation,2025-03-01,E-000102,Bo North <bo@example.org>,"
        "3100,usd,ORG-1701,green",
    )
    invoke(config, "deliver", str(path))
    (entry,) = quarantined(config)
    assert entry["field"] == "employee_email"
    return entry


def test_resubmit_csv_row_with_metadata(
    config: Path, rejected_csv: dict[str, Any]
) -> None:
    result = resubmit(config, rejected_csv["id"], "employee_email=bo.north@example.org")

    record = stored_records(config)["gift-2"]
    assert result.exit_code == 0, result.output
    assert quarantined(config) == []
    assert record["metadata"] == {"team": "green"}
    assert record["amount_minor"] == 3100
    assert record["currency"] == "USD"


def test_resubmit_csv_row_sets_metadata(
    config: Path, rejected_csv: dict[str, Any]
) -> None:
    result = resubmit(
        config,
        rejected_csv["id"],
        "employee_email=bo.north@example.org",
        "metadata.team=red",
        "metadata.site=Leeds",
    )

    assert result.exit_code == 0, result.output
    record = stored_records(config)["gift-2"]
    assert record["metadata"] == {"team": "red", "site": "Leeds"}


def test_resubmit_csv_row_with_extra_cells(config: Path) -> None:
    path = write_csv(
        config.parent,
        "gift-3,acme,donation,2025-03-01,E-000103,cyd@example.org,"
        "2500,USD,ORG-1701,blue,stray",
    )
    invoke(config, "deliver", str(path))
    (entry,) = quarantined(config)

    still_extra = resubmit(config, entry["id"], "organization_id=ORG-1702")
    dropped = resubmit(config, entry["id"], "_extra_cells=null")

    assert still_extra.exit_code == 1
    assert "1 cells more than the header" in still_extra.output
    assert dropped.exit_code == 0, dropped.output
    assert stored_records(config)["gift-3"]["metadata"] == {"team": "blue"}


def test_resubmit_json_row_sets_metadata_key(
    config: Path, rejected: dict[str, Any]
) -> None:
    result = resubmit(config, rejected["id"], "amount_minor=700", "metadata.team=green")

    assert result.exit_code == 0, result.output
    assert stored_records(config)["gift-bad"]["metadata"] == {"team": "green"}


def test_resubmit_file_with_duplicate_key(
    config: Path, rejected: dict[str, Any]
) -> None:
    corrected = config.parent / "corrected.jsonl"
    text = json.dumps(donation("gift-bad", amount_minor=900))
    corrected.write_text(text.replace("{", '{"amount_minor": 5, ', 1) + "\n")

    result = invoke(
        config, "quarantine", "resubmit", rejected["id"], "--file", str(corrected)
    )

    assert result.exit_code == 2
    assert "has the key 'amount_minor' more than once" in result.output
    assert [row["id"] for row in quarantined(config)] == [rejected["id"]]


# -- resume ---------------------------------------------------------------------


def test_resume_mentions_deferred(
    config: Path, benevity: Served, tmp_path: Path
) -> None:
    """A long Retry-After defers a delivery, and resume prints how to send it."""
    server, simulator = benevity
    set_faults(server, script=["429"], retry_after="86400")
    delivered = invoke(config, "deliver", str(write_rows(tmp_path, [donation("g-1")])))

    resumed = invoke(config, "resume")
    resumed_all = invoke(config, "resume", "--all")

    assert delivered.exit_code == 0, delivered.output
    assert resumed.exit_code == 0, resumed.output
    assert "1 deliveries are deferred" in resumed.output
    assert "impactin resume --all" in resumed.output
    assert resumed_all.exit_code == 0, resumed_all.output
    assert "deliveries are deferred" not in resumed_all.output
    assert [row["status"] for row in deliveries(config)] == ["delivered"]
    assert len(simulator.journal.entries) == 1


def test_deliver_unknown_tenant_option(config: Path, tmp_path: Path) -> None:
    rows = write_rows(tmp_path, [donation("g-1", tenant="nosuch")])

    result = invoke(config, "deliver", str(rows), "--tenant", "nosuch")

    assert result.exit_code == 2
    assert "'nosuch' is not configured (configured: acme)" in result.output
    assert deliveries(config) == []
    assert quarantined(config) == []
