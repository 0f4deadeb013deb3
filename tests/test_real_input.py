"""Real public exports, mapped and delivered to the three simulators.

The files are NYC Service volunteer opportunities (2011-2012) and the
Quixote Foundation's grants (1998-2017). They hold no employees, so each row
gets a generated employee. Every row must end delivered or kept with a
reason: nothing is lost.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from impactin_core import ParsedRow, RejectedRow, read_records
from impactin_core._config import EnvSecrets
from impactin_core._demo import demo_config, running_simulators
from impactin_core._input import mappings_from_config
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core._stats import RunReport
from impactin_core.sandbox import SandboxServer, Simulator

ROOT = Path(__file__).resolve().parents[1]
ACTIVITIES = ROOT.parent / "shared" / "fixtures" / "activities"
FILES = {
    "nyc": ("nyc_service_volunteer_opportunities.csv", 665),
    "quixote": ("quixote_foundation_grants.csv", 548),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not ACTIVITIES.is_dir(),
        reason="the public activity files live outside the repository, absent here",
    ),
]


def employee(row_number: int, raw: Mapping[str, Any]) -> dict[str, str]:
    names = ("Ana Silva", "Ben Okafor", "Chen Wei", "Dara Quinn", "Eli Novak")
    name = names[row_number % len(names)]
    first, last = name.lower().split()
    return {
        "employee_id": f"E-{row_number:06d}",
        "employee_email": f"{first}.{last}.{row_number}@example.com",
        "employee_name": name,
    }


@pytest.fixture(scope="module")
def delivered() -> Iterator[tuple[Runtime, dict[str, RunReport], dict[str, Any]]]:
    plugins = PluginHost.from_entry_points()
    mappings = mappings_from_config(load_config_inputs())
    import tempfile

    with (
        tempfile.TemporaryDirectory() as folder,
        running_simulators(
            plugins, ["benevity", "goodera", "workday"], None
        ) as servers,
    ):
        environ: dict[str, str] = {}
        config = demo_config(Path(folder), servers, environ)
        runtime = Runtime(config, plugins=plugins, secrets=EnvSecrets(environ))
        reports = {}
        for name, (file_name, _) in FILES.items():
            rows = read_records(
                ACTIVITIES / file_name,
                tenant="acme",
                mapping=mappings[name],
                identity=employee,
            )
            reports[name] = asyncio.run(runtime.deliver(rows))
        yield runtime, reports, servers
        runtime.close()


def load_config_inputs() -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    data = tomllib.loads((ROOT / "tests" / "real_input.toml").read_text("utf-8"))
    inputs: dict[str, Any] = data["inputs"]
    return inputs


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_row_parses_or_is_rejected(name: str) -> None:
    file_name, expected_rows = FILES[name]
    mapping = mappings_from_config(load_config_inputs())[name]

    rows = list(
        read_records(
            ACTIVITIES / file_name, tenant="acme", mapping=mapping, identity=employee
        )
    )

    parsed = [row for row in rows if isinstance(row, ParsedRow)]
    rejected = [row for row in rows if isinstance(row, RejectedRow)]
    assert len(parsed) + len(rejected) == expected_rows
    assert all(row.reason for row in rejected)


def test_nothing_lost(
    delivered: tuple[Runtime, dict[str, RunReport], dict[str, Any]],
) -> None:
    runtime, _, _ = delivered
    rows = runtime.store.list_deliveries(limit=None)
    quarantined = runtime.store.quarantined()

    unfinished = [row for row in rows if row["status"] in ("pending", "in_flight")]
    unexplained = [
        row for row in rows if row["status"] != "delivered" and not row["error"]
    ]
    assert unfinished == []
    assert unexplained == []
    assert all(row["reason"] for row in quarantined)


def test_each_platform_received_its_records(
    delivered: tuple[Runtime, dict[str, RunReport], dict[str, Any]],
) -> None:
    runtime, _, servers = delivered
    journals: dict[str, tuple[SandboxServer, Simulator]] = servers

    for platform, (_, simulator) in journals.items():
        count = len(
            runtime.store.list_deliveries(
                filters={"platform": platform, "status": "delivered"}, limit=None
            )
        )
        snapshot = simulator.journal.snapshot()
        # Goodera journals events and registrations too; participation is the write.
        writes = [
            entry
            for entry in snapshot["entries"]
            if platform != "goodera" or entry.get("kind") == "participation"
        ]
        assert count > 0, platform
        assert len(writes) == count, platform
        assert snapshot["repeats"] == {}, platform


def test_routes_by_kind(
    delivered: tuple[Runtime, dict[str, RunReport], dict[str, Any]],
) -> None:
    _, reports, _ = delivered

    assert "benevity" not in reports["nyc"].platforms
    assert "goodera" not in reports["quixote"].platforms
    assert reports["nyc"].platforms["goodera"].delivered > 600
    assert reports["quixote"].platforms["benevity"].delivered > 500
    assert reports["quixote"].platforms["workday"].delivered > 500


def test_personal_data_redacted(
    delivered: tuple[Runtime, dict[str, RunReport], dict[str, Any]],
) -> None:
    _, reports, _ = delivered

    redacted = sum(
        stats.redacted
        for report in reports.values()
        for stats in report.platforms.values()
    )

    assert redacted > 0
