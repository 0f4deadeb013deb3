"""The command line against the simulators, as an operator uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from impactin_core import Runtime, load_config
from impactin_core._cli import main
from impactin_core._crypto import generate_key
from impactin_core._demo import running_simulators
from impactin_core._plugins import PluginHost

RECORDS = [
    {
        "source_id": "gift-1",
        "tenant": "acme",
        "kind": "donation",
        "activity_date": "2026-03-01",
        "employee_id": "E-000101",
        "employee_email": "ana.silva@example.com",
        "amount_minor": 2500,
        "currency": "USD",
        "organization_id": "org-42",
        "organization_name": "City Food Bank",
    },
    {
        "source_id": "shift-1",
        "tenant": "acme",
        "kind": "volunteer_time",
        "activity_date": "2026-03-02",
        "employee_id": "E-000102",
        "employee_email": "ben.okafor@example.com",
        "hours": 3.5,
        "organization_name": "Riverside Park",
    },
    {"source_id": "broken-1", "tenant": "acme", "kind": "donation"},
]


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[str, str]]:
    plugins = PluginHost.from_entry_points()
    with running_simulators(
        plugins, ["benevity", "goodera", "workday"], None
    ) as servers:
        yield {
            name: json.dumps({"url": server.url, **simulator.credentials})
            for name, (server, simulator) in servers.items()
        }


@pytest.fixture
def workspace(
    tmp_path: Path, simulators: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Path:
    servers = {name: json.loads(value) for name, value in simulators.items()}
    monkeypatch.setenv("CLI_STORE_KEY", generate_key())
    monkeypatch.setenv("CLI_ACME_KEY", "acme-tenant-secret")
    lines = [
        "[store]",
        'path = "state.db"',
        'key_env = "CLI_STORE_KEY"',
        "[tenants.acme]",
        'key_env = "CLI_ACME_KEY"',
    ]
    options = {
        "benevity": 'foundation_id = "f-1"',
        "goodera": 'opportunity_id = "64b7f0c2a1d3e4f5a6b7c8d9"',
        "workday": 'tenant_name = "sandbox"',
    }
    for platform, server in servers.items():
        credentials = []
        for name, value in server.items():
            if name == "url":
                continue
            env_name = f"CLI_{platform.upper()}_{name.upper()}"
            monkeypatch.setenv(env_name, value)
            credentials.append(f'{name} = "{env_name}"')
        lines += [
            f"[tenants.acme.platforms.{platform}]",
            f'base_url = "{server["url"]}"',
            f"credentials = {{ {', '.join(credentials)} }}",
            f"options = {{ {options[platform]} }}",
        ]
    (tmp_path / "impactin.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(json.dumps(row) + "\n" for row in RECORDS), encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_deliver_prints_summary(workspace: Path) -> None:
    output = invoke("deliver", "records.jsonl")

    assert "benevity" in output
    assert "goodera" in output
    assert "workday" in output


def test_deliveries_list_and_show(workspace: Path) -> None:
    invoke("deliver", "records.jsonl")

    listing = invoke("deliveries", "list", "--platform", "benevity")
    delivery_id = listing.split("│")[1].strip() if "│" in listing else ""
    shown = invoke("deliveries", "show", delivery_id)

    assert "delivered" in listing
    assert "evidence_hash" in shown
    assert "#1" in shown


def test_quarantine_lists_reason(workspace: Path) -> None:
    invoke("deliver", "records.jsonl")

    output = invoke("quarantine", "list")

    assert "broken-1" in output
    assert "missing" in output


def test_unstorable_rows_are_quarantined(workspace: Path) -> None:
    deep: dict[str, object] = {"leaf": 1}
    for _ in range(500):
        deep = {"child": deep}
    bad_rows = [
        {**RECORDS[0], "source_id": "gift-2", "description": "x\udc80y"},
        {**RECORDS[0], "source_id": "gift-3", "metadata": deep},
    ]
    lines = [json.dumps(row) for row in [*bad_rows, *RECORDS[:2]]]
    (workspace / "mixed.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    first = invoke("deliver", "mixed.jsonl")
    second = invoke("deliver", "mixed.jsonl")
    quarantined = invoke("quarantine", "list")

    benevity = next(line for line in first.splitlines() if "benevity" in line)
    assert [cell.strip() for cell in benevity.split("│") if cell.strip()][1] == "1"
    assert "benevity" in second
    assert "gift-2" in quarantined
    assert "gift-3" in quarantined
    assert "surrogate" in quarantined


def test_mapped_rejects_keep_tenant(workspace: Path) -> None:
    config = workspace / "impactin.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + "[inputs.gifts]\n"
        + 'kind = "donation"\n'
        + "[inputs.gifts.columns]\n"
        + 'source_id = "id"\n'
        + 'tenant = "company"\n'
        + 'activity_date = "date"\n'
        + 'employee_id = "employee"\n'
        + 'amount_minor = "amount"\n'
        + 'currency = "currency"\n'
        + "[inputs.gifts.formats]\n"
        + 'amount = "decimal"\n',
        encoding="utf-8",
    )
    (workspace / "gifts.csv").write_text(
        "id,company,date,employee,amount,currency\n"
        'gift-9,acme,2026-03-01,E-000109,"12,34",USD\n',
        encoding="utf-8",
    )

    summary = invoke("deliver", "gifts.csv", "--input", "gifts")
    quarantined = invoke("quarantine", "list")

    row = next(line for line in quarantined.splitlines() if "gift-9" in line)
    assert [cell.strip() for cell in row.split("│")][2] == "acme"
    assert "(no platform)" not in summary
    benevity = next(line for line in summary.splitlines() if "benevity" in line)
    assert [cell.strip() for cell in benevity.split("│") if cell.strip()][3] == "1"


def test_second_deliver_skips(workspace: Path) -> None:
    invoke("deliver", "records.jsonl")

    output = invoke("deliver", "records.jsonl")

    row = next(line for line in output.splitlines() if "benevity" in line)
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    assert cells[1] == "0"
    assert cells[2] == "1"


def test_plugins_lists_connectors() -> None:
    output = invoke("plugins")

    for name in ("benevity", "goodera", "workday"):
        assert name in output


def run_after_cli(args: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run the command line with ``args`` in a new process, then ``code`` there."""
    script = (
        "import sys\n"
        "from impactin_core._cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
    ) + code
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )


def test_plugins_loads_no_network_stack() -> None:
    # Every start of the command line lists the connectors, so httpx,
    # asyncio and the SOAP stack load only when something is sent.
    result = run_after_cli(
        ["plugins"],
        "heavy = ('httpx', 'asyncio', 'ssl', 'zeep', 'lxml')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n",
    )

    assert "workday" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_log_output_scrubs_loggers_made_after_start() -> None:
    """A connector may create its logger inside a hook, after the filter ran."""
    result = run_after_cli(
        ["-v", "plugins"],
        "import logging\n"
        "logger = logging.getLogger('impactin_late_connector')\n"
        "logger.warning('Mapped the activity of %s', 'maria.lopez@example.org')\n",
    )

    assert "impactin_late_connector: Mapped the activity of [email]" in result.stderr
    assert "maria.lopez" not in result.stderr


def test_missing_config_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMPACTIN_CONFIG", raising=False)

    result = CliRunner().invoke(main, ["deliveries", "list"])

    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


def test_unset_credential_names_variable(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLI_BENEVITY_CLIENT_SECRET")

    result = CliRunner().invoke(main, ["deliver", "records.jsonl"])

    assert result.exit_code == 1
    assert "CLI_BENEVITY_CLIENT_SECRET" in result.output


def test_time_outside_datetime_range_shown_raw() -> None:
    from impactin_core._cli import _time

    assert _time(1e20) == "1e+20"
    assert _time(0.0) == "1970-01-01 00:00:00"


def test_unread_credential_name_is_rejected(workspace: Path) -> None:
    config = workspace / "impactin.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("client_secret = ", "client_secrett = ", 1), encoding="utf-8"
    )

    result = CliRunner().invoke(main, ["deliver", "records.jsonl"])

    assert result.exit_code == 1
    assert "credentials.client_secrett is not a credential" in result.output
    assert "it reads: client_id, client_secret" in result.output


@pytest.mark.parametrize("platform", ["benevity", "goodera", "workday"])
def test_sandbox_section_delivers_sample_rows(
    platform: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The section 'impactin sandbox' prints works as printed."""
    from impactin_core._cli import sandbox_section

    plugins = PluginHost.from_entry_points()
    kinds = {kind.value for kind in plugins.platform(platform).info.kinds}
    accepted = [row for row in RECORDS[:2] if row["kind"] in kinds]
    with running_simulators(plugins, [platform], None) as servers:
        server, simulator = servers[platform]
        section = sandbox_section(platform, server.url, simulator)
        for name, value in simulator.credentials.items():
            monkeypatch.setenv(f"SANDBOX_{platform.upper()}_{name.upper()}", value)
        monkeypatch.setenv("SANDBOX_STORE_KEY", generate_key())
        monkeypatch.setenv("SANDBOX_ACME_KEY", "acme-tenant-secret")
        head = (
            '[store]\npath = "state.db"\nkey_env = "SANDBOX_STORE_KEY"\n'
            '[tenants.acme]\nkey_env = "SANDBOX_ACME_KEY"\n'
        )
        (tmp_path / "impactin.toml").write_text(head + section + "\n", "utf-8")
        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(json.dumps(row) + "\n" for row in RECORDS[:2]), "utf-8")
        monkeypatch.chdir(tmp_path)

        invoke("deliver", str(rows))

    runtime = Runtime(load_config(tmp_path / "impactin.toml"))
    try:
        statuses = runtime.store.count_by_status()
    finally:
        runtime.close()
    assert accepted
    assert statuses == {(platform, "acme"): {"delivered": len(accepted)}}
