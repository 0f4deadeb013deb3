"""The ``impactin`` command line.

Heavy modules (the pipeline, httpx, the simulators) are imported inside the
commands that use them, so ``impactin --help`` starts fast.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._cli_stop import Stopper
from ._errors import ConfigError, ImpactInError

if TYPE_CHECKING:
    from ._config import Config
    from ._pipeline import Runtime
    from ._stats import RunReport

__all__ = ["main"]

CONFIG_ENV = "IMPACTIN_CONFIG"
DEFAULT_CONFIG = "impactin.toml"


def _console() -> Any:
    from rich.console import Console

    # Stored values (source ids, reasons) may hold square brackets; with
    # markup off they print exactly as stored instead of as rich markup.
    console = Console(markup=False)
    if not console.is_terminal and console.width < 132:
        # Summary tables have eleven columns; keep them readable in logs.
        console = Console(width=132, markup=False)
    return console


def _load_config(path: str | None) -> Config:
    from ._config import load_config

    return load_config(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _runtime(ctx: click.Context, *, existing_store: bool = True) -> Runtime:
    """Build the runtime; unless ``existing_store`` is False, the store must exist.

    Commands that only read or act on stored deliveries would otherwise
    create an empty store at a mistyped ``store.path`` and report nothing.
    """
    from ._pipeline import Runtime

    config = _load_config(ctx.obj["config"])
    path = config.store_path
    # SQLite reads an empty file as a new database, so it counts as missing.
    if existing_store and (not path.is_file() or path.stat().st_size == 0):
        message = (
            f"No store at {config.store_path}; check store.path in the "
            "configuration, or run 'impactin deliver' first to create it."
        )
        raise click.ClickException(message)
    return Runtime(config)


class _Group(click.Group):
    """Show ImpactInError as a one-line message instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImpactInError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help=f"Configuration file (TOML). Default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG}.",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log INFO (-v) or DEBUG (-vv) to stderr; warnings and errors always.",
)
@click.version_option(package_name="impactin-core")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: int) -> None:
    """Deliver CSR records to Benevity, Goodera and Workday, once each."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from ._logging import filter_handler, install_filter
    from ._tracing_setup import tracing_from_environment

    install_filter()
    # The handler's filter also covers loggers that a connector creates
    # later, which install_filter cannot know yet.
    for handler in logging.root.handlers:
        filter_handler(handler)
    tracing_from_environment()


# -- demo and delivery --------------------------------------------------------


def _summary_table(report: RunReport, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    columns = (
        "platform",
        "delivered",
        "duplicates",
        "quarantined",
        "retried",
        "dead-lettered",
        "blocked",
        "deferred",
        "redacted",
        "p50",
        "p95",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "platform" else "right")
    for platform, stats in sorted(report.platforms.items()):
        table.add_row(
            platform,
            str(stats.delivered),
            str(stats.duplicates),
            str(stats.quarantined),
            str(stats.retried),
            str(stats.dead_lettered),
            str(stats.blocked),
            str(stats.deferred),
            str(stats.redacted),
            _seconds(stats.p50),
            _seconds(stats.p95),
        )
    if report.unrouted_quarantined:
        table.add_row(
            "(no platform)", "", "", str(report.unrouted_quarantined), *[""] * 7
        )
    return table


def _print_summary(
    console: Any, report: RunReport, title: str, *, demo: bool = False
) -> None:
    """Print the run's table, then a note on records that failed earlier."""
    console.print(_summary_table(report, title))
    failed = sum(stats.failed_earlier for stats in report.platforms.values())
    if not failed:
        return
    if demo:
        note = (
            f"{failed} records failed in an earlier demo run, and the demo does "
            "not send them again."
        )
    else:
        note = (
            f"{failed} records failed in an earlier run and were not sent again. "
            "List them with: impactin deliveries list --status dead_lettered; "
            "replay them with: impactin deliveries retry --all-failed"
        )
    # soft_wrap keeps each command on one line, so it can be copied.
    console.print(note, soft_wrap=True)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms"


def _count_rows(path: Path) -> int | None:
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return None
    with path.open("rb") as file:
        return sum(1 for line in file if line.strip())


def _run_with_progress(
    runtime: Runtime,
    rows: Iterable[Any],
    label: str,
    total: int | None,
    stopper: Stopper,
) -> RunReport:
    from rich.progress import Progress

    from ._stats import RunReport

    with Progress(transient=True, console=_console()) as progress:
        task = progress.add_task(label, total=total)

        def counted() -> Iterator[Any]:
            for row in rows:
                if stopper.stopped:
                    # SIGTERM: the rows read so far are stored, the rest
                    # stay in the file for the next run.
                    return
                progress.advance(task)
                yield row

        report = RunReport(run_id=os.urandom(16).hex())
        with stopper.reading():
            runtime.submit(counted(), run_id=report.run_id, report=report)
        due = runtime.store.count_due(runtime.clock())
        send = progress.add_task("delivering", total=due)
        stopper.run(runtime.process(report, on_done=lambda: progress.advance(send)))
    return report


@main.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False),
    default="impactin-demo",
    show_default=True,
    help="Folder for the demo's store and keys; a second run there skips every record.",
)
@click.option(
    "--faults/--no-faults", default=True, help="Inject 5xx and 429 responses."
)
@click.option(
    "--trace",
    is_flag=True,
    help="Print spans to the console (needs opentelemetry-sdk).",
)
def demo(folder: str, faults: bool, trace: bool) -> None:
    """Deliver the bundled dataset to the three simulators on 127.0.0.1."""
    from ._config import EnvSecrets
    from ._demo import DEMO_FAULTS, demo_config, demo_dataset, running_simulators
    from ._input import read_records
    from ._pipeline import Runtime
    from ._plugins import PluginHost

    if trace:
        from ._tracing_setup import console_tracing

        console_tracing()
    console = _console()
    plugins = PluginHost.from_entry_points()
    platforms = sorted(
        name for name, p in plugins.platforms.items() if p.info.simulator
    )
    if not platforms:
        raise click.ClickException(
            "No connector with a simulator is installed; pip install impactin-benevity "
            "impactin-goodera impactin-workday."
        )
    base = Path(folder)
    plan = DEMO_FAULTS if faults else None
    with running_simulators(plugins, platforms, plan) as servers:
        for name, (server, _) in servers.items():
            console.print(f"Simulator {name} listening on {server.url}")
        environ: dict[str, str] = {}
        config = demo_config(base, servers, environ)
        runtime = Runtime(config, plugins=plugins, secrets=EnvSecrets(environ))
        try:
            stopper = Stopper(runtime.request_stop)
            dataset = demo_dataset()
            rows = read_records(dataset, tenant=None)
            report = _run_with_progress(
                runtime, rows, "reading", _count_rows(dataset), stopper
            )
        finally:
            runtime.close()
    _print_summary(console, report, f"Demo run {report.run_id[:12]}", demo=True)
    console.print(
        f"Store: {config.store_path}. Run the demo again to see the delivered "
        "records skipped as duplicates."
    )
    stopper.exit_if_stopped()


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--tenant",
    help="Tenant of rows that name none; rows of other tenants are rejected.",
)
@click.option(
    "--input", "input_name", help="Column mapping [inputs.NAME] to read the file with."
)
@click.pass_context
def deliver(
    ctx: click.Context, file: str, tenant: str | None, input_name: str | None
) -> None:
    """Deliver a CSV or JSON Lines FILE."""
    from ._input import mappings_from_config, read_records

    runtime = _runtime(ctx, existing_store=False)
    try:
        if tenant is not None:
            try:
                runtime.config.tenant(tenant)
            except ConfigError as exc:
                raise click.BadParameter(str(exc), param_hint="--tenant") from None
        mapping = None
        if input_name is not None:
            mappings = mappings_from_config(runtime.config.inputs)
            if input_name not in mappings:
                known = ", ".join(sorted(mappings)) or "none"
                raise click.BadParameter(
                    f"no [inputs.{input_name}] section (configured: {known})",
                    param_hint="--input",
                )
            mapping = mappings[input_name]
        path = Path(file)
        rows = read_records(path, tenant=tenant, mapping=mapping)
        stopper = Stopper(runtime.request_stop)
        report = _run_with_progress(
            runtime, rows, "reading", _count_rows(path), stopper
        )
    finally:
        runtime.close()
    _print_summary(_console(), report, f"Run {report.run_id[:12]}")
    stopper.exit_if_stopped()


@main.command()
@click.option(
    "--all", "include_future", is_flag=True, help="Also deliveries deferred to later."
)
@click.pass_context
def resume(ctx: click.Context, include_future: bool) -> None:
    """Deliver what earlier runs left pending or in flight."""
    # The grace period is checked first, so a usage error comes before any
    # error about the store.
    stopper = Stopper()
    runtime = _runtime(ctx)
    try:
        stopper.drain = runtime.request_stop
        report = stopper.run(runtime.resume(include_future=include_future))
        now = time.time()
        deferred = runtime.store.count_due(
            now, include_future=True
        ) - runtime.store.count_due(now)
    finally:
        runtime.close()
    _print_summary(_console(), report, "Resumed")
    if deferred > 0:
        click.echo(
            f"{deferred} deliveries are deferred to a later time (an open circuit "
            "or a long Retry-After) and were not sent; 'impactin resume --all' "
            "sends them now, and 'impactin resume' once they are due."
        )
    stopper.exit_if_stopped()


# -- deliveries ---------------------------------------------------------------


@main.group()
def deliveries() -> None:
    """List, show, replay and export deliveries."""


def _time(value: float | None) -> str:
    if value is None:
        return "-"
    try:
        moment = dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        # Outside the dates datetime can hold, so the raw Unix time is shown.
        return f"{value:g}"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@deliveries.command("show")
@click.argument("delivery_id")
@click.pass_context
def deliveries_show(ctx: click.Context, delivery_id: str) -> None:
    """Show one delivery (an id or a unique prefix) and its attempts."""
    runtime = _runtime(ctx)
    try:
        row = runtime.store.get_delivery(delivery_id)
        if row is None:
            raise click.ClickException(
                f"No single delivery matches {delivery_id!r}; list them with "
                "'impactin deliveries list'."
            )
        attempts = runtime.store.attempts(row["id"])
    finally:
        runtime.close()
    console = _console()
    for name, value in row.items():
        if name.endswith("_at"):
            value = _time(value)
        console.print(f"{name}: {value if value is not None else '-'}")
    console.print("attempts:")
    for attempt in attempts:
        started = _time(attempt["started_at"])
        status = attempt["status_code"] or "-"
        duration = attempt["duration_s"] * 1000
        console.print(
            f"  #{attempt['number']} {started} {attempt['outcome']} "
            f"status={status} {duration:.0f} ms"
            + (f" {attempt['error']}" if attempt["error"] else "")
        )


@deliveries.command("retry")
@click.argument("delivery_ids", nargs=-1)
@click.option(
    "--all-failed",
    is_flag=True,
    help="Replay every dead-lettered delivery not replayed before.",
)
@click.pass_context
def deliveries_retry(
    ctx: click.Context, delivery_ids: tuple[str, ...], all_failed: bool
) -> None:
    """Replay dead-lettered or blocked deliveries, linked to the originals."""
    if not delivery_ids and not all_failed:
        raise click.UsageError("Name delivery ids or pass --all-failed.")
    runtime = _runtime(ctx)
    try:
        ids = list(delivery_ids)
        if all_failed:
            failed = runtime.store.list_deliveries(
                filters={"status": "dead_lettered"}, limit=None
            )
            # A delivery replayed before is followed through its replay.
            ids += [row["id"] for row in failed if not row["replayed_by"]]
        if not ids:
            click.echo(
                "Nothing to replay: every dead-lettered delivery was replayed "
                "before, or there is none. 'impactin deliveries list --status "
                "dead_lettered' lists them."
            )
            return
        stopper = Stopper(runtime.request_stop)
        report = stopper.run(runtime.retry(ids))
    finally:
        runtime.close()
    _print_summary(_console(), report, f"Replayed {len(ids)} deliveries")
    stopper.exit_if_stopped()


# -- quarantine -----------------------------------------------------------------


@main.group()
def quarantine() -> None:
    """Rows that failed validation, with their reasons."""


@quarantine.command("list")
@click.option(
    "--all", "include_resolved", is_flag=True, help="Include re-submitted rows."
)
@click.pass_context
def quarantine_list(ctx: click.Context, include_resolved: bool) -> None:
    """List quarantined rows and why."""
    from rich.table import Table

    runtime = _runtime(ctx)
    try:
        rows = runtime.store.quarantined(include_resolved=include_resolved)
    finally:
        runtime.close()
    table = Table()
    for column in ("id", "tenant", "source id", "line", "field", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["id"][:12],
            row["tenant"] or "-",
            row["source_id"] or "-",
            str(row["line"] or "-"),
            row["field"] or "-",
            row["reason"],
        )
    _console().print(table)


# -- plugins, sandbox, keys ---------------------------------------------------


@main.command()
def plugins() -> None:
    """List installed connectors, their versions and load errors."""
    from rich.table import Table

    from ._models import CORE_API_VERSION
    from ._plugins import PluginHost

    host = PluginHost.from_entry_points()
    table = Table(title=f"impactin connectors (core API {CORE_API_VERSION})")
    for column in (
        "platform",
        "distribution",
        "version",
        "core API",
        "kinds",
        "transports",
    ):
        table.add_column(column)
    for platform_id, registered in sorted(host.platforms.items()):
        info = registered.info
        table.add_row(
            platform_id,
            registered.distribution or registered.plugin_name,
            registered.version or "-",
            str(info.core_api),
            ", ".join(sorted(kind.value for kind in info.kinds)),
            ", ".join(info.transports),
        )
    console = _console()
    console.print(table)
    for error in host.load_errors:
        console.print(
            f"Skipped {error.name} ({error.distribution or '-'}): {error.reason}"
        )


#: Connectors kept in this repository, by platform id, each with a page under
#: docs/platforms/.
_BUNDLED_CONNECTORS = {
    "benevity": "impactin-benevity",
    "goodera": "impactin-goodera",
    "workday": "impactin-workday",
}


@main.command()
@click.argument("platform")
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port on 127.0.0.1; 0 picks a free one.",
)
@click.option(
    "--error-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of requests that get a 503 response, from 0 to 1.",
)
@click.option(
    "--throttle-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of requests that get a 429 response, from 0 to 1.",
)
@click.option(
    "--retry-after", default="1", show_default=True, help="Retry-After value on 429."
)
def sandbox(
    platform: str, port: int, error_rate: float, throttle_rate: float, retry_after: str
) -> None:
    """Serve the simulator of PLATFORM on 127.0.0.1 until interrupted.

    It prints its address and the names of the credentials it accepts, so a
    configuration can point at it. The sandbox values of those credentials are
    on the platform's docs page. Change its faults with PUT /_sandbox/faults.
    """
    import socket

    import uvicorn

    from ._demo import load_simulator
    from ._plugins import PluginHost
    from .sandbox import FaultPlan

    host = PluginHost.from_entry_points()
    plan = FaultPlan(
        error_rate=error_rate, throttle_rate=throttle_rate, retry_after=retry_after
    )
    simulator = load_simulator(host, platform, plan)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Connections accepted from a socket passed to uvicorn keep Nagle's
    # algorithm on, and each small response then waits about 40 ms for the
    # client's delayed ACK. Accepted sockets inherit this option on Linux.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as exc:
        message = (
            f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}; pick another --port."
        )
        raise click.ClickException(message) from exc
    bound = listener.getsockname()[1]
    registered = host.platform(platform)
    if _BUNDLED_CONNECTORS.get(platform) == registered.distribution:
        source = f"docs/platforms/{platform}.md"
    else:
        # A connector from another package has no page here; its simulator
        # factory contains the credentials the simulator accepts.
        source = f"the simulator factory {registered.info.simulator}"
    click.echo(f"Simulator of {platform} on http://127.0.0.1:{bound}")
    click.echo(
        "A platform section for impactin.toml that sends to it; set the "
        f"variables it names to the sandbox values in {source}:\n"
    )
    click.echo(sandbox_section(platform, f"http://127.0.0.1:{bound}", simulator))
    config = uvicorn.Config(simulator.app, log_level="info", lifespan="off")
    uvicorn.Server(config).run(sockets=[listener])


_BARE_TOML_KEY = re.compile(r"[A-Za-z0-9_-]+")


def sandbox_section(platform: str, url: str, simulator: Any) -> str:
    """Return a ``[tenants.acme.platforms.PLATFORM]`` section for a simulator."""
    from ._demo import simulator_options

    def value(item: Any) -> str:
        # A JSON string, number or list of those is valid TOML too.
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, dict):
            return inline(item)
        return json.dumps(item)

    def inline(table: dict[str, Any]) -> str:
        pairs = ", ".join(
            f"{key if _BARE_TOML_KEY.fullmatch(key) else json.dumps(key)} = "
            f"{value(item)}"
            for key, item in table.items()
        )
        return f"{{ {pairs} }}"

    credentials = {
        name: f"SANDBOX_{platform.upper()}_{name.upper()}"
        for name in sorted(simulator.credentials)
    }
    lines = [f"[tenants.acme.platforms.{platform}]", f'base_url = "{url}"']
    if platform == "workday":
        lines.append('protocol = "soap"')
    lines.append(f"credentials = {inline(credentials)}")
    options = simulator_options(platform, simulator)
    if options:
        lines.append(f"options = {inline(dict(sorted(options.items())))}")
    return "\n".join(lines)


@main.command()
def keygen() -> None:
    """Print a new store key (Fernet) for the store key_env variable."""
    from ._crypto import generate_key

    click.echo(generate_key())


@main.command()
@click.pass_context
def health(ctx: click.Context) -> None:
    """Show the outbox backlog, circuit states and tokens."""
    from rich.table import Table

    from ._breaker_states import breaker_rows

    runtime = _runtime(ctx)
    try:
        counts = runtime.store.count_by_status()
        tokens = runtime.store.token_rows()
        breakers = breaker_rows(runtime.store)
    finally:
        runtime.close()
    table = Table(title="Deliveries by status")
    statuses = ("pending", "in_flight", "delivered", "dead_lettered", "blocked")
    for column in ("tenant", "platform", *statuses):
        table.add_column(column)
    for (platform, tenant), by_status in sorted(counts.items()):
        table.add_row(
            tenant, platform, *(str(by_status.get(status, 0)) for status in statuses)
        )
    console = _console()
    console.print(table)
    for breaker in breakers:
        # Times are on the writing runtime's clock, wall-clock time by default.
        line = (
            f"circuit {breaker['tenant']}/{breaker['platform']}: {breaker['state']} "
            f"({breaker['failure_count']} failures, updated "
            f"{_time(breaker['updated_at'])}"
        )
        if breaker["opened_at"] is not None:
            line += f", opened {_time(breaker['opened_at'])}"
        if breaker["reopens_at"] is not None:
            line += f", probe after {_time(breaker['reopens_at'])}"
        console.print(line + ")")
    for token in tokens:
        console.print(
            f"token {token['tenant']}/{token['platform']}: "
            f"expires {_time(token['expires_at'])}"
        )


#: Modules that add commands through ``register(main)``; each keeps its heavy
#: imports inside its commands.
COMMAND_MODULES = (
    "_cli_audit",
    "_cli_ops",
    "_cli_tokens",
    "_cli_observe",
    "_cli_connectors",
    "_cli_breaker",
)


def _register_command_modules() -> None:
    import importlib
    import importlib.util

    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"{__package__}.{name}") is not None:
            importlib.import_module(f"{__package__}.{name}").register(main)


_register_command_modules()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
