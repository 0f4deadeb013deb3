"""Operator commands: re-submit quarantined rows and run the chaos scenario.

``register`` adds ``impactin quarantine resubmit`` to the existing
``quarantine`` group and ``impactin chaos`` to the main group. Heavy modules
are imported inside the commands.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ._chaos import ChaosFigures
    from ._pipeline import Runtime

__all__ = ["register"]


def register(main: click.Group) -> None:
    quarantine = main.commands["quarantine"]
    assert isinstance(quarantine, click.Group)
    quarantine.add_command(resubmit)
    main.add_command(chaos)


# -- quarantine resubmit ------------------------------------------------------


def _parse_assignment(text: str) -> tuple[str, Any]:
    name, separator, value = text.partition("=")
    name = name.strip()
    if not separator or not name:
        message = f"{text!r} is not FIELD=VALUE, for example hours=2.5"
        raise click.BadParameter(message, param_hint="--set")
    # JSON reads numbers, true, false, null, lists and objects; anything
    # else is taken as the text it is.
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _read_corrected_row(path: str) -> dict[str, Any]:
    from ._input import JsonObjectDecoder

    lines = [
        line
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    if len(lines) != 1:
        message = f"must hold exactly one JSON object, not {len(lines)} lines"
        raise click.BadParameter(message, param_hint="--file")
    try:
        row, duplicate = JsonObjectDecoder().decode(lines[0])
    except ValueError as exc:
        message = f"is not valid JSON: {exc}"
        raise click.BadParameter(message, param_hint="--file") from exc
    if not isinstance(row, dict):
        raise click.BadParameter("must hold a JSON object", param_hint="--file")
    if duplicate is not None:
        raise click.BadParameter(duplicate.reason("the row"), param_hint="--file")
    return row


def _find_quarantined(runtime: Runtime, row_id: str) -> dict[str, Any]:
    rows = [
        row
        for row in runtime.store.quarantined(include_resolved=True)
        if row["id"].startswith(row_id)
    ]
    if len(rows) != 1:
        found = "no" if not rows else "more than one"
        message = (
            f"{found} quarantined row matches {row_id!r}; list them with "
            "'impactin quarantine list --all' and pass a longer id."
        )
        raise click.ClickException(message)
    row = rows[0]
    if row["resolved_at"] is not None:
        message = (
            f"Quarantined row {row['id']} was already re-submitted; its record "
            "is in the delivery log."
        )
        raise click.ClickException(message)
    return row


def _is_canonical_csv_row(raw: dict[str, Any]) -> bool:
    """Return True for a stored row that the reader of canonical CSV files read.

    Such a row maps column names to cells, which are all text, and keeps
    metadata in ``metadata.<name>`` columns. A JSON Lines row has a
    ``metadata`` object and numbers for its hours or amount.
    """
    from ._input import EXTRA_CELLS

    if any(name.startswith("metadata.") for name in raw):
        return True
    if set(raw) == {"text"}:
        # A JSON Lines line that is not a JSON object is stored this way.
        return False
    cells = [value for name, value in raw.items() if name != EXTRA_CELLS]
    return bool(cells) and all(isinstance(value, str) for value in cells)


def _parse_row(
    runtime: Runtime,
    raw: dict[str, Any],
    changes: dict[str, Any],
    input_name: str | None,
    *,
    is_csv: bool,
) -> Any:
    from ._input import _build_canonical, _build_mapped, mappings_from_config

    if input_name is None and is_csv:
        return _parse_canonical_csv_row({**raw, **changes})
    if input_name is None:
        return _build_canonical(0, _with_json_changes(raw, changes), None, {})
    mappings = mappings_from_config(runtime.config.inputs)
    if input_name not in mappings:
        known = ", ".join(sorted(mappings)) or "none"
        message = f"no [inputs.{input_name}] section (configured: {known})"
        raise click.BadParameter(message, param_hint="--input")
    return _build_mapped(0, {**raw, **changes}, None, {}, mappings[input_name])


def _parse_canonical_csv_row(raw: dict[str, Any]) -> Any:
    """Build a record from a canonical CSV row as the CSV reader builds it."""
    from ._errors import ConfigError
    from ._input import EXTRA_CELLS, ColumnMapping, RejectedRow, _build_mapped

    source_id = raw.get("source_id")
    if raw.get(EXTRA_CELLS):
        reason = (
            f"The row has {len(raw[EXTRA_CELLS])} cells more than the header; "
            "check the values, then drop the extra cells with --set "
            f"{EXTRA_CELLS}=null."
        )
        return RejectedRow(0, source_id, None, reason, raw)
    header = [name for name in raw if name != EXTRA_CELLS]
    try:
        mapping = ColumnMapping.canonical(header)
    except ConfigError as exc:
        return RejectedRow(0, source_id, None, str(exc), raw)
    return _build_mapped(0, raw, None, {}, mapping)


def _with_json_changes(raw: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply --set changes to a JSON row; ``metadata.NAME`` sets one metadata key."""
    row = dict(raw)
    for name, value in changes.items():
        key = name.removeprefix("metadata.")
        if key == name or not key:
            row[name] = value
            continue
        metadata = row.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            message = (
                f"cannot set {name}, because the row's metadata is not a JSON "
                "object; set the whole object with --set metadata={...}"
            )
            raise click.BadParameter(message, param_hint="--set")
        row["metadata"] = {**metadata, key: value}
    return row


@click.command("resubmit")
@click.argument("row_id")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Replace one field of the stored row, or one metadata key with "
    "metadata.NAME=VALUE; VALUE is read as JSON if it parses, else as text. "
    "Repeat for more fields.",
)
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON Lines file with one corrected row that replaces the stored row.",
)
@click.option(
    "--input",
    "input_name",
    help="Column mapping [inputs.NAME] the row was read with; default: the "
    "record's own field names.",
)
@click.pass_context
def resubmit(
    ctx: click.Context,
    row_id: str,
    assignments: tuple[str, ...],
    file: str | None,
    input_name: str | None,
) -> None:
    """Correct the quarantined row ROW_ID (an id or unique prefix) and deliver it.

    The stored row is decrypted, replaced by --file and changed by --set,
    then validated again, as the CSV reader does for a row of a canonical
    CSV file and as the JSON Lines reader does otherwise. A valid row is
    delivered and its quarantine entry is marked resolved. An invalid one
    stays quarantined and the command prints why.
    """
    from ._cli import _console, _print_summary, _runtime
    from ._cli_stop import Stopper
    from ._stats import RunReport

    if not assignments and file is None:
        raise click.UsageError("Pass --set FIELD=VALUE or --file with the correction.")
    changes = dict(_parse_assignment(text) for text in assignments)
    runtime = _runtime(ctx)
    try:
        entry = _find_quarantined(runtime, row_id)
        if file:
            raw = _read_corrected_row(file)
            is_csv = False
        else:
            raw = runtime.store.quarantined_raw(entry["id"])
            is_csv = _is_canonical_csv_row(raw)
        parsed = _parse_row(runtime, raw, changes, input_name, is_csv=is_csv)
        if not hasattr(parsed, "record"):
            message = (
                f"The corrected row is still invalid and stays quarantined: "
                f"{parsed.reason}"
            )
            raise click.ClickException(message)
        _check_same_tenant(runtime, entry, parsed.record.tenant)
        report = RunReport(run_id=f"resubmit-{entry['id'][:12]}")
        # The entry is resolved first, in the same transaction: a record
        # quarantined again by enqueue then gets an open entry of its own
        # instead of being merged into the one resolved here.
        with runtime.store.transaction():
            runtime.store.resolve_quarantined(entry["id"], runtime.clock())
            runtime.enqueue(parsed.record, run_id=report.run_id, report=report)
        stopper = Stopper(runtime.request_stop)
        stopper.run(runtime.process(report))
    finally:
        runtime.close()
    console = _console()
    _print_summary(console, report, f"Re-submitted {entry['id'][:12]}")
    stopper.exit_if_stopped()
    if report.total_quarantined_rows:
        # Exit 1, as for a row that is still invalid: nothing was delivered.
        message = (
            "The record was quarantined again for another reason; see "
            "'impactin quarantine list'."
        )
        raise click.ClickException(message)


def _check_same_tenant(runtime: Any, entry: dict[str, Any], tenant: str) -> None:
    """Reject a correction that moves a row of one configured tenant to another."""
    quarantined_for = entry["tenant"]
    if quarantined_for == tenant or quarantined_for not in runtime.config.tenants:
        # A tenant that is not configured was a typo or is missing, so
        # setting the right one is the fix.
        return
    message = (
        f"The row was quarantined for tenant {quarantined_for!r}, and a correction "
        f"cannot move it to tenant {tenant!r}. Deliver the row for {tenant!r} "
        f"with 'impactin deliver --tenant {tenant}' instead."
    )
    raise click.UsageError(message)


# -- chaos ----------------------------------------------------------------------


@click.command()
@click.option(
    "--records", default=10_000, show_default=True, help="Records to deliver."
)
@click.option("--seed", default=1, show_default=True, help="Seed of data and faults.")
@click.option(
    "--error-rate",
    default=0.20,
    show_default=True,
    help="Share of requests that get a 5xx response (0 to 1).",
)
@click.option(
    "--error-status", default=500, show_default=True, help="The injected 5xx status."
)
@click.option(
    "--timeout-rate",
    default=0.05,
    show_default=True,
    help="Share of requests held until the client times out.",
)
@click.option(
    "--drop-rate",
    default=0.05,
    show_default=True,
    help="Share of requests whose connection is dropped, half before and half "
    "after the simulator acts.",
)
@click.option(
    "--burst-every",
    default=400,
    show_default=True,
    help="Requests between the starts of two 429 bursts; 0 turns bursts off.",
)
@click.option(
    "--burst-length", default=15, show_default=True, help="Requests per 429 burst."
)
@click.option(
    "--concurrency", default=16, show_default=True, help="Deliveries sent at once."
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False),
    help="Folder for the run's store; default: a new temporary folder.",
)
def chaos(folder: str | None, **options: Any) -> None:
    """Deliver generated records to faulty simulators on 127.0.0.1 and audit them.

    Prints, per tenant and platform, how each record ended and what the
    simulator recorded. Exits with status 1 when a record is unaccounted
    for, unfinished, missing at the simulator or recorded twice.
    """
    import tempfile

    from ._chaos import ChaosPlan, run_chaos
    from ._cli import _console

    plan = ChaosPlan(**options)
    # A dropped connection makes uvicorn log the simulator's error; those
    # faults are intended here.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    console = _console()
    console.print(
        f"Delivering {plan.records} records to the simulators with "
        f"{plan.error_rate:.0%} HTTP {plan.error_status}, {plan.timeout_rate:.0%} "
        f"timeouts, {plan.drop_rate:.0%} dropped connections and bursts of "
        f"{plan.burst_length} 429 answers every {plan.burst_every} requests."
    )
    with tempfile.TemporaryDirectory(prefix="impactin-chaos-") as temporary:
        figures = run_chaos(plan, Path(folder or temporary))
    console.print(_figures_table(figures))
    for line in _reason_lines(figures):
        console.print(line)
    console.print(
        f"{figures.rounds} resume rounds, {figures.retried} retries, "
        f"{figures.deferred} deferrals, requests per simulator: "
        + ", ".join(f"{name} {count}" for name, count in figures.requests.items())
        + f"; {figures.wall_seconds:.1f} s."
    )
    if figures.ok:
        console.print("Every record is delivered once or dead-lettered with a reason.")
        return
    for problem in figures.problems:
        console.print(problem, style="red")
    raise SystemExit(1)


def _figures_table(figures: ChaosFigures) -> Any:
    from rich.table import Table

    table = Table(title="Chaos run")
    columns = (
        "tenant",
        "platform",
        "replay safe",
        "records",
        "delivered",
        "dead-lettered",
        "unfinished",
        "unaccounted",
        "duplicates",
        "dead, recorded",
        "repeats",
    )
    for column in columns:
        if column in ("tenant", "platform"):
            table.add_column(column)
        else:
            table.add_column(column, justify="right")
    for group in figures.groups:
        table.add_row(
            group.tenant,
            group.platform,
            "yes" if group.replay_safe else "no",
            str(group.records),
            str(group.delivered),
            str(group.dead_lettered),
            str(group.unfinished),
            str(group.unaccounted),
            str(group.duplicates),
            str(group.dead_but_recorded),
            str(group.repeats),
        )
    return table


def _reason_lines(figures: ChaosFigures) -> list[str]:
    lines = []
    for group in figures.groups:
        if group.reasons:
            counts = ", ".join(f"{kind} {n}" for kind, n in group.reasons.items())
            lines.append(f"Dead-letter reasons of {group.tenant}: {counts}.")
    return lines
