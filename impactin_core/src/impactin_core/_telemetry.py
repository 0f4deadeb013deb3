"""OpenTelemetry spans and metrics through the API only.

Without an OpenTelemetry SDK installed, the API returns no-op tracers and
meters, so every call here costs a function call and nothing more.
Attribute values are ids and platform names, never personal data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
from opentelemetry import metrics, propagate, trace

__all__ = ["Instruments", "inject_traceparent", "tracer"]

tracer = trace.get_tracer("impactin")

#: Span attribute names the runtime may set; anything else is dropped.
ALLOWED_ATTRIBUTES = frozenset(
    {
        "tenant_id",
        "platform",
        "delivery_id",
        "correlation_id",
        "operation",
        "attempt",
        "outcome",
        "http.status_code",
        "retry_after",
        "delay_s",
        "idempotency_key",
        "kind",
    }
)


def safe_attributes(values: dict[str, Any]) -> dict[str, Any]:
    """Keep only attributes on the allow list, so no personal value gets in."""
    return {
        name: value
        for name, value in values.items()
        if name in ALLOWED_ATTRIBUTES and value is not None
    }


class Instruments:
    """The metric instruments, created once per meter provider."""

    def __init__(self) -> None:
        meter = metrics.get_meter("impactin")
        self.deliveries = meter.create_counter(
            "impact_in_deliveries_total", description="Finished deliveries by status"
        )
        self.latency = meter.create_histogram(
            "impact_in_delivery_latency_seconds",
            unit="s",
            description="Time from the first attempt to the final outcome",
        )
        self.retries = meter.create_counter(
            "impact_in_retries_total", description="Retries scheduled"
        )
        self.rate_limit_hits = meter.create_counter(
            "impact_in_rate_limit_hits_total",
            description="Calls that waited for the rate limiter or got a 429",
        )
        self.idempotency_hits = meter.create_counter(
            "impact_in_idempotency_hits_total",
            description="Records skipped because their key was already delivered",
        )
        self.pii_blocked = meter.create_counter(
            "impact_in_pii_blocked_total",
            description="Sends blocked by the personal-data leak scan",
        )
        self.breaker_state = meter.create_up_down_counter(
            "impact_in_circuit_breaker_state",
            description="1 while the circuit of a tenant and platform is open",
        )
        self.token_refreshes = meter.create_counter(
            "impact_in_oauth_token_refreshes_total", description="OAuth tokens obtained"
        )
        self.webhook_failures = meter.create_counter(
            "impact_in_webhook_verification_failures_total",
            description="Inbound events rejected, by reason",
        )


def inject_traceparent(headers: httpx.Headers) -> None:
    """Add the W3C ``traceparent`` of the current span to outbound headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for name, value in carrier.items():
        headers[name] = value


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")


def record_events(
    span: trace.Span, events: Iterable[tuple[str, dict[str, Any]]]
) -> None:
    for name, attributes in events:
        span.add_event(name, safe_attributes(attributes))
