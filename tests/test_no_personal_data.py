"""No personal value reaches a log record, span, exception or the SQLite file.

The real runtime delivers records full of personal data to the three real
simulators on 127.0.0.1. The Workday simulator knows only one worker, so the
other record gets a SOAP ``Validation_Fault`` that quotes its Employee_ID.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from impactin_core import ImpactRecord
from impactin_core._config import EnvSecrets
from impactin_core._demo import demo_config
from impactin_core._pipeline import Runtime
from impactin_core._plugins import PluginHost
from impactin_core._telemetry import Instruments
from impactin_core.sandbox import SandboxServer, Simulator

pytest.importorskip("impactin_benevity")
pytest.importorskip("impactin_goodera")
workday_simulator = pytest.importorskip("impactin_workday.simulator")

UNKNOWN_WORKER = "E-004217"
KNOWN_WORKER = "E-009876"

#: Each value the test plants, and the spellings searched for.
PERSONAL_VALUES = {
    "employee id (unknown worker)": [UNKNOWN_WORKER, "E-004217".lower()],
    "employee id (known worker)": [KNOWN_WORKER, "E-009876".lower()],
    "email": ["maria.lopez+volunteer@example.org", "maria.lopez"],
    "second email": ["tomas.berg@example.com", "tomas.berg"],
    "fullwidth email": ["bob\uff20example.net", "bob@example.net"],
    "zero-width email": ["dana@\u200bexample.com", "dana@example.com"],
    "name": ["Maria Lopez", "maria lopez"],
    "second name": ["Tomas Berg", "tomas berg"],
    "phone": ["+44 7700 900123", "7700 900123", "447700900123"],
    "national phone": ["07700 900 123", "07700900123"],
    "korean phone": ["+82 10-1234-5678", "1012345678"],
    "ssn": ["123-45-6789", "123\u201045\u20106789", "123456789"],
    "nino": ["AB 12 34 56 C", "AB123456C"],
}

# Loggers of the simulators and of their HTTP server. They stand in for the
# platforms, which receive the needed fields by design.
PLATFORM_SIDE_LOGGERS = ("impactin.workday.simulator", "uvicorn")


def records() -> list[ImpactRecord]:
    free_text = (
        "Maria Lopez (maria.lopez+volunteer@example.org, +44 7700 900123) "
        "tutored; SSN 123\u201045\u20106789, NI AB 12 34 56 C."
    )
    metadata = {
        "contact": {"notes": ["call 07700 900 123", "bob\uff20example.net"]},
        "manager": "dana@\u200bexample.com",
        "team": [{"lead": "+82 10-1234-5678"}],
    }
    common: dict[str, Any] = {
        "tenant": "acme",
        "activity_date": dt.date(2026, 3, 1),
        "employee_phone": "+44 7700 900123",
        "description": free_text,
        "location": "Call 07700 900 123",
        "metadata": metadata,
        "organization_id": "ORG-1701",
        "organization_name": "Open Doors Community Arts",
    }
    return [
        ImpactRecord(
            source_id="npd-hours-1",
            kind="volunteer_time",
            hours=2.5,
            employee_id=UNKNOWN_WORKER,
            employee_email="maria.lopez+volunteer@example.org",
            employee_name="Maria Lopez",
            **common,
        ),
        ImpactRecord(
            source_id="npd-gift-1",
            kind="donation",
            amount_minor=2500,
            currency="USD",
            employee_id=KNOWN_WORKER,
            employee_email="tomas.berg@example.com",
            employee_name="Tomas Berg",
            **common,
        ),
    ]


class Capture(logging.Handler):
    """Every log record of every logger, formatted with its exception."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(PLATFORM_SIDE_LOGGERS):
            return
        self.texts.append(self.format(record))


@pytest.fixture(scope="module")
def log_capture() -> Iterator[Capture]:
    root = logging.getLogger()
    handler = Capture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def span_texts(spans: tuple[ReadableSpan, ...]) -> list[str]:
    texts = []
    for span in spans:
        texts.append(span.name)
        texts.extend(f"{key}={value}" for key, value in (span.attributes or {}).items())
        if span.status.description:
            texts.append(span.status.description)
        for event in span.events:
            texts.append(event.name)
            attributes = event.attributes or {}
            texts.extend(f"{key}={value}" for key, value in attributes.items())
    return texts


def start_simulators() -> dict[str, tuple[SandboxServer, Simulator]]:
    plugins = PluginHost.from_entry_points()
    servers: dict[str, tuple[SandboxServer, Simulator]] = {}
    for platform in ("benevity", "goodera"):
        from impactin_core._demo import load_simulator

        simulator = load_simulator(plugins, platform, None)
        servers[platform] = (SandboxServer(simulator.app).start(), simulator)
    workday = workday_simulator.create_simulator(workers=[KNOWN_WORKER])
    servers["workday"] = (SandboxServer(workday.app).start(), workday)
    return servers


@pytest.fixture(scope="module")
def delivered(
    tmp_path_factory: pytest.TempPathFactory, log_capture: Capture
) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield deliver_and_capture(
            tmp_path_factory.mktemp("no-personal-data"), log_capture, monkeypatch
        )


def deliver_and_capture(
    tmp_path: Path, log_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    exceptions: list[str] = []
    servers = start_simulators()
    try:
        environ: dict[str, str] = {}
        config = demo_config(tmp_path, servers, environ)
        # The runtime gets its own tracer provider; the global one stays.
        runtime = Runtime(
            config,
            secrets=EnvSecrets(environ),
            instruments=Instruments(tracer_provider=provider),
        )
        original_attempt = runtime._attempt

        async def watched_attempt(*args: Any, **kwargs: Any) -> Any:
            try:
                return await original_attempt(*args, **kwargs)
            except Exception as exc:
                exceptions.append("".join(traceback.format_exception(exc)))
                raise

        monkeypatch.setattr(runtime, "_attempt", watched_attempt)
        try:
            report = asyncio.run(runtime.deliver(records()))
            store_path = Path(runtime.store.path)
            statuses = [
                row["status"] for row in runtime.store.list_deliveries(limit=None)
            ]
            database = [store_path.read_bytes()]
            wal = store_path.with_name(store_path.name + "-wal")
            if wal.exists():
                database.append(wal.read_bytes())
        finally:
            runtime.close()
        database.append(store_path.read_bytes())
    finally:
        for server, _ in servers.values():
            server.stop()
    provider.shutdown()
    return {
        "report": report,
        "statuses": statuses,
        "logs": log_capture.texts,
        "spans": span_texts(exporter.get_finished_spans()),
        "exceptions": exceptions,
        "database": b"".join(database),
    }


def find_leaks(texts: list[str]) -> list[str]:
    haystack = "\n".join(texts).casefold()
    return [
        label
        for label, spellings in PERSONAL_VALUES.items()
        if any(spelling.casefold() in haystack for spelling in spellings)
    ]


def test_run_exercises_every_path(delivered: dict[str, Any]) -> None:
    statuses = delivered["statuses"]

    assert statuses.count("delivered") >= 3
    assert "dead_lettered" in statuses
    assert delivered["report"].platforms["workday"].dead_lettered == 1


def test_captures_are_not_empty(delivered: dict[str, Any]) -> None:
    assert delivered["logs"]
    assert delivered["spans"]
    assert delivered["exceptions"]
    assert any(text == "exception" for text in delivered["spans"])


def test_workday_fault_is_recorded(delivered: dict[str, Any]) -> None:
    exceptions = "\n".join(delivered["exceptions"])

    assert "Invalid ID value" in exceptions


@pytest.mark.parametrize(
    "capture",
    [
        pytest.param("logs", id="logs"),
        pytest.param("spans", id="spans"),
        pytest.param("exceptions", id="exceptions"),
    ],
)
def test_no_personal_value_in(delivered: dict[str, Any], capture: str) -> None:
    assert find_leaks(delivered[capture]) == []


def test_no_personal_value_in_sqlite(delivered: dict[str, Any]) -> None:
    text = delivered["database"].decode("utf-8", "replace")

    assert find_leaks([text]) == []
