"""``impactin conformance`` run against the bundled simulators."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from impactin_core._cli import main

# Rules that write through SOAP and REST and fetch an OAuth token. They need
# the tenant name and the REST path, and they run faster than the whole suite.
WRITE_RULES = "round_trip_types or token_refresh_and_rotation"


def run_conformance(
    *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command in a child process, as a shell would.

    The command calls ``pytest.main`` and exits with its status, so running
    it inside this pytest process would share this run's plugins and modules.
    """
    environ = dict(os.environ)
    environ.pop("PYTEST_ADDOPTS", None)
    command = [
        sys.executable,
        "-c",
        "from impactin_core._cli import main; main()",
        "conformance",
        *args,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
        check=False,
        cwd=cwd,
    )


def test_workday_passes_without_options(tmp_path: Path) -> None:
    # An empty configuration file stands for an installed copy, which has
    # none of this repository's pytest settings.
    settings = tmp_path / "pytest.ini"
    settings.write_text("[pytest]\n", encoding="utf-8")
    result = run_conformance(
        "workday", "--", "-k", WRITE_RULES, "-c", str(settings), cwd=tmp_path
    )
    output = result.stdout + result.stderr

    # Three runs pass, and the token rule skips SOAP, which takes no token.
    assert result.returncode == 0, output
    assert "3 passed, 1 skipped" in output
    assert "warning" not in output


def test_option_overrides_simulator_option() -> None:
    # The simulator serves only the tenant impactin_sandbox, so every write
    # to another tenant fails.
    result = run_conformance(
        "workday", "--option", "tenant_name=other", "--", "-k", WRITE_RULES
    )
    output = result.stdout + result.stderr

    assert result.returncode == 1, output
    assert "3 failed" in output


def test_unknown_platform_is_one_line_error() -> None:
    result = CliRunner().invoke(main, ["conformance", "nosuch"])
    lines = result.output.strip().splitlines()

    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.output
    assert "No connector for platform 'nosuch' is installed" in lines[0]
    assert "benevity, goodera, workday" in lines[0]


def test_unknown_option_is_one_line_error() -> None:
    result = CliRunner().invoke(
        main, ["conformance", "goodera", "--option", "timezon=UTC"]
    )
    lines = result.output.strip().splitlines()

    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.output
    assert "options.timezon" in lines[0]
    assert "did you mean 'timezone'?" in lines[0]
    assert "--option KEY=VALUE" in lines[0]


def test_invalid_option_value_is_one_line_error() -> None:
    result = CliRunner().invoke(
        main, ["conformance", "workday", "--option", "rest_path=no/"]
    )
    lines = result.output.strip().splitlines()

    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.output
    assert "options.rest_path is 'no/'" in lines[0]


def test_option_without_equals_is_usage_error() -> None:
    result = CliRunner().invoke(main, ["conformance", "goodera", "--option", "x"])

    assert result.exit_code == 2, result.output
    assert "Option 'x' is not KEY=VALUE" in result.output
