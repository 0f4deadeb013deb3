"""The conformance suite fails connectors generated from the template and then broken.

Each case changes one thing in a generated connector's ``_plugin.py``, runs
the rules that should catch it against the connector's own simulator on
127.0.0.1, and checks that they fail with a message that states the fix.
The connector is made importable through ``PYTHONPATH`` and a dist-info
folder that declares its entry point, so nothing is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from impactin_core._connector_template import render_connector

NAME = "mutant_probe"

#: Source lines of the generated ``_plugin.py`` that the cases replace.
SEND_ERROR = """\
    if response.status_code not in (200, 201):
        # known_values are scrubbed"""

SEND_RETURN = "    return _send(request, credentials, context)\n"

AUTH_ERROR = """\
        if response.status_code != 200:
            raise_for_response("""

VERIFY_SECRETS = "        secrets=secrets,\n"

VERIFY_HOOK = """\
@hookimpl
def impactin_verify_webhook("""

MAP_RETURN = "    return [_map(record, key) for record, key in pairs]\n"

MAP_ONE = "    return _map(records[0], idempotency_keys[0])  # type: ignore\n"


def generate(folder: Path, replacements: list[tuple[str, str]]) -> Path:
    """Write the connector into ``folder``, with ``replacements`` in its plugin."""
    package = render_connector(NAME, folder)
    plugin = package / "src" / f"impactin_{NAME}" / "_plugin.py"
    text = plugin.read_text(encoding="utf-8")
    for old, new in replacements:
        assert text.count(old) == 1, f"the template no longer contains {old!r}"
        text = text.replace(old, new)
    plugin.write_text(text, encoding="utf-8")
    info = folder / "site" / f"impactin_{NAME}-0.1.0.dist-info"
    info.mkdir(parents=True)
    metadata = f"Metadata-Version: 2.1\nName: impactin-{NAME}\nVersion: 0.1.0\n"
    (info / "METADATA").write_text(metadata, encoding="utf-8")
    entry_points = f"[impactin]\n{NAME} = impactin_{NAME}._plugin\n"
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    return package


def environment(package: Path) -> dict[str, str]:
    environ = dict(os.environ)
    environ.pop("PYTEST_ADDOPTS", None)
    paths = [str(package / "src"), str(package.parent / "site")]
    if environ.get("PYTHONPATH"):
        paths.append(environ["PYTHONPATH"])
    environ["PYTHONPATH"] = os.pathsep.join(paths)
    environ["IMPACTIN_LOAD_PLUGINS"] = NAME
    return environ


def run_rules(package: Path, keyword: str) -> str:
    """Run the generated connector's conformance tests selected by ``keyword``."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    # A short deadline keeps the case of a hanging hook fast.
    command += ["--impactin-rule-timeout=20", "-k", keyword, "tests"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=package,
        env=environment(package),
    )
    return result.stdout + result.stderr


def run_cli(package: Path, *args: str, timeout: float = 120) -> tuple[int, str]:
    command = [sys.executable, "-c", "from impactin_core._cli import main; main()"]
    result = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=environment(package),
    )
    return result.returncode, result.stdout + result.stderr


LOG_TOKEN_ON_429 = (
    """\
    if response.status_code == 429:
        import logging

        logging.getLogger("impactin_mutant").warning(
            "Throttled, headers %s", credentials.headers
        )
"""
    + SEND_ERROR
)

AUTH_RETURN = """\
    return Credentials(
        kind="bearer","""

LOG_TOKEN_IN_AUTH = (
    """\
    import logging

    logging.getLogger("impactin_mutant").debug("Token %s", token.access_token)
"""
    + AUTH_RETURN
)

NO_PERSONAL_FIELDS = "    personal_fields=[],\n"

MAP_HEAD = "def _map(record: ImpactRecord, key: str) -> PlatformRequest:\n"

# The logger exists from import on, so the runtime's filter covers it and
# hides the value; the rule must fail all the same.
LOG_EMAIL_IN_MAP = (
    """\
import logging

_LOG = logging.getLogger("impactin_mutant")


"""
    + MAP_HEAD
    + """\
    _LOG.info("Mapping %s", record.employee_email)
"""
)

RAISE_FOR_STATUS = """\
    if response.status_code not in (200, 201):
        response.raise_for_status()
        # known_values are scrubbed"""

FLOAT_RETRY_AFTER = (
    """\
    if response.status_code == 429:
        from impactin_core import RateLimited

        raise RateLimited(
            "throttled",
            platform=PLATFORM_ID,
            tenant=settings.tenant,
            retry_after=float(response.headers["retry-after"]),
            sent=False,
        )
"""
    + SEND_ERROR
)

SENT_408 = (
    """\
    if response.status_code == 408:
        from impactin_core import RetryableError

        raise RetryableError("timeout", platform=PLATFORM_ID, tenant=settings.tenant)
"""
    + SEND_ERROR
)

RUNTIME_ERROR_IN_AUTH = """\
        if response.status_code != 200:
            raise RuntimeError(f"token request failed: {response.status_code}")
        if response.status_code != 200:
            raise_for_response("""

SYNC_SEND = """\
    import httpx as sync_httpx

    headers = {**credentials.headers, "Idempotency-Key": request.idempotency_key}
    url = f"{context.settings.base_url}/activities"
    response = sync_httpx.post(url, json=request.payload, headers=headers)
    if response.status_code not in (200, 201):
        raise_for_response(
            response, platform=PLATFORM_ID, tenant=context.settings.tenant, now=0.0
        )
    outcome = SendOutcome(status_code=response.status_code, response_id="sync")
    return outcome  # type: ignore[return-value]
"""

VERIFY_CALL = """\
    return verify_with_scheme(
        PLATFORM.webhook_scheme or "standard_webhooks","""

# Accepts an event without a signature and with any timestamp.
LAX_VERIFY = """\
    if "webhook-signature" not in headers:
        return WebhookEvent(
            platform=PLATFORM_ID, event_id=None, timestamp=None, payload=None
        )
    return verify_with_scheme(
        PLATFORM.webhook_scheme or "standard_webhooks","""

FUTURE_VERIFY = """\
    options = {**options, "future_tolerance": 10**9}
    return verify_with_scheme(
        PLATFORM.webhook_scheme or "standard_webhooks","""

LOG_WEBHOOK_SECRETS = """\
    import logging

    logging.getLogger("impactin_mutant").debug("Webhook secrets %s", secrets)
    return verify_with_scheme(
        PLATFORM.webhook_scheme or "standard_webhooks","""

SEND_HEADERS = """\
    headers = {**credentials.headers, "Idempotency-Key": request.idempotency_key}
"""

PRINT_HEADERS = SEND_HEADERS + "    print(headers)\n"

STDERR_TOKEN = (
    SEND_HEADERS
    + """\
    import sys

    sys.stderr.write(str(credentials.headers) + "\\n")
"""
)

TOKEN_FETCH = """\
    token = await context.tokens.get(
        settings.tenant, PLATFORM_ID, fetch, force=context.force_refresh
    )
"""

LOG_BASIC_AUTH = (
    """\
    import base64
    import logging

    pair = f"{settings.secret('client_id')}:{settings.secret('client_secret')}"
    logging.getLogger("impactin_mutant").debug(
        "Basic %s", base64.b64encode(pair.encode()).decode()
    )
"""
    + TOKEN_FETCH
)

MODULE_TOKENS = """\
    token = _TOKENS.get(settings.tenant)
    if token is None or context.force_refresh:
        token = await fetch(None)
        _TOKENS[settings.tenant] = token
"""

MODULE_TOKENS_DICT = """\
_TOKENS: dict[str, OAuthToken] = {}


@hookimpl
def impactin_authenticate("""

BLOCKING_SEND = (
    SEND_HEADERS
    + """\
    import time as blocking_time

    blocking_time.sleep(1)
"""
)

HANGING_SEND = (
    SEND_HEADERS
    + """\
    import asyncio

    await asyncio.sleep(3600)
"""
)

STRING_RETRY_AFTER = (
    """\
    if response.status_code == 429:
        from impactin_core import RateLimited

        raise RateLimited(
            "throttled",
            platform=PLATFORM_ID,
            tenant=settings.tenant,
            retry_after=response.headers["retry-after"],
            sent=False,
        )
"""
    + SEND_ERROR
)

NAN_RETRY_AFTER = STRING_RETRY_AFTER.replace(
    'response.headers["retry-after"]', 'float("nan")'
)

CASES = [
    pytest.param(
        [(VERIFY_CALL, LAX_VERIFY)],
        "webhook",
        ["rejects unsigned events", "webhook-signature header was removed"],
        id="webhook-unsigned-accepted",
    ),
    pytest.param(
        [(VERIFY_CALL, FUTURE_VERIFY)],
        "webhook",
        ["rejects events from the future", "1,000,000 s ahead"],
        id="webhook-future-accepted",
    ),
    pytest.param(
        [(VERIFY_CALL, LOG_WEBHOOK_SECRETS)],
        "logs_hold_no_secret",
        ["Conformance rule 'no secret in logs' failed", "webhook verifications"],
        id="webhook-secrets-logged",
    ),
    pytest.param(
        [(SEND_HEADERS, PRINT_HEADERS)],
        "logs_hold_no_secret",
        ["'no secret or personal value in output' failed", "standard output"],
        id="headers-printed",
    ),
    pytest.param(
        [(SEND_HEADERS, STDERR_TOKEN)],
        "logs_hold_no_secret",
        ["'no secret or personal value in output' failed", "standard error"],
        id="token-written-to-stderr",
    ),
    pytest.param(
        [(TOKEN_FETCH, LOG_BASIC_AUTH)],
        "logs_hold_no_secret",
        ["'no secret in logs' failed", "Base64 form"],
        id="basic-auth-logged",
    ),
    pytest.param(
        [
            (TOKEN_FETCH, MODULE_TOKENS),
            ("@hookimpl\ndef impactin_authenticate(", MODULE_TOKENS_DICT),
        ],
        "token_refresh or rejected_credentials",
        ["OAuth tokens come from context.tokens", "2 failed"],
        id="oauth-token-outside-context",
    ),
    pytest.param(
        [(SEND_HEADERS, BLOCKING_SEND)],
        "round_trip",
        ["hooks do not block the event loop", "impactin_send held", "to_thread"],
        id="send-blocks-loop",
    ),
    pytest.param(
        [(SEND_HEADERS, HANGING_SEND)],
        "round_trip",
        ["'hooks finish in time' failed", "impactin_send did not finish"],
        id="send-hangs",
    ),
    pytest.param(
        [(SEND_ERROR, STRING_RETRY_AFTER)],
        "retry_after_is_honoured",
        ["'retry_after is a number of seconds' failed", "parse_retry_after"],
        id="retry-after-string",
    ),
    pytest.param(
        [(SEND_ERROR, NAN_RETRY_AFTER)],
        "retry_after_is_honoured",
        ["'retry_after is a number of seconds' failed", "nan"],
        id="retry-after-nan",
    ),
    pytest.param(
        [(SEND_ERROR, LOG_TOKEN_ON_429)],
        "logs_hold_no_secret",
        ["Conformance rule 'no secret in logs' failed", "impactin_mutant"],
        id="token-logged-on-429",
    ),
    pytest.param(
        [(AUTH_RETURN, LOG_TOKEN_IN_AUTH)],
        "round_trip or logs_hold_no_secret",
        ["Conformance rule 'no secret in logs' failed", "'impactin_mutant'"],
        id="token-logged-by-authenticate",
    ),
    pytest.param(
        [
            (NO_PERSONAL_FIELDS, '    personal_fields=["employee_email"],\n'),
            (MAP_HEAD, LOG_EMAIL_IN_MAP),
        ],
        # The replay rule runs first and builds a runtime, which attaches the
        # filter to the connector's logger before the log rule starts.
        "runtime_replay or logs_hold_no_secret",
        [
            "Conformance rule 'no secret or personal value in logs' failed",
            "'impactin_mutant' held a secret or personal value",
        ],
        id="email-logged-by-map",
    ),
    pytest.param(
        [(SEND_ERROR, SENT_408)],
        "unsent_statuses and 408",
        ["Conformance rule 'HTTP 408 is retryable without a duplicate' failed"],
        id="408-marked-sent",
    ),
    pytest.param(
        [(SEND_ERROR, FLOAT_RETRY_AFTER)],
        "retry_after_http_date",
        ["ValueError", "parse_retry_after", "raise_for_response"],
        id="retry-after-as-float",
    ),
    pytest.param(
        [(VERIFY_SECRETS, "        secrets=secrets[:1],\n")],
        "webhook",
        ["accepts every current secret", "second of two secrets"],
        id="webhook-first-secret-only",
    ),
    pytest.param(
        [(VERIFY_HOOK, "def impactin_verify_webhook(")],
        "webhook",
        ["implements no impactin_verify_webhook", "1 failed"],
        id="webhook-hook-missing",
    ),
    pytest.param(
        [(SEND_RETURN, SYNC_SEND)],
        "round_trip",
        ["impactin_send returned SendOutcome", "async def", "1 failed"],
        id="send-not-async",
    ),
    pytest.param(
        [(MAP_RETURN, MAP_ONE)],
        "round_trip",
        ["impactin_map returned PlatformRequest", "return a list", "1 error"],
        id="map-returns-one-request",
    ),
    pytest.param(
        [(SEND_ERROR, RAISE_FOR_STATUS)],
        "delivery_errors",
        ["impactin_send raised HTTPStatusError", "DeliveryError subclass"],
        id="send-raise-for-status",
    ),
    pytest.param(
        [(AUTH_ERROR, RUNTIME_ERROR_IN_AUTH)],
        "delivery_errors",
        ["impactin_authenticate raised RuntimeError", "DeliveryError subclass"],
        id="authenticate-runtime-error",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("replacements", "keyword", "expected"), CASES)
def test_broken_connector_fails(
    tmp_path: Path,
    replacements: list[tuple[str, str]],
    keyword: str,
    expected: list[str],
) -> None:
    package = generate(tmp_path, replacements)

    output = run_rules(package, keyword)

    assert " failed" in output or " error" in output, output[-3000:]
    for text in expected:
        assert text in output, output[-3000:]


@pytest.mark.slow
def test_unbroken_connector_passes_rules(tmp_path: Path) -> None:
    package = generate(tmp_path, [])

    output = run_rules(
        package,
        "logs_hold_no_secret or unsent_statuses or transient or retry_after "
        "or webhook or delivery_errors",
    )

    assert " failed" not in output, output[-3000:]
    assert " error" not in output, output[-3000:]
    assert "13 passed" in output, output[-3000:]


def test_preflight_names_hook(tmp_path: Path) -> None:
    package = generate(tmp_path, [(SEND_RETURN, SYNC_SEND)])

    status, output = run_cli(package, "conformance", NAME)
    lines = output.strip().splitlines()

    assert status == 1, output
    assert len(lines) == 1, output
    assert "impactin_send returned SendOutcome" in lines[0]


def test_misspelled_option_is_rejected(tmp_path: Path) -> None:
    package = generate(tmp_path, [])

    status, output = run_cli(package, "conformance", NAME, "--option", "acount=x")
    lines = output.strip().splitlines()

    assert status == 1, output
    assert len(lines) == 1, output
    assert f"tenants.conformance.platforms.{NAME}.options.acount" in lines[0]


def test_sandbox_names_simulator_factory(tmp_path: Path) -> None:
    package = generate(tmp_path, [])
    command = [sys.executable, "-c", "from impactin_core._cli import main; main()"]
    command += ["sandbox", NAME, "--port", "0"]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**environment(package), "COLUMNS": "200"},
    )
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(2)]
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert lines[0].startswith(f"Simulator of {NAME} on http://127.0.0.1:"), lines
    assert "docs/platforms" not in lines[1], lines
    assert f"impactin_{NAME}.simulator:create_simulator" in lines[1], lines
