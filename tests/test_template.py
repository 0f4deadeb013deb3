"""A connector from 'impactin new-connector' installs and passes the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from impactin_core._cli import main


@pytest.mark.slow
def test_generated_connector_conforms(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["new-connector", "tmpl_probe", "--dest", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    package = tmp_path / "impactin_tmpl_probe"
    # NOTE: building a wheel for '--target' fails in environments without the
    # wheel package, so the test installs editable into the current
    # environment and uninstalls in 'finally'.
    pip = [sys.executable, "-m", "pip", "--quiet"]
    install = subprocess.run(
        [*pip, "install", "--no-deps", "-e", str(package)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    try:
        # Load only the generated connector, as if it were installed alone.
        environment = {**os.environ, "IMPACTIN_LOAD_PLUGINS": "tmpl_probe"}
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=package,
            env=environment,
        )
    finally:
        subprocess.run(
            [*pip, "uninstall", "--yes", "impactin-tmpl-probe"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert suite.returncode == 0, suite.stdout[-4000:]
    assert "27 passed" in suite.stdout, suite.stdout[-2000:]


def test_new_connector_runs_without_the_test_extras(tmp_path: Path) -> None:
    """The guide runs new-connector before anything is installed for tests."""
    script = (
        "import sys\n"
        "sys.modules['pytest'] = None\n"
        "sys.modules['hypothesis'] = None\n"
        "from impactin_core._cli import main\n"
        "main(['new-connector', 'bare_probe', '--dest', sys.argv[1]])\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "Created" in result.stdout
    assert (tmp_path / "impactin_bare_probe" / "pyproject.toml").is_file()


@pytest.mark.parametrize("name", ["benevity", "goodera", "workday"])
def test_bundled_connector_name_is_rejected(tmp_path: Path, name: str) -> None:
    result = CliRunner().invoke(main, ["new-connector", name, "--dest", str(tmp_path)])

    assert result.exit_code == 1, result.output
    assert f"bundled with impactin (impactin-{name})" in result.output
    assert not (tmp_path / f"impactin_{name}").exists()


def test_template_send_uses_context_clock(tmp_path: Path) -> None:
    from impactin_core._connector_template import render_connector

    package = render_connector("clock_probe", tmp_path)
    plugin = (package / "src" / "impactin_clock_probe" / "_plugin.py").read_text()

    assert "import time" not in plugin
    assert "now=context.clock()" in plugin
    assert "known_values=[request.payload[" in plugin
