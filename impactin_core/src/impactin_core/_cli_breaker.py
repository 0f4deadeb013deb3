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
@click.argument("tenant")
@click.argument("platform")
@click.pass_context
def reset(ctx: click.Context, tenant: str, platform: str) -> None:
    """Close the circuit of TENANT on PLATFORM in every running worker.

    The reset is stored, and each worker closes its circuit and clears the
    failure streak before its next call to the platform.
    """
    from ._breaker_states import record_reset
    from ._cli import _runtime

    runtime = _runtime(ctx)
    try:
        platforms = runtime.config.tenant(tenant).platforms
        if platform not in platforms:
            configured = ", ".join(sorted(platforms)) or "none"
            message = (
                f"Tenant {tenant!r} has no platform {platform!r} configured "
                f"(configured: {configured}); check the name."
            )
            raise click.ClickException(message)
        record_reset(runtime.store, tenant, platform, time.time())
    finally:
        runtime.close()
    click.echo(
        f"Recorded a manual reset of the circuit of tenant {tenant} on {platform}; "
        "running workers close it before their next call."
    )
