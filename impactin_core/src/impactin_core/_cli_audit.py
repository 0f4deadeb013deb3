"""Audit commands: ``deliveries list``, ``deliveries export``, ``sla`` and ``purge``.

``register`` replaces the ``list`` and ``export`` commands of the
``deliveries`` group with versions that share one set of filters
(``DeliveryQuery``), page through results and stream exports.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ._audit import DeliveryQuery

__all__ = ["register"]

_STATUSES = ("pending", "in_flight", "delivered", "dead_lettered", "blocked")

_FILTERS = [
    click.option("--tenant", help="Tenant id."),
    click.option("--platform", help="Platform id, such as benevity."),
    click.option("--status", type=click.Choice(_STATUSES), help="Delivery status."),
    click.option("--correlation-id", help="Correlation id shared by one record."),
    click.option("--evidence-hash", help="SHA-256 (hex) of the bytes sent."),
    click.option("--source-id", help="Source activity id of the record."),
    click.option("--idempotency-key", help="Idempotency key of the delivery."),
    click.option("--parent-id", help="Delivery that a replay was made from."),
    click.option(
        "--since",
        help="Created at or after this ISO 8601 date or time (UTC), or a duration "
        "ago such as 7d.",
    ),
    click.option(
        "--until",
        help="Created before this ISO 8601 date or time (UTC), or a duration ago.",
    ),
]


def _with_filters(function: Any) -> Any:
    for option in reversed(_FILTERS):
        function = option(function)
    return function


def _when(value: str | None, name: str) -> float | None:
    from ._audit import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _query(options: dict[str, Any]) -> DeliveryQuery:
    from ._audit import DeliveryQuery

    return DeliveryQuery(
        tenant=options["tenant"],
        platform=options["platform"],
        status=options["status"],
        correlation_id=options["correlation_id"],
        evidence_hash=options["evidence_hash"],
        source_id=options["source_id"],
        idempotency_key=options["idempotency_key"],
        parent_id=options["parent_id"],
        since=_when(options["since"], "--since"),
        until=_when(options["until"], "--until"),
    )


def _runtime(ctx: click.Context) -> Any:
    from ._cli import _runtime as build_runtime

    return build_runtime(ctx)


@click.command("list")
@_with_filters
@click.option("--limit", default=50, show_default=True, help="Rows per page.")
@click.option("--page", default=1, show_default=True, help="Page number, from 1.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@click.pass_context
def deliveries_list(
    ctx: click.Context, /, limit: int, page: int, as_json: bool, **options: Any
) -> None:
    """List deliveries, newest first, one page at a time."""
    if limit < 1 or page < 1:
        raise click.BadParameter("--limit and --page must be 1 or more.")
    query = _query(options)
    runtime = _runtime(ctx)
    try:
        total = runtime.audit.count(query)
        rows = runtime.audit.page(query, page=page, size=limit)
    finally:
        runtime.close()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    pages = max(1, -(-total // limit))
    if page > pages:
        click.echo(
            f"Page {page} is past the last page, {pages}: {total} deliveries match "
            f"at {limit} per page. Use --page {pages} or less.",
            err=True,
        )
        ctx.exit(1)
    _print_table(rows)
    click.echo(f"Page {page} of {pages}, {total} deliveries match.")


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from ._cli import _console, _time

    table = Table()
    columns = (
        "id",
        "created (UTC)",
        "tenant",
        "platform",
        "source id",
        "status",
        "attempts",
        "redacted",
        "evidence",
        "error",
    )
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["id"][:12],
            _time(row["created_at"]),
            row["tenant"],
            row["platform"],
            row["source_id"],
            row["status"],
            str(row["attempts"]),
            "-" if row["redacted_count"] is None else str(row["redacted_count"]),
            (row["evidence_hash"] or "-")[:12],
            row["error_kind"] or "",
        )
    _console().print(table)


@click.command("export")
@_with_filters
@click.option(
    "--format", "fmt", type=click.Choice(["csv"]), default="csv", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="File to write. Default: standard output.",
)
@click.pass_context
def deliveries_export(
    ctx: click.Context, /, fmt: str, output: Any, **options: Any
) -> None:
    """Stream every delivery matching the filters, with its attempt outcomes."""
    query = _query(options)
    runtime = _runtime(ctx)
    try:
        runtime.audit.write_csv(query, output)
    finally:
        runtime.close()


@click.command("sla")
@click.option("--tenant", help="Only this tenant.")
@click.option("--platform", help="Only this platform.")
@click.option(
    "--since",
    help="Start of the window: ISO 8601 date or a duration ago. "
    "Default: sla.window of the configuration (30d).",
)
@click.option("--until", help="End of the window (exclusive). Default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit with status 1 when a tenant and platform is in breach.",
)
@click.pass_context
def sla(
    ctx: click.Context,
    tenant: str | None,
    platform: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
    check: bool,
) -> None:
    """Show success rate, latency, retries and SLA status per tenant and platform."""
    from ._audit import SlaTargets

    runtime = _runtime(ctx)
    try:
        targets = SlaTargets.from_config(runtime.config.sla)
        reports = runtime.audit.sla(
            targets,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            tenant=tenant,
            platform=platform,
        )
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps([report.as_dict() for report in reports], indent=2))
    else:
        _print_sla(reports)
    if check and any(report.status == "breach" for report in reports):
        ctx.exit(1)


def _print_sla(reports: list[Any]) -> None:
    from rich.table import Table

    from ._cli import _console, _seconds

    table = Table(title="SLA per tenant and platform")
    columns = (
        "tenant",
        "platform",
        "status",
        "success",
        "delivered",
        "dead-lettered",
        "blocked",
        "pending",
        "p50",
        "p95",
        "p99",
        "retries (mean/max)",
    )
    for column in columns:
        table.add_column(column)
    for report in reports:
        rate = "-" if report.success_rate is None else f"{report.success_rate:.2%}"
        retries = "-"
        if report.mean_retries is not None:
            retries = f"{report.mean_retries:.2f}/{report.max_retries}"
        table.add_row(
            report.tenant,
            report.platform,
            report.status,
            rate,
            str(report.delivered),
            str(report.dead_lettered),
            str(report.blocked),
            str(report.pending),
            _seconds(report.p50_s),
            _seconds(report.p95_s),
            _seconds(report.p99_s),
            retries,
        )
    console = _console()
    console.print(table)
    for report in reports:
        for reason in report.reasons:
            console.print(f"{report.tenant}/{report.platform}: {reason}")
    if not reports:
        console.print("No deliveries in the window.")


@click.command("purge")
@click.option(
    "--older-than",
    required=True,
    help="Age of finished deliveries to delete, such as 90d, 12w or 36h.",
)
@click.option(
    "--vacuum/--no-vacuum",
    default=True,
    show_default=True,
    help="Rewrite the SQLite file afterwards so deleted rows leave no trace.",
)
@click.pass_context
def purge(ctx: click.Context, older_than: str, vacuum: bool) -> None:
    """Delete finished deliveries and resolved quarantine rows older than a duration.

    Pending and in-flight deliveries stay whatever their age. Expired
    idempotency keys are deleted too.
    """
    from ._audit import parse_duration

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if seconds <= 0:
        raise click.BadParameter("use a duration above 0", param_hint="--older-than")
    runtime = _runtime(ctx)
    try:
        removed = runtime.audit.purge(seconds, vacuum=vacuum)
    finally:
        runtime.close()
    click.echo(
        f"Deleted {removed['deliveries_and_quarantine']} deliveries and quarantine "
        f"rows older than {older_than}, and {removed['idempotency_keys']} expired "
        "idempotency keys."
    )


def register(main: click.Group) -> None:
    """Add ``sla`` and ``purge``, and replace ``deliveries list`` and ``export``."""
    main.add_command(sla)
    main.add_command(purge)
    group = main.commands.get("deliveries")
    if isinstance(group, click.Group):
        group.add_command(deliveries_list)
        group.add_command(deliveries_export)
