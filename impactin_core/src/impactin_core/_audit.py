"""The audit log: delivery queries, CSV export, SLA status and retention.

Every delivery row in the store carries its audit fields: correlation id,
evidence hash (SHA-256 of the bytes sent), redaction count, idempotency key,
source activity id, trace id, parent delivery for replays, and its attempts
with their outcomes. ``AuditLog`` reads them with filters and pages, and
computes the SLA per tenant and platform.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import attrs

from ._config import toml_repr
from ._errors import ConfigError
from ._stats import percentile
from ._store import FINISHED_STATUSES, Store

__all__ = [
    "AUDIT_COLUMNS",
    "AuditLog",
    "DeliveryQuery",
    "SlaReport",
    "SlaTargets",
    "parse_duration",
    "parse_time",
]

#: Columns of a delivery in queries and exports, in export order.
AUDIT_COLUMNS = (
    "id",
    "correlation_id",
    "parent_id",
    "run_id",
    "tenant",
    "platform",
    "kind",
    "source_id",
    "idempotency_key",
    "status",
    "attempts",
    "created_at",
    "finished_at",
    "latency_s",
    "response_id",
    "evidence_hash",
    "redacted_count",
    "trace_id",
    "error_kind",
    "error",
)

#: The extra export column that lists each attempt as ``number:outcome:status``.
ATTEMPT_OUTCOMES_COLUMN = "attempt_outcomes"

STATUSES = ("pending", "in_flight", "delivered", "dead_lettered", "blocked")

# A unit is required: a bare "90" read as seconds would purge nearly all of
# the log, and "m" could mean minutes or months, so minutes are "min".
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|min|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Return the seconds in ``text`` such as ``90d``, ``12h``, ``30min`` or ``45s``.

    Raises ``ValueError`` naming the accepted forms for a number without a
    unit or an unknown unit.
    """
    match = _DURATION.match(text)
    if match is None:
        message = (
            f"{text!r} is not a duration; use a number with a unit s, min, h, d "
            "or w, for example 90d."
        )
        raise ValueError(message)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_time(text: str, *, now: float | None = None) -> float:
    """Return the Unix time of an ISO 8601 date or time, or of a duration ago.

    ``2026-01-31`` and ``2026-01-31T12:00`` without an offset are UTC.
    ``7d`` means seven days before ``now``.
    """
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except ValueError:
            message = (
                f"{text!r} is neither an ISO 8601 date such as 2026-01-31 nor a "
                "duration such as 7d."
            )
            raise ValueError(message) from None
        return (time.time() if now is None else now) - seconds
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


@attrs.frozen(kw_only=True)
class DeliveryQuery:
    """Filters on the delivery log; unset fields match every delivery.

    ``since`` and ``until`` are Unix times compared with ``created_at``:
    ``since`` is inclusive, ``until`` exclusive.
    """

    tenant: str | None = None
    platform: str | None = None
    status: str | None = attrs.field(default=None)
    correlation_id: str | None = None
    evidence_hash: str | None = None
    source_id: str | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    since: float | None = None
    until: float | None = None

    @status.validator
    def _check_status(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and value not in STATUSES:
            message = f"status {value!r} is unknown; use one of {', '.join(STATUSES)}."
            raise ValueError(message)

    def where(self) -> tuple[str, list[Any]]:
        """Return the SQL condition and its arguments."""
        clauses: list[str] = []
        args: list[Any] = []
        for name in (
            "tenant",
            "platform",
            "status",
            "correlation_id",
            "evidence_hash",
            "source_id",
            "idempotency_key",
            "parent_id",
        ):
            value = getattr(self, name)
            if value is not None:
                clauses.append(f"{name} = ?")
                args.append(value)
        if self.since is not None:
            clauses.append("created_at >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("created_at < ?")
            args.append(self.until)
        return " AND ".join(clauses) or "1 = 1", args


@attrs.frozen(kw_only=True)
class Targets:
    """SLA targets of one platform: breach and warning thresholds."""

    success_rate: float = 0.98
    p95_latency_s: float = 300.0
    warning_success_rate: float = 0.99
    warning_p95_latency_s: float = 240.0


_TARGET_FIELDS = tuple(field.name for field in attrs.fields(Targets))


@attrs.frozen
class SlaTargets:
    """SLA targets from the ``[sla]`` configuration table.

    The defaults are a success rate of at least 98 % and a p95 latency of at
    most 5 minutes. A platform within 1 percentage point of the success
    target, or above 80 % of the latency target, is in warning, unless the
    ``warning_*`` settings say otherwise. ``[sla.platforms.NAME]`` overrides
    any of them for one platform.
    """

    default: Targets = Targets()
    platforms: Mapping[str, Targets] = attrs.field(factory=dict)
    #: Seconds back from now that ``impactin sla`` reads by default.
    window_s: float = 30 * 86400.0

    def for_platform(self, platform: str) -> Targets:
        return self.platforms.get(platform, self.default)

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> SlaTargets:
        """Check the raw ``[sla]`` table and return its targets."""
        known = {*_TARGET_FIELDS, "platforms", "window"}
        for name in table:
            if name not in known:
                message = (
                    f"sla.{name} is not a known setting; use one of "
                    f"{', '.join(sorted(known))}."
                )
                raise ConfigError(message, key=f"sla.{name}")
        default = _targets(table, "sla", Targets())
        platforms_table = table.get("platforms", {})
        if not isinstance(platforms_table, Mapping):
            message = "sla.platforms must be a table of [sla.platforms.NAME] sections."
            raise ConfigError(message, key="sla.platforms")
        platforms = {
            name: _targets(values, f"sla.platforms.{name}", default)
            for name, values in platforms_table.items()
        }
        window = table.get("window", "30d")
        try:
            window_s = parse_duration(str(window))
        except ValueError as exc:
            raise ConfigError(f"sla.window: {exc}", key="sla.window") from None
        return cls(default=default, platforms=platforms, window_s=window_s)


def _targets(table: Any, prefix: str, base: Targets) -> Targets:
    if not isinstance(table, Mapping):
        message = f"{prefix} must be a table."
        raise ConfigError(message, key=prefix)
    values: dict[str, float] = {}
    for name in _TARGET_FIELDS:
        if name not in table:
            continue
        value = table[name]
        key = f"{prefix}.{name}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            message = f"{key} is {toml_repr(value)}; set it to a number."
            raise ConfigError(message, key=key)
        is_rate = name.endswith("success_rate")
        # nan compares false with everything, so value <= 0 alone would pass it.
        is_seconds = math.isfinite(value) and value > 0
        if (is_rate and not 0 <= value <= 1) or (not is_rate and not is_seconds):
            expected = (
                "a number between 0 and 1"
                if is_rate
                else "a finite number of seconds above 0"
            )
            message = f"{key} is {value!r}; set it to {expected}."
            raise ConfigError(message, key=key)
        values[name] = float(value)
    unknown = set(table) - set(_TARGET_FIELDS) - {"platforms", "window"}
    if unknown and prefix != "sla":
        name = sorted(unknown)[0]
        message = (
            f"{prefix}.{name} is not a known setting; use one of "
            f"{', '.join(_TARGET_FIELDS)}."
        )
        raise ConfigError(message, key=f"{prefix}.{name}")
    # A target set without its warning level gets one 1 point or 20 % inside it.
    if "success_rate" in values and "warning_success_rate" not in values:
        values["warning_success_rate"] = min(1.0, values["success_rate"] + 0.01)
    if "p95_latency_s" in values and "warning_p95_latency_s" not in values:
        values["warning_p95_latency_s"] = values["p95_latency_s"] * 0.8
    return attrs.evolve(base, **values)


@attrs.frozen(kw_only=True)
class SlaReport:
    """Delivery performance of one tenant on one platform over a window.

    ``success_rate`` is delivered over delivered plus dead-lettered
    deliveries. Blocked deliveries were never sent (invalid input or
    personal data found), so they are counted apart and not in the rate.
    Latency is from the first attempt to the accepted answer, of delivered
    deliveries. ``status`` is ``no_data`` when nothing finished in the
    window.
    """

    tenant: str
    platform: str
    delivered: int
    dead_lettered: int
    blocked: int
    pending: int
    success_rate: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    mean_retries: float | None
    max_retries: int | None
    status: str
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        values = attrs.asdict(self)
        values["reasons"] = list(self.reasons)
        return values


def sla_status(
    success_rate: float | None, p95_s: float | None, targets: Targets
) -> tuple[str, tuple[str, ...]]:
    """Return ``healthy``, ``warning``, ``breach`` or ``no_data``, and why."""
    if success_rate is None:
        return "no_data", ("no finished deliveries in the window",)
    breaches: list[str] = []
    warnings: list[str] = []
    if success_rate < targets.success_rate:
        breaches.append(
            f"success rate {success_rate:.2%} is below {targets.success_rate:.2%}"
        )
    elif success_rate < targets.warning_success_rate:
        warnings.append(
            f"success rate {success_rate:.2%} is below the warning level "
            f"{targets.warning_success_rate:.2%}"
        )
    if p95_s is not None and p95_s > targets.p95_latency_s:
        breaches.append(f"p95 {p95_s:.1f} s is above {targets.p95_latency_s:g} s")
    elif p95_s is not None and p95_s > targets.warning_p95_latency_s:
        warnings.append(
            f"p95 {p95_s:.1f} s is above the warning level "
            f"{targets.warning_p95_latency_s:g} s"
        )
    if breaches:
        return "breach", tuple(breaches + warnings)
    if warnings:
        return "warning", tuple(warnings)
    return "healthy", ()


class AuditLog:
    """Read access to the delivery log, and its retention.

    ``Runtime.audit`` is one, and ``AuditLog(store)`` works on any store.
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def _rows(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        cursor = self.store.db.conn.execute(sql, args)
        return [dict(row) for row in cursor.fetchall()]

    def count(self, query: DeliveryQuery = DeliveryQuery()) -> int:
        where, args = query.where()
        row = self.store.db.conn.execute(
            f"SELECT COUNT(*) FROM deliveries WHERE {where}", args
        ).fetchone()
        return int(row[0])

    def page(
        self, query: DeliveryQuery = DeliveryQuery(), *, page: int = 1, size: int = 50
    ) -> list[dict[str, Any]]:
        """Return one page of matching deliveries, newest first; pages start at 1."""
        if page < 1 or size < 1:
            message = f"page and size must be 1 or more, not {page} and {size}."
            raise ValueError(message)
        where, args = query.where()
        columns = ", ".join(AUDIT_COLUMNS)
        return self._rows(
            f"SELECT {columns} FROM deliveries WHERE {where} "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            [*args, size, (page - 1) * size],
        )

    def iter(
        self, query: DeliveryQuery = DeliveryQuery(), *, batch: int = 500
    ) -> Iterator[dict[str, Any]]:
        """Yield every matching delivery, newest first, reading ``batch`` at a time.

        Batches continue after the last row seen (keyset pagination), so
        deliveries added while the export runs neither shift nor repeat rows.
        Each row gets ``attempt_outcomes``.
        """
        where, args = query.where()
        columns = ", ".join(AUDIT_COLUMNS)
        after: tuple[float, str] | None = None
        while True:
            condition = where
            page_args = list(args)
            if after is not None:
                condition += " AND (created_at < ? OR (created_at = ? AND id < ?))"
                page_args += [after[0], after[0], after[1]]
            rows = self._rows(
                f"SELECT {columns} FROM deliveries WHERE {condition} "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                [*page_args, batch],
            )
            if not rows:
                return
            outcomes = self._attempt_outcomes([row["id"] for row in rows])
            for row in rows:
                row[ATTEMPT_OUTCOMES_COLUMN] = outcomes.get(row["id"], "")
                yield row
            last = rows[-1]
            after = (last["created_at"], last["id"])

    def _attempt_outcomes(self, delivery_ids: list[str]) -> dict[str, str]:
        marks = ", ".join("?" for _ in delivery_ids)
        cursor = self.store.db.conn.execute(
            "SELECT delivery_id, number, outcome, status_code FROM attempts "
            f"WHERE delivery_id IN ({marks}) ORDER BY delivery_id, number",
            delivery_ids,
        )
        outcomes: dict[str, list[str]] = {}
        for delivery_id, number, outcome, status_code in cursor.fetchall():
            status = "-" if status_code is None else str(status_code)
            outcomes.setdefault(delivery_id, []).append(f"{number}:{outcome}:{status}")
        return {key: ";".join(values) for key, values in outcomes.items()}

    def entry(self, delivery_id: str) -> dict[str, Any] | None:
        """Return one delivery with its ``attempts`` list, or None when unknown.

        ``delivery_id`` is an id or a prefix that matches one delivery.
        """
        row = self.store.get_delivery(delivery_id)
        if row is None:
            return None
        entry = {name: row.get(name) for name in AUDIT_COLUMNS}
        entry["attempts_detail"] = self.store.attempts(row["id"])
        return entry

    def write_csv(
        self, query: DeliveryQuery, output: IO[str], *, batch: int = 500
    ) -> int:
        """Write matching deliveries as CSV with a header row; return the row count."""
        writer = csv.DictWriter(
            output, fieldnames=[*AUDIT_COLUMNS, ATTEMPT_OUTCOMES_COLUMN]
        )
        writer.writeheader()
        count = 0
        for row in self.iter(query, batch=batch):
            writer.writerow(row)
            count += 1
        return count

    def sla(
        self,
        targets: SlaTargets = SlaTargets(),
        *,
        since: float | None = None,
        until: float | None = None,
        tenant: str | None = None,
        platform: str | None = None,
    ) -> list[SlaReport]:
        """Compute the SLA per tenant and platform over deliveries created in a window.

        ``since`` defaults to ``targets.window_s`` before now.
        """
        if since is None:
            since = self.clock() - targets.window_s
        query = DeliveryQuery(
            tenant=tenant, platform=platform, since=since, until=until
        )
        where, args = query.where()
        rows = self.store.db.conn.execute(
            "SELECT tenant, platform, status, attempts, latency_s FROM deliveries "
            f"WHERE {where}",
            args,
        ).fetchall()
        groups: dict[tuple[str, str], list[Any]] = {}
        for row in rows:
            groups.setdefault((row[0], row[1]), []).append(row)
        return [
            self._report(key, members, targets.for_platform(key[1]))
            for key, members in sorted(groups.items())
        ]

    @staticmethod
    def _report(key: tuple[str, str], rows: list[Any], targets: Targets) -> SlaReport:
        counts = dict.fromkeys(STATUSES, 0)
        latencies: list[float] = []
        retries: list[int] = []
        for _, _, status, attempts, latency in rows:
            counts[status] = counts.get(status, 0) + 1
            if status == "delivered" and latency is not None:
                latencies.append(float(latency))
            if status in FINISHED_STATUSES and attempts:
                retries.append(max(0, int(attempts) - 1))
        sent = counts["delivered"] + counts["dead_lettered"]
        rate = counts["delivered"] / sent if sent else None
        p95 = percentile(latencies, 0.95)
        status, reasons = sla_status(rate, p95, targets)
        return SlaReport(
            tenant=key[0],
            platform=key[1],
            delivered=counts["delivered"],
            dead_lettered=counts["dead_lettered"],
            blocked=counts["blocked"],
            pending=counts["pending"] + counts["in_flight"],
            success_rate=rate,
            p50_s=percentile(latencies, 0.50),
            p95_s=p95,
            p99_s=percentile(latencies, 0.99),
            mean_retries=sum(retries) / len(retries) if retries else None,
            max_retries=max(retries) if retries else None,
            status=status,
            reasons=reasons,
        )

    def purge(self, older_than_s: float, *, vacuum: bool = True) -> dict[str, int]:
        """Delete finished deliveries older than ``older_than_s`` and expired keys.

        Pending and in-flight deliveries stay whatever their age. With
        ``vacuum``, SQLite rewrites the file afterwards, so deleted rows do
        not stay readable in free pages.
        """
        if not math.isfinite(older_than_s) or older_than_s <= 0:
            message = f"older_than must be a duration above 0, not {older_than_s!r}."
            raise ValueError(message)
        now = self.clock()
        removed = self.store.purge(older_than_s, now)
        keys = self.store.purge_expired_keys(now)
        if vacuum:
            conn = self.store.db.conn
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
        return {"deliveries_and_quarantine": removed, "idempotency_keys": keys}
