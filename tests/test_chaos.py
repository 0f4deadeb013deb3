"""The chaos run: faulty simulators on 127.0.0.1, then an audit of every record.

The simulators return HTTP 500 to 20% of requests, hold 5% past the
client timeout, drop 5% of connections and send bursts of 429 with
``Retry-After``. Every record must end delivered exactly once or
dead-lettered with a reason, with nothing unaccounted for.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from impactin_core._chaos import ChaosFigures, ChaosPlan, run_chaos
from impactin_core._cli import main
from impactin_core._plugins import PluginHost


@pytest.fixture(autouse=True)
def _connectors() -> None:
    installed = PluginHost.from_entry_points().platforms
    missing = [
        name for name in ("benevity", "goodera", "workday") if name not in installed
    ]
    if missing:
        pytest.skip(f"connectors not installed: {', '.join(missing)}")


def check_figures(figures: ChaosFigures) -> None:
    for group in figures.groups:
        name = f"{group.tenant}/{group.platform}"
        assert group.records > 0, name
        assert group.unfinished == 0, name
        assert group.unaccounted == 0, name
        assert group.duplicates == 0, name
        assert group.delivered_missing == 0, name
        assert group.without_reason == 0, name
        assert group.delivered + group.dead_lettered == group.records, name
        if not group.replay_safe and group.platform != "workday":
            assert group.repeats == 0, name
    assert figures.problems == []


def test_chaos_small(tmp_path: Path) -> None:
    figures = run_chaos(ChaosPlan(records=500, seed=5), tmp_path)

    check_figures(figures)
    assert figures.retried > 0
    assert sum(group.dead_lettered for group in figures.groups) > 0
    assert sum(figures.requests.values()) > 500


@pytest.mark.slow
def test_chaos_ten_thousand(tmp_path: Path) -> None:
    figures = run_chaos(ChaosPlan(records=10_000, seed=1, concurrency=32), tmp_path)

    check_figures(figures)
    assert sum(group.records for group in figures.groups) == 10_000


def test_chaos_command_prints_figures(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["chaos", "--records", "60", "--dir", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    assert "bn-strict" in result.output
    assert "Every record is delivered once" in result.output
