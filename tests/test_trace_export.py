"""Span export to the console from the command line, with the OpenTelemetry SDK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

DELIVERY_SPAN = '"name": "impactin.delivery"'


def _run(arguments: list[str], **environ: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", **environ}
    # Spans must go to stdout, never to an OTLP endpoint set on this machine.
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, "-m", "impactin_core._cli", *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_demo_trace_prints_spans(tmp_path: Path) -> None:
    result = _run(["demo", "--no-faults", "--trace", "--dir", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert DELIVERY_SPAN in result.stdout


def test_trace_environment_prints_spans() -> None:
    """Check the switch on one span, because a demo run takes seconds."""
    script = (
        "from opentelemetry import trace\n"
        "from impactin_core._tracing_setup import tracing_from_environment\n"
        "tracing_from_environment()\n"
        "trace.get_tracer('check').start_span('impactin.delivery').end()\n"
    )
    env = {**os.environ, "IMPACTIN_TRACE": "console"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert DELIVERY_SPAN in result.stdout


def test_trace_off_prints_no_spans() -> None:
    result = _run(["keygen"], IMPACTIN_TRACE="0")
    assert result.returncode == 0, result.stderr
    assert '"trace_id"' not in result.stdout


def test_trace_environment_rejects_unknown() -> None:
    result = _run(["keygen"], IMPACTIN_TRACE="jaeger")
    assert result.returncode != 0
    assert "IMPACTIN_TRACE" in result.stderr
