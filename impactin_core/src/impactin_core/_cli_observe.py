"""Observability commands: ``impactin webhooks verify``.

``webhooks verify`` reads one raw HTTP request from standard input and checks
its signature the way the platform's connector does. Operators use it to find
out why a delivered event was rejected. It prints the verdict and the reason
code, never a secret, a signature or the body.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import click

__all__ = ["parse_raw_request", "register"]

#: Exit status of ``webhooks verify`` when the request fails verification.
EXIT_REJECTED = 1

#: A chunk size: hexadecimal digits, at most 16 so the number stays in 64 bits.
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class RawRequestError(ValueError):
    """The input is not an HTTP request with a request line and headers."""


#: A header or trailer field name: an RFC 9110 token.
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_raw_request(data: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Split a raw HTTP/1.1 request into its request line, headers and body.

    Lines may end in CRLF or LF. A ``Content-Length`` header, when present,
    sets how many body bytes count, so a newline that an editor appended to a
    saved request does not change the signed bytes. Other bytes after the
    body are an error, because they would be a second request. A body sent with
    ``Transfer-Encoding: chunked`` is decoded, because the receiving
    application verifies the decoded bytes. Any other transfer coding is
    rejected.
    """
    head, body = _split_head(data)
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError as exc:
        message = (
            f"The request head has a non-ASCII byte at offset {exc.start}; "
            "HTTP header lines must be ASCII."
        )
        raise RawRequestError(message) from None
    lines = text.replace("\r\n", "\n").split("\n")
    request_line = lines[0].strip()
    if len(request_line.split()) < 2:
        message = (
            "The first line is not an HTTP request line such as "
            "'POST /webhooks HTTP/1.1'."
        )
        raise RawRequestError(message)
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            message = f"Line {number} is not a header line of the form 'Name: value'."
            raise RawRequestError(message)
        headers.append((name, value.strip()))
    return request_line, headers, _cut_body(body, headers)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    candidates = [
        (index, separator)
        for separator in (b"\r\n\r\n", b"\n\n")
        if (index := data.find(separator)) >= 0
    ]
    if not candidates:
        message = (
            "No blank line ends the headers; give the request line, the headers, "
            "a blank line and then the body."
        )
        raise RawRequestError(message)
    index, separator = min(candidates)
    return data[:index], data[index + len(separator) :]


def _cut_body(body: bytes, headers: list[tuple[str, str]]) -> bytes:
    lengths = [value for name, value in headers if name.lower() == "content-length"]
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name.lower() == "transfer-encoding"
        for coding in value.split(",")
    ]
    if codings:
        return _transfer_decoded(body, codings, has_length=bool(lengths))
    if not lengths:
        return body
    if len(set(lengths)) > 1 or not lengths[0].isdigit():
        message = "The Content-Length header is not a single whole number."
        raise RawRequestError(message)
    length = int(lengths[0])
    if length > len(body):
        message = (
            f"The body has {len(body)} bytes but Content-Length is {length}; "
            "save the whole request body."
        )
        raise RawRequestError(message)
    _check_nothing_after(body[length:], f"the {length} bytes that Content-Length gives")
    return body[:length]


def _check_nothing_after(rest: bytes, boundary: str) -> None:
    """Reject bytes after the body other than the line breaks an editor adds."""
    if rest.strip(b"\r\n"):
        unit = "byte" if len(rest) == 1 else "bytes"
        message = (
            f"The file has {len(rest)} more {unit} after {boundary}; save one "
            "request per file, with the body exactly as received."
        )
        raise RawRequestError(message)


def _transfer_decoded(body: bytes, codings: list[str], *, has_length: bool) -> bytes:
    if codings != ["chunked"]:
        listed = ", ".join(codings)
        message = (
            f"Transfer-Encoding {listed!r} is not supported, only 'chunked'; save "
            "the body as the application received it, after transfer decoding, "
            "and remove the Transfer-Encoding header."
        )
        raise RawRequestError(message)
    if has_length:
        # RFC 9112, section 6.3: a request with both headers may be an
        # attempt at request smuggling, and a server should treat it as an
        # error, so the body length here would be a guess.
        message = (
            "The request has both Transfer-Encoding and Content-Length; remove "
            "the header that the sender did not use."
        )
        raise RawRequestError(message)
    return decode_chunked(body)


def decode_chunked(data: bytes) -> bytes:
    """Return the body of a ``Transfer-Encoding: chunked`` message.

    Each chunk is a hexadecimal size line, which may carry extensions after a
    ``;``, then that many bytes and a line break. A size of 0 ends the body.
    Trailer fields may follow it. They are checked for their form but not
    used, and only line breaks may follow them. Lines may end in CRLF or LF,
    but the chunk data is taken byte for byte.
    """
    body = bytearray()
    position = 0
    for number in itertools.count(1):
        line_end = data.find(b"\n", position)
        if line_end < 0:
            message = (
                f"The chunked body ends before chunk {number} has a size line; "
                "save the whole request, up to the last chunk of size 0."
            )
            raise RawRequestError(message)
        size_text = data[position:line_end].rstrip(b"\r").split(b";")[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            message = (
                f"Chunk {number} does not start with a hexadecimal size line; "
                "check that the chunk sizes match the saved data."
            )
            raise RawRequestError(message)
        size = int(size_text, 16)
        if size == 0:
            _check_trailer(data[line_end + 1 :])
            break
        start = line_end + 1
        end = start + size
        if end > len(data):
            message = (
                f"Chunk {number} is {size} bytes but only {len(data) - start} "
                "remain; save the whole request."
            )
            raise RawRequestError(message)
        body += data[start:end]
        if data.startswith(b"\r\n", end):
            position = end + 2
        elif data.startswith(b"\n", end):
            position = end + 1
        else:
            message = (
                f"Chunk {number} is not followed by a line break, so its size "
                "does not match its data."
            )
            raise RawRequestError(message)
    return bytes(body)


def _check_trailer(data: bytes) -> None:
    """Check what follows the last chunk: trailer fields, a blank line, nothing else."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines):
        if not line.rstrip(b"\r"):
            rest = b"\n".join(lines[number + 1 :])
            _check_nothing_after(rest, "the last chunk and its trailer")
            return
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name.decode("latin-1")):
            message = (
                f"Line {number + 1} after the last chunk is not a trailer field "
                "of the form 'Name: value'; save one request per file, with the "
                "body exactly as received."
            )
            raise RawRequestError(message)


class RequestHeaders(Mapping[str, str]):
    """The header lines of a raw request, looked up case-insensitively.

    Looking up a name returns its first value, but ``items()`` yields every
    line, as Starlette's ``Headers`` does. So the verifier receives a header
    repeated with a different value and rejects it as ``malformed_header``,
    as it would in a host application.
    """

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self._lines = [(name.lower(), value) for name, value in lines]
        self._first: dict[str, str] = {}
        for name, value in self._lines:
            self._first.setdefault(name, value)

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return list(self._lines)


def _secrets(names: tuple[str, ...]) -> list[str]:
    from ._config import env_label, is_env_name

    if not all(is_env_name(name) for name in names):
        # The value is not quoted, because it may be the secret itself.
        message = (
            "A --secret-env value is not the upper-case name of an environment "
            "variable; pass the variable's name, such as BENEVITY_WEBHOOK_SECRET, "
            "not the secret."
        )
        raise click.UsageError(message)
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        labels = "; ".join(env_label(name, "--secret-env") for name in missing)
        message = f"Not set or empty: {labels}. Export the webhook secret there."
        raise click.UsageError(message)
    return [os.environ[name] for name in names]


def _tenant_settings(
    ctx: click.Context, tenant: str, platform: str
) -> tuple[dict[str, Any], tuple[str, ...]]:
    from ._cli import _load_config

    config = _load_config(ctx.find_root().obj.get("config"))
    platforms = config.tenant(tenant).platforms
    if platform not in platforms:
        configured = ", ".join(sorted(platforms)) or "none"
        message = (
            f"Tenant {tenant!r} has no platform {platform!r} configured "
            f"(configured: {configured})."
        )
        raise click.UsageError(message)
    settings = platforms[platform]
    return dict(settings.options), settings.webhook_secrets


def _verify(
    platform_id: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: list[str],
    options: dict[str, Any],
) -> Any:
    from ._plugins import PluginHost
    from .webhooks import verify_with_scheme

    plugins = PluginHost.from_entry_points()
    platform = plugins.platform(platform_id).info
    hook = plugins.hook(platform_id, "impactin_verify_webhook")
    # The hook specification is firstresult: one event or None.
    event = hook(
        platform=platform,
        headers=headers,
        body=body,
        secrets=secrets,
        options=options,
    )
    if event is not None:
        return event
    # The connector implements no verification hook: fall back to the scheme.
    scheme = options.get("webhook_scheme") or platform.webhook_scheme
    if not scheme:
        message = (
            f"The {platform_id} connector does not verify webhooks and declares "
            "no scheme; name one with --scheme."
        )
        raise click.UsageError(message)
    return verify_with_scheme(
        scheme,
        platform=platform_id,
        headers=headers,
        body=body,
        secrets=secrets,
        options=options,
    )


def register(main: click.Group) -> None:
    """Add the ``webhooks`` group to the ``impactin`` command."""

    @main.group()
    def webhooks() -> None:
        """Check inbound webhook requests."""

    @webhooks.command("verify")
    @click.option("--platform", required=True, help="Platform id, such as 'benevity'.")
    @click.option(
        "--secret-env",
        "secret_envs",
        multiple=True,
        help="Environment variable holding a webhook secret; repeat for rotation.",
    )
    @click.option(
        "--tenant",
        help="Read the scheme, options and secret variables of this tenant "
        "from the configuration file.",
    )
    @click.option(
        "--scheme",
        type=click.Choice(["standard_webhooks", "github", "stripe"]),
        help="Signature scheme, overriding the connector's and the tenant's.",
    )
    @click.option(
        "--tolerance",
        type=float,
        help="Maximum age of the signed timestamp, in seconds (default 300); "
        "raise it to check the signature of an old saved request.",
    )
    @click.pass_context
    def webhooks_verify(
        ctx: click.Context,
        platform: str,
        secret_envs: tuple[str, ...],
        tenant: str | None,
        scheme: str | None,
        tolerance: float | None,
    ) -> None:
        """Verify one raw HTTP request read from standard input.

        The input is the request line, the headers, a blank line and the
        body, byte for byte as received. A chunked body is decoded. Nothing
        is recorded as seen, so the same request can be checked again. Exits
        0 when the request verifies, 1 when it is rejected and 2 when the
        input is not a request it can read.
        """
        from ._errors import ConfigError, WebhookRejected

        options: dict[str, Any] = {}
        if tenant is not None:
            options, configured_envs = _tenant_settings(ctx, tenant, platform)
            secret_envs = secret_envs or configured_envs
        if not secret_envs:
            message = "Give --secret-env VAR, or --tenant with webhook_secret_envs."
            raise click.UsageError(message)
        if scheme is not None:
            options["webhook_scheme"] = scheme
        if tolerance is not None:
            options["tolerance"] = tolerance
        secrets = _secrets(secret_envs)
        try:
            request_line, headers, body = parse_raw_request(sys.stdin.buffer.read())
        except RawRequestError as exc:
            raise click.UsageError(f"Cannot read the request: {exc}") from None
        click.echo(f"request: {_safe_request_line(request_line)}")
        click.echo(f"body: {len(body)} bytes")
        try:
            event = _verify(platform, RequestHeaders(headers), body, secrets, options)
        except WebhookRejected as exc:
            # verify_with_scheme has counted the rejection in the metrics.
            click.echo(f"rejected: {exc.reason}")
            click.echo(f"why: {exc}")
            ctx.exit(EXIT_REJECTED)
        except (ConfigError, ValueError) as exc:
            raise click.UsageError(str(exc)) from None
        click.echo("verified: yes")
        click.echo(f"event id: {event.event_id or '-'}")
        click.echo(f"timestamp: {event.timestamp if event.timestamp else '-'}")


def _safe_request_line(line: str) -> str:
    # The query string may carry a token, so only the method and path show.
    parts = line.split()
    method, target = parts[0], parts[1]
    return f"{method} {target.partition('?')[0]}"
