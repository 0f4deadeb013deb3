"""SOAP send: ``Edit_Worker_Additional_Data`` through zeep over the runtime's client.

zeep and lxml are imported inside the functions here, so loading the plugin
stays cheap and only a SOAP send pays for them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from impactin_core import (
    AuthenticationError,
    ConfigError,
    Credentials,
    PermanentError,
    PlatformRequest,
    RateLimited,
    RetryableError,
    SendContext,
    SendOutcome,
    parse_retry_after,
    request_with_mapping,
)

from ._faults import classify_http_failure, classify_soap_fault, is_xml
from ._options import PLATFORM_ID, WorkdayOptions
from ._same_date import SameDateLedger, slot_digest
from ._wsdl_cache import WsdlDocumentCache, is_url

if TYPE_CHECKING:
    from zeep.transports import AsyncTransport

__all__ = [
    "BSVC_NS",
    "CUSTOM_DATA_NS",
    "STAFFING_BINDING",
    "SameDateConflict",
    "build_envelope",
    "bundled_wsdl",
    "security_token",
    "send_soap",
    "zeep_settings",
]

BSVC_NS = "urn:com.workday/bsvc"
CUSTOM_DATA_NS = "urn:com.workday/tenants/super/data/custom"
STAFFING_BINDING = "{urn:com.workday/bsvc/Staffing}StaffingBinding"
_OPERATION = "Edit_Worker_Additional_Data"
logger = logging.getLogger("impactin.workday")

_SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}

# Parsed WSDLs with their service proxy, per (WSDL source, endpoint). A zeep
# Client contains no connection and no credentials, so tenants with the same
# WSDL and endpoint share one.
_clients: dict[tuple[str, str], tuple[Any, Any]] = {}
_clients_lock = threading.Lock()


class SameDateConflict(PermanentError):
    """Another row already occupies the worker's custom object entry for the date."""


def bundled_wsdl() -> str:
    """Return the path of the minimal Staffing WSDL shipped with the package."""
    return str(resources.files("impactin_workday").joinpath("data/Staffing.wsdl"))


def zeep_settings() -> Any:
    """Return zeep settings that reject DTDs, entities and external fetches."""
    from zeep.settings import Settings

    return Settings(
        strict=True,
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
        xml_huge_tree=False,
    )


def _load_client(
    wsdl: str, endpoint: str, cache: WsdlDocumentCache | None
) -> tuple[Any, Any]:
    import zeep

    with _clients_lock:
        cached = _clients.get((wsdl, endpoint))
        if cached is not None:
            return cached
        started = time.perf_counter()
        client, origin = None, "the full WSDL"
        compiled = cache.compiled(wsdl, _OPERATION) if cache is not None else None
        if compiled is not None:
            client = _client_from_copy(compiled)
        if client is not None:
            origin = "the reduced copy cached on disk"
        if client is None:
            from zeep.transports import Transport

            # This transport only reads the WSDL and its schemas; sends go
            # through the runtime's client. Its timeout is in seconds.
            loader = Transport(timeout=30, cache=cache)  # type: ignore[no-untyped-call]
            client = zeep.Client(wsdl, transport=loader, settings=zeep_settings())  # type: ignore[no-untyped-call]
            if cache is not None:
                _cache_reduced_copy(client, wsdl, cache)
        service = client.create_service(STAFFING_BINDING, endpoint)
        _clients[(wsdl, endpoint)] = (client, service)
        logger.debug(
            "Built the Workday SOAP client from %s (%s) in %.3f s",
            wsdl,
            origin,
            time.perf_counter() - started,
        )
        return client, service


def _client_from_copy(path: Path) -> Any:
    """Build a client from a reduced copy, or return None and delete a bad copy."""
    import zeep

    try:
        client = zeep.Client(str(path), settings=zeep_settings())  # type: ignore[no-untyped-call]
        # A copy can be well-formed XML and still lack the operation, so it
        # must render the probe envelope before it is used.
        _probe_envelope(client)
    except Exception as exc:
        logger.warning(
            "Ignored and deleted the damaged cached WSDL copy %s (%s)",
            path.name,
            type(exc).__name__,
        )
        path.unlink(missing_ok=True)
        return None
    return client


def _cache_reduced_copy(client: Any, wsdl: str, cache: WsdlDocumentCache) -> None:
    """Store a reduced copy of ``wsdl`` after checking it renders the same envelope."""
    from lxml import etree  # type: ignore[import-untyped]

    from ._wsdl_prune import PruneError, prune_wsdl

    if cache.ttl <= 0:
        return
    try:
        # A fetched WSDL was just stored in the cache; reading it from there
        # costs no second download.
        document = cache.get(wsdl) if is_url(wsdl) else Path(wsdl).read_bytes()
        if document is None:
            return
        reduced = prune_wsdl(document, STAFFING_BINDING, _OPERATION)
    except (OSError, ValueError, etree.Error) as exc:
        # PruneError is a ValueError: the document is not self-contained.
        reason = str(exc) if isinstance(exc, PruneError) else type(exc).__name__
        logger.debug("Kept no reduced copy of %s: %s", wsdl, reason)
        return
    with tempfile.TemporaryDirectory() as folder:
        trial = Path(folder) / "reduced.wsdl"
        trial.write_bytes(reduced)
        copy = _client_from_copy(trial)
        if copy is None or _probe_envelope(copy) != _probe_envelope(client):
            logger.debug("Kept no reduced copy of %s: it renders differently", wsdl)
            return
    cache.add_compiled(wsdl, _OPERATION, reduced)


def _probe_envelope(client: Any) -> bytes:
    from lxml import etree  # type: ignore[import-untyped]

    service = client.create_service(STAFFING_BINDING, "http://127.0.0.1/probe")
    payload = {
        "employee_id": "probe",
        "effective_date": "2000-01-01",
        "custom_object": "Probe",
        "row": {"Field": "value"},
    }
    return bytes(etree.tostring(build_envelope(client, service, payload, "v0")))


async def _client_for(
    options: WorkdayOptions, tenant: str, cache_dir: Path | None = None
) -> tuple[Any, Any]:
    """Return the zeep client and service proxy for the tenant's WSDL and endpoint.

    With ``cache_dir``, documents fetched over HTTP, and a copy of the WSDL
    reduced to the one operation sent, are kept there for ``wsdl_cache_ttl``
    seconds, so the next process neither fetches nor parses the full WSDL.
    """
    wsdl = options.wsdl or bundled_wsdl()
    endpoint = options.soap_endpoint
    cached = _clients.get((wsdl, endpoint))
    if cached is not None:
        return cached
    from zeep.exceptions import Error as ZeepError

    cache = None
    if cache_dir is not None:
        cache = WsdlDocumentCache(cache_dir / "workday-wsdl", options.wsdl_cache_ttl)
    try:
        # Parsing a WSDL is blocking work (and a download for a URL).
        return await asyncio.to_thread(_load_client, wsdl, endpoint, cache)
    except (OSError, ZeepError, ValueError) as exc:
        raise _wsdl_load_error(exc, wsdl, tenant, cache) from exc


def _wsdl_load_error(
    exc: Exception, wsdl: str, tenant: str, cache: WsdlDocumentCache | None
) -> Exception:
    """Return the error for a WSDL that did not load: retryable or a setting.

    A download that failed, or a downloaded page that is not a WSDL (a proxy's
    error page), may succeed later, so nothing was sent and the delivery is
    retried. Such a page is dropped from the disk cache first. A local file
    that is missing or unusable is a setting to fix, so the run stops.
    """
    import requests

    name = type(exc).__name__
    status = None
    retry_after = None
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        retry_after = parse_retry_after(
            exc.response.headers.get("Retry-After"), time.time()
        )
    found = f"HTTP {status}" if status is not None else name
    if is_url(wsdl) and (status is None or status >= 500 or status in (408, 429)):
        if cache is not None:
            cache.discard(wsdl)
        message = f"Could not load the Workday WSDL from its URL ({found}); retrying."
        # The download is a GET that changes nothing, so no status makes a
        # repeat unsafe.
        error = RateLimited if status == 429 else RetryableError
        return error(
            message,
            platform=PLATFORM_ID,
            tenant=tenant,
            sent=False,
            retry_after=retry_after,
            status_code=status,
        )
    key = f"tenants.{tenant}.platforms.{PLATFORM_ID}.options.wsdl"
    # A URL may carry a query, so only a local path is quoted.
    where = "" if is_url(wsdl) else f" {wsdl!r}"
    message = (
        f"Could not load the Workday WSDL{where} ({found}); check {key}, which "
        "takes an absolute path or the URL of the Staffing WSDL."
    )
    return ConfigError(message, key=key)


def _custom_row(payload: dict[str, Any]) -> Any:
    from lxml import etree  # type: ignore[import-untyped]

    name = payload["custom_object"]
    row = etree.Element(f"{{{CUSTOM_DATA_NS}}}{name}", nsmap={"cus": CUSTOM_DATA_NS})
    for field, value in payload["row"].items():
        etree.SubElement(row, f"{{{CUSTOM_DATA_NS}}}{field}").text = value
    return row


def build_envelope(
    client: Any, service: Any, payload: dict[str, Any], version: str
) -> Any:
    """Render the ``Edit_Worker_Additional_Data_Request`` envelope, unsigned."""
    worker_id = {"_value_1": payload["employee_id"], "type": "Employee_ID"}
    data = {
        "Effective_Date": payload["effective_date"],
        "Worker_Reference": {"ID": [worker_id]},
        "Business_Object_Additional_Data": {"_value_1": [_custom_row(payload)]},
    }
    return client.create_message(
        service,
        "Edit_Worker_Additional_Data",
        version=version,
        Worker_Custom_Object_Data=data,
    )


def _utc_z(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def security_token(
    credentials: Credentials,
    options: WorkdayOptions,
    now: dt.datetime | None = None,
    nonce: str | None = None,
) -> Any:
    """Build the WS-Security UsernameToken for one send.

    PasswordText without a Timestamp is what Workday's public examples use.
    PasswordDigest and ``wsu:Timestamp`` are options because Workday does not
    document whether it accepts them. Times are UTC with a ``Z`` suffix.
    """
    from zeep.wsse import utils
    from zeep.wsse.username import UsernameToken

    # zeep 4.3 relabels the Created time as UTC without converting it, so the
    # time is converted here first.
    created = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    timestamp = None
    if options.timestamp:
        expires = created + dt.timedelta(seconds=options.timestamp_ttl)
        timestamp = utils.WSU.Timestamp(
            utils.WSU.Created(_utc_z(created)),
            utils.WSU.Expires(_utc_z(expires)),
        )
    return UsernameToken(  # type: ignore[no-untyped-call]
        credentials.username,
        credentials.password,
        use_digest=options.password_digest,
        nonce=nonce,
        created=created,
        timestamp_token=timestamp,
        zulu_timestamp=True,
    )


def _runtime_transport(client: httpx.AsyncClient) -> AsyncTransport:
    from zeep.transports import AsyncTransport

    class RuntimeTransport(AsyncTransport):  # type: ignore[misc]
        """zeep's AsyncTransport over the runtime's client, without its side effects.

        zeep 4.3.3's ``AsyncTransport.__init__`` replaces ``client.headers``
        with its own User-Agent and opens a second, synchronous client, and
        its ``post`` logs the whole message at DEBUG, password included. This
        subclass keeps the runtime's headers, opens nothing and logs nothing.
        """

        def __init__(self, client: httpx.AsyncClient) -> None:
            self.client = client
            self.wsdl_client = None
            self.cache = None
            self._close_session = False

        async def post(
            self, address: str, message: bytes, headers: dict[str, str]
        ) -> httpx.Response:
            return await self.client.post(address, content=message, headers=headers)

    return RuntimeTransport(client)


async def send_soap(
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
    options: WorkdayOptions,
) -> SendOutcome:
    """Send one ``Edit_Worker_Additional_Data`` request and classify the response."""
    guard = _claim_same_date_slot(request, credentials, context, options)
    try:
        outcome = await _send_envelope(request, credentials, context, options)
    except (PermanentError, AuthenticationError):
        # Workday rejected the write, so the slot is free for another row.
        if guard is not None:
            guard[0].release(guard[1], guard[2])
        raise
    return outcome


def _claim_same_date_slot(
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
    options: WorkdayOptions,
) -> tuple[SameDateLedger, str, str] | None:
    """Claim the worker's custom object slot for the date, or raise a conflict.

    Returns None when the guard is off or the runtime gives no cache folder.
    """
    if not options.same_date_guard or context.cache_dir is None:
        return None
    payload = request.payload
    row_id = payload["row"][options.field_names["row_id"]]
    ledger = SameDateLedger(context.cache_dir / "workday-same-date.sqlite")
    # The password keys the digest, so the ledger contains no Employee_ID.
    # NOTE: a new password starts a new ledger, so conflicts with rows written
    # before a password change are not detected.
    slot = slot_digest(
        (credentials.password or "").encode("utf-8"),
        options.tenant_name,
        payload["custom_object"],
        payload["employee_id"],
        payload["effective_date"],
    )
    try:
        holder = ledger.claim(slot, row_id)
    except (OSError, sqlite3.Error) as exc:
        key = (
            f"tenants.{request.tenant}.platforms.{PLATFORM_ID}.options.same_date_guard"
        )
        message = (
            f"Could not open the Workday same-date ledger {str(ledger.path)!r} "
            f"({type(exc).__name__}: {exc}); make its folder writable, or set "
            f"{key} = false to send without the check."
        )
        raise ConfigError(message, key=key) from exc
    if holder != row_id:
        message = (
            f"Workday keeps one {payload['custom_object']} entry per worker and "
            f"effective date, and row {holder} already holds this worker's entry "
            f"for {payload['effective_date']}; Edit_Worker_Additional_Data would "
            f"replace it with row {row_id}, so the record was not sent. Combine "
            "the activities at the source, or set the option same_date_guard = "
            "false to let the later row replace the earlier one."
        )
        raise SameDateConflict(
            message, platform=PLATFORM_ID, tenant=request.tenant, status_code=None
        )
    return ledger, slot, row_id


async def _send_envelope(
    request: PlatformRequest,
    credentials: Credentials,
    context: SendContext,
    options: WorkdayOptions,
) -> SendOutcome:
    from lxml import etree  # type: ignore[import-untyped]

    tenant = request.tenant
    client, service = await _client_for(options, tenant, context.cache_dir)
    envelope = build_envelope(client, service, request.payload, options.version)
    headers = dict(_SOAP_HEADERS)
    envelope, headers = security_token(credentials, options).apply(envelope, headers)
    transport = _runtime_transport(context.client)
    body = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    response = await request_with_mapping(
        lambda: transport.post(options.soap_endpoint, body, headers),  # type: ignore[no-untyped-call]
        platform=PLATFORM_ID,
        tenant=tenant,
    )
    known = [request.payload["employee_id"]]
    if not is_xml(response):
        # Throttling can arrive as a plain HTTP 500 with no SOAP body, and
        # missing pages as HTML; both keep their HTTP status.
        classify_http_failure(response, tenant=tenant, known=known)
    return _process_reply(client, service, transport, response, tenant, known)


def _process_reply(
    client: Any,
    service: Any,
    transport: AsyncTransport,
    response: httpx.Response,
    tenant: str,
    known: list[str],
) -> SendOutcome:
    from zeep.exceptions import Error as ZeepError
    from zeep.exceptions import Fault

    binding = service._binding
    operation = binding.get("Edit_Worker_Additional_Data")
    try:
        result = binding.process_reply(
            client,
            operation,
            transport.new_response(response),  # type: ignore[no-untyped-call]
        )
    except Fault as fault:
        classify_soap_fault(fault, response.status_code, tenant=tenant, known=known)
    except ZeepError as exc:
        # zeep's message can quote the response body, so only the class name
        # goes into the error, and the original is not chained.
        message = (
            f"Workday answered HTTP {response.status_code} with XML that was "
            f"rejected ({type(exc).__name__}); a SOAP envelope without a DTD or "
            "entity declarations was expected."
        )
        raise PermanentError(
            message,
            platform=PLATFORM_ID,
            tenant=tenant,
            status_code=response.status_code,
        ) from None
    return SendOutcome(status_code=response.status_code, response_id=_event_id(result))


def _event_id(result: Any) -> str | None:
    reference = getattr(result, "Event_Reference", None)
    for identifier in getattr(reference, "ID", None) or []:
        if identifier.type == "WID":
            return str(identifier._value_1)
    return None
