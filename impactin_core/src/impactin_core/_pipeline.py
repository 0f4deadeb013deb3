"""The delivery pipeline.

One record's delivery to one platform goes through these steps:

1. accept: rows that fail validation are quarantined with their reason;
2. persist: the idempotency key is claimed and the delivery written to the
   outbox in one transaction, before any call;
3. deduplicate: a key already delivered within its TTL is skipped;
4. map, redact and leak-scan: personal data beyond the platform's needs
   blocks the send;
5. evidence: SHA-256 of the bytes sent;
6. guard: rate limiter, circuit breaker, timeout;
7. authenticate, send, classify;
8. retry with backoff, full jitter and ``Retry-After`` within a deadline,
   or dead-letter;
9. record the outcome, attempts and audit fields.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextvars
import copy
import hashlib
import hmac
import inspect
import itertools
import json
import logging
import os
import random
import ssl
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import httpx
from opentelemetry import trace

from ._audit import AuditLog
from ._breaker_states import BreakerSync
from ._config import (
    Config,
    EnvSecrets,
    PlatformConfig,
    SecretsProvider,
    env_label,
)
from ._context import AuthContext, SendContext
from ._converter import converter
from ._crypto import Sealer
from ._errors import (
    AuthenticationError,
    CircuitOpen,
    ConfigError,
    DeliveryError,
    PermanentError,
    PersonalDataLeak,
    PluginError,
    RateLimited,
    RecordInvalid,
    RetryableError,
    StoreError,
    checked_retry_after,
)
from ._logging import (
    bind_personal_values,
    detach_chained,
    install_filter,
    register_secrets,
    scrub_known,
    strip_secrets,
)
from ._models import (
    Credentials,
    ImpactRecord,
    PlatformInfo,
    PlatformRequest,
    PlatformSettings,
    SendOutcome,
)
from ._plugins import PluginHost
from ._redaction import (
    RedactionPolicy,
    check_allowed_fields,
    leak_scan,
    minimize_record,
)
from ._reliability import BreakerBoard, WindowLimiter, backoff_delay
from ._stats import RunReport
from ._store import Store, new_delivery_id, process_owner
from ._telemetry import (
    Instruments,
    current_trace_id,
    inject_traceparent,
    safe_attributes,
)
from ._tokens import TokenCache

__all__ = ["Runtime"]

logger = logging.getLogger("impactin.runtime")

#: Rows that ``Runtime.submit`` writes in one transaction.
SUBMIT_BATCH = 500

#: Seconds an idempotency key stays claimed after its delivery.
DEFAULT_KEY_TTL = 24 * 3600.0

#: The maximum count and JSON size of the records that one ``deliver`` call
#: keeps in memory until they are sent, so that they are not read back from
#: the store and decrypted. A record takes about four times its JSON size in
#: memory, so kept records use at most about 16 MiB, even with large text
#: fields.
KEPT_RECORDS = 4096
KEPT_JSON_BYTES = 4 * 1024 * 1024


@attrs.define
class _Evidence:
    """The bytes of the requests one attempt's send hands to the transport."""

    parts: list[bytes] = attrs.field(factory=list)
    #: False while the attempt authenticates, so token requests are left out.
    collecting: bool = False
    #: Whether the transport reported its steps through httpcore's ``trace``
    #: extension. httpx's own transport does, and a mock transport does not.
    traced: bool = False
    #: Whether the transport started writing a request of this attempt.
    written: bool = False

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        """Record httpcore's steps, because a request never written cannot arrive."""
        self.traced = True
        pacer = _pacer.get()
        if pacer is not None:
            pacer.note(name)
        if not name.endswith(".send_request_headers.started"):
            return
        # Behind an HTTP proxy, httpcore first sends a CONNECT request to
        # the proxy with the same trace. It carries nothing to the platform.
        request = info.get("request")
        if getattr(request, "method", None) != b"CONNECT":
            self.written = True

    def may_have_arrived(self) -> bool:
        """Return whether a request of this attempt may have reached the platform.

        A request that failed or was cancelled while its connection was
        being opened was never written, so it did not arrive. Without trace
        events, every request handed to the transport counts.
        """
        return bool(self.parts) and (self.written or not self.traced)


_evidence: contextvars.ContextVar[_Evidence | None] = contextvars.ContextVar(
    "impactin_evidence", default=None
)


class _Pacer:
    """The signal that lets the task building requests ahead run when it costs no time.

    That task and the workers share one thread. A worker yields to the
    event loop just before it writes its request, so work started then
    delays the request. Work started while a request waits for its
    response overlaps the platform's time instead. httpcore's trace
    events mark when a request starts and stops waiting.
    """

    def __init__(self) -> None:
        #: The number of requests written whose response headers have not
        #: arrived yet.
        self.awaiting = 0
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()

    @property
    def stopped(self) -> bool:
        """Whether the run has stopped taking deliveries."""
        return self._stopped.is_set()

    def note(self, name: str) -> None:
        """Count the requests waiting for their response, from a trace event."""
        if name.endswith(".receive_response_headers.started"):
            self.awaiting += 1
            self._wake.set()
        elif ".receive_response_headers." in name:
            # ".complete" or ".failed", which a cancellation reports too.
            self.awaiting = max(0, self.awaiting - 1)

    def wake(self) -> None:
        """Let the builder run now, because the workers have nothing to take."""
        self._wake.set()

    def stop(self) -> None:
        """Let the builder run now, to see that the run takes no more deliveries."""
        self._stopped.set()
        self._wake.set()

    async def sleep_unless_stopped(self, sleep: Awaitable[Any]) -> bool:
        """Await ``sleep``, and return True at once if the run stops first."""
        sleeper = asyncio.ensure_future(sleep)
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return not sleeper.done() or sleeper.cancelled()

    async def wait_for_idle(self, ready: asyncio.Queue[Any]) -> None:
        """Wait until a request waits for its response or ``ready`` is empty.

        A transport without trace events never reports a waiting request,
        so there the builder runs each time the workers empty ``ready``.
        """
        while self.awaiting == 0 and not ready.empty() and not self.stopped:
            self._wake.clear()
            await self._wake.wait()


_pacer: contextvars.ContextVar[_Pacer | None] = contextvars.ContextVar(
    "impactin_pacer", default=None
)


@attrs.define
class _KeptRecords:
    """The records that the ``deliver`` call in progress stored, by delivery id.

    They passed the model's checks in this process, so sending them needs
    neither decryption nor a second check. At most ``KEPT_RECORDS`` records
    and ``KEPT_JSON_BYTES`` of their JSON are kept; the others are read back.
    """

    records: dict[str, ImpactRecord] = attrs.field(factory=dict)
    json_bytes: int = 0

    def keep(self, delivery_id: str, record: ImpactRecord, size: int) -> None:
        if len(self.records) >= KEPT_RECORDS:
            return
        if self.json_bytes + size > KEPT_JSON_BYTES:
            return
        self.records[delivery_id] = record
        self.json_bytes += size


def _frozen_copy(record: ImpactRecord, encoded: bytes) -> ImpactRecord:
    """Return ``record`` with metadata of its own, as stored in ``encoded``.

    Metadata is the only mutable field, and the caller may change its dict
    after deliver stored the record, so a kept record carries the stored copy.
    """
    metadata = json.loads(encoded)["metadata"] if record.metadata else {}
    copied = copy.copy(record)
    # The record passed its checks, and the stored JSON contains the same
    # metadata, so the checks need not run again.
    object.__setattr__(copied, "metadata", metadata)
    return copied


_kept_records: contextvars.ContextVar[_KeptRecords | None] = contextvars.ContextVar(
    "impactin_kept_records", default=None
)


async def _on_request(request: httpx.Request) -> None:
    inject_traceparent(request.headers)
    evidence = _evidence.get()
    if evidence is not None and evidence.collecting:
        evidence.parts.append(request.content)
        request.extensions["trace"] = _chain_trace(
            evidence.trace, request.extensions.get("trace")
        )


def _chain_trace(
    ours: Callable[[str, dict[str, Any]], Awaitable[None]],
    theirs: Callable[[str, dict[str, Any]], Awaitable[None]] | None,
) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """Return a trace callback that calls ``ours``, then the connector's own."""
    if theirs is None:
        return ours

    async def both(name: str, info: dict[str, Any]) -> None:
        await ours(name, info)
        await theirs(name, info)

    return both


def _content_hash(encoded: bytes) -> str:
    """Return the content hash of a record's canonical JSON."""
    return hashlib.sha256(encoded).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


@attrs.define
class _Attempt:
    number: int = 0
    refreshed: bool = False
    started: float = 0.0
    #: Attempts that earlier runs made, so this run's rows continue the count.
    earlier: int = 0
    #: Whether a request of this run may have reached the platform. It is
    #: true once the connector's send handed bytes to the transport, unless
    #: the error showed that they certainly did not arrive.
    reached: bool = False


@attrs.define
class _Prepared:
    """A delivery's record and request, built before the delivery is claimed."""

    row: dict[str, Any]
    #: None when the stored record no longer passes the model's checks.
    record: ImpactRecord | None
    request: PlatformRequest | None = None
    redacted: int = 0
    error: ConfigError | RecordInvalid | PersonalDataLeak | PluginError | None = None


class Runtime:
    """Deliver records to the configured platforms through their connectors.

    ``clock`` and ``sleep`` are injectable so that tests of backoff,
    deadlines and token expiry run without waiting.
    """

    def __init__(
        self,
        config: Config,
        *,
        plugins: PluginHost | None = None,
        secrets: SecretsProvider | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        key_ttl: float = DEFAULT_KEY_TTL,
        instruments: Instruments | None = None,
    ) -> None:
        if not isinstance(config, Config):
            message = (
                f"Runtime takes a Config, not {type(config).__name__}; pass "
                "load_config(path), for example Runtime(load_config('impactin.toml'))."
            )
            raise TypeError(message)
        self.config = config
        self._closed = False
        self.plugins = plugins or PluginHost.from_entry_points()
        self.secrets = secrets or EnvSecrets()
        if store is None:
            sealer = Sealer.from_setting(
                self.secrets.get(config.store_key_env), key_name=config.store_key_env
            )
            store = Store(config.store_path, sealer)
        self.store = store
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.transport = transport
        self._ssl_context: ssl.SSLContext | None = None
        #: Deliveries that a run of this runtime is claiming or sending.
        self._in_progress: set[str] = set()
        #: Whether request_stop was called since the last run started.
        self._stop_requested = False
        #: The pacers of the runs in progress, which request_stop wakes.
        self._pacers: set[_Pacer] = set()
        #: Where connectors may keep files between runs (Workday's WSDL copies).
        self._cache_dir = self.config.store_path.parent / "impactin-cache"
        self.key_ttl = key_ttl
        self.instruments = instruments or Instruments()
        # The wrapper counts each token the cache saves as one refresh.
        self.tokens = TokenCache(
            self.instruments.counting_token_store(store), clock=clock
        )
        self.breakers = BreakerBoard(on_event=self._on_breaker_change, clock=clock)
        #: Mirrors circuit states into the store and applies manual resets.
        self.breaker_sync = BreakerSync(store, self.breakers)
        self._owner = process_owner()
        self._platforms_checked = False
        self.instruments.watch(self)
        self._limiters: dict[tuple[str, str], WindowLimiter] = {}
        #: When a wait for each limiter was last logged (time.monotonic).
        self._limiter_waits_logged: dict[tuple[str, str], float] = {}
        self._settings: dict[tuple[str, str], PlatformSettings] = {}
        self._registered_credentials: dict[tuple[str, str], Credentials] = {}
        #: Queries, CSV export, SLA and retention of the delivery log.
        self.audit = AuditLog(store, clock=clock)
        install_filter()

    # -- configuration lookups ---------------------------------------------

    def _check_platforms(self) -> None:
        """Raise for a platform no connector serves, a bad protocol or allow list.

        Called before the first delivery work, not at start, so read-only
        commands such as listing the log work without the connectors.
        """
        if self._platforms_checked:
            return
        self._platforms_checked = True
        installed = ", ".join(sorted(self.plugins.platforms)) or "none"
        for tenant in self.config.tenants.values():
            for name, platform in tenant.platforms.items():
                key = f"tenants.{tenant.id}.platforms.{name}"
                registered = self.plugins.platforms.get(name)
                if registered is None:
                    message = (
                        f"{key} names platform {name!r}, but no connector for it is "
                        f"installed (installed: {installed}); fix the name or pip "
                        f"install impactin-{name}."
                    )
                    raise ConfigError(message, key=key)
                transports = registered.info.transports
                if (
                    platform.protocol is not None
                    and platform.protocol not in transports
                ):
                    message = (
                        f"{key}.protocol is {platform.protocol!r}, but {name} speaks "
                        f"only {', '.join(transports)}; use one of those."
                    )
                    raise ConfigError(message, key=f"{key}.protocol")
                check_allowed_fields(registered.info, tenant.id, platform.allow_fields)
                _check_credential_names(registered.info, key, platform.credentials)

    def tenant_key(self, tenant: str) -> bytes:
        env_name = self.config.tenant(tenant).key_env
        value = self.secrets.get(env_name)
        if value is None:
            key = f"tenants.{tenant}.key_env"
            message = (
                f"Tenant {tenant!r} has no secret key: {env_label(env_name, key)} "
                "is not set; set it to a long random value."
            )
            raise ConfigError(message, key=key)
        return value.encode("utf-8")

    def platform_config(self, tenant: str, platform: str) -> PlatformConfig:
        return self.config.tenant(tenant).platforms[platform]

    def settings(self, tenant: str, platform: str) -> PlatformSettings:
        key = (tenant, platform)
        if key not in self._settings:
            settings = self.config.settings(tenant, platform, self.secrets)
            register_secrets(_secret_forms(settings.secrets))
            if self.platform_config(tenant, platform).protocol is None:
                transports = self.plugins.platform(platform).info.transports
                settings = attrs.evolve(settings, protocol=transports[0])
            self._settings[key] = settings
        return self._settings[key]

    def routes(self, record: ImpactRecord) -> list[str]:
        """Return the enabled platforms of the record's tenant that accept its kind."""
        tenant = self.config.tenant(record.tenant)
        return [
            name
            for name, platform in tenant.platforms.items()
            if platform.enabled
            and name in self.plugins.platforms
            and record.kind in self.plugins.platforms[name].info.kinds
        ]

    def limiter(self, tenant: str, platform: PlatformInfo) -> WindowLimiter:
        key = (tenant, platform.id)
        limiter = self._limiters.get(key)
        if limiter is None:
            override = self.platform_config(tenant, platform.id).rate_limit
            calls, period = override or (
                platform.rate_limit.calls,
                platform.rate_limit.period,
            )
            limiter = self._limiters[key] = WindowLimiter(
                calls, period, clock=self.clock, sleep=self.sleep
            )
        return limiter

    # -- keys ----------------------------------------------------------------

    def idempotency_key(self, record: ImpactRecord, platform: str) -> str:
        """Return the record's key on one platform: a keyed hash of its identity.

        The key covers platform, tenant and source id, so one activity has
        one key however its fields are ordered, and two activities of one
        employee on one day differ by their source ids.
        """
        message = "\x1f".join((platform, record.tenant, record.source_id)).encode(
            "utf-8"
        )
        digest = hmac.new(self.tenant_key(record.tenant), message, hashlib.sha256)
        return f"ik_{digest.hexdigest()[:40]}"

    @staticmethod
    def content_hash(unstructured: dict[str, Any]) -> str:
        """Return the SHA-256 of a record as ``converter.unstructure`` returns it."""
        return _content_hash(canonical_json(unstructured))

    # -- accept and persist ----------------------------------------------------

    def submit(self, rows: Iterable[Any], *, run_id: str, report: RunReport) -> None:
        """Validate, route and persist rows; nothing is sent yet.

        Rows are written ``SUBMIT_BATCH`` to a transaction, because a commit
        per record cost more than the record's own writes. A crash loses at
        most the batch that was not committed yet.
        """
        self._check_platforms()
        pending = iter(rows)
        while batch := list(itertools.islice(pending, SUBMIT_BATCH)):
            with self.store.transaction():
                for row in batch:
                    self._submit_row(row, run_id=run_id, report=report)

    def _submit_row(self, row: Any, *, run_id: str, report: RunReport) -> None:
        from ._input import ParsedRow, RejectedRow

        if isinstance(row, RejectedRow):
            self._quarantine_row(row, run_id=run_id, report=report)
            return
        record = row.record if isinstance(row, ParsedRow) else row
        if not isinstance(record, ImpactRecord):
            message = (
                f"deliver takes ImpactRecord objects or the rows read_records "
                f"yields, not {type(row).__name__}; build an ImpactRecord, or read "
                "a file with read_records(path)."
            )
            raise TypeError(message)
        if record.tenant not in self.config.tenants:
            known = ", ".join(sorted(self.config.tenants))
            reason = (
                f"Tenant {record.tenant!r} is not configured (configured: "
                f"{known}); add a [tenants.{record.tenant}] section or fix the row."
            )
            self.store.quarantine(
                run_id=run_id,
                tenant=record.tenant,
                source_id=record.source_id,
                line=row.line if isinstance(row, ParsedRow) else None,
                field="tenant",
                reason=reason,
                # Without a field that JSON cannot encode, which the store
                # could not keep.
                raw=_encodable_fields(converter.unstructure(record))[0],
                now=self.clock(),
            )
            report.quarantined([])
            return
        line = row.line if isinstance(row, ParsedRow) else None
        self.enqueue(record, run_id=run_id, report=report, line=line)

    def _quarantine_row(self, row: Any, *, run_id: str, report: RunReport) -> None:
        # A row read through a column mapping has no "tenant" key in raw, so
        # the reader's tenant comes first.
        tenant = str(row.tenant or row.raw.get("tenant") or "")
        kind = row.kind.value if row.kind is not None else row.raw.get("kind")
        self.store.quarantine(
            run_id=run_id,
            tenant=tenant,
            source_id=row.source_id,
            line=row.line,
            field=row.field,
            reason=row.reason,
            raw=row.raw,
            now=self.clock(),
        )
        report.quarantined(self._platforms_for(tenant, kind))

    def _platforms_for(self, tenant_name: str, kind: Any) -> list[str]:
        tenant = self.config.tenants.get(tenant_name)
        if tenant is None:
            return []
        return [
            name
            for name in tenant.platforms
            if name in self.plugins.platforms
            and kind in {k.value for k in self.plugins.platforms[name].info.kinds}
        ]

    def enqueue(
        self,
        record: ImpactRecord,
        *,
        run_id: str,
        report: RunReport,
        line: int | None = None,
    ) -> None:
        """Persist one record's deliveries, one per platform that accepts it.

        ``line`` is the record's line in its input file, which a quarantined
        record keeps.
        """
        routes = self.routes(record)
        now = self.clock()
        if not routes:
            configured = (
                ", ".join(self.config.tenant(record.tenant).platforms) or "none"
            )
            reason = (
                f"No enabled platform of tenant {record.tenant!r} accepts "
                f"{record.kind.value!r} records (configured: {configured}); enable "
                "a platform that supports this kind or drop the record."
            )
            self._quarantine_record(
                record, "kind", reason, run_id=run_id, report=report, line=line
            )
            return
        unstructured = converter.unstructure(record)
        try:
            encoded = canonical_json(unstructured)
        except (TypeError, ValueError, RecursionError) as exc:
            # The model's checks leave little that JSON cannot encode, such
            # as an int in metadata longer than sys.get_int_max_str_digits.
            # The store keeps records as JSON, so this record is quarantined
            # and the batch goes on.
            self._quarantine_unencodable(
                record, exc, run_id=run_id, report=report, line=line
            )
            return
        content = _content_hash(encoded)
        snapshot: ImpactRecord | None = None
        correlation_id = uuid.uuid4().hex
        conflicts: list[tuple[str, str]] = []
        corrected: list[str] = []
        for platform in routes:
            delivery = {
                "id": new_delivery_id(),
                "run_id": run_id,
                "correlation_id": correlation_id,
                "tenant": record.tenant,
                "platform": platform,
                "kind": record.kind.value,
                "source_id": record.source_id,
                "idempotency_key": self.idempotency_key(record, platform),
                "content_hash": content,
            }
            claim = self.store.enqueue(
                delivery, unstructured, ttl=self.key_ttl, now=now
            )
            # The same record twice in one input is a duplicate too.
            repeated = claim.state == "unfinished" and claim.run_id == run_id
            # So is the same record exported again with the email in other
            # letter case, which the content hash distinguishes.
            recased = claim.state == "conflict" and self._same_but_email_case(
                claim.delivery_id, unstructured, encoded
            )
            if claim.state == "duplicate" or repeated or recased:
                report.platform(platform).duplicates += 1
                self.instruments.idempotency_hits.add(
                    1, {"platform": platform, "detected_by": "store"}
                )
                trace.get_current_span().add_event(
                    "idempotency_hit",
                    safe_attributes({"platform": platform, "detected_by": "store"}),
                )
                logger.info(
                    "Skipped a record of tenant %s on %s: %s as %s",
                    record.tenant,
                    platform,
                    "already in this input"
                    if repeated
                    else "its email differs only in letter case from"
                    if recased
                    else "already delivered",
                    claim.delivery_id,
                )
            elif claim.state == "conflict":
                conflicts.append((platform, claim.delivery_id))
            elif claim.state == "failed":
                report.platform(platform).failed_earlier += 1
                logger.info(
                    "Did not send a record of tenant %s to %s again: its delivery %s "
                    "failed earlier; replay it with 'impactin deliveries retry'",
                    record.tenant,
                    platform,
                    claim.delivery_id,
                )
            elif claim.state == "unfinished":
                report.platform(platform).resumed += 1
            else:
                report.platform(platform).queued += 1
                kept = _kept_records.get()
                if kept is not None:
                    snapshot = snapshot or _frozen_copy(record, encoded)
                    kept.keep(claim.delivery_id, snapshot, len(encoded))
                if claim.state == "corrected":
                    corrected.append(platform)
        for platform, delivery_id in conflicts:
            reason = (
                f"This source id was already sent to {platform!r} (delivery "
                f"{delivery_id}) with different content, and that delivery "
                "succeeded or may still succeed, so the change is not sent there. "
            )
            if corrected:
                others = ", ".join(repr(name) for name in corrected)
                reason += (
                    f"The changed record replaces the failed delivery on {others}. "
                    f"Correct the activity on {platform!r} by hand; a new source "
                    f"id would send it to {others} again."
                )
            else:
                reason += "Give the changed activity a new source id."
            self._quarantine_record(
                record,
                "source_id",
                reason,
                run_id=run_id,
                report=report,
                platform=platform,
                line=line,
            )

    def _same_but_email_case(
        self, delivery_id: str, unstructured: dict[str, Any], encoded: bytes
    ) -> bool:
        """Return whether a new record differs from a stored one only in email case.

        ``unstructured`` is the new record and ``encoded`` its canonical JSON.
        ``delivery_id`` names the delivery of the stored one.

        Exports often change the letter case of an email between runs, and a
        mail system treats such addresses as one, so such a record is the
        same activity rather than a conflicting one.
        """
        try:
            stored = self.store.load_record(delivery_id)
        except StoreError:
            return False
        email = unstructured.get("employee_email")
        earlier = stored.get("employee_email")
        if not (isinstance(email, str) and isinstance(earlier, str)):
            return False
        if email == earlier or email.casefold() != earlier.casefold():
            return False
        return canonical_json({**stored, "employee_email": email}) == encoded

    def _quarantine_unencodable(
        self,
        record: ImpactRecord,
        error: Exception,
        *,
        run_id: str,
        report: RunReport,
        line: int | None,
    ) -> None:
        raw, unencodable = _encodable_fields(converter.unstructure(record))
        field = unencodable[0] if unencodable else None
        reason = (
            f"{field or 'The record'} cannot be stored, because JSON cannot encode "
            f"it ({type(error).__name__}); fix the value at the source and deliver "
            "the record again. The quarantined row leaves the value out."
        )
        self._quarantine_record(
            record, field, reason, run_id=run_id, report=report, raw=raw, line=line
        )

    def _quarantine_record(
        self,
        record: ImpactRecord,
        field: str | None,
        reason: str,
        *,
        run_id: str,
        report: RunReport,
        platform: str | None = None,
        raw: dict[str, Any] | None = None,
        line: int | None = None,
    ) -> None:
        self.store.quarantine(
            run_id=run_id,
            tenant=record.tenant,
            source_id=record.source_id,
            line=line,
            field=field,
            reason=reason,
            raw=converter.unstructure(record) if raw is None else raw,
            now=self.clock(),
        )
        report.quarantined([platform] if platform else self.routes(record) or [])

    # -- process the outbox ------------------------------------------------------

    async def process(
        self,
        report: RunReport,
        *,
        include_future: bool = False,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """Deliver every due delivery in the outbox, ``concurrency`` at a time.

        The outbox is read a page at a time, so memory does not grow with
        the number of due deliveries. One task builds each delivery's
        request (decryption, minimization, the map and redact hooks and the
        leak scan) up to ``concurrency + 1`` deliveries ahead. It works
        while a sent request waits for its response, so that this work
        overlaps the network and the platform's own time instead of
        delaying the next send. A delivery is claimed only when a worker
        takes it to send.
        """
        self._check_platforms()
        # Connectors may have created loggers since the runtime was built.
        install_filter()
        now = self.clock()
        rows = self.store.iter_due_deliveries(now, include_future=include_future)
        first = next(rows, None)
        if first is None:
            return
        # Each worker opens its own connection, so a run with fewer due
        # deliveries than the configured concurrency starts fewer workers.
        due = self.store.count_due(now, include_future=include_future)
        workers = max(1, min(self.config.concurrency, due))
        # One request more than the workers can take, so that a worker that
        # takes one still leaves one ready while the next is being built.
        ready: asyncio.Queue[_Prepared | None] = asyncio.Queue(maxsize=workers + 1)
        pacer = _Pacer()
        # The first configuration error of each tenant and platform, and how
        # many of their deliveries it left pending.
        config_errors: dict[tuple[str, str], ConfigError] = {}
        left_pending: collections.Counter[tuple[str, str]] = collections.Counter()

        async def produce() -> None:
            for row in itertools.chain([first], rows):
                await pacer.wait_for_idle(ready)
                if pacer.stopped:
                    break
                try:
                    prepared = self._prepare_row(row)
                except StoreError:
                    if self.store.get_delivery(row["id"]) is not None:
                        raise
                    # Deleted since the page was read (a purge or another
                    # process), so there is nothing left to send.
                    continue
                await ready.put(prepared)
                # Let responses that arrived meanwhile be handled first.
                await asyncio.sleep(0)
            for _ in range(workers):
                await ready.put(None)

        async def work(client: httpx.AsyncClient) -> None:
            while (prepared := await ready.get()) is not None:
                if pacer.stopped:
                    # Not claimed, so it stays pending for the next run.
                    continue
                if ready.empty():
                    pacer.wake()
                try:
                    await self.run_delivery(prepared, client, report)
                except ConfigError as exc:
                    # A setting of one tenant or platform is wrong, so the
                    # other deliveries go on, and requests already sent are
                    # not cancelled. This one is pending again.
                    target = (prepared.row["tenant"], prepared.row["platform"])
                    logger.warning(
                        "Left delivery %s of tenant %s on %s pending: %s",
                        prepared.row["id"],
                        *target,
                        exc,
                    )
                    config_errors.setdefault(target, exc)
                    left_pending[target] += 1
                if on_done is not None:
                    on_done()
                # A success's final writes are deferred (see _succeed). When a
                # request is ready, the next claim commits them in its own
                # transaction. Otherwise they are committed here, before this
                # worker waits, so a crash cannot lose them.
                if ready.empty():
                    self.store.flush()
            # The end of the queue: other workers may wait for their responses
            # for a long time yet, so this worker commits before it ends.
            self.store.flush()

        async def work_with_own_client() -> None:
            async with self._client() as client:
                await work(client)

        # The tasks below copy the context, so their trace events reach
        # this run's pacer.
        pacer_token = _pacer.set(pacer)
        self._pacers.add(pacer)
        if self._stop_requested:
            pacer.stop()
        try:
            if self.transport is None:
                # Each worker has its own client, so each connection pool
                # serves one request at a time. httpcore checks every pooled
                # connection on every request, and one pool shared by 16
                # workers cost more CPU per request than the rest of the
                # pipeline.
                await _run_until_first_error(
                    [produce(), *(work_with_own_client() for _ in range(workers))]
                )
            else:
                # A transport the host passed in is closed with its client,
                # so the workers share one.
                async with self._client() as client:
                    await _run_until_first_error(
                        [produce(), *(work(client) for _ in range(workers))]
                    )
        finally:
            self._pacers.discard(pacer)
            _pacer.reset(pacer_token)
            self.store.flush()
        if config_errors:
            raise _config_error_of_run(config_errors, left_pending)

    def _client(self) -> httpx.AsyncClient:
        if self._ssl_context is None:
            # Building a TLS context loads the CA bundle, which took about
            # 20 ms here, so every run of this runtime shares one.
            self._ssl_context = httpx.create_ssl_context(verify=True, trust_env=True)
        return httpx.AsyncClient(
            verify=self._ssl_context,
            transport=self.transport,
            timeout=httpx.Timeout(30.0),
            event_hooks={"request": [_on_request]},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def run_delivery(
        self, prepared: _Prepared, client: httpx.AsyncClient, report: RunReport
    ) -> None:
        """Take one outbox row to a final state, or leave it pending for later.

        ``prepared`` is the row with its request, built ahead by ``_prepare_row``.
        A delivery that another run of this runtime is taking through these
        steps is skipped. The store's lease belongs to the process, so it
        cannot tell two runs of one process apart.
        """
        delivery_id = prepared.row["id"]
        if delivery_id in self._in_progress:
            return
        self._in_progress.add(delivery_id)
        try:
            await self._run_delivery(prepared, client, report)
        finally:
            self._in_progress.discard(delivery_id)

    async def _run_delivery(
        self, prepared: _Prepared, client: httpx.AsyncClient, report: RunReport
    ) -> None:
        row = prepared.row
        platform = self.plugins.platform(row["platform"]).info
        attributes = {
            "tenant_id": row["tenant"],
            "platform": row["platform"],
            "delivery_id": row["id"],
            "correlation_id": row["correlation_id"],
        }
        with self.instruments.tracer.start_as_current_span(
            "impactin.delivery", attributes=safe_attributes(attributes)
        ) as span:
            # The first attempt's rate-limit slot is taken before the claim.
            # A delivery that waits for it is still pending, so a stop or a
            # crash during the wait leaves nothing that may look sent.
            if prepared.error is None and not await self._take_slot(
                row["tenant"], platform, span
            ):
                return
            claimed = self.store.claim_delivery(
                row["id"],
                owner=self._owner,
                now=time.time(),
                lease=self._lease_seconds(row),
                trace_id=current_trace_id(),
            )
            if claimed is None:
                # Another process is delivering it, or it finished meanwhile.
                return
            row = claimed
            # Logs, stored errors and span events of this delivery drop these
            # values. The binding belongs to this task's context.
            bind_personal_values(prepared.record or ())
            stats = report.platform(platform.id)
            error = prepared.error
            if isinstance(error, ConfigError):
                # A setting of this tenant or platform is wrong. The delivery
                # stays pending for 'impactin resume' once it is fixed, and
                # process() goes on with the other deliveries.
                self.store.update_delivery(row["id"], status="pending")
                raise error
            if isinstance(error, RecordInvalid):
                self._block(row, "invalid", str(error), report)
                return
            if isinstance(error, PersonalDataLeak):
                self.instruments.pii_blocked.add(1, {"platform": platform.id})
                self._block(row, "personal_data", str(error), report)
                return
            if isinstance(error, PluginError):
                self._block(row, "plugin_error", str(error), report)
                return
            request = prepared.request
            assert request is not None
            redacted = prepared.redacted
            stats.redacted += redacted
            # Each attempt row is written together with this count (see
            # _attempt), so it costs no transaction of its own.
            row["redacted_count"] = redacted
            if row["status"] == "in_flight" and not self._may_repeat(
                platform, row, request
            ):
                self.store.update_delivery(row["id"], redacted_count=redacted)
                self._dead_letter_interrupted(platform, row, report)
                return
            await self._send_with_retries(platform, row, request, client, report, span)

    def _lease_seconds(self, row: dict[str, Any]) -> float:
        # Long enough for the whole retry deadline, so a live process keeps
        # its delivery; a process that died frees it at once (same host).
        deadline = self.platform_config(row["tenant"], row["platform"]).retry.deadline
        return deadline + 300.0

    def _may_repeat(
        self, platform: PlatformInfo, row: dict[str, Any], request: PlatformRequest
    ) -> bool:
        """Return whether a request that may have reached the platform can be resent."""
        config = self.platform_config(row["tenant"], platform.id)
        return (
            platform.honours_idempotency_key
            or request.safe_to_repeat
            or bool(config.options.get("replay_safe"))
        )

    def _dead_letter_interrupted(
        self, platform: PlatformInfo, row: dict[str, Any], report: RunReport
    ) -> None:
        # A process stopped while this delivery was in flight, so its request
        # may have reached a platform that would record a second copy.
        reason = (
            f"A process stopped while delivery {row['id']} was in flight, so the "
            f"request may have reached {platform.id!r}, which does not honour "
            "idempotency keys; it was not repeated. Check the platform, then replay "
            "with 'impactin deliveries retry' or set options.replay_safe."
        )
        attempt = _Attempt(number=row["attempts"], started=self.clock())
        self._dead_letter(row, "interrupted", reason, attempt, report)

    def _prepare_row(self, row: dict[str, Any]) -> _Prepared:
        """Build a row's request; errors that settle the delivery are kept."""
        kept = _kept_records.get()
        record = None if kept is None else kept.records.pop(row["id"], None)
        if record is None:
            return self._prepare_stored(row)
        return self._prepare_record(row, record)

    def _prepare_stored(self, row: dict[str, Any]) -> _Prepared:
        stored = self.store.load_record(row["id"])
        try:
            record = converter.structure(stored, ImpactRecord)
        except (ValueError, TypeError, cattrs.BaseValidationError) as exc:
            # A record stored by an older version that the model now rejects
            # (a new bound, say) can never be sent as it is.
            message = (
                f"The stored record of delivery {row['id']} is no longer valid "
                f"({type(exc).__name__}); fix it at the source and submit it "
                "again with a new source id."
            )
            error = RecordInvalid(message, source_id=row["source_id"])
            return _Prepared(row=row, record=None, error=error)
        return self._prepare_record(row, record)

    def _prepare_record(self, row: dict[str, Any], record: ImpactRecord) -> _Prepared:
        prepared = _Prepared(row=row, record=record)
        platform = self.plugins.platform(row["platform"]).info
        try:
            prepared.request, prepared.redacted = self._prepare(platform, row, record)
        except (ConfigError, RecordInvalid, PersonalDataLeak, PluginError) as exc:
            prepared.error = exc
        return prepared

    def _prepare(
        self, platform: PlatformInfo, row: dict[str, Any], record: ImpactRecord
    ) -> tuple[PlatformRequest, int]:
        # The hooks may log, so this context drops the record's values too.
        bind_personal_values(record)
        config = self.platform_config(row["tenant"], platform.id)
        policy = RedactionPolicy.for_platform(
            platform,
            row["tenant"],
            self.tenant_key(row["tenant"]),
            deny=config.deny_fields,
            allow=config.allow_fields,
        )
        try:
            minimized, redacted = minimize_record(record, policy)
        except ValueError as exc:
            # Scrubbing decodes %-escapes, so "%00" in a description that
            # also contains an email address becomes a NUL, which the model
            # rejects. The model's messages do not quote text values.
            message = (
                f"Redaction of delivery {row['id']} produced a record that is not "
                f"valid: {exc}. Remove %-escapes such as %00 from the text at the "
                "source and deliver the record again."
            )
            raise RecordInvalid(message, source_id=row["source_id"]) from None
        settings = self.settings(row["tenant"], platform.id)
        try:
            requests = self.plugins.hook(platform.id, "impactin_map")(
                platform=platform,
                records=[minimized],
                settings=settings,
                idempotency_keys=[row["idempotency_key"]],
            )
        except (ConfigError, RecordInvalid):
            raise
        except (Exception, asyncio.CancelledError, SystemExit) as exc:
            # The hooks are synchronous, so even a CancelledError here was
            # raised by the connector, not by a cancellation of this task.
            raise _connector_failure(platform.id, "impactin_map", exc) from None
        if not requests:
            message = (
                f"The {platform.id} connector mapped delivery {row['id']} "
                "to no request."
            )
            raise RecordInvalid(message, source_id=row["source_id"])
        request = requests[0] if isinstance(requests, list) else None
        if not isinstance(request, PlatformRequest):
            returned = requests[0] if isinstance(requests, list) else requests
            type_name = type(returned).__name__
            message = (
                f"The {platform.id} connector's impactin_map returned {type_name} "
                "where a list of PlatformRequest belongs; return "
                "[PlatformRequest(...)]. "
                "Then replay the delivery with 'impactin deliveries retry'."
            )
            raise _ConnectorFailure(message, platform=platform.id)
        try:
            changed = self.plugins.hook(platform.id, "impactin_redact")(
                platform=platform, request=request, policy=policy
            )
        except (Exception, asyncio.CancelledError, SystemExit) as exc:
            raise _connector_failure(platform.id, "impactin_redact", exc) from None
        counts = [count for count in changed if count is not None]
        invalid = [c for c in counts if type(c) is not int or c < 0]
        if invalid:
            # Only an int is quoted, because another object's text can quote
            # the record.
            found = ", ".join(
                sorted(
                    {repr(c) if type(c) is int else type(c).__name__ for c in invalid}
                )
            )
            message = (
                f"The {platform.id} connector's impactin_redact returned {found} "
                "where the number of values it redacted belongs; return an int "
                "of 0 or more (0 when it changed nothing). Then replay the "
                "delivery with 'impactin deliveries retry'."
            )
            raise _ConnectorFailure(message, platform=platform.id)
        redacted += sum(counts)
        findings = leak_scan(request.payload, request.personal_paths)
        if findings:
            found = ", ".join(
                f"{finding.kind} at {finding.path}" for finding in findings
            )
            message = (
                f"The send of delivery {row['id']} to {platform.id!r} was blocked: "
                f"personal data the platform does not need was found ({found}); "
                "remove it from the input or tighten the mapping."
            )
            raise PersonalDataLeak(
                message,
                findings=[(finding.path, finding.kind) for finding in findings],
                platform=platform.id,
            )
        return request, redacted

    def _block(
        self, row: dict[str, Any], kind: str, reason: str, report: RunReport
    ) -> None:
        error = scrub_known(reason)
        logger.error(
            "Blocked delivery %s for tenant %s on %s (%s): %s",
            row["id"],
            row["tenant"],
            row["platform"],
            kind,
            error,
        )
        self.store.finish_delivery(
            row["id"],
            row["idempotency_key"],
            delivered=False,
            status="blocked",
            error_kind=kind,
            error=error,
            finished_at=self.clock(),
        )
        report.platform(row["platform"]).blocked += 1
        self.instruments.deliveries.add(
            1, {"platform": row["platform"], "status": "blocked"}
        )

    async def _send_with_retries(
        self,
        platform: PlatformInfo,
        row: dict[str, Any],
        request: PlatformRequest,
        client: httpx.AsyncClient,
        report: RunReport,
        span: Any,
    ) -> None:
        attempt = _Attempt(started=self.clock(), earlier=int(row["attempts"] or 0))
        try:
            await self._retry_loop(
                platform, row, request, client, report, span, attempt
            )
        except BaseException:
            # Cancelled (Ctrl-C, or another worker's error stopped the run) or
            # a connector bug. A delivery whose request never left can go
            # back to pending, so that resume sends it instead of treating it
            # as possibly sent.
            if not attempt.reached:
                self.store.update_delivery(
                    row["id"], status="pending", lease_owner=None, lease_until=None
                )
            raise

    async def _retry_loop(
        self,
        platform: PlatformInfo,
        row: dict[str, Any],
        request: PlatformRequest,
        client: httpx.AsyncClient,
        report: RunReport,
        span: Any,
        attempt: _Attempt,
    ) -> None:
        config = self.platform_config(row["tenant"], platform.id)
        policy = config.retry
        stats = report.platform(platform.id)
        deadline = attempt.started + policy.deadline
        while True:
            attempt.number += 1
            if attempt.number > 1 and not await self._take_slot(
                row["tenant"], platform, span
            ):
                # The run stopped while this retry waited for the limiter.
                reason = "The run stopped before the next attempt was sent."
                self._defer(row, reason, self.clock())
                stats.deferred += 1
                return
            try:
                outcome, evidence = await self._attempt(
                    platform, row, request, client, attempt
                )
            except AuthenticationError as exc:
                if exc.refreshable and not attempt.refreshed:
                    attempt.refreshed = True
                    continue
                self._dead_letter(row, "authentication", str(exc), attempt, report)
                return
            except _ConnectorFailure as exc:
                self._dead_letter(row, "plugin_error", str(exc), attempt, report)
                return
            except PermanentError as exc:
                self._dead_letter(row, "permanent", str(exc), attempt, report)
                return
            except CircuitOpen as exc:
                self._defer(
                    row, str(exc), self.breakers.reopens_at(row["tenant"], platform.id)
                )
                stats.deferred += 1
                return
            except RetryableError as exc:
                decision = self._retry_decision(
                    platform, row, request, exc, attempt, deadline
                )
                if decision is None:
                    continue
                kind, delay_or_reason = decision
                if kind == "wait" and self._stop_requested:
                    # A stopping run waits for no retry. The delivery stays
                    # pending, due when the retry would have been.
                    assert isinstance(delay_or_reason, float)
                    self._defer(row, str(exc), self.clock() + delay_or_reason)
                    stats.deferred += 1
                    return
                if kind == "wait":
                    assert isinstance(delay_or_reason, float)
                    stats.retried += 1
                    self.instruments.retries.add(1, {"platform": platform.id})
                    span.add_event(
                        "retry_attempt",
                        safe_attributes(
                            {"attempt": attempt.number, "delay_s": delay_or_reason}
                        ),
                    )
                    logger.info(
                        "Retrying delivery %s for tenant %s on %s in %.2f s "
                        "(attempt %d): %s",
                        row["id"],
                        row["tenant"],
                        platform.id,
                        delay_or_reason,
                        attempt.number,
                        type(exc).__name__,
                    )
                    due = self.clock() + delay_or_reason
                    pacer = _pacer.get()
                    if pacer is None:
                        await self.sleep(delay_or_reason)
                    elif await pacer.sleep_unless_stopped(self.sleep(delay_or_reason)):
                        # The run stopped during the wait: the retry is due
                        # at the same time in a later run.
                        self._defer(row, str(exc), due)
                        stats.deferred += 1
                        return
                    continue
                if kind == "defer":
                    assert isinstance(delay_or_reason, float)
                    self._defer(row, str(exc), self.clock() + delay_or_reason)
                    stats.deferred += 1
                    return
                self._dead_letter(
                    row, "exhausted", str(delay_or_reason), attempt, report
                )
                return
            self._succeed(row, outcome, evidence, attempt, report)
            return

    def _retry_decision(
        self,
        platform: PlatformInfo,
        row: dict[str, Any],
        request: PlatformRequest,
        exc: RetryableError,
        attempt: _Attempt,
        deadline: float,
    ) -> tuple[str, float | str] | None:
        config = self.platform_config(row["tenant"], platform.id)
        repeatable = (
            not exc.sent
            or platform.honours_idempotency_key
            or request.safe_to_repeat
            or bool(config.options.get("replay_safe"))
        )
        if not repeatable:
            reason = (
                f"{exc} The request may have reached {platform.id!r}, which does not "
                "honour idempotency keys, so it was not repeated; check the platform, "
                "then replay with 'impactin deliveries retry'."
            )
            return ("dead", reason)
        if attempt.number >= config.retry.max_attempts:
            tries = "attempt" if attempt.number == 1 else "attempts"
            reason = f"{exc} Gave up after {attempt.number} {tries}."
            return ("dead", reason)
        now = self.clock()
        requested = _retry_after_of(exc, platform.id)
        delay = requested
        if delay is None:
            delay = backoff_delay(attempt.number, config.retry, self.rng)
        elif isinstance(exc, RateLimited):
            self.limiter(row["tenant"], platform).pause(delay)
        if now + delay > deadline:
            if requested is not None and requested > config.retry.deadline:
                return ("defer", float(delay))
            reason = (
                f"{exc} The retry deadline of {config.retry.deadline:g} s passed after "
                f"{attempt.number} attempts."
            )
            return ("dead", reason)
        return ("wait", float(delay))

    async def _attempt(
        self,
        platform: PlatformInfo,
        row: dict[str, Any],
        request: PlatformRequest,
        client: httpx.AsyncClient,
        attempt: _Attempt,
    ) -> tuple[Any, bytes]:
        started = self.clock()
        attributes = {
            "tenant_id": row["tenant"],
            "platform": platform.id,
            "delivery_id": row["id"],
            "correlation_id": row["correlation_id"],
            "attempt": attempt.number,
        }
        with self.instruments.tracer.start_as_current_span(
            "impactin.attempt", attributes=safe_attributes(attributes)
        ) as span:
            evidence = _Evidence()
            token = _evidence.set(evidence)
            # Cancellation and errors that are not DeliveryErrors (a
            # connector bug) end the attempt without an outcome of their own.
            outcome_name = "interrupted"
            status_code: int | None = None
            error: DeliveryError | None = None
            try:
                result = await self._guarded_send(
                    platform, row, request, client, attempt
                )
                status_code = result.status_code
                if getattr(result, "duplicate", False):
                    self._platform_idempotency_hit(span, platform.id)
                outcome_name = "success"
                return result, b"".join(evidence.parts)
            except DeliveryError as exc:
                # The span records this exception on exit, so its chained
                # library exceptions (a zeep Fault quoting the request) go first.
                detach_chained(exc)
                error = exc
                outcome_name = _outcome_name(exc)
                status_code = exc.status_code
                if isinstance(exc, RateLimited):
                    self._rate_limit_hit(span, platform.id, "platform")
                raise
            finally:
                _evidence.reset(token)
                span.set_attribute("outcome", outcome_name)
                self.instruments.attempts.add(
                    1, {"platform": platform.id, "outcome": outcome_name}
                )
                if (
                    evidence.may_have_arrived()
                    and getattr(error, "sent", True) is not False
                ):
                    attempt.reached = True
                attempt_row = {
                    "delivery_id": row["id"],
                    "number": attempt.earlier + attempt.number,
                    "started_at": started,
                    "duration_s": self.clock() - started,
                    "outcome": outcome_name,
                    "status_code": status_code,
                    "retry_after": (
                        _retry_after_of(error, platform.id, warn=False)
                        if isinstance(error, RetryableError)
                        else None
                    ),
                    "error": scrub_known(str(error)) if error else None,
                    "trace_id": current_trace_id(),
                }
                if outcome_name == "success":
                    # Committed with the finish, in one transaction. _succeed
                    # writes the delivery's attempt count with its status.
                    self.store.add_attempt(attempt_row, defer=True)
                else:
                    self.store.add_attempt(
                        attempt_row,
                        attempts=attempt.earlier + attempt.number,
                        redacted_count=row["redacted_count"],
                    )
                logger.info(
                    "Delivery %s attempt %d for tenant %s on %s: %s",
                    row["id"],
                    attempt.number,
                    row["tenant"],
                    platform.id,
                    outcome_name,
                )

    async def _guarded_send(
        self,
        platform: PlatformInfo,
        row: dict[str, Any],
        request: PlatformRequest,
        client: httpx.AsyncClient,
        attempt: _Attempt,
    ) -> Any:
        config = self.platform_config(row["tenant"], platform.id)
        self.breaker_sync.apply_reset(row["tenant"], platform.id)
        breaker = await self.breakers.before(row["tenant"], platform.id, config.breaker)
        outcome = "neutral"
        try:
            settings = self.settings(row["tenant"], platform.id)
            auth = AuthContext(
                client=client,
                tokens=self.tokens,
                clock=self.clock,
                force_refresh=attempt.refreshed,
            )
            try:
                credentials = await _within(
                    self.plugins.hook(platform.id, "impactin_authenticate")(
                        platform=platform, settings=settings, context=auth
                    ),
                    self.config.hook_timeout,
                    platform.id,
                    "impactin_authenticate",
                )
            except RetryableError as exc:
                # A failed token request carried no part of the delivery, so
                # repeating it cannot duplicate anything.
                exc.sent = False
                self._strip_secrets(exc, settings, None)
                raise
            except (DeliveryError, ConfigError) as exc:
                self._strip_secrets(exc, settings, None)
                raise
            except (Exception, asyncio.CancelledError, SystemExit) as exc:
                _reraise_real_cancellation(exc)
                hook = "impactin_authenticate"
                raise _connector_failure(platform.id, hook, exc) from None
            target = (settings.tenant, settings.platform)
            if credentials is not self._registered_credentials.get(target):
                # Connectors usually return the same object while a token
                # lasts, so the values are registered once per token.
                register_secrets(_credential_values(credentials))
                self._registered_credentials[target] = credentials
            evidence = _evidence.get()
            if evidence is not None:
                # From here on, requests carry the delivery, so they are its
                # evidence, and once written they may have reached the platform.
                evidence.collecting = True
            context = SendContext(
                client=client,
                settings=settings,
                cache_dir=self._cache_dir,
                clock=self.clock,
            )
            try:
                result = await _within(
                    self.plugins.hook(platform.id, "impactin_send")(
                        platform=platform,
                        request=request,
                        credentials=credentials,
                        context=context,
                    ),
                    self.config.hook_timeout,
                    platform.id,
                    "impactin_send",
                )
            except (DeliveryError, ConfigError) as exc:
                self._strip_secrets(exc, settings, credentials)
                raise
            except RecordInvalid as exc:
                # The connector found, before its call, that the platform
                # cannot take this record: a rejection, which a corrected
                # record under the same source id replaces.
                self._strip_secrets(exc, settings, credentials)
                raise PermanentError(
                    str(exc), platform=platform.id, tenant=row["tenant"]
                ) from None
            except (Exception, asyncio.CancelledError, SystemExit) as exc:
                _reraise_real_cancellation(exc)
                raise _connector_failure(platform.id, "impactin_send", exc) from None
            if not isinstance(result, SendOutcome):
                message = (
                    f"The {platform.id} connector's impactin_send returned "
                    f"{type(result).__name__}, not SendOutcome; return a SendOutcome "
                    "on success and raise a DeliveryError subclass otherwise. Then "
                    "replay the delivery with 'impactin deliveries retry'."
                )
                raise _ConnectorFailure(message, platform=platform.id)
            outcome = "success"
            return result
        except RetryableError:
            outcome = "failure"
            raise
        finally:
            await self.breakers.after(breaker, outcome)
            if outcome == "success":
                self.breaker_sync.note_success(row["tenant"], platform.id, self.clock())

    def _strip_secrets(
        self,
        exc: Exception,
        settings: PlatformSettings,
        credentials: Credentials | None,
    ) -> None:
        """Replace the platform's secrets in a connector's error message.

        The message is stored with the delivery, logged, and printed by the
        command line, so a connector that quotes its API key or token in an
        error must not put it there. The configured secrets, the
        credentials of this send and the stored OAuth token are replaced.
        """
        if not exc.args or not isinstance(exc.args[0], str):
            return
        values = _secret_forms(settings.secrets)
        if credentials is not None:
            values += _credential_values(credentials)
        try:
            token = self.tokens.load(settings.tenant, settings.platform)
        except StoreError:
            token = None
        if token is not None:
            values += [token.access_token, token.refresh_token or ""]
        register_secrets(values)
        text = strip_secrets(exc.args[0])
        if text != exc.args[0]:
            exc.args = (text, *exc.args[1:])

    # -- final states ------------------------------------------------------------

    def _succeed(
        self,
        row: dict[str, Any],
        outcome: Any,
        evidence: bytes,
        attempt: _Attempt,
        report: RunReport,
    ) -> None:
        now = self.clock()
        latency = now - attempt.started
        self.store.finish_delivery(
            row["id"],
            row["idempotency_key"],
            delivered=True,
            status="delivered",
            finished_at=now,
            latency_s=latency,
            response_id=outcome.response_id,
            evidence_hash=hashlib.sha256(evidence).hexdigest(),
            error_kind=None,
            error=None,
            next_attempt_at=None,
            attempts=attempt.earlier + attempt.number,
            redacted_count=row["redacted_count"],
            # Committed with the worker's next write: its next claim, or the
            # flush in process() before the worker waits for anything.
            defer=True,
        )
        stats = report.platform(row["platform"])
        stats.delivered += 1
        stats.add_latency(latency)
        labels = {"platform": row["platform"], "status": "delivered"}
        self.instruments.deliveries.add(1, labels)
        self.instruments.latency.record(latency, {"platform": row["platform"]})

    def _dead_letter(
        self,
        row: dict[str, Any],
        kind: str,
        reason: str,
        attempt: _Attempt,
        report: RunReport,
    ) -> None:
        # The same scrubbed text as in the delivery log, so the log line states
        # what to fix without a look at 'impactin deliveries show'.
        error = scrub_known(reason)
        logger.error(
            "Dead-lettered delivery %s for tenant %s on %s after %d attempt(s) "
            "(%s): %s",
            row["id"],
            row["tenant"],
            row["platform"],
            attempt.number,
            kind,
            error,
        )
        self.store.finish_delivery(
            row["id"],
            row["idempotency_key"],
            delivered=False,
            status="dead_lettered",
            error_kind=kind,
            error=error,
            finished_at=self.clock(),
            latency_s=self.clock() - attempt.started,
        )
        report.platform(row["platform"]).dead_lettered += 1
        labels = {"platform": row["platform"], "status": "dead_lettered"}
        self.instruments.deliveries.add(1, labels)
        if kind == "exhausted":
            self.instruments.retries_exhausted.add(1, {"platform": row["platform"]})

    def _defer(self, row: dict[str, Any], reason: str, when: float | None) -> None:
        logger.info(
            "Deferred delivery %s for tenant %s on %s: %s",
            row["id"],
            row["tenant"],
            row["platform"],
            reason,
        )
        self.store.update_delivery(
            row["id"],
            status="pending",
            next_attempt_at=when,
            error_kind="deferred",
            error=scrub_known(reason),
        )

    def _on_breaker_change(self, name: str, state: str) -> None:
        tenant, _, platform = name.partition("/")
        logger.warning("Circuit of tenant %s on %s is now %s", tenant, platform, state)
        self.breaker_sync.save_change(name, self.clock())
        # impact_in_circuit_breaker_state reads the board when metrics are
        # collected, so only the span event is added here.
        if state == "opened":
            trace.get_current_span().add_event(
                "circuit_opened",
                safe_attributes({"tenant_id": tenant, "platform": platform}),
            )

    async def _take_slot(self, tenant: str, platform: PlatformInfo, span: Any) -> bool:
        """Wait for a rate-limit slot; return False if the run stopped first."""
        limiter = self.limiter(tenant, platform)
        if await limiter.acquire_now():
            return True
        self._note_limiter_wait(tenant, platform.id, limiter)
        pacer = _pacer.get()
        if pacer is None:
            await limiter.acquire()
        else:
            acquiring = asyncio.ensure_future(limiter.acquire())
            if await pacer.sleep_unless_stopped(acquiring):
                return False
            acquiring.result()
        self._rate_limit_hit(span, platform.id, "limiter")
        return True

    def _note_limiter_wait(
        self, tenant: str, platform: str, limiter: WindowLimiter
    ) -> None:
        """Log that deliveries wait for the rate limit, once a minute at most."""
        now = time.monotonic()
        last = self._limiter_waits_logged.get((tenant, platform))
        if last is not None and now - last < 60.0:
            return
        self._limiter_waits_logged[(tenant, platform)] = now
        logger.info(
            "Deliveries of tenant %s on %s wait for the rate limit, which "
            "allows %d calls in any %g s",
            tenant,
            platform,
            limiter.calls,
            limiter.period,
        )

    def _rate_limit_hit(self, span: Any, platform: str, detected_by: str) -> None:
        attributes = {"platform": platform, "detected_by": detected_by}
        span.add_event("rate_limit_hit", safe_attributes(attributes))
        self.instruments.rate_limit_hits.add(1, {"platform": platform})

    def _platform_idempotency_hit(self, span: Any, platform: str) -> None:
        attributes = {"platform": platform, "detected_by": "platform"}
        span.add_event("idempotency_hit", safe_attributes(attributes))
        self.instruments.idempotency_hits.add(1, attributes)

    # -- entry points for hosts and the command line ---------------------------

    def request_stop(self) -> None:
        """Stop the runs in progress once the requests already sent get responses.

        No further delivery is claimed, and a delivery whose send needs a
        retry stays pending, due when the retry would have been. The runs
        then return their reports. The next ``deliver``, ``resume`` or
        ``retry`` starts taking deliveries again. ``impactin`` calls this on
        SIGTERM.
        """
        self._stop_requested = True
        for pacer in list(self._pacers):
            pacer.stop()

    async def deliver(
        self,
        rows: Iterable[Any],
        *,
        on_done: Callable[[], None] | None = None,
    ) -> RunReport:
        """Submit rows (``ImpactRecord`` or reader rows), then deliver all that is due.

        Deliveries that earlier or concurrent calls left pending are sent too,
        and the report counts them.
        """
        self._check_open()
        if isinstance(rows, (str, bytes, os.PathLike)):
            message = (
                "deliver takes records, not a path; pass read_records(path) to "
                "deliver a file."
            )
            raise TypeError(message)
        self._stop_requested = False
        report = RunReport(run_id=uuid.uuid4().hex)
        token = _kept_records.set(_KeptRecords())
        try:
            self.submit(rows, run_id=report.run_id, report=report)
            await self.process(report, on_done=on_done)
        finally:
            # Deliveries left pending are read from the store next time.
            _kept_records.reset(token)
        return report

    async def resume(self, *, include_future: bool = False) -> RunReport:
        """Deliver what a previous run left pending or in flight."""
        self._check_open()
        self._stop_requested = False
        report = RunReport(run_id=uuid.uuid4().hex)
        await self.process(report, include_future=include_future)
        return report

    async def retry(self, delivery_ids: Iterable[str]) -> RunReport:
        """Replay finished, undelivered deliveries as new ones linked to them."""
        self._check_open()
        if isinstance(delivery_ids, str):
            message = (
                "retry takes a list of delivery ids, not one string; pass "
                f"[{delivery_ids!r}]."
            )
            raise TypeError(message)
        self._stop_requested = False
        report = RunReport(run_id=uuid.uuid4().hex)
        for delivery_id in delivery_ids:
            self.store.replay(delivery_id, run_id=report.run_id, now=self.clock())
        await self.process(report)
        return report

    def close(self) -> None:
        """Close the store and stop reporting this runtime's metrics; repeatable."""
        if self._closed:
            return
        self._closed = True
        self.instruments.unwatch(self)
        self.store.close()

    def _check_open(self) -> None:
        if self._closed:
            message = "This Runtime is closed; create a new Runtime to deliver again."
            raise RuntimeError(message)


async def _within(awaitable: Any, seconds: float, platform: str, hook: str) -> Any:
    """Await a hook's result, for at most ``seconds``.

    A hook that has not finished by then is cancelled and counts as a
    timeout: a ``RetryableError`` that may have reached the platform, so it
    is repeated only where repeating is safe.
    """
    if sys.version_info >= (3, 11):
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if not scope.expired():
                raise
    else:  # pragma: no cover - Python 3.10
        if not inspect.isawaitable(awaitable):
            # Awaiting it raises the TypeError that names the mistake.
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except asyncio.TimeoutError:
            pass
    message = (
        f"The {platform} connector's {hook} did not finish within {seconds:g} s, "
        "so the runtime cancelled it; raise runtime.hook_timeout if the "
        "platform is that slow."
    )
    raise RetryableError(message, platform=platform)


def _retry_after_of(
    exc: RetryableError, platform: str, *, warn: bool = True
) -> float | None:
    """Return the error's ``retry_after``, checked again.

    The constructor checks it, but a connector can set the attribute
    afterwards. A value that is not a number of seconds is ignored, so the
    runtime backs off instead of stopping the run.
    """
    try:
        return checked_retry_after(exc.retry_after)
    except (TypeError, ValueError):
        if warn:
            logger.warning(
                "Ignored the retry_after of a %s error from the %s connector: it "
                "is not a number of seconds",
                type(exc).__name__,
                platform,
            )
        return None


def _secret_forms(secrets: Mapping[str, str]) -> list[str]:
    """Return the configured secrets and their Base64 forms.

    A token request with HTTP Basic authentication sends
    ``base64(id:secret)``, which a connector's error or a library's log line
    can quote, and which no header of the delivery's credentials carries.
    """
    values = list(secrets.values())
    forms = list(values)
    for value in values:
        forms.append(base64.b64encode(value.encode()).decode())
    if len(values) <= 6:
        for first, second in itertools.permutations(values, 2):
            forms.append(base64.b64encode(f"{first}:{second}".encode()).decode())
    return forms


def _credential_values(credentials: Credentials) -> list[str]:
    """Return the secret values of credentials: headers, their parts, password."""
    values = [credentials.password or ""]
    for header in credentials.headers.values():
        values += [header, *header.split()]
    return values


def _check_credential_names(
    info: PlatformInfo, key: str, credentials: Mapping[str, str]
) -> None:
    """Reject a credential name that the platform's connector never reads."""
    if info.credential_names is None:
        return
    for name in sorted(credentials):
        if name not in info.credential_names:
            known = ", ".join(sorted(info.credential_names)) or "none"
            message = (
                f"{key}.credentials.{name} is not a credential the {info.id} "
                f"connector reads (it reads: {known}); rename or remove it."
            )
            raise ConfigError(message, key=f"{key}.credentials.{name}")


def _config_error_of_run(
    errors: dict[tuple[str, str], ConfigError],
    left_pending: collections.Counter[tuple[str, str]],
) -> ConfigError:
    """Return one error that names every setting a run found wrong."""
    for (tenant, platform), error in errors.items():
        logger.error(
            "Left %d deliveries of tenant %s on %s pending: %s",
            left_pending[(tenant, platform)],
            tenant,
            platform,
            error,
        )
    first = next(iter(errors.values()))
    pending = ", ".join(
        f"{count} of tenant {tenant!r} on {platform!r}"
        for (tenant, platform), count in left_pending.items()
    )
    message = (
        f"{first} Deliveries left pending: {pending}. The run went on with the "
        "other deliveries; fix the setting, then run 'impactin resume'."
    )
    if len(errors) > 1:
        message += " The log names every setting at fault."
    error = ConfigError(message, key=first.key)
    error.__cause__ = first
    return error


async def _run_until_first_error(coroutines: list[Awaitable[None]]) -> None:
    """Run the coroutines as tasks; on the first error cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _ConnectorFailure(PermanentError, PluginError):
    """A connector hook that raised a foreign error or returned the wrong type.

    The delivery is dead-lettered (or blocked, before a send) with the error
    kind ``plugin_error``, so one connector bug stops one delivery, not the
    run. A fixed connector sends it again through ``impactin deliveries retry``.
    """

    def __init__(self, message: str, *, platform: str) -> None:
        PermanentError.__init__(self, message, platform=platform)
        self.plugin = platform


def _encodable_fields(
    unstructured: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """Split a record into the fields JSON can encode and the names of the others."""
    encodable: dict[str, Any] = {}
    unencodable: list[str] = []
    for name, value in unstructured.items():
        try:
            canonical_json(value)
        except (TypeError, ValueError, RecursionError):
            unencodable.append(name)
        else:
            encodable[name] = value
    return encodable, unencodable


def _reraise_real_cancellation(exc: BaseException) -> None:
    """Re-raise a CancelledError that comes from cancelling this task.

    A CancelledError while the task is not being cancelled was raised by
    the connector itself. Before Python 3.11 tasks cannot tell, so every
    CancelledError counts as a cancellation there.
    """
    if not isinstance(exc, asyncio.CancelledError):
        return
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    if cancelling is None or cancelling() > 0:
        raise exc


def _connector_failure(
    platform: str, hook: str, exc: BaseException
) -> _ConnectorFailure:
    """Describe ``exc`` by its class and the place it was raised, never its text.

    The text of an arbitrary exception can quote a record, a response or a
    token, so it is kept out of the stored error, the logs and the spans.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" at {Path(last.filename).name}:{last.lineno} in {last.name}()"
    hint = ""
    if hook in ("impactin_send", "impactin_authenticate"):
        hint = (
            " A failed call raises a DeliveryError subclass; raise_for_response "
            "maps an HTTP answer to one."
        )
    if isinstance(exc, TypeError) and "can't be used in 'await'" in str(exc):
        # Raised where the runtime awaits the hook's result, not in the hook.
        where = ""
        hint = f" Define {hook} with async def, so that it returns an awaitable."
    message = (
        f"The {platform} connector's {hook} raised {type(exc).__name__}{where}, "
        f"which is not an impactin error.{hint} Fix the connector, then replay "
        "the delivery with 'impactin deliveries retry'."
    )
    return _ConnectorFailure(message, platform=platform)


def _outcome_name(exc: DeliveryError) -> str:
    if isinstance(exc, _ConnectorFailure):
        return "plugin_error"
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, RetryableError):
        return "retryable"
    if isinstance(exc, AuthenticationError):
        return "authentication"
    return "permanent"
