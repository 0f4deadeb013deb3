"""Configuration: one TOML file with tenants, platforms, policies and inputs.

Secrets never appear in the file. Credentials are names of environment
variables (or of entries in another secrets provider) that hold the value::

    [tenants.acme]
    key_env = "IMPACTIN_ACME_KEY"

    [tenants.acme.platforms.benevity]
    base_url = "https://sandbox.benevity.example"
    credentials = { client_id = "ACME_ID", client_secret = "ACME_SECRET" }
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from ._errors import ConfigError
from ._models import PERSONAL_FIELDS, PlatformSettings

# The names of environment variables this configuration accepts. Upper case
# keeps a literal secret (sk_live_..., a base64 key) from passing as a name,
# and from being quoted in the message about a variable that is not set.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def is_env_name(value: object) -> bool:
    """Return whether ``value`` is an upper-case environment variable name."""
    return isinstance(value, str) and _ENV_NAME.fullmatch(value) is not None


# Names made of words (ACME_CLIENT_SECRET, TOKEN, KEY2). A secret of upper-case
# letters and digits (an access key id) passes _ENV_NAME but not this, so
# messages do not quote it.
_WORDY_NAME = re.compile(
    r"[A-Z]{1,20}\d{0,2}(?:_[A-Z]{1,20}\d{0,2})+|[A-Z]{1,8}\d{0,2}"
)


def env_label(name: str, setting: str) -> str:
    """Return "the environment variable NAME named by SETTING" for a message.

    The name is left out unless it reads as words, because a secret pasted
    in place of the name would otherwise be printed.
    """
    if _WORDY_NAME.fullmatch(name):
        return f"the environment variable {name} named by {setting}"
    return f"the environment variable named by {setting}"


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "RUNTIME_OPTIONS",
    "BreakerPolicy",
    "Config",
    "EnvSecrets",
    "PlatformConfig",
    "RetryPolicy",
    "SecretsProvider",
    "TenantConfig",
    "check_option_names",
    "load_config",
]

#: Keys of a platform's ``options`` table that the runtime reads itself.
#: Every other key belongs to the connector.
RUNTIME_OPTIONS = frozenset({"replay_safe"})


def check_option_names(
    options: Mapping[str, Any], known: Iterable[str], *, tenant: str, platform: str
) -> None:
    """Raise ``ConfigError`` for an ``options`` key that nothing reads.

    ``known`` is the connector's option names; ``RUNTIME_OPTIONS`` are
    accepted as well. The message names the full key, the closest known
    name and the list of known names, so a misspelled option cannot be
    silently ignored.
    """
    accepted = set(known) | RUNTIME_OPTIONS
    for name in sorted(options):
        if name in accepted:
            continue
        key = f"tenants.{tenant}.platforms.{platform}.options.{name}"
        close = difflib.get_close_matches(name.lower(), sorted(accepted), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        message = (
            f"Unknown {platform} option {key}; {hint}known options: "
            f"{', '.join(sorted(accepted))}."
        )
        raise ConfigError(message, key=key)


class SecretsProvider(Protocol):
    """A source of credential and key values."""

    def get(self, name: str) -> str | None: ...


class EnvSecrets:
    """Secrets read from environment variables."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value if value else None


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    # nan compares false with everything, so value <= 0 alone would pass it.
    if not is_number or not math.isfinite(value) or value <= 0:
        message = f"{attribute.name} must be a finite number above 0, not {value!r}"
        raise ValueError(message)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Backoff with full jitter: wait uniform(0, min(max_delay, base * 2**n))."""

    max_attempts: int = attrs.field(default=6, validator=_positive)
    base_delay: float = attrs.field(default=0.5, validator=_positive)
    max_delay: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds from the first attempt after which a delivery stops retrying.
    deadline: float = attrs.field(default=300.0, validator=_positive)


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """Open after ``threshold`` retryable failures in a row, for ``reset_timeout`` s."""

    threshold: int = attrs.field(default=5, validator=_positive)
    reset_timeout: float = attrs.field(default=60.0, validator=_positive)


@attrs.frozen(kw_only=True)
class PlatformConfig:
    """One tenant's settings for one platform, before secrets are resolved."""

    platform: str
    base_url: str
    enabled: bool = True
    #: ``rest`` or ``soap``; None uses the connector's first transport.
    protocol: str | None = None
    credentials: Mapping[str, str] = attrs.field(factory=dict)
    options: Mapping[str, Any] = attrs.field(factory=dict)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    #: ``(calls, period)`` overriding the connector's default quota.
    rate_limit: tuple[int, float] | None = None
    #: Personal fields the tenant keeps from this platform.
    deny_fields: frozenset[str] = frozenset()
    #: Personal fields the tenant lets through beyond the connector's needs.
    allow_fields: frozenset[str] = frozenset()
    webhook_secrets: tuple[str, ...] = ()
    #: Whether plain http:// URLs to other machines are accepted.
    allow_http: bool = False


@attrs.frozen(kw_only=True)
class TenantConfig:
    """A tenant and its platforms."""

    id: str
    key_env: str
    platforms: Mapping[str, PlatformConfig]


#: Seconds one call of a connector's authenticate or send hook may take
#: before the runtime ends it: ten of httpx's 30-second timeouts, for
#: connectors that make several calls per send.
DEFAULT_HOOK_TIMEOUT = 300.0


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration file, parsed and checked."""

    store_path: Path
    store_key_env: str
    tenants: Mapping[str, TenantConfig]
    inputs: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: The raw ``[sla]`` table; ``impactin_core._audit.SlaTargets`` checks it.
    sla: Mapping[str, Any] = attrs.field(factory=dict)
    concurrency: int = 8
    #: Seconds one call of a connector's authenticate or send hook may take.
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    source: Path | None = None

    def tenant(self, tenant: str) -> TenantConfig:
        try:
            return self.tenants[tenant]
        except KeyError:
            known = ", ".join(sorted(self.tenants)) or "none"
            message = (
                f"Tenant {tenant!r} is not configured (configured: {known}); "
                f"add a [tenants.{tenant}] section."
            )
            raise ConfigError(message, key=f"tenants.{tenant}") from None

    def settings(
        self, tenant: str, platform: str, secrets: SecretsProvider
    ) -> PlatformSettings:
        """Resolve one tenant's platform settings, secrets included."""
        config = self.tenant(tenant).platforms[platform]
        resolved: dict[str, str] = {}
        for name, env_name in config.credentials.items():
            value = secrets.get(env_name)
            if value is None:
                key = f"tenants.{tenant}.platforms.{platform}.credentials.{name}"
                message = (
                    f"Tenant {tenant!r} has no {name!r} credential for "
                    f"{platform!r}: {env_label(env_name, key)} is not set; set it."
                )
                raise ConfigError(message, key=key)
            if _CONTROL_CHARACTER.search(value) or value != value.strip():
                key = f"tenants.{tenant}.platforms.{platform}.credentials.{name}"
                message = (
                    f"The {name!r} credential of tenant {tenant!r} for {platform!r} "
                    f"({env_label(env_name, key)}) contains a control character "
                    "or starts or ends with whitespace, which a header cannot "
                    "carry; remove it (a secret read from a file often ends "
                    "with a newline)."
                )
                raise ConfigError(message, key=key)
            resolved[name] = value
        return PlatformSettings(
            tenant=tenant,
            platform=platform,
            base_url=config.base_url,
            enabled=config.enabled,
            protocol=config.protocol or "rest",
            secrets=resolved,
            options=config.options,
            allow_http=config.allow_http,
        )


#: A dotted path of TOML bare keys, each with an optional list index such
#: as "deny[0]". A name with any other character is written in quotes.
_BARE_KEY = re.compile(r"[A-Za-z0-9_.\[\]-]+")

#: C0 control characters and DEL. HTTP forbids them in header values, and
#: a request that carries one fails before it is sent.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


_EXPECTED: dict[Any, str] = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    dict: "a table",
    list: "a list",
}


def _closest(name: str, names: Iterable[str]) -> str:
    """Return " (closest: 'NAME')" for the valid name nearest ``name``, or ""."""
    close = difflib.get_close_matches(name.lower(), sorted(names), n=1)
    return f" (closest: {close[0]!r})" if close else ""


def toml_repr(value: object) -> str:
    """Return ``value`` as a message shows it: TOML's true and false, else repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class _Reader:
    """Typed access to a TOML table that names the full key in errors."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        self.data = data
        self.prefix = prefix

    def key(self, name: str) -> str:
        # A name that TOML cannot write bare ("a b") is quoted, as in the file.
        part = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
        return f"{self.prefix}.{part}" if self.prefix else part

    def fail(self, name: str, problem: str, fix: str) -> ConfigError:
        key = self.key(name)
        return ConfigError(f"{key} {problem}; {fix}.", key=key)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if name not in self.data:
            return default
        value = self.data[name]
        if not isinstance(value, kind) or (
            isinstance(value, bool) and kind in (int, float, (int, float))
        ):
            expected = _EXPECTED.get(kind, "a number")
            secret_like = name in ("password", "secret")
            described = "a secret-like value" if secret_like else toml_repr(value)
            raise self.fail(name, f"is {described}", f"set it to {expected}")
        return value

    def require(self, name: str, kind: type, fix: str) -> Any:
        if name not in self.data:
            raise self.fail(name, "is missing", fix)
        return self.get(name, kind)

    def only(self, *names: str) -> None:
        """Raise for a key outside ``names``, so a typo is not silently ignored."""
        unknown = sorted(set(self.data) - set(names))
        if unknown:
            raise self.fail(
                unknown[0],
                "is not a known setting",
                f"use one of {', '.join(sorted(names))}{_closest(unknown[0], names)}",
            )

    def table(self, name: str) -> _Reader:
        value = self.get(name, dict, {})
        return _Reader(value, self.key(name))


#: Settings of ``retry`` and ``breaker`` that count something. The others
#: are in seconds.
_COUNT_SETTINGS = frozenset({"max_attempts", "threshold"})


def _policy(reader: _Reader, cls: type[Any]) -> Any:
    reader.only(*(field.name for field in attrs.fields(cls)))
    values: dict[str, float] = {}
    for name in reader.data:
        if name in _COUNT_SETTINGS:
            values[name] = _check_count(reader, name, reader.get(name, int))
        else:
            seconds = reader.get(name, (int, float))
            values[name] = _check_seconds(reader, name, seconds)
    return cls(**values)


#: Bounds of a rate limit. The limiter logs each admitted call of the last
#: period, and a period shorter than a millisecond is below the resolution
#: at which asyncio schedules its waits.
_MAX_RATE_CALLS = 1_000_000
_MIN_RATE_PERIOD = 0.001


def _check_count(reader: _Reader, name: str, value: int) -> int:
    if value < 1:
        raise reader.fail(name, f"is {value}", "set it to a whole number above 0")
    return value


def _check_seconds(reader: _Reader, name: str, value: float) -> float:
    # nan compares false with everything, so value <= 0 alone would pass it.
    if not math.isfinite(value) or value <= 0:
        raise reader.fail(
            name, f"is {value!r}", "set it to a finite number of seconds above 0"
        )
    return float(value)


_PLATFORM_KEYS = (
    "allow_http",
    "base_url",
    "breaker",
    "credentials",
    "enabled",
    "options",
    "protocol",
    "rate_limit",
    "redaction",
    "retry",
    "webhook_secret_envs",
)


def _check_base_url(reader: _Reader, base_url: str, *, allow_http: bool) -> None:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.fail(
            "base_url", f"is {base_url!r}", "use an http:// or https:// URL with a host"
        )
    host = plain_http_host(base_url)
    if host is not None and not allow_http:
        raise reader.fail("base_url", *plain_http_error(host))
    if parts.username or parts.password or parts.query or parts.fragment:
        # Such parts would carry secrets into logs; never echo the value.
        raise reader.fail(
            "base_url",
            "contains a user name, password, query or fragment",
            "keep only scheme, host, port and path, and put credentials in "
            "the credentials table",
        )


def plain_http_host(url: str) -> str | None:
    """Return the host of an ``http://`` URL to another machine, else None.

    Plain HTTP to this machine (``localhost``, ``127.0.0.0/8``, ``::1``),
    where the sandbox simulators run, and ``https://`` URLs return None. Other
    spellings of a loopback address, such as ``127.1``, count as another
    machine.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "http" or not parts.hostname:
        return None
    host = parts.hostname
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return None
    except ValueError:
        pass
    return host


def plain_http_error(host: str) -> tuple[str, str]:
    """Return the problem and the fix of a plain http:// URL to ``host``."""
    return (
        f"is plain http:// to {host!r}, which would carry credentials and "
        "employees' data unencrypted",
        "use https://, or set allow_http = true next to base_url if a proxy on "
        "a network you trust adds TLS; write this machine as localhost or "
        "127.0.0.1",
    )


def _platform(reader: _Reader, platform: str) -> PlatformConfig:
    reader.only(*_PLATFORM_KEYS)
    base_url = reader.require(
        "base_url", str, "set it to the platform's API address, for example https://..."
    )
    allow_http = reader.get("allow_http", bool, False)
    _check_base_url(reader, base_url, allow_http=allow_http)
    credentials = reader.table("credentials").data
    for name, value in credentials.items():
        _check_env_name(reader, f"credentials.{name}", value)
    webhook_secrets = reader.get("webhook_secret_envs", list, [])
    for index, value in enumerate(webhook_secrets):
        _check_env_name(reader, f"webhook_secret_envs[{index}]", value)
    protocol = reader.get("protocol", str)
    if protocol not in (None, "rest", "soap"):
        raise reader.fail("protocol", f"is {protocol!r}", "use 'rest' or 'soap'")
    rate = reader.table("rate_limit")
    rate.only("calls", "period")
    rate_limit = None
    if rate.data:
        calls = rate.require("calls", int, "set the number of calls per period")
        period = rate.require("period", (int, float), "set the period in seconds")  # type: ignore[arg-type]
        rate_limit = (
            _check_count(rate, "calls", calls),
            _check_seconds(rate, "period", period),
        )
        if calls > _MAX_RATE_CALLS:
            raise rate.fail(
                "calls",
                f"is {calls}",
                f"set at most {_MAX_RATE_CALLS:,} calls, or leave rate_limit "
                "out for no limit",
            )
        if period < _MIN_RATE_PERIOD:
            raise rate.fail(
                "period",
                f"is {period!r}",
                f"set at least {_MIN_RATE_PERIOD} seconds, and scale calls to match",
            )
    redaction = reader.table("redaction")
    redaction.only("allow", "deny")
    deny_fields = _personal_fields(redaction, "deny")
    allow_fields = _personal_fields(redaction, "allow")
    both = sorted(deny_fields & allow_fields)
    if both:
        raise redaction.fail(
            "allow",
            f"names {', '.join(both)}, which deny names too",
            "keep each field in one of the two lists",
        )
    return PlatformConfig(
        platform=platform,
        base_url=base_url.rstrip("/"),
        enabled=reader.get("enabled", bool, True),
        protocol=protocol,
        credentials=dict(credentials),
        options=_options(reader.table("options")),
        retry=_policy(reader.table("retry"), RetryPolicy),
        breaker=_policy(reader.table("breaker"), BreakerPolicy),
        rate_limit=rate_limit,
        deny_fields=deny_fields,
        allow_fields=allow_fields,
        webhook_secrets=tuple(webhook_secrets),
        allow_http=allow_http,
    )


#: Options that the runtime's webhook verification reads, in seconds. They
#: are checked when the file is read, because a wrong value would otherwise
#: show only when the first event arrives.
_WEBHOOK_SECONDS_OPTIONS = ("tolerance", "future_tolerance")


def _options(reader: _Reader) -> dict[str, Any]:
    for name in _WEBHOOK_SECONDS_OPTIONS:
        value = reader.get(name, (int, float))
        # nan compares false with everything, so value < 0 alone would pass it.
        if value is not None and (not math.isfinite(value) or value < 0):
            raise reader.fail(
                name, f"is {value!r}", "set it to a finite number of seconds, 0 or more"
            )
    return dict(reader.data)


def _personal_fields(reader: _Reader, name: str) -> frozenset[str]:
    """Read a ``redaction`` list, which names personal fields of ``ImpactRecord``.

    The runtime withholds or sends only these fields, so any other name
    would be ignored, and a misspelled ``deny`` would send the field.
    """
    fields = reader.get(name, list, [])
    valid = ", ".join(sorted(PERSONAL_FIELDS))
    for index, field in enumerate(fields):
        if field in PERSONAL_FIELDS:
            continue
        raise reader.fail(
            f"{name}[{index}]",
            f"is {field!r}, which is not a personal field of a record",
            f"use one of {valid}{_closest(str(field), PERSONAL_FIELDS)}",
        )
    return frozenset(fields)


def _check_env_name(reader: _Reader, key: str, value: object) -> None:
    if not is_env_name(value):
        raise reader.fail(
            key,
            "must be the upper-case name of an environment variable, such as "
            "ACME_CLIENT_SECRET, not a literal secret",
            "store the secret in an environment variable and put its name here",
        )


def _tenant(reader: _Reader, tenant: str) -> TenantConfig:
    reader.only("key_env", "platforms")
    key_env = reader.require(
        "key_env",
        str,
        "set it to the name of an environment variable holding the tenant's "
        "secret key (used for pseudonyms and idempotency keys)",
    )
    _check_env_name(reader, "key_env", key_env)
    platforms = reader.table("platforms")
    if not platforms.data:
        raise reader.fail(
            "platforms", "is empty", f"add a [tenants.{tenant}.platforms.NAME] section"
        )
    parsed = {
        name: _platform(platforms.table(name), name) for name in sorted(platforms.data)
    }
    return TenantConfig(id=tenant, key_env=key_env, platforms=parsed)


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path, source: Path | None = None
) -> Config:
    """Check a configuration read from TOML and return it."""
    root = _Reader(data, "")
    root.only("inputs", "runtime", "sla", "store", "tenants")
    store = root.table("store")
    store.only("key_env", "path")
    store_path = Path(store.get("path", str, "impactin.db"))
    store_key_env = store.get("key_env", str, "IMPACTIN_STORE_KEY")
    _check_env_name(store, "key_env", store_key_env)
    if not store_path.is_absolute():
        store_path = base_dir / store_path
    tenants_reader = root.table("tenants")
    if not tenants_reader.data:
        raise root.fail(
            "tenants", "is missing", "add at least one [tenants.NAME] section"
        )
    tenants = {
        name: _tenant(tenants_reader.table(name), name)
        for name in sorted(tenants_reader.data)
    }
    runtime = root.table("runtime")
    runtime.only("concurrency", "hook_timeout")
    concurrency = runtime.get("concurrency", int, 8)
    if concurrency < 1:
        raise runtime.fail("concurrency", f"is {concurrency}", "use 1 or more")
    hook_timeout = _check_seconds(
        runtime,
        "hook_timeout",
        runtime.get("hook_timeout", (int, float), DEFAULT_HOOK_TIMEOUT),
    )
    return Config(
        store_path=store_path,
        store_key_env=store_key_env,
        tenants=tenants,
        inputs=dict(root.table("inputs").data),
        sla=dict(root.table("sla").data),
        concurrency=concurrency,
        hook_timeout=hook_timeout,
        source=source,
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the TOML configuration file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = (
            f"The configuration file {str(file)!r} does not exist; pass --config "
            "or set IMPACTIN_CONFIG to an existing file."
        )
        raise ConfigError(message) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = f"The configuration file {str(file)!r} is not valid TOML: {exc}."
        raise ConfigError(message) from exc
    return parse_config(data, base_dir=file.resolve().parent, source=file)
