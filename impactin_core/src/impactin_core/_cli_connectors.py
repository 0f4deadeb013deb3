"""Commands for connector authors: ``conformance`` and ``new-connector``."""

from __future__ import annotations

import importlib.util
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
    help="Connector option for the runs, overriding the simulator's (repeatable).",
)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def conformance(
    platform: str, options: tuple[str, ...], pytest_args: tuple[str, ...]
) -> None:
    """Run the connector conformance suite for PLATFORM against its simulator.

    The runs use the connector options that the simulator needs, and each
    --option overrides the option of the same name. Extra arguments after
    '--' go to pytest, for example '-- -x -k webhook'. The exit status is
    pytest's: 0 when every rule passed.
    """
    try:
        import pytest
    except ImportError:
        raise click.ClickException(
            "The conformance suite needs pytest and hypothesis; install them with "
            "pip install 'impactin-core[test]'."
        ) from None
    from ._demo import _DEMO_OPTIONS

    # The demo's options come first, so that a user's --option overrides them.
    defaults = _DEMO_OPTIONS.get(platform, {})
    pairs = [f"{key}={value}" for key, value in defaults.items()] + list(options)
    _check_conformance_target(platform, pairs)

    from .conformance import CLI_SUITE_PATH

    args = ["-p", "no:cacheprovider", "-q", "--rootdir", str(CLI_SUITE_PATH.parent)]
    args += ["-o", "addopts=", "--impactin-platform", platform]
    # This process imports impactin_core before pytest registers it for assert
    # rewriting, so pytest warns about the modules already loaded. The rules'
    # module loads later and is rewritten, so the warning is noise.
    args += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if importlib.util.find_spec("pytest_asyncio") is not None:
        # Outside a project that sets it, pytest-asyncio warns that this
        # option has no value, before every run.
        args += ["-o", "asyncio_default_fixture_loop_scope=function"]
    for pair in pairs:
        args += ["--impactin-option", pair]
    args += [*pytest_args, str(CLI_SUITE_PATH)]
    sys.exit(int(pytest.main(args)))


def _check_conformance_target(platform: str, pairs: list[str]) -> None:
    """Raise ``click.ClickException`` for a setup error that would fail every rule."""
    from ._errors import ConfigError, PluginError
    from .conformance._harness import HookReturnError
    from .conformance._preflight import check_target
    from .conformance._target import ConformanceTarget, parse_option_pairs

    try:
        options = parse_option_pairs(pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--option'") from None
    try:
        check_target(ConformanceTarget(platform=platform, options=options))
    except ConfigError as exc:
        message = f"{exc} Set connector options with --option KEY=VALUE."
        raise click.ClickException(message) from None
    except (PluginError, LookupError) as exc:
        raise click.ClickException(str(exc)) from None
    except HookReturnError as exc:
        raise click.ClickException(" ".join(str(exc).splitlines())) from None


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
    from ._connector_template import render_connector

    try:
        root = render_connector(name, dest, title=title)
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Created {root}. Next: pip install -e '{root}[test]' && pytest {root}")


def register(main: click.Group) -> None:
    """Add the connector author commands to ``main``."""
    main.add_command(conformance)
    main.add_command(new_connector)
