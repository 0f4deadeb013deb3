"""``impactin tokens list|refresh|invalidate`` and ``impactin keys rotate``.

The commands show when tokens were obtained and when they expire, never a
token value.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ._pipeline import Runtime
    from ._tokens import OAuthToken

__all__ = ["refresh_through_connector", "register"]


def register(main: click.Group) -> None:
    main.add_command(tokens)
    main.add_command(keys)


def _runtime(ctx: click.Context, *, existing_store: bool = True) -> Runtime:
    from ._cli import _runtime as build_runtime

    return build_runtime(ctx, existing_store=existing_store)


def _utc(value: float) -> str:
    moment = dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    """Format seconds as ``1h02m``, ``3m05s`` or ``12s``, with ``-`` for the past."""
    sign = "-" if seconds < 0 else ""
    seconds = abs(int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m{seconds:02d}s"
    return f"{sign}{seconds}s"


async def refresh_through_connector(
    runtime: Runtime, tenant: str, platform: str
) -> OAuthToken | None:
    """Call the connector's ``impactin_authenticate`` with ``force_refresh``.

    Returns the token the cache then holds, or None for a platform that keeps
    no token (an API key or a SOAP password).
    """
    from ._context import AuthContext

    info = runtime.plugins.platform(platform).info
    settings = runtime.settings(tenant, platform)
    async with runtime._client() as client:
        context = AuthContext(
            client=client,
            tokens=runtime.tokens,
            clock=runtime.clock,
            force_refresh=True,
        )
        await runtime.plugins.hook(platform, "impactin_authenticate")(
            platform=info, settings=settings, context=context
        )
    return runtime.tokens.load(tenant, platform)


@click.group()
def tokens() -> None:
    """List, refresh and invalidate the stored OAuth tokens."""


@tokens.command("list")
@click.option("--tenant", help="Only this tenant.")
@click.option("--platform", help="Only this platform.")
@click.pass_context
def tokens_list(ctx: click.Context, tenant: str | None, platform: str | None) -> None:
    """Show each stored token's age and expiry; never a token value."""
    from rich.console import Console
    from rich.table import Table

    runtime = _runtime(ctx)
    try:
        rows = runtime.store.token_rows()
        now = runtime.clock()
    finally:
        runtime.close()
    rows = [
        row
        for row in rows
        if (tenant is None or row["tenant"] == tenant)
        and (platform is None or row["platform"] == platform)
    ]
    table = Table(title="Stored OAuth tokens")
    columns = (
        "tenant",
        "platform",
        "obtained (UTC)",
        "age",
        "expires (UTC)",
        "expires in",
        "refresh token",
    )
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["tenant"],
            row["platform"],
            _utc(row["obtained_at"]),
            _duration(now - row["obtained_at"]),
            _utc(row["expires_at"]),
            _duration(row["expires_at"] - now),
            "yes" if row["has_refresh_token"] else "no",
        )
    console = Console(width=132, markup=False)
    console.print(table)
    if not rows:
        console.print("No stored tokens match.")


def _require_configured(runtime: Runtime, tenant: str, platform: str) -> None:
    from ._errors import ConfigError

    platforms = runtime.config.tenant(tenant).platforms
    if platform not in platforms:
        key = f"tenants.{tenant}.platforms.{platform}"
        message = (
            f"Tenant {tenant!r} has no platform {platform!r} in the configuration "
            f"({key} is missing); add it or pick one of {sorted(platforms)}."
        )
        raise ConfigError(message, key=key)


@tokens.command("refresh")
@click.option("--tenant", required=True, help="Tenant id in the configuration.")
@click.option("--platform", required=True, help="Platform id, such as workday.")
@click.pass_context
def tokens_refresh(ctx: click.Context, tenant: str, platform: str) -> None:
    """Obtain a new token through the connector now, and store it."""
    runtime = _runtime(ctx, existing_store=False)
    try:
        _require_configured(runtime, tenant, platform)
        import asyncio

        token = asyncio.run(refresh_through_connector(runtime, tenant, platform))
        now = runtime.clock()
    finally:
        runtime.close()
    if token is None:
        click.echo(
            f"The {platform} connector of tenant {tenant} keeps no OAuth token, so "
            "there is nothing to refresh; its credentials are only checked when "
            "a delivery is sent."
        )
        return
    click.echo(
        f"Refreshed the token of tenant {tenant} on {platform}: obtained "
        f"{_utc(token.obtained_at)} UTC, expires {_utc(token.expires_at)} UTC "
        f"(in {_duration(token.expires_at - now)})."
    )


@tokens.command("invalidate")
@click.option("--tenant", required=True, help="Tenant id in the configuration.")
@click.option("--platform", required=True, help="Platform id, such as workday.")
@click.pass_context
def tokens_invalidate(ctx: click.Context, tenant: str, platform: str) -> None:
    """Delete the stored token, so the next send obtains a new one.

    For a refresh-token grant, the next token request then uses the refresh
    token from the configured secrets again.
    """
    runtime = _runtime(ctx)
    try:
        existed = runtime.tokens.load(tenant, platform) is not None
        runtime.tokens.invalidate(tenant, platform)
    finally:
        runtime.close()
    if existed:
        click.echo(f"Deleted the stored token of tenant {tenant} on {platform}.")
    else:
        click.echo(f"No token was stored for tenant {tenant} on {platform}.")


@click.group()
def keys() -> None:
    """Manage the store key that encrypts tokens and records at rest."""


@keys.command("rotate")
@click.pass_context
def keys_rotate(ctx: click.Context) -> None:
    """Re-encrypt every sealed value in the store under the newest key.

    Put the new key first in the store key variable, followed by a comma and
    the old key; after this command, remove the old key.
    """
    runtime = _runtime(ctx)
    try:
        count = runtime.store.rotate_key()
    finally:
        runtime.close()
    click.echo(
        f"Re-encrypted {count} stored values under the newest store key; the "
        "older keys can now be removed from the store key variable."
    )
