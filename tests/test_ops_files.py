"""The alert rules, their promtool tests, the dashboards and the runbook agree.

The metric names the code emits are read from the instrument definitions in
``impactin_core._telemetry``, so a renamed metric breaks these tests until
the ops files follow.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import impactin_core._telemetry as telemetry

yaml = pytest.importorskip("yaml", reason="PyYAML reads the alert rules")

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "ops" / "prometheus" / "impactin-alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "impactin-alerts.test.yml"
DASHBOARDS = sorted((ROOT / "ops" / "grafana").glob("*.json"))
RUNBOOK = ROOT / "docs" / "runbook.md"
METRIC = re.compile(r"\bimpact_in_[a-z0-9_]+")
REQUIRED_ALERTS = {
    "ImpactInDeliverySuccessRateLow",
    "ImpactInDeliveryLatencyHigh",
    "ImpactInRetriesExhausted",
    "ImpactInRateLimitHitsHigh",
    "ImpactInCircuitOpen",
    "ImpactInOAuthTokenExpiring",
    "ImpactInSLABreach",
}


def instrument_definitions() -> dict[str, str]:
    """Return {metric name: create_* method} for every instrument in the code."""
    tree = ast.parse(Path(telemetry.__file__).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if not node.func.attr.startswith("create_") or not node.args:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found[first.value] = node.func.attr
    return found


def emitted_series_names() -> set[str]:
    """Return the names Prometheus shows, with the histogram's series suffixes."""
    names: set[str] = set()
    for name, method in instrument_definitions().items():
        names.add(name)
        if method == "create_histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def github_anchor(heading: str) -> str:
    """Return the anchor GitHub renders for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.M)
    return {github_anchor(heading) for heading in headings}


def dashboard_queries(value: Any) -> list[str]:
    """Collect every ``expr`` and templating ``query`` string in a dashboard."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("expr", "query", "definition") and isinstance(item, str):
                found.append(item)
            else:
                found.extend(dashboard_queries(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(dashboard_queries(item))
    return found


def test_code_defines_the_declared_metrics() -> None:
    assert set(instrument_definitions()) == set(telemetry.METRIC_NAMES)


def test_two_dashboards_exist() -> None:
    assert [path.name for path in DASHBOARDS] == [
        "impactin-deliveries.json",
        "impactin-errors.json",
    ]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_dashboard_queries_use_emitted_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    queries = dashboard_queries(dashboard)
    emitted = emitted_series_names()

    assert queries
    for query in queries:
        if query == "prometheus":  # the data source variable's type
            continue
        used = set(METRIC.findall(query))
        assert used, query
        assert used <= emitted, f"{path.name}: {sorted(used - emitted)}"


def test_rules_cover_required_alerts() -> None:
    names = {rule["alert"] for rule in load_rules()}

    assert names == REQUIRED_ALERTS


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule["alert"])
def test_rule_is_complete(rule: dict[str, Any]) -> None:
    used = set(METRIC.findall(rule["expr"]))
    emitted = emitted_series_names()

    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"]
    assert used
    assert used <= emitted, sorted(used - emitted)


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule["alert"])
def test_runbook_url_resolves(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    path, _, anchor = url.partition("#")

    assert path == "docs/runbook.md"
    assert anchor in runbook_anchors(), url


def test_rule_tests_cover_every_alert() -> None:
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    fired: set[str] = set()
    silent: set[str] = set()
    for group in document["tests"]:
        for case in group["alert_rule_test"]:
            target = fired if case["exp_alerts"] else silent
            target.add(case["alertname"])

    assert fired == REQUIRED_ALERTS
    assert silent == REQUIRED_ALERTS


def run_promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH; install the Debian package prometheus")
    return subprocess.run(
        [promtool, *arguments],
        capture_output=True,
        text=True,
        cwd=RULES.parent,
        timeout=120,
        check=False,
    )


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", RULES.name)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name)

    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_exposition_names() -> None:
    exporter = pytest.importorskip(
        "opentelemetry.exporter.prometheus",
        reason="opentelemetry-exporter-prometheus is not installed",
    )
    prometheus_client = pytest.importorskip("prometheus_client")
    from opentelemetry.sdk.metrics import MeterProvider

    reader = exporter.PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        instruments = telemetry.Instruments(meter_provider=provider)
        instruments.deliveries.add(1, {"platform": "echo", "status": "delivered"})
        instruments.latency.record(2.0, {"platform": "echo"})
        text = prometheus_client.generate_latest().decode("utf-8")
    finally:
        # The reader registered a collector in prometheus_client's global
        # registry, and its shutdown removes it again.
        provider.shutdown()

    assert "impact_in_deliveries_total{" in text
    assert "impact_in_delivery_latency_seconds_bucket{" in text
    assert 'le="300.0"' in text
