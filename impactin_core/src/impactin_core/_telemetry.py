"""OpenTelemetry spans and metrics through the API only.

Without an OpenTelemetry SDK installed, the API returns no-op tracers and
meters, so every call here costs a function call and nothing more.
Span attributes and metric labels are ids, platform names and fixed status
words, never personal data: ``safe_attributes`` and ``safe_labels`` drop
every name that is not on their allow lists.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, Protocol

import httpx
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation

from ._errors import StoreError

__all__ = [
    "BREAKER_STATE_VALUES",
    "LATENCY_BUCKETS",
    "METRIC_NAMES",
    "Instruments",
    "current_trace_id",
    "inject_traceparent",
    "safe_attributes",
    "safe_labels",
    "tracer",
]

logger = logging.getLogger("impactin.telemetry")

#: The tracer of code that has no ``Instruments`` at hand. The runtime uses
#: ``Instruments.tracer``, so tests can pass their own tracer provider.
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
        "detected_by",
    }
)

#: Metric label names the runtime may set. Other names are dropped, and the
#: values are tenant and platform ids or fixed words such as statuses.
ALLOWED_LABELS = frozenset(
    {"tenant", "platform", "status", "outcome", "reason", "detected_by"}
)

#: Values of ``impact_in_circuit_breaker_state``.
BREAKER_STATE_VALUES = {"closed": 0.0, "half-opened": 0.5, "opened": 1.0}

#: Histogram bucket bounds of ``impact_in_delivery_latency_seconds``, in
#: seconds. A bound at 300 s makes the 5-minute latency limit of the alert
#: rules and of ``impactin sla`` an exact bucket edge.
LATENCY_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)

#: Every metric name the runtime emits, as Prometheus shows it. The
#: OpenTelemetry Prometheus exporter adds ``_bucket``, ``_sum`` and
#: ``_count`` to the histogram.
METRIC_NAMES = (
    "impact_in_attempts_total",
    "impact_in_circuit_breaker_state",
    "impact_in_deliveries_total",
    "impact_in_delivery_latency_seconds",
    "impact_in_idempotency_hits_total",
    "impact_in_idempotency_keys",
    "impact_in_oauth_token_age_seconds",
    "impact_in_oauth_token_expiry_timestamp_seconds",
    "impact_in_oauth_token_refreshes_total",
    "impact_in_pii_blocked_total",
    "impact_in_rate_limit_hits_total",
    "impact_in_retries_exhausted_total",
    "impact_in_retries_total",
    "impact_in_webhook_verification_failures_total",
)


def safe_attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only attributes on the allow list, so no personal value gets in."""
    return {
        name: value
        for name, value in values.items()
        if name in ALLOWED_ATTRIBUTES and value is not None
    }


def safe_labels(values: Mapping[str, Any]) -> dict[str, str]:
    """Keep only metric labels on the allow list, as strings."""
    return {
        name: str(value)
        for name, value in values.items()
        if name in ALLOWED_LABELS and value is not None
    }


class _TokenStore(Protocol):
    def load_token(self, tenant: str, platform: str) -> Any: ...

    def save_token(self, tenant: str, platform: str, token: Any) -> None: ...

    def delete_token(self, tenant: str, platform: str) -> None: ...


class Instruments:
    """The runtime's tracer and metric instruments.

    ``meter_provider`` and ``tracer_provider`` default to the global ones,
    which are no-ops until a host application installs an SDK. The three
    observable gauges read the store and the circuit breakers of every
    runtime passed to ``watch``, each time a metric reader collects.
    """

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("impactin", tracer_provider=tracer_provider)
        meter = metrics.get_meter("impactin", meter_provider=meter_provider)
        self._provider_key = id(meter_provider) if meter_provider else 0

        self.deliveries = meter.create_counter(
            "impact_in_deliveries_total",
            description="Deliveries that reached a final status, by status",
        )
        self.latency = meter.create_histogram(
            "impact_in_delivery_latency_seconds",
            unit="s",
            description="Time from the first attempt to the delivered outcome",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS),
        )
        self.attempts = meter.create_counter(
            "impact_in_attempts_total",
            description="Send attempts, by outcome",
        )
        self.retries = meter.create_counter(
            "impact_in_retries_total", description="Retries scheduled"
        )
        self.retries_exhausted = meter.create_counter(
            "impact_in_retries_exhausted_total",
            description="Deliveries dead-lettered because retries ran out",
        )
        self.rate_limit_hits = meter.create_counter(
            "impact_in_rate_limit_hits_total",
            description="Attempts that waited for the rate limiter or got a 429",
        )
        self.idempotency_hits = meter.create_counter(
            "impact_in_idempotency_hits_total",
            description="Records found already delivered, by the store or the platform",
        )
        self.pii_blocked = meter.create_counter(
            "impact_in_pii_blocked_total",
            description="Sends blocked by the personal-data leak scan",
        )
        self.token_refreshes = meter.create_counter(
            "impact_in_oauth_token_refreshes_total",
            description="OAuth tokens obtained, by tenant and platform",
        )
        self.webhook_failures = meter.create_counter(
            "impact_in_webhook_verification_failures_total",
            description="Inbound webhook events rejected, by reason",
        )

        # A meter keeps the first instrument of each name, so these callbacks
        # read every watched runtime of this meter provider, not only ours.
        key = self._provider_key
        meter.create_observable_gauge(
            "impact_in_circuit_breaker_state",
            callbacks=[partial(_observe_breakers, key)],
            description="Circuit state: 0 closed, 0.5 half-open, 1 open",
        )
        meter.create_observable_gauge(
            "impact_in_idempotency_keys",
            callbacks=[partial(_observe_idempotency_keys, key)],
            description="Idempotency keys held in the store",
        )
        meter.create_observable_gauge(
            "impact_in_oauth_token_age_seconds",
            callbacks=[partial(_observe_token_ages, key)],
            unit="s",
            description="Seconds since the stored OAuth token was obtained",
        )
        meter.create_observable_gauge(
            "impact_in_oauth_token_expiry_timestamp_seconds",
            callbacks=[partial(_observe_token_expiries, key)],
            unit="s",
            description="Unix time at which the stored OAuth token expires",
        )

    def watch(self, runtime: Any) -> None:
        """Report the store and breakers of ``runtime`` in the observable gauges.

        ``runtime`` needs ``store``, ``breakers`` and ``clock`` attributes.
        It is held by a weak reference, and ``unwatch`` removes it.
        """
        with _WATCH_LOCK:
            _WATCHED.setdefault(self._provider_key, {})[id(runtime)] = weakref.ref(
                runtime
            )

    def unwatch(self, runtime: Any) -> None:
        """Stop reading ``runtime``, for example before its store closes."""
        with _WATCH_LOCK:
            _WATCHED.get(self._provider_key, {}).pop(id(runtime), None)

    def count_token_refresh(self, tenant: str, platform: str) -> None:
        """Count one OAuth token obtained for ``tenant`` on ``platform``."""
        labels = safe_labels({"tenant": tenant, "platform": platform})
        self.token_refreshes.add(1, labels)

    def counting_token_store(self, store: _TokenStore) -> _TokenStore:
        """Wrap ``store`` so that each token saved counts as one refresh."""
        return _CountingTokenStore(store, self.count_token_refresh)

    def count_webhook_rejection(self, platform: str, reason: str) -> None:
        """Count one inbound event rejected by verification, by its reason code."""
        labels = safe_labels({"platform": platform, "reason": reason})
        self.webhook_failures.add(1, labels)


class _CountingTokenStore:
    """A token store proxy that calls ``on_save`` after each saved token.

    The token cache saves a token only after it obtained a new one, so a save
    is a refresh.
    """

    def __init__(self, store: _TokenStore, on_save: Callable[[str, str], None]) -> None:
        self._store = store
        self._on_save = on_save

    def load_token(self, tenant: str, platform: str) -> Any:
        return self._store.load_token(tenant, platform)

    def save_token(self, tenant: str, platform: str, token: Any) -> None:
        self._store.save_token(tenant, platform, token)
        self._on_save(tenant, platform)

    def delete_token(self, tenant: str, platform: str) -> None:
        self._store.delete_token(tenant, platform)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


# -- observable gauges -----------------------------------------------------------

_WATCH_LOCK = threading.Lock()
# Meter provider key (0 for the global provider) -> id(runtime) -> runtime.
_WATCHED: dict[int, dict[int, weakref.ref[Any]]] = {}


def _watched(key: int) -> list[Any]:
    with _WATCH_LOCK:
        references = list(_WATCHED.get(key, {}).values())
    return [runtime for ref in references if (runtime := ref()) is not None]


def _observe_breakers(key: int, options: CallbackOptions) -> Iterator[Observation]:
    for runtime in _watched(key):
        for state in runtime.breakers.states():
            tenant, _, platform = state.name.rpartition("/")
            value = BREAKER_STATE_VALUES.get(state.state, 1.0)
            yield Observation(
                value, safe_labels({"tenant": tenant, "platform": platform})
            )


def _observe_idempotency_keys(
    key: int, options: CallbackOptions
) -> Iterator[Observation]:
    sql = (
        "SELECT tenant, platform, COUNT(*) FROM idempotency_keys "
        "GROUP BY tenant, platform"
    )
    for runtime in _watched(key):
        for tenant, platform, count in _query(runtime, sql):
            labels = safe_labels({"tenant": tenant, "platform": platform})
            yield Observation(count, labels)


def _observe_token_ages(key: int, options: CallbackOptions) -> Iterator[Observation]:
    for runtime in _watched(key):
        now = runtime.clock()
        for row in _token_rows(runtime):
            labels = safe_labels({"tenant": row["tenant"], "platform": row["platform"]})
            yield Observation(max(0.0, now - row["obtained_at"]), labels)


def _observe_token_expiries(
    key: int, options: CallbackOptions
) -> Iterator[Observation]:
    for runtime in _watched(key):
        for row in _token_rows(runtime):
            labels = safe_labels({"tenant": row["tenant"], "platform": row["platform"]})
            yield Observation(row["expires_at"], labels)


def _query(runtime: Any, sql: str) -> list[tuple[Any, ...]]:
    # A metric reader calls back from its own thread at any time, possibly
    # while the store is being closed, so a failed read skips one sample.
    try:
        return [tuple(row) for row in runtime.store.db.conn.execute(sql)]
    except (sqlite3.Error, StoreError) as exc:
        logger.debug("Skipped a metric sample: the store read failed: %s", exc)
        return []


def _token_rows(runtime: Any) -> list[dict[str, Any]]:
    try:
        rows: list[dict[str, Any]] = runtime.store.token_rows()
    except (sqlite3.Error, StoreError) as exc:
        logger.debug("Skipped a token metric sample: the store read failed: %s", exc)
        return []
    return rows


# -- tracing helpers --------------------------------------------------------------


def inject_traceparent(headers: httpx.Headers) -> None:
    """Add the W3C ``traceparent`` of the current span to outbound headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for name, value in carrier.items():
        headers[name] = value


def current_trace_id() -> str | None:
    """Return the current trace id as 32 hex digits, or None outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")


def record_events(
    span: trace.Span, events: Iterable[tuple[str, dict[str, Any]]]
) -> None:
    for name, attributes in events:
        span.add_event(name, safe_attributes(attributes))
