"""Helpers shared by the contract scenarios: a runtime-like delivery of one record."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Coroutine, Mapping
from types import ModuleType
from typing import Any

import attrs
import httpx

from impactin_core import (
    AuthContext,
    Credentials,
    ImpactRecord,
    MemoryTokenStore,
    PlatformInfo,
    PlatformSettings,
    RedactionPolicy,
    SendContext,
    SendOutcome,
    TokenCache,
    leak_scan,
)

# NOTE: minimize_record is not re-exported by impactin_core, but it is the
# step the runtime applies before mapping, so the contracts use it too.
from impactin_core._redaction import minimize_record

__all__ = [
    "PSEUDONYM_KEY",
    "Scenario",
    "basic_auth",
    "deliver",
    "disable_pact_tracking",
    "settings_for",
]

#: Fixed pseudonymization key, so the pseudonyms in the contracts are stable.
PSEUDONYM_KEY = b"impactin-contracts-pseudonym-key"

#: A fixed clock for token expiry, in seconds since the epoch.
CLOCK_START = 1_800_000_000.0


@attrs.frozen(kw_only=True)
class Scenario:
    """One consumer scenario: the interactions it expects and the call that makes them.

    ``define`` adds the interactions to a fresh ``pact.Pact``. ``run`` drives
    the real connector hooks against the mock server's base URL and returns
    the send outcome, or raises what the connector raises. ``expected`` is the
    exception class the connector must raise, or None for a successful send.
    """

    platform: str
    name: str
    define: Callable[[Any], None]
    run: Callable[[str], Coroutine[Any, Any, SendOutcome]]
    expected: type[Exception] | None = None


def disable_pact_tracking(environ: dict[str, str] | None = None) -> None:
    """Stop the Pact verifier from sending usage statistics to its vendor.

    The Pact core library reports each run over the network unless
    ``PACT_DO_NOT_TRACK`` is set, and this project sends no traffic off the
    machine during tests.
    """
    target = os.environ if environ is None else environ
    target["PACT_DO_NOT_TRACK"] = "true"


def basic_auth(user: str, password: str) -> str:
    """Return the value of an HTTP Basic ``Authorization`` header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


async def deliver(
    *,
    plugin: ModuleType,
    platform: PlatformInfo,
    settings: PlatformSettings,
    record: ImpactRecord,
    idempotency_key: str,
    force_refresh: bool = False,
) -> SendOutcome:
    """Map, redact, authenticate and send one record as the runtime does.

    Hooks are called with keyword arguments only. The record is minimized
    with the platform's declared personal fields first, and
    ``AssertionError`` is raised when the leak scan finds undeclared
    personal data.
    """
    policy = RedactionPolicy.for_platform(platform, settings.tenant, PSEUDONYM_KEY)
    minimized, _ = minimize_record(record, policy)
    requests = plugin.impactin_map(
        platform=platform,
        records=[minimized],
        settings=settings,
        idempotency_keys=[idempotency_key],
    )
    (request,) = requests
    redact = getattr(plugin, "impactin_redact", None)
    if redact is not None:
        redact(platform=platform, request=request, policy=policy)
    findings = leak_scan(request.payload, request.personal_paths)
    if findings:
        found = ", ".join(f"{finding.kind} at {finding.path}" for finding in findings)
        message = f"The leak scan blocked the {platform.id} request: {found}"
        raise AssertionError(message)

    async with httpx.AsyncClient() as client:
        tokens = TokenCache(MemoryTokenStore(), clock=lambda: CLOCK_START)
        auth_context = AuthContext(
            client=client,
            tokens=tokens,
            clock=lambda: CLOCK_START,
            force_refresh=force_refresh,
        )
        credentials: Credentials = await plugin.impactin_authenticate(
            platform=platform, settings=settings, context=auth_context
        )
        send_context = SendContext(client=client, settings=settings, timeout=10.0)
        outcome: SendOutcome = await plugin.impactin_send(
            platform=platform,
            request=request,
            credentials=credentials,
            context=send_context,
        )
        return outcome


def settings_for(
    platform: str,
    base_url: str,
    secrets: Mapping[str, str],
    *,
    protocol: str = "rest",
    options: Mapping[str, Any] | None = None,
) -> PlatformSettings:
    """Return the settings of the tenant ``acme`` on ``platform``."""
    return PlatformSettings(
        tenant="acme",
        platform=platform,
        base_url=base_url,
        protocol=protocol,
        secrets=dict(secrets),
        options=dict(options or {}),
    )
