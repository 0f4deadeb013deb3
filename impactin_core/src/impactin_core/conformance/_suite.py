"""The conformance rules every connector must pass.

Each test method is one rule. A failure message names the rule, the input
and what the connector should do instead.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import json
import logging
import math
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import pytest

from .._errors import (
    AuthenticationError,
    DeliveryError,
    ImpactInError,
    RateLimited,
    RecordInvalid,
    RetryableError,
    WebhookRejected,
)
from .._logging import SCRUBBED_MARK
from .._models import (
    CORE_API_VERSION,
    Credentials,
    ImpactRecord,
    PlatformInfo,
    PlatformRequest,
    PlatformSettings,
    RecordKind,
    SendOutcome,
    WebhookEvent,
)
from .._redaction import leak_scan, sanitize_text
from .._tokens import TokenCache
from ..webhooks import (
    MemoryReplayStore,
    sign_github,
    sign_standard_webhooks,
    sign_stripe,
)
from ._harness import (
    PERSONAL_VALUES,
    TENANT,
    Harness,
    HookReturnError,
    rule_deadline,
    run,
    running_harness,
)
from ._target import ConformanceTarget

__all__ = ["ConformanceSuite", "explain"]

T = TypeVar("T")

_REQUIRED_HOOKS = (
    "impactin_register_platforms",
    "impactin_map",
    "impactin_authenticate",
    "impactin_send",
)
_OTHER_PLATFORM = PlatformInfo(
    id="conformance_other",
    name="Another platform",
    kinds=[RecordKind.DONATION, RecordKind.VOLUNTEER_TIME],
    auth_kinds=["none"],
)


#: Statuses that mean the server did not act on the request: 429 (RFC 6585
#: section 4), 503 and 408 (RFC 9110 sections 15.6.4 and 15.5.9).
_UNSENT_STATUSES = ("429", "503", "408")


def explain(rule: str, case: str, observed: str, fix: str) -> str:
    """Return a failure message: the rule, the input, what happened and the fix."""
    return f"Conformance rule '{rule}' failed for {case}: {observed}\nFix: {fix}"


class ConformanceSuite:
    """Subclass this in a connector's tests and set ``target``.

    ``target`` is a ``ConformanceTarget``; left as None, the suite reads the
    platform from the ``--impactin-platform`` command-line option.
    """

    target: ClassVar[ConformanceTarget | None] = None

    @pytest.fixture
    def harness(
        self, conformance_target: ConformanceTarget, transport: str, tmp_path: Path
    ) -> Iterator[Harness]:
        with (
            running_harness(conformance_target, transport, tmp_path) as harness,
            rule_deadline(conformance_target.rule_timeout),
        ):
            # Every rule calls these hooks, so a wrong return type fails each
            # rule here with one message instead of a TypeError deep inside.
            try:
                harness.check_hook_returns()
            except HookReturnError as exc:
                pytest.fail(str(exc), pytrace=False)
            yield harness

    # -- hook contracts ----------------------------------------------------------

    def test_platform_declaration(self, harness: Harness) -> None:
        info = harness.info
        assert info.core_api == CORE_API_VERSION, explain(
            "platform declaration",
            f"platform {info.id!r}",
            f"PlatformInfo.core_api is {info.core_api}, "
            f"core provides {CORE_API_VERSION}",
            "build the connector against this impactin-core and set core_api to match",
        )
        assert info.kinds, explain(
            "platform declaration",
            f"platform {info.id!r}",
            "PlatformInfo.kinds is empty",
            "list the RecordKind values the platform accepts",
        )
        assert harness.transport in info.transports, explain(
            "platform declaration",
            f"transport {harness.transport!r}",
            f"the transport is not in PlatformInfo.transports {info.transports}",
            "declare every transport the connector implements",
        )
        assert info.batch_limit >= 1, explain(
            "platform declaration",
            f"platform {info.id!r}",
            f"batch_limit is {info.batch_limit}",
            "set batch_limit to 1 or more",
        )

    def test_required_hooks(self, harness: Harness) -> None:
        plugin = harness.registered.plugin
        for name in _REQUIRED_HOOKS:
            implemented = any(
                impl.plugin is plugin
                for impl in getattr(harness.host.pm.hook, name).get_hookimpls()
            )
            assert implemented, explain(
                "required hooks",
                f"hook {name}",
                f"the plugin {harness.registered.plugin_name!r} does not implement it",
                f"add a function {name} decorated with impactin_core.hookimpl",
            )

    def test_hooks_ignore_other_platforms(self, harness: Harness) -> None:
        plugin = harness.registered.plugin
        arguments = _foreign_arguments(harness)
        for name, kwargs in arguments.items():
            for impl in getattr(harness.host.pm.hook, name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
                if hasattr(result, "close"):
                    result.close()
                assert result is None, explain(
                    "hooks return None for other platforms",
                    f"{name}(platform={_OTHER_PLATFORM.id!r})",
                    f"returned {type(result).__name__}",
                    "start the hook with 'if platform.id != YOUR_ID: return None'",
                )

    def test_round_trip_types(self, harness: Harness) -> None:
        record = harness.sample_record("conformance-types-1")
        key = "ik_conformance_types_1"
        requests = harness.map_records([record], [key])
        case = f"record {record!r}"
        assert isinstance(requests, list), explain(
            "map returns requests",
            case,
            f"impactin_map returned {type(requests).__name__}",
            "return a list of PlatformRequest",
        )
        assert len(requests) == 1, explain(
            "map returns requests",
            case,
            f"impactin_map returned {len(requests)} requests for one record",
            "return one PlatformRequest per batch of records",
        )
        request = requests[0]
        assert isinstance(request, PlatformRequest), explain(
            "map returns requests",
            case,
            f"the item is {type(request).__name__}",
            "return PlatformRequest objects",
        )
        assert request.idempotency_key == key, explain(
            "map keeps the idempotency key",
            case,
            f"the request carries key {request.idempotency_key!r}, not {key!r}",
            "copy idempotency_keys[i] into PlatformRequest.idempotency_key",
        )
        assert request.source_ids == (record.source_id,), explain(
            "map keeps the source id",
            case,
            f"source_ids is {request.source_ids}",
            "set source_ids to the source ids of the mapped records",
        )
        assert request.platform == harness.info.id, explain(
            "map names the platform",
            case,
            f"request.platform is {request.platform!r}",
            "set PlatformRequest.platform to the platform id",
        )
        harness.redact(request)
        outcome, credentials = run(
            _authenticate_and_send(harness, request, watch_loop=True)
        )
        assert isinstance(credentials, Credentials), explain(
            "authenticate returns credentials",
            f"tenant {TENANT!r}",
            f"the awaitable resolved to {type(credentials).__name__}",
            "return an awaitable that resolves to impactin_core.Credentials",
        )
        assert isinstance(outcome, SendOutcome), explain(
            "send returns an outcome",
            case,
            f"the awaitable resolved to {type(outcome).__name__}",
            "return an awaitable that resolves to impactin_core.SendOutcome",
        )
        assert 200 <= outcome.status_code < 300, explain(
            "send returns an outcome",
            case,
            f"SendOutcome.status_code is {outcome.status_code}",
            "return SendOutcome only for a success and raise an error otherwise",
        )
        journal = harness.journal()
        assert journal["entries"], explain(
            "send reaches the simulator",
            case,
            "the simulator's journal holds no accepted write",
            "record every accepted write with journal.accept(key, entry, answer)",
        )

    # -- mapping -------------------------------------------------------------------

    def test_mapping_generated_records(self, harness: Harness) -> None:
        from hypothesis import HealthCheck, given, settings

        from ._records import records

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        )
        @given(records(harness.info.kinds, harness.target.record_fields))
        def check(record: ImpactRecord) -> None:
            _check_mapping(harness, record)

        check()

    # -- redaction -------------------------------------------------------------------

    def test_redaction_leaves_no_personal_data(self, harness: Harness) -> None:
        record = harness.sample_record("conformance-pii-1", personal=True)
        request = harness.map_records([record], ["ik_conformance_pii_1"])[0]
        harness.redact(request)
        case = (
            "a record with name, phone, email and employee id in every free-text field"
        )
        findings = leak_scan(request.payload, request.personal_paths)
        found = ", ".join(f"{item.kind} at {item.path}" for item in findings)
        assert not findings, explain(
            "redaction leaves no undeclared personal data",
            case,
            f"the leak scan found {found}",
            "map only minimized fields, list expected personal paths in "
            "PlatformRequest.personal_paths, and declare needed fields in "
            "PlatformInfo.personal_fields",
        )
        text = json.dumps(request.payload, ensure_ascii=False)
        for field, value in PERSONAL_VALUES.items():
            if field in harness.info.personal_fields:
                continue
            assert value not in text, explain(
                "redaction leaves no undeclared personal data",
                case,
                f"the payload contains the {field} value, which the platform does "
                "not declare in PlatformInfo.personal_fields",
                f"do not copy {field} into the payload, or declare it as needed",
            )

    def test_personal_paths_are_declared(self, harness: Harness) -> None:
        record = harness.sample_record("conformance-pii-2", personal=True)
        request = harness.map_records([record], ["ik_conformance_pii_2"])[0]
        paths = set(request.personal_paths)
        if not paths:
            return
        assert harness.info.personal_fields, explain(
            "personal paths are declared",
            f"paths {sorted(paths)}",
            "the request allows personal data but the platform declares no "
            "personal fields",
            "declare the fields in PlatformInfo.personal_fields or drop the paths",
        )

    # -- retries ---------------------------------------------------------------------

    def test_retry_after_is_honoured(self, harness: Harness) -> None:
        _check_retry_after_values(harness, ("429",))
        runtime = harness.runtime()
        try:
            _warm_up(harness, runtime)
            harness.set_faults(script=["429"], retry_after="7")
            sleeps_before = len(harness.clock.sleeps)
            stats = harness.deliver(
                runtime, [harness.sample_record("conformance-retry-after")]
            )
        finally:
            runtime.close()
        case = "one HTTP 429 answer with Retry-After: 7"
        assert stats.delivered == 1, explain(
            "429 is retried",
            case,
            f"delivered={stats.delivered}, dead_lettered={stats.dead_lettered}",
            "raise RateLimited(sent=False) for HTTP 429, for example with "
            "impactin_core.raise_for_response",
        )
        waits = harness.clock.sleeps[sleeps_before:]
        assert any(wait >= 7.0 for wait in waits), explain(
            "Retry-After is honoured",
            case,
            f"the runtime waited {waits} s",
            "pass parse_retry_after(response.headers['retry-after'], now) as "
            "retry_after of the RateLimited error",
        )

    @pytest.mark.parametrize(
        "status",
        [
            pytest.param("429", id="429"),
            pytest.param("503", id="503"),
            pytest.param("408", id="408"),
            pytest.param("502", id="502"),
            pytest.param("500", id="500"),
        ],
    )
    def test_transient_errors_are_retried(self, harness: Harness, status: str) -> None:
        _check_retry_after_values(harness, (status,))
        runtime = harness.runtime()
        try:
            _warm_up(harness, runtime)
            harness.set_faults(script=[status, status])
            record = harness.sample_record(f"conformance-transient-{status}")
            stats = harness.deliver(runtime, [record])
            outcomes = _attempt_outcomes(runtime, record.source_id)
        finally:
            runtime.close()
        case = f"two HTTP {status} answers, then success"
        assert outcomes[:1] in (["retryable"], ["rate_limited"]), explain(
            f"HTTP {status} is retryable",
            case,
            f"the attempts ended as {outcomes}",
            f"raise RetryableError (or RateLimited for 429) for HTTP {status}",
        )
        # 500 and 502 may come after the write was done, so the runtime
        # repeats them only where a repeat cannot create a duplicate.
        repeatable = status in _UNSENT_STATUSES or harness.info.honours_idempotency_key
        if repeatable:
            assert stats.delivered == 1, explain(
                f"HTTP {status} is retried until it succeeds",
                case,
                f"delivered={stats.delivered}, attempts ended as {outcomes}",
                f"raise RetryableError(sent=False) for HTTP {status}, because the "
                "server did not act on the request",
            )

    @pytest.mark.parametrize("status", [*_UNSENT_STATUSES])
    def test_unsent_statuses_are_marked_unsent(
        self, harness: Harness, status: str
    ) -> None:
        run(_check_unsent_status(harness, status))

    def test_retry_after_http_date_is_honoured(self, harness: Harness) -> None:
        # Retry-After is delta-seconds or an HTTP date (RFC 9110 section
        # 10.2.3). The date lies two minutes ahead of the real time, because
        # connectors compute the delay against time.time() or the clock.
        when = email.utils.format_datetime(
            dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=120), usegmt=True
        )
        rule = "Retry-After as an HTTP date is honoured"
        case = f"one HTTP 429 answer with Retry-After: {when}"
        fix = (
            "read Retry-After with parse_retry_after(value, now), which accepts "
            "delta-seconds and HTTP dates, and pass the delay as retry_after of "
            "RateLimited, or call raise_for_response, which does both"
        )
        record = harness.sample_record("conformance-retry-after-date")
        _check_retry_after_values(harness, ("429",), header=when)

        runtime = harness.runtime()
        try:
            _warm_up(harness, runtime)
            harness.set_faults(script=["429"], retry_after=when)
            sleeps_before = len(harness.clock.sleeps)
            try:
                stats = harness.deliver(runtime, [record])
            except Exception as exc:
                pytest.fail(
                    explain(
                        rule,
                        case,
                        f"the run stopped with {type(exc).__name__}: {exc}",
                        fix,
                    )
                )
            errors = _delivery_errors(runtime, record.source_id)
        finally:
            runtime.close()

        assert stats.delivered == 1, explain(
            rule,
            case,
            f"delivered={stats.delivered}, dead_lettered={stats.dead_lettered}, "
            f"blocked={stats.blocked}, errors {errors}",
            fix,
        )
        waits = harness.clock.sleeps[sleeps_before:]
        assert any(wait >= 60.0 for wait in waits), explain(
            rule, case, f"the runtime waited {waits} s, not about 120 s", fix
        )

    def test_errors_are_delivery_errors(self, harness: Harness) -> None:
        run(_check_delivery_errors(harness))

    @pytest.mark.parametrize(
        "status",
        [
            pytest.param("400", id="400"),
            pytest.param("404", id="404"),
            pytest.param("422", id="422"),
        ],
    )
    def test_permanent_errors_are_not_retried(
        self, harness: Harness, status: str
    ) -> None:
        runtime = harness.runtime()
        try:
            _warm_up(harness, runtime)
            count_before = harness.journal()["request_count"]
            harness.set_faults(script=[status])
            record = harness.sample_record(f"conformance-permanent-{status}")
            stats = harness.deliver(runtime, [record])
        finally:
            runtime.close()
        case = f"one HTTP {status} answer"
        assert stats.dead_lettered == 1, explain(
            f"HTTP {status} is permanent",
            case,
            f"delivered={stats.delivered}, dead_lettered={stats.dead_lettered}",
            f"raise PermanentError for HTTP {status}",
        )
        assert stats.retried == 0, explain(
            f"HTTP {status} is not retried",
            case,
            f"the runtime retried {stats.retried} times",
            f"raise PermanentError, not RetryableError, for HTTP {status}",
        )
        requests_made = harness.journal()["request_count"] - count_before
        assert requests_made == 1, explain(
            f"HTTP {status} is not retried",
            case,
            f"the connector made {requests_made} requests after the error",
            "stop at the first permanent error",
        )

    def test_rejected_credentials_are_refreshed(self, harness: Harness) -> None:
        run(_check_rejected_credentials(harness))

    # -- tokens ----------------------------------------------------------------------

    def test_token_refresh_and_rotation(self, harness: Harness) -> None:
        run(_check_tokens(harness))

    # -- idempotency -----------------------------------------------------------------

    def test_replay_sends_nothing_twice(self, harness: Harness) -> None:
        record = harness.sample_record("conformance-replay-1")
        request = harness.map_records([record], ["ik_conformance_replay_1"])[0]
        harness.redact(request)
        run(_authenticate_and_send(harness, request))
        before = harness.journal()
        again = harness.map_records([record], ["ik_conformance_replay_1"])[0]
        harness.redact(again)
        outcome, _ = run(_authenticate_and_send(harness, again))
        after = harness.journal()
        case = f"record {record!r} sent twice with one idempotency key"
        assert len(after["entries"]) == len(before["entries"]), explain(
            "an idempotent replay sends nothing twice",
            case,
            f"the simulator accepted {len(after['entries']) - len(before['entries'])} "
            "new writes for the replay",
            "send a key the platform deduplicates on (an idempotency header or a "
            "natural key in the payload), and key the simulator's journal.accept "
            "on it",
        )
        repeats_before = sum(before["repeats"].values())
        repeats_after = sum(after["repeats"].values())
        recognised = repeats_after > repeats_before or outcome.duplicate
        assert recognised, explain(
            "an idempotent replay is recognised",
            case,
            "the simulator counted no repeat and the outcome is not a duplicate",
            "have the simulator call journal.accept with the write's key, so a "
            "replay returns the original answer, or return "
            "SendOutcome(duplicate=True) for a replay the connector skips",
        )
        assert isinstance(outcome, SendOutcome), explain(
            "an idempotent replay succeeds",
            case,
            f"the replay returned {type(outcome).__name__}",
            "treat the platform's answer to a replay as success",
        )

    def test_runtime_replay_after_dropped_answer(self, harness: Harness) -> None:
        runtime = harness.runtime()
        try:
            start = harness.journal()
            _warm_up(harness, runtime)
            before = harness.journal()
            harness.set_faults(script=["drop_after"])
            record = harness.sample_record("conformance-drop-1")
            stats = harness.deliver(runtime, [record])
            if stats.dead_lettered:
                rows = runtime.store.list_deliveries(
                    filters={"status": "dead_lettered"}
                )
                run(runtime.retry([row["id"] for row in rows]))
            after = harness.journal()
        finally:
            runtime.close()
        # Writes a simulator journals without a key have no identity on the
        # platform, so only keyed writes are compared.
        expected = len(_keyed(before)) - len(_keyed(start))
        written = len(_keyed(after)) - len(_keyed(before))
        assert written == expected, explain(
            "an idempotent replay sends nothing twice",
            "an answer lost after the simulator handled the write, then "
            "'impactin deliveries retry'",
            f"the simulator accepted {written} keyed writes for one record, and "
            f"{expected} for a record delivered without faults",
            "send the same platform key on every attempt and replay, so the "
            "platform recognises the repeat",
        )

    # -- logs ------------------------------------------------------------------------

    def test_logs_hold_no_secret_or_personal_value(
        self,
        harness: Harness,
        caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        caplog.set_level(logging.DEBUG)
        _check_retry_after_values(harness, ("429", "503"), header="1")
        runtime = harness.runtime()
        errors: list[str] = []
        try:
            # The warm-up caches a token, so the faults below hit the send
            # and not the token request.
            _warm_up(harness, runtime)
            token_values = _token_values(runtime, runtime.store.token_rows())
            harness.set_faults(script=["429", "503", "401"], retry_after="1")
            records = [
                harness.sample_record("conformance-log-1", personal=True),
                harness.sample_record("conformance-log-2", personal=True),
            ]
            harness.deliver(runtime, records)
            outcomes = _attempt_outcomes(runtime, "conformance-log-1")
            harness.set_faults(script=["400"])
            harness.deliver(
                runtime, [harness.sample_record("conformance-log-3", personal=True)]
            )
            for row in runtime.store.db["deliveries"].rows:
                errors.append(str(row.get("error") or ""))
            for row in runtime.store.db["attempts"].rows:
                errors.append(str(row.get("error") or ""))
            token_values += _token_values(runtime, runtime.store.token_rows())
            # The direct sends below continue the runtime's token, because a
            # platform that rotates refresh tokens revokes the first one.
            tokens = harness.new_tokens()
            token = runtime.store.load_token(TENANT, harness.info.id)
            if token is not None:
                tokens.save(TENANT, harness.info.id, token)
        finally:
            runtime.close()
        # How 401 is classified is the platform's choice, so the check is
        # only that each fault reached a send.
        assert len(outcomes) >= 3, explain(
            "faults reach the send",
            "a delivery whose sends get HTTP 429, 503 and 401 answers",
            f"the attempts ended as {outcomes}",
            "raise RateLimited for 429 and RetryableError for 503, for example "
            "with raise_for_response, so the runtime tries the send again",
        )
        error_texts, error_tokens = run(_error_texts(harness, tokens))
        errors.extend(error_texts)
        webhook_secrets = _exercise_webhooks(harness)
        secrets = _with_encoded_forms(
            [*harness.secret_values, *token_values, *error_tokens, *webhook_secrets]
        )
        personal = list(PERSONAL_VALUES.values())
        case = (
            "sends answered with HTTP 429, 503, 401 and 400, and webhook "
            "verifications, logged at DEBUG"
        )
        for value in secrets:
            record = _first_record_with(caplog.records, value)
            if record is not None:
                pytest.fail(
                    explain(
                        "no secret in logs",
                        case,
                        f"a {record.levelname} record of the logger {record.name!r} "
                        f"contains a secret or its Base64 form ({len(value)} "
                        "characters)",
                        "log only ids and error classes, never headers, bodies, "
                        "tokens or webhook secrets",
                    )
                )
        output, error_output = capfd.readouterr()
        streams = {"standard output": output, "standard error": error_output}
        for stream, text in streams.items():
            for value in [*secrets, *personal]:
                assert value not in text, explain(
                    "no secret or personal value in output",
                    case,
                    f"the {stream} of the process contains a secret, its Base64 "
                    f"form or a personal value ({len(value)} characters)",
                    "remove print() and sys.stdout or sys.stderr writes of "
                    "headers, bodies and tokens; log ids through logging instead",
                )
        for value in personal:
            record = _first_record_with(caplog.records, value)
            if record is not None:
                pytest.fail(
                    explain(
                        "no personal value in logs",
                        "a delivery of records filled with personal data, logged "
                        "at DEBUG",
                        f"a {record.levelname} record of the logger {record.name!r} "
                        "contains a personal value",
                        "log ids only and pass response text through sanitize_text",
                    )
                )
        hidden = _scrubbed_connector_record(caplog.records)
        if hidden is not None:
            pytest.fail(
                explain(
                    "no secret or personal value in logs",
                    case,
                    f"a {hidden.levelname} record of the logger {hidden.name!r} "
                    "held a secret or personal value. The runtime's log filter "
                    "replaced it in this run, but the filter covers only the "
                    "loggers that exist when a run starts, and a host's own "
                    "handlers may see the record first",
                    "log ids only, never record values, headers or tokens, and "
                    "pass response text through sanitize_text",
                )
            )
        error_text = "\n".join(errors)
        for value in [*secrets, *personal]:
            assert value not in error_text, explain(
                "no secret or personal value in errors",
                "error messages of failed sends",
                "an error message contains a secret or personal value",
                "build messages from sanitize_text(response text, known values)",
            )

    # -- webhooks --------------------------------------------------------------------

    def test_webhook_verification(self, harness: Harness) -> None:
        scheme = _webhook_scheme(harness)
        implemented = _implements_verify_webhook(harness)
        if scheme is None:
            pytest.skip(f"platform {harness.info.id!r} declares no webhook scheme")
        assert implemented, explain(
            "webhook verification",
            f"webhook scheme {scheme!r}",
            f"the plugin {harness.registered.plugin_name!r} implements no "
            "impactin_verify_webhook, so no inbound event can be verified",
            "add impactin_verify_webhook decorated with impactin_core.hookimpl "
            "that calls impactin_core.webhooks.verify_with_scheme, or set "
            "PlatformInfo.webhook_scheme to None if the platform sends no webhooks",
        )
        _check_webhooks(harness, scheme)


# -- helpers -------------------------------------------------------------------------


_RETRY_AFTER_RULE = "retry_after is a number of seconds"
_RETRY_AFTER_FIX = (
    "pass retry_after as a finite float of seconds, or None: "
    "parse_retry_after(response.headers['retry-after'], context.clock()) reads "
    "delta-seconds and HTTP dates, and raise_for_response(response, ...) does "
    "this for you"
)


def _check_retry_after_values(
    harness: Harness, statuses: tuple[str, ...], header: str = "7"
) -> None:
    """Fail when a send reports throttling with an invalid ``retry_after``.

    The runtime computes its wait from ``retry_after``, so a string or NaN
    there stops it with an error far from the connector's line. Only the
    retry errors are checked, because other rules report other errors.
    """
    for status in statuses:
        error = run(_retry_error_for(harness, status, header))
        if error is None:
            continue
        case = f"one HTTP {status} answer with Retry-After: {header}"
        if not isinstance(error, RetryableError):
            secrets = [*harness.secret_values, *PERSONAL_VALUES.values()]
            text = sanitize_text(str(error), secrets)[:300]
            pytest.fail(
                explain(
                    _RETRY_AFTER_RULE,
                    case,
                    f"impactin_send raised {type(error).__name__}: {text}",
                    _RETRY_AFTER_FIX,
                ),
                pytrace=False,
            )
        value = error.retry_after
        valid = value is None or (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        )
        assert valid, explain(
            _RETRY_AFTER_RULE,
            case,
            f"impactin_send raised {type(error).__name__} with retry_after "
            f"{value!r} ({type(value).__name__})",
            _RETRY_AFTER_FIX,
        )


async def _retry_error_for(
    harness: Harness, status: str, header: str
) -> BaseException | None:
    """Return the retry error or TypeError/ValueError a send raises, else None."""
    request = harness.map_records(
        [harness.sample_record(f"conformance-retry-value-{status}")],
        [f"ik_conformance_retry_value_{status}"],
    )[0]
    harness.redact(request)
    async with httpx.AsyncClient(timeout=30.0) as client:
        credentials = await harness.authenticate(client, harness.tokens)
        harness.set_faults(script=[status], retry_after=header)
        try:
            await harness.send(client, request, credentials)
        except (RetryableError, TypeError, ValueError) as exc:
            return exc
        except Exception:
            return None
        finally:
            harness.set_faults(script=[])
    return None


async def _check_unsent_status(harness: Harness, status: str) -> None:
    rule = f"HTTP {status} is retryable without a duplicate"
    case = f"one HTTP {status} answer to a send"
    request = harness.map_records(
        [harness.sample_record(f"conformance-unsent-{status}")],
        [f"ik_conformance_unsent_{status}"],
    )[0]
    harness.redact(request)
    error_class = "RateLimited" if status == "429" else "RetryableError"
    fix = (
        f"raise {error_class}(..., sent=False) for HTTP {status}, because the "
        "server did not act on the request; raise_for_response does this"
    )
    async with httpx.AsyncClient(timeout=30.0) as client:
        credentials = await harness.authenticate(client, harness.tokens)
        harness.set_faults(script=[status])
        try:
            await harness.send(client, request, credentials)
        except RetryableError as exc:
            error: RetryableError = exc
        except Exception as exc:
            pytest.fail(
                explain(rule, case, f"impactin_send raised {type(exc).__name__}", fix)
            )
        else:
            pytest.fail(explain(rule, case, "impactin_send returned an outcome", fix))
        finally:
            harness.set_faults(script=[])
    if status == "429":
        assert isinstance(error, RateLimited), explain(
            rule, case, f"impactin_send raised {type(error).__name__}", fix
        )
    assert error.sent is False, explain(
        rule,
        case,
        f"impactin_send raised {type(error).__name__} with sent=True, so the "
        "runtime repeats it only where the platform honours the idempotency key",
        fix,
    )


#: Response statuses for which send and authenticate must raise a DeliveryError.
_ERROR_STATUSES = ("400", "401", "404", "408", "422", "429", "500", "502", "503")


async def _check_delivery_errors(harness: Harness) -> None:
    """Check that send and authenticate raise only DeliveryError subclasses."""
    rule = "hooks raise DeliveryError"
    request = harness.map_records(
        [harness.sample_record("conformance-delivery-error")],
        ["ik_conformance_delivery_error"],
    )[0]
    harness.redact(request)

    def fix(hook: str) -> str:
        return (
            f"map every failed response in {hook} to a DeliveryError subclass "
            "(PermanentError, RetryableError, RateLimited or "
            "AuthenticationError), for example with raise_for_response(response, "
            "...) in place of response.raise_for_status(), and wrap the call in "
            "request_with_mapping for transport errors; the runtime classifies "
            "only these errors"
        )

    async with httpx.AsyncClient(timeout=30.0) as client:
        try:
            for status in _ERROR_STATUSES:
                harness.set_faults(script=[status])
                try:
                    # A fetch that fails caches nothing, so each loop's
                    # authentication requests a token and gets the fault.
                    await harness.authenticate(client, harness.tokens)
                except DeliveryError:
                    pass
                except Exception as exc:
                    pytest.fail(
                        explain(
                            rule,
                            f"an HTTP {status} answer to the first request of "
                            "impactin_authenticate",
                            f"impactin_authenticate raised {type(exc).__name__}",
                            fix("impactin_authenticate"),
                        )
                    )
            harness.set_faults(script=[])
            credentials = await harness.authenticate(client, harness.tokens)
            for status in _ERROR_STATUSES:
                harness.set_faults(script=[status])
                try:
                    await harness.send(client, request, credentials)
                except DeliveryError:
                    continue
                except Exception as exc:
                    pytest.fail(
                        explain(
                            rule,
                            f"an HTTP {status} answer to a send",
                            f"impactin_send raised {type(exc).__name__}",
                            fix("impactin_send"),
                        )
                    )
                pytest.fail(
                    explain(
                        rule,
                        f"an HTTP {status} answer to a send",
                        "impactin_send returned an outcome",
                        fix("impactin_send"),
                    )
                )
        finally:
            harness.set_faults(script=[])


def _foreign_arguments(harness: Harness) -> dict[str, dict[str, Any]]:
    settings = PlatformSettings(
        tenant=TENANT,
        platform=_OTHER_PLATFORM.id,
        base_url="http://127.0.0.1:9",
    )
    request = PlatformRequest(
        platform=_OTHER_PLATFORM.id,
        tenant=TENANT,
        operation="other",
        idempotency_key="ik_other",
        source_ids=["other-1"],
        payload={},
    )
    record = harness.sample_record("conformance-other-1")
    client = httpx.AsyncClient()
    from .._context import AuthContext, SendContext

    common: dict[str, Any] = {"platform": _OTHER_PLATFORM}
    return {
        "impactin_map": {
            **common,
            "records": [record],
            "settings": settings,
            "idempotency_keys": ["ik_other"],
        },
        "impactin_authenticate": {
            **common,
            "settings": settings,
            "context": AuthContext(client=client, tokens=harness.new_tokens()),
        },
        "impactin_send": {
            **common,
            "request": request,
            "credentials": Credentials(kind="none"),
            "context": SendContext(client=client, settings=settings),
        },
        "impactin_redact": {**common, "request": request, "policy": harness.policy()},
        "impactin_verify_webhook": {
            **common,
            "headers": {},
            "body": b"{}",
            "secrets": [],
            "options": {},
        },
    }


async def _authenticate_and_send(
    harness: Harness, request: PlatformRequest, *, watch_loop: bool = False
) -> tuple[SendOutcome, Credentials]:
    """Authenticate and send once; ``watch_loop`` fails a hook that blocks the loop."""
    async with httpx.AsyncClient(timeout=30.0) as client:
        authenticating = harness.authenticate(client, harness.tokens)
        if watch_loop:
            credentials = await _fail_if_loop_blocked(
                "impactin_authenticate", authenticating
            )
        else:
            credentials = await authenticating
        sending = harness.send(client, request, credentials)
        if watch_loop:
            outcome = await _fail_if_loop_blocked("impactin_send", sending)
        else:
            outcome = await sending
    return outcome, credentials


#: Seconds between the ticks of the event-loop watch, and the most a tick
#: may come late before the hook counts as blocking the loop.
_TICK_INTERVAL = 0.05
_MAX_LOOP_BLOCK = 0.5


async def _fail_if_loop_blocked(hook: str, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` while a ticker task measures how late it wakes up.

    A tick comes late only when something holds the event loop, such as
    time.sleep or a blocking HTTP call inside the hook.
    """
    loop = asyncio.get_running_loop()
    last_tick = loop.time()
    worst = 0.0

    async def tick() -> None:
        nonlocal last_tick, worst
        while True:
            await asyncio.sleep(_TICK_INTERVAL)
            now = loop.time()
            worst = max(worst, now - last_tick - _TICK_INTERVAL)
            last_tick = now

    ticker = asyncio.create_task(tick())
    try:
        result = await awaitable
    finally:
        ticker.cancel()
        # A block at the end of the hook delays the tick that never came.
        worst = max(worst, loop.time() - last_tick - _TICK_INTERVAL)
    assert worst <= _MAX_LOOP_BLOCK, explain(
        "hooks do not block the event loop",
        f"one call of {hook}",
        f"{hook} held the event loop for {worst:.2f} s without awaiting, so the "
        "runtime's other deliveries stalled",
        "use async I/O through context.client and await asyncio.sleep, or move "
        "blocking work to a thread with 'await asyncio.to_thread(function, ...)'",
    )
    return result


def _warm_up(harness: Harness, runtime: Any) -> None:
    """Deliver one record first, so a fault hits the send and not the token call."""
    stats = harness.deliver(runtime, [harness.sample_record("conformance-warm-up")])
    assert stats.delivered == 1, explain(
        "a valid record is delivered",
        "the sample record with no faults",
        f"delivered={stats.delivered}, blocked={stats.blocked}, "
        f"dead_lettered={stats.dead_lettered}",
        "make the connector deliver the sample record to its own simulator; set "
        "ConformanceTarget.options or record_fields if the simulator needs values",
    )


def _check_mapping(harness: Harness, record: ImpactRecord) -> None:
    key = "ik_conformance_generated"
    case = f"generated record {record!r}"
    try:
        requests = harness.map_records([record], [key])
    except RecordInvalid as exc:
        assert str(exc).strip(), explain(
            "mapping rejects with a reason",
            case,
            "RecordInvalid has an empty message",
            "name the field and the fix in the RecordInvalid message",
        )
        return
    except ImpactInError:
        raise
    except Exception as exc:
        pytest.fail(
            explain(
                "mapping raises only RecordInvalid",
                case,
                f"impactin_map raised {type(exc).__name__}",
                "raise impactin_core.RecordInvalid naming the field for records "
                "the platform cannot take",
            )
        )
    assert len(requests) == 1, explain(
        "map returns one request per record",
        case,
        f"got {len(requests)} requests",
        "return one PlatformRequest for a batch of one record",
    )
    request = requests[0]
    try:
        json.dumps(request.payload)
    except (TypeError, ValueError) as exc:
        pytest.fail(
            explain(
                "payload is JSON data",
                case,
                f"json.dumps failed: {type(exc).__name__}",
                "put only dict, list, str, int, float, bool and None in payload",
            )
        )
    assert request.idempotency_key == key, explain(
        "map keeps the idempotency key",
        case,
        f"key {request.idempotency_key!r}",
        "copy idempotency_keys[i] into PlatformRequest.idempotency_key",
    )
    harness.redact(request)
    findings = leak_scan(request.payload, request.personal_paths)
    assert not findings, explain(
        "redaction leaves no undeclared personal data",
        case,
        ", ".join(f"{item.kind} at {item.path}" for item in findings),
        "map only minimized fields and list allowed personal paths",
    )


async def _check_rejected_credentials(harness: Harness) -> None:
    """Do what the runtime does on HTTP 401: authenticate once more, forced."""
    tokens = harness.tokens
    rule = "HTTP 401 triggers one re-authentication"
    case = "one HTTP 401 answer to a send with a cached token"
    request = harness.map_records(
        [harness.sample_record("conformance-401")], ["ik_conformance_401"]
    )[0]
    harness.redact(request)
    async with httpx.AsyncClient(timeout=30.0) as client:
        credentials = await harness.authenticate(client, tokens)
        if tokens.refresh_count == 0:
            _fail_if_oauth_bypasses_tokens(harness, credentials)
            pytest.skip(
                f"transport {harness.transport!r} of {harness.info.id!r} takes no "
                "OAuth token from context.tokens, so HTTP 401 has no token to renew"
            )
        harness.set_faults(script=["401"])
        try:
            await harness.send(client, request, credentials)
        except AuthenticationError:
            pass
        else:
            pytest.fail(
                explain(rule, case, "the send succeeded", "raise AuthenticationError")
            )
        refreshed = await harness.authenticate(client, tokens, force=True)
        assert tokens.refresh_count == 2, explain(
            rule,
            case,
            "the forced authentication reused the rejected token",
            "pass force=context.force_refresh to context.tokens.get",
        )
        outcome = await harness.send(client, request, refreshed)
    assert isinstance(outcome, SendOutcome), explain(
        rule,
        case,
        f"the send after re-authentication returned {type(outcome).__name__}",
        "send with the credentials the forced authentication returned",
    )


async def _check_tokens(harness: Harness) -> None:
    tokens = harness.tokens
    rule = "token refresh and rotation"
    async with httpx.AsyncClient(timeout=30.0) as client:
        first_credentials = await harness.authenticate(client, tokens)
        if tokens.refresh_count == 0:
            _fail_if_oauth_bypasses_tokens(harness, first_credentials)
            pytest.skip(
                f"transport {harness.transport!r} of {harness.info.id!r} takes no "
                "OAuth token from context.tokens"
            )
        store = tokens._store
        first = store.load_token(TENANT, harness.info.id)
        assert first is not None, explain(
            rule,
            "the first authentication",
            "no token was saved in context.tokens",
            "obtain tokens through context.tokens.get(...)",
        )
        await harness.authenticate(client, tokens)
        assert tokens.refresh_count == 1, explain(
            rule,
            "a second authentication while the token is fresh",
            f"the connector fetched {tokens.refresh_count} tokens",
            "reuse the cached token until it expires",
        )
        harness.clock.now = first.expires_at + 1
        await harness.authenticate(client, tokens)
        assert tokens.refresh_count == 2, explain(
            rule,
            "an authentication after the token expired",
            "no new token was fetched",
            "let context.tokens.get refresh an expired token",
        )
        second = store.load_token(TENANT, harness.info.id)
        assert second is not None
        if first.refresh_token is not None:
            assert second.refresh_token is not None, explain(
                rule,
                "a refresh with a refresh token",
                "the new token has no refresh token",
                "keep the previous refresh token when the platform sends no new one",
            )
        harness.clock.now = second.expires_at + 1
        credentials = await harness.authenticate(client, tokens)
        assert tokens.refresh_count == 3, explain(
            rule,
            "a second refresh, which needs the rotated refresh token",
            "no new token was fetched",
            "save the refresh token the platform returns with each new token",
        )
        forced = await harness.authenticate(client, tokens, force=True)
        assert tokens.refresh_count == 4, explain(
            rule,
            "an authentication with context.force_refresh set",
            "the cached token was reused",
            "pass force=context.force_refresh to context.tokens.get",
        )
        request = harness.map_records(
            [harness.sample_record("conformance-token-1")], ["ik_conformance_token_1"]
        )[0]
        harness.redact(request)
        outcome = await harness.send(client, request, forced)
        assert isinstance(outcome, SendOutcome), explain(
            rule,
            "a send with refreshed credentials",
            f"the send returned {type(outcome).__name__}",
            "use the refreshed token in the Authorization header",
        )
        del credentials


def _uses_oauth(info: PlatformInfo, credentials: Credentials) -> bool:
    """Tell whether a transport's credentials are an OAuth token.

    A platform that declares no ``oauth2_*`` auth kind uses none. Credentials
    whose kind is a declared auth kind name the transport's kind, such as
    ``wsse_username_token`` for Workday's SOAP transport. Other credentials
    count as OAuth when they carry a bearer token.
    """
    if not any(kind.startswith("oauth2") for kind in info.auth_kinds):
        return False
    if credentials.kind in info.auth_kinds:
        return credentials.kind.startswith("oauth2")
    return any(
        name.lower() == "authorization" and value.lower().startswith("bearer ")
        for name, value in credentials.headers.items()
    )


def _fail_if_oauth_bypasses_tokens(harness: Harness, credentials: Credentials) -> None:
    """Fail when an OAuth transport fetched its token without context.tokens."""
    if not _uses_oauth(harness.info, credentials):
        return
    declared = [kind for kind in harness.info.auth_kinds if kind.startswith("oauth2")]
    pytest.fail(
        explain(
            "OAuth tokens come from context.tokens",
            f"transport {harness.transport!r}, which declares auth kind "
            f"{', '.join(declared)} and returned {credentials.kind!r} credentials "
            "with a bearer token",
            "impactin_authenticate stored no token in context.tokens, so tokens "
            "are neither encrypted at rest nor shared and refreshed once at a time",
            "obtain tokens with 'await context.tokens.get(settings.tenant, "
            "PLATFORM_ID, fetch, force=context.force_refresh)' instead of keeping "
            "them in the connector; context.tokens is the runtime's encrypted "
            "token store",
        ),
        pytrace=False,
    )


def _keyed(journal: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for entry in journal["entries"] if entry["key"] is not None]


def _attempt_outcomes(runtime: Any, source_id: str) -> list[str]:
    rows = runtime.store.list_deliveries(filters={"source_id": source_id})
    outcomes: list[str] = []
    for row in rows:
        outcomes.extend(
            attempt["outcome"] for attempt in runtime.store.attempts(row["id"])
        )
    return outcomes


def _delivery_errors(runtime: Any, source_id: str) -> list[str]:
    rows = runtime.store.list_deliveries(filters={"source_id": source_id})
    return [str(row.get("error")) for row in rows if row.get("error")]


def _token_values(runtime: Any, rows: list[dict[str, Any]]) -> list[str]:
    values: list[str] = []
    for row in rows:
        token = runtime.store.load_token(row["tenant"], row["platform"])
        if token is None:
            continue
        values.append(token.access_token)
        if token.refresh_token:
            values.append(token.refresh_token)
    return values


async def _error_texts(
    harness: Harness, tokens: TokenCache
) -> tuple[list[str], list[str]]:
    """Return the messages of errors that sends raise, and the tokens they used.

    The credentials come from ``tokens`` before the faults are set, so each
    fault (400, 401, 404, 429, 500 and 503) is the response to the send.
    """
    texts: list[str] = []
    record = harness.sample_record("conformance-error-1", personal=True)
    request = harness.map_records([record], ["ik_conformance_error_1"])[0]
    harness.redact(request)
    async with httpx.AsyncClient(timeout=30.0) as client:
        credentials = await harness.authenticate(client, tokens)
        for status in ("400", "401", "404", "429", "500", "503"):
            harness.set_faults(script=[status])
            try:
                await harness.send(client, request, credentials)
            except Exception as exc:
                # Errors that are not DeliveryError fail their own rule, but
                # their text must contain no secret either.
                texts.append(str(exc))
    harness.set_faults(script=[])
    token = tokens.load(TENANT, harness.info.id)
    token_values = []
    if token is not None:
        token_values.append(token.access_token)
        if token.refresh_token:
            token_values.append(token.refresh_token)
    return texts, token_values


def _with_encoded_forms(secrets: list[str]) -> list[str]:
    """Add the Base64 forms in which a secret can reach a log line.

    HTTP Basic authentication sends base64("id:secret") (RFC 7617), so each
    ordered pair of values is encoded, and so is each value alone.
    """

    def encode(text: str) -> str:
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    values = list(dict.fromkeys(secrets))
    encoded = [encode(value) for value in values]
    encoded += [
        encode(f"{first}:{second}")
        for first in values
        for second in values
        if first != second
    ]
    return values + encoded


def _webhook_scheme(harness: Harness) -> str | None:
    # A tenant's webhook_scheme option overrides the declared scheme, and is
    # the only scheme of a platform that declares none.
    scheme: str | None = (
        harness.options.get("webhook_scheme") or harness.info.webhook_scheme
    )
    return scheme


def _implements_verify_webhook(harness: Harness) -> bool:
    return any(
        impl.plugin is harness.registered.plugin
        for impl in harness.host.pm.hook.impactin_verify_webhook.get_hookimpls()
    )


def _exercise_webhooks(harness: Harness) -> list[str]:
    """Verify a valid and a forged event, and return the webhook secrets used.

    Nothing is checked about the results here; the webhook rule does that.
    A platform without a scheme the suite can sign is not called.
    """
    scheme = _webhook_scheme(harness)
    if scheme not in _SIGNATURE_HEADERS or not _implements_verify_webhook(harness):
        return []
    secrets = [
        _webhook_secret(scheme, b"conformance-log-webhook-secret-32b"),
        _webhook_secret(scheme, b"conformance-log-webhook-other-32by"),
    ]
    hook = harness.hook("impactin_verify_webhook")
    body = json.dumps({"id": "evt_conformance_log", "type": "donation.updated"})
    now = int(time.time())
    for signer in secrets:
        headers = _sign(scheme, signer, "evt_conformance_log", now, body.encode())
        try:
            hook(
                platform=harness.info,
                headers=headers,
                body=body.encode(),
                secrets=secrets[:1],
                options=dict(harness.options),
            )
        except Exception:
            # The webhook rule reports what the hook raises.
            continue
    return secrets


#: Loggers of the runtime and of the HTTP and SOAP libraries it uses. They
#: quote platform responses, which the filter scrubs on purpose, so a
#: scrubbed record of theirs is no fault of the connector.
_RUNTIME_LOGGERS = frozenset(
    f"impactin{suffix}"
    for suffix in (
        "",
        ".breaker",
        ".plugins",
        ".runtime",
        ".store",
        ".telemetry",
        ".tokens",
        ".webhooks",
    )
)
_LIBRARY_LOGGERS = ("httpx", "httpcore", "zeep")


def _scrubbed_connector_record(
    records: list[logging.LogRecord],
) -> logging.LogRecord | None:
    """Return the first record of a connector's logger that the filter changed."""
    for record in records:
        runtime = record.name in _RUNTIME_LOGGERS
        library = record.name.split(".")[0] in _LIBRARY_LOGGERS
        if getattr(record, SCRUBBED_MARK, False) and not (runtime or library):
            return record
    return None


def _first_record_with(
    records: list[logging.LogRecord], value: str
) -> logging.LogRecord | None:
    for record in records:
        if value in _record_text(record):
            return record
    return None


def _record_text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += "\n" + repr(record.exc_info[1])
    return text


def _sign(
    scheme: str, secret: str, event_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    if scheme == "standard_webhooks":
        return sign_standard_webhooks(secret, event_id, timestamp, body)
    if scheme == "stripe":
        return sign_stripe(secret, timestamp, body)
    if scheme == "github":
        return {**sign_github(secret, body), "X-GitHub-Delivery": event_id}
    pytest.skip(f"the suite cannot sign webhook scheme {scheme!r}")


#: The header that carries the signature, for each scheme the suite signs.
_SIGNATURE_HEADERS = {
    "standard_webhooks": "webhook-signature",
    "stripe": "Stripe-Signature",
    "github": "X-Hub-Signature-256",
}


def _webhook_secret(scheme: str, raw: bytes) -> str:
    if scheme == "standard_webhooks":
        return "whsec_" + base64.b64encode(raw).decode("ascii")
    return raw.decode("ascii")


def _expect_rejected(call: Any, rule: str, case: str, fix: str) -> None:
    try:
        call()
    except WebhookRejected:
        return
    pytest.fail(explain(rule, case, "the event was accepted", fix))


def _check_webhooks(harness: Harness, scheme: str) -> None:
    secret = _webhook_secret(scheme, b"conformance-webhook-secret-32-bytes")
    other_secret = _webhook_secret(scheme, b"another-webhook-secret-of-32-bytes")
    hook = harness.hook("impactin_verify_webhook")
    options = dict(harness.options)

    def verify(
        headers: dict[str, str], body: bytes, secrets: list[str] | None = None
    ) -> WebhookEvent:
        event: WebhookEvent = hook(
            platform=harness.info,
            headers=headers,
            body=body,
            secrets=[secret] if secrets is None else secrets,
            options=options,
        )
        return event

    now = int(time.time())
    body = json.dumps({"id": "evt_conformance_1", "type": "donation.updated"}).encode()
    headers = _sign(scheme, secret, "evt_conformance_1", now, body)
    event = verify(headers, body)
    assert isinstance(event, WebhookEvent), explain(
        "webhook verification accepts valid events",
        f"an event signed with {scheme!r}",
        f"returned {type(event).__name__}",
        "return the WebhookEvent that verify_with_scheme builds",
    )
    tampered = body.replace(b"updated", b"deleted")
    _expect_rejected(
        lambda: verify(headers, tampered),
        "webhook verification rejects tampered events",
        f"an event signed with {scheme!r} whose body changed after signing",
        "verify the HMAC over the raw body bytes with hmac.compare_digest",
    )
    forged = _sign(scheme, other_secret, "evt_conformance_3", now, body)
    _expect_rejected(
        lambda: verify(forged, body),
        "webhook verification rejects tampered events",
        f"an event signed with {scheme!r} and another secret",
        "verify against the tenant's secrets only",
    )
    signature_header = _SIGNATURE_HEADERS[scheme]
    unsigned = {
        name: value
        for name, value in headers.items()
        if name.lower() != signature_header.lower()
    }
    _expect_rejected(
        lambda: verify(unsigned, body),
        "webhook verification rejects unsigned events",
        f"an event signed with {scheme!r} whose {signature_header} header was removed",
        "reject a request without the signature header with WebhookRejected, "
        "as verify_with_scheme does",
    )
    if scheme != "github":
        future = now + 1_000_000
        future_headers = _sign(scheme, secret, "evt_conformance_4", future, body)
        _expect_rejected(
            lambda: verify(future_headers, body),
            "webhook verification rejects events from the future",
            f"an event signed with {scheme!r} and dated 1,000,000 s ahead",
            "reject a signed timestamp further ahead than the allowed clock skew, "
            "as verify_with_scheme does with its future_tolerance",
        )
        stale = now - 3600
        stale_headers = _sign(scheme, secret, "evt_conformance_2", stale, body)
        _expect_rejected(
            lambda: verify(stale_headers, body),
            "webhook verification rejects stale events",
            f"an event signed with {scheme!r} one hour ago",
            "check the signed timestamp against the tolerance",
        )
    replay = verify(headers, body)
    assert event.event_id, explain(
        "webhook events can be deduplicated",
        f"an event signed with {scheme!r}",
        "the event has no event_id",
        "return the event id so the host's replay store can reject replays",
    )
    assert replay.event_id == event.event_id, explain(
        "webhook events can be deduplicated",
        "the same event received twice",
        "the two verifications returned different event ids",
        "derive event_id from the signed id, not from the time of receipt",
    )
    # During a rotation the tenant has the old and the new secret, and the
    # platform signs with either.
    rotated = [other_secret, secret]
    for signer, position in ((secret, "second"), (other_secret, "first")):
        event_id = f"evt_conformance_rotation_{position}"
        signed = _sign(scheme, signer, event_id, now, body)
        try:
            verify(signed, body, rotated)
        except WebhookRejected as exc:
            pytest.fail(
                explain(
                    "webhook verification accepts every current secret",
                    f"an event signed with {scheme!r} and the {position} of two "
                    "secrets, as during a secret rotation",
                    f"the event was rejected ({exc.reason})",
                    "try each of the secrets passed to impactin_verify_webhook, as "
                    "verify_with_scheme does; pass all of them, not secrets[0]",
                )
            )
    replays = MemoryReplayStore()
    replays.seen(harness.info.id, event.event_id, float(now))
    assert replays.seen(harness.info.id, replay.event_id or "", float(now)), explain(
        "webhook verification rejects replayed events",
        "the same event received twice",
        "the replay store did not recognise the second delivery",
        "return a stable event_id",
    )
