"""Console span export for ``impactin demo --trace`` (needs opentelemetry-sdk)."""

from __future__ import annotations

import os

import click

__all__ = ["TRACE_ENV", "console_tracing", "tracing_from_environment"]

#: Environment variable that turns on span export for every command.
TRACE_ENV = "IMPACTIN_TRACE"
_TRACE_VALUES = ("console", "1", "true")

_installed = False


def tracing_from_environment() -> None:
    """Install span export when ``IMPACTIN_TRACE`` is ``console`` (or 1, true).

    An empty or unset variable, ``0`` and ``false`` leave tracing off.
    """
    value = os.environ.get(TRACE_ENV, "").strip().lower()
    if value in ("", "0", "false"):
        return
    if value not in _TRACE_VALUES:
        message = (
            f"{TRACE_ENV} is {value!r}; set it to 'console' to export spans, "
            "or unset it."
        )
        raise click.ClickException(message)
    console_tracing()


def console_tracing() -> None:
    """Install an SDK tracer provider exporting to the console, or OTLP when set.

    With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set and the OTLP exporter installed,
    spans go there instead. A second call in one process does nothing.
    """
    global _installed
    if _installed:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
        )
    except ImportError as exc:
        message = "--trace needs the OpenTelemetry SDK; pip install opentelemetry-sdk."
        raise click.ClickException(message) from exc
    provider = TracerProvider()
    exporter: object = ConsoleSpanExporter()
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError as exc:
            message = (
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is missing; "
                "pip install opentelemetry-exporter-otlp-proto-http."
            )
            raise click.ClickException(message) from exc
        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    trace.set_tracer_provider(provider)
    _installed = True
