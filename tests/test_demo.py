"""The demo end to end: the command a new user runs first."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

PLATFORMS = ("benevity", "goodera", "workday")


def run_demo(folder: Path) -> str:
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "impactin_core._cli", "demo", "--dir", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def table_row(output: str, platform: str) -> list[str]:
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line) if cell.strip()]
        if cells and cells[0] == platform:
            return cells
    raise AssertionError(f"no summary row for {platform} in:\n{output}")


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    folder = tmp_path_factory.mktemp("demo")
    first = run_demo(folder)
    second = run_demo(folder)
    return folder, first, second


def test_first_run_delivers_every_platform(demo_runs: tuple[Path, str, str]) -> None:
    _, first, _ = demo_runs

    for platform in PLATFORMS:
        delivered = int(table_row(first, platform)[1])
        assert delivered > 0, platform


def test_second_run_skips_everything(demo_runs: tuple[Path, str, str]) -> None:
    folder, _, second = demo_runs
    database = sqlite3.connect(folder / "impactin-demo.db")
    delivered = dict(
        database.execute(
            "SELECT platform, COUNT(*) FROM deliveries WHERE status = 'delivered' "
            "GROUP BY platform"
        ).fetchall()
    )

    for platform in PLATFORMS:
        row = table_row(second, platform)
        assert int(row[1]) == 0, platform
        assert int(row[2]) == delivered[platform], platform


def test_second_run_counts_earlier_failures(
    demo_runs: tuple[Path, str, str],
) -> None:
    """Records dead-lettered in the first run are counted, not silently dropped."""
    folder, _, second = demo_runs
    database = sqlite3.connect(folder / "impactin-demo.db")
    failed = database.execute(
        "SELECT COUNT(*) FROM deliveries WHERE status IN ('dead_lettered', 'blocked')"
    ).fetchone()[0]

    assert failed > 0
    assert f"{failed} records failed in an earlier demo run" in second


def test_demo_accounts_for_every_record(demo_runs: tuple[Path, str, str]) -> None:
    folder, _, _ = demo_runs
    database = sqlite3.connect(folder / "impactin-demo.db")
    statuses = dict(
        database.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
    )
    quarantined = database.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]

    assert statuses.get("in_flight", 0) == 0
    assert quarantined > 0
    assert sum(statuses.values()) > 0


def test_demo_redacts_personal_data(demo_runs: tuple[Path, str, str]) -> None:
    _, first, _ = demo_runs

    redacted = sum(int(table_row(first, platform)[8]) for platform in PLATFORMS)

    assert redacted > 0
