"""``impactin breaker``: manual control of circuit breakers across processes."""

from __future__ import annotations

import time

import click

__all__ = ["register"]


def register(main: click.Group) -> None:
    """Add the ``breaker`` group to the ``impactin`` command line."""
    main.add_command(breaker)


@click.group()
def breaker() -> None:
    """Inspect and reset circuit breakers; `impactin health` shows their states."""


@breaker.command("reset")
@click.argument("tenant", required=False)
@click.argument("platform", required=False)
@click.option(
    "--tenant", "tenant_option", help="Tenant id in the configuration (or TENANT)."
)
@click.option(
    "--platform", "platform_option", help="Platform id, such as workday (or PLATFORM)."
)
@click.pass_context
def reset(
    ctx: click.Context,
    tenant: str | None,
    platform: str | None,
    tenant_option: str | None,
    platform_option: str | None,
) -> None:
    """Close the circuit of TENANT on PLATFORM in every running worker.

    Name the circuit as `reset TENANT PLATFORM` or, as the `tokens`
    commands do, `reset --tenant TENANT --platform PLATFORM`. The reset is
    stored, and each worker closes its circuit and clears the failure
    streak before its next call to the platform.
    """
    if tenant is not None and platform is None and tenant_option is not None:
        # "reset --tenant acme benevity": the one argument is the platform.
        tenant, platform = None, tenant
    tenant = _one_value("tenant", tenant, tenant_option)
    platform = _one_value("platform", platform, platform_option)
    from ._breaker_states import record_reset
    from ._cli import _load_config, _runtime

    # The names are checked first, so a typo is reported as such and not as
    # a missing store.
    platforms = _load_config(ctx.obj["config"]).tenant(tenant).platforms
    if platform not in platforms:
        configured = ", ".join(sorted(platforms)) or "none"
        message = (
            f"Tenant {tenant!r} has no platform {platform!r} configured "
            f"(configured: {configured}); check the name."
        )
        raise click.ClickException(message)
    runtime = _runtime(ctx)
    try:
        record_reset(runtime.store, tenant, platform, time.time())
    finally:
        runtime.close()
    click.echo(
        f"Recorded a manual reset of the circuit of tenant {tenant} on {platform}; "
        "running workers close it before their next call."
    )


def _one_value(name: str, argument: str | None, option: str | None) -> str:
    """Return the value given as an argument or as ``--name``, equal when both are."""
    if argument is not None and option is not None and argument != option:
        message = (
            f"The {name} is given twice, as {argument!r} and --{name} {option!r}; "
            "give it once."
        )
        raise click.UsageError(message)
    value = argument if argument is not None else option
    if value is None:
        message = (
            f"Missing {name}: run 'impactin breaker reset TENANT PLATFORM' or "
            "'impactin breaker reset --tenant TENANT --platform PLATFORM'."
        )
        raise click.UsageError(message)
    return value
