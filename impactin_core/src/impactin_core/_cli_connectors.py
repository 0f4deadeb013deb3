"""Commands for connector authors: ``conformance`` and ``new-connector``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["register"]


@click.command()
@click.argument("platform")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Connector option for the runs, such as an account id (repeatable).",
)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def conformance(
    platform: str, options: tuple[str, ...], pytest_args: tuple[str, ...]
) -> None:
    """Run the connector conformance suite for PLATFORM against its simulator.

    Extra arguments after '--' go to pytest, for example '-- -x -k webhook'.
    The exit status is pytest's: 0 when every rule passed.
    """
    try:
        import pytest
    except ImportError:
        raise click.ClickException(
            "The conformance suite needs pytest and hypothesis; install them with "
            "pip install 'impactin-core[test]'."
        ) from None
    from ._demo import _DEMO_OPTIONS
    from .conformance import CLI_SUITE_PATH

    args = ["-p", "no:cacheprovider", "-q", "--rootdir", str(CLI_SUITE_PATH.parent)]
    args += ["-o", "addopts=", "--impactin-platform", platform]
    defaults = {
        key: str(value) for key, value in _DEMO_OPTIONS.get(platform, {}).items()
    }
    given = dict(item.partition("=")[::2] for item in options)
    for key, value in {**defaults, **given}.items():
        args += ["--impactin-option", f"{key}={value}"]
    args += [*pytest_args, str(CLI_SUITE_PATH)]
    sys.exit(int(pytest.main(args)))


@click.command("new-connector")
@click.argument("name")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder in which the package folder impactin_NAME is created.",
)
@click.option(
    "--title", help="Display name of the platform; defaults to NAME in title case."
)
def new_connector(name: str, dest: Path, title: str | None) -> None:
    """Create the connector package impactin_NAME with a simulator and tests."""
    from .conformance._template import render_connector

    try:
        root = render_connector(name, dest, title=title)
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Created {root}. Next: pip install -e '{root}[test]' && pytest {root}")


def register(main: click.Group) -> None:
    """Add the connector author commands to ``main``."""
    main.add_command(conformance)
    main.add_command(new_connector)
