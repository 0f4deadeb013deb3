"""Workday's published WSDLs, the WSDL disk cache, the digest vector and logs."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree  # type: ignore[import-untyped]

from impactin_core import ConfigError, DeliveryError
from impactin_workday import WorkdayOptions
from impactin_workday._soap import _clients, zeep_settings
from impactin_workday._wsdl_cache import WsdlDocumentCache

from .conftest import EMPLOYEE_ID, Harness, fixture_path, make_record

BSVC = "{urn:com.workday/bsvc}"
SOAP_BODY = "{http://schemas.xmlsoap.org/soap/envelope/}Body"
HR_BINDING = "{urn:com.workday/bsvc/Human_Resources}Human_ResourcesBinding"
#: An Employee_ID that cannot occur by chance in a log line (unlike a port).
PERSONAL_ID = "EMP-7731-ZX"
HR_ENDPOINT = "http://127.0.0.1:9/ccx/service/acme1/Human_Resources/v26.1"


def schema_of(wsdl: Path) -> Any:
    element = etree.parse(str(wsdl)).find(".//{http://www.w3.org/2001/XMLSchema}schema")
    return etree.XMLSchema(element)


@pytest.fixture(scope="module")
def human_resources() -> tuple[Any, Any, Any]:
    import zeep

    wsdl = fixture_path("workday", "Human_Resources_v26.1.wsdl")
    client = zeep.Client(str(wsdl), settings=zeep_settings())  # type: ignore[no-untyped-call]
    service = client.create_service(HR_BINDING, HR_ENDPOINT)  # type: ignore[no-untyped-call]
    return client, service, schema_of(wsdl)


def get_workers_body(client: Any, service: Any, employee_id: str) -> Any:
    worker = {"ID": [{"_value_1": employee_id, "type": "Employee_ID"}]}
    envelope = client.create_message(
        service,
        "Get_Workers",
        version="v26.1",
        Request_References={"Worker_Reference": [worker]},
    )
    return etree.fromstring(etree.tostring(envelope.find(SOAP_BODY)[0]))


def test_get_workers_valid_under_hr_schema(
    human_resources: tuple[Any, Any, Any],
) -> None:
    client, service, schema = human_resources
    body = get_workers_body(client, service, EMPLOYEE_ID)
    assert schema.validate(body), str(schema.error_log)


def test_get_workers_carries_version(
    human_resources: tuple[Any, Any, Any],
) -> None:
    client, service, _ = human_resources
    body = get_workers_body(client, service, EMPLOYEE_ID)
    assert body.tag == f"{BSVC}Get_Workers_Request"
    assert body.get(f"{BSVC}version") == "v26.1"
    assert body.findtext(f".//{BSVC}Worker_Reference/{BSVC}ID") == EMPLOYEE_ID


def test_hr_schema_rejects_unknown_element(
    human_resources: tuple[Any, Any, Any],
) -> None:
    """The check can fail: an element the schema does not define is invalid."""
    client, service, schema = human_resources
    body = get_workers_body(client, service, EMPLOYEE_ID)
    etree.SubElement(body, f"{BSVC}Not_A_Workday_Element").text = "x"
    assert not schema.validate(body)


async def test_staffing_wsdl_builds_edit_request(harness: Harness) -> None:
    """The published Staffing WSDL, loaded from a path, renders a valid request."""
    from impactin_workday._options import WorkdayOptions
    from impactin_workday._soap import _client_for, build_envelope

    staffing = fixture_path("workday", "Staffing.wsdl")
    settings = harness.settings(wsdl=str(staffing))
    request = harness.map(settings)
    options = WorkdayOptions.from_settings(settings)
    client, service = await _client_for(options, "acme")
    envelope = build_envelope(client, service, request.payload, "v26.1")
    body = etree.fromstring(etree.tostring(envelope.find(SOAP_BODY)[0]))
    schema = schema_of(staffing)
    assert schema.validate(body), str(schema.error_log)
    assert body.get(f"{BSVC}version") == "v26.1"


def test_zeep_reproduces_published_digest() -> None:
    """zeep's UsernameToken, which the connector uses, matches the published vector."""
    from zeep.wsse.username import UsernameToken

    vector = json.loads(fixture_path("vectors", "published.json").read_text())
    case = vector["wsse_password_digest"]
    created = dt.datetime.fromisoformat(case["created"])
    token = UsernameToken(  # type: ignore[no-untyped-call]
        "michael",
        case["password"],
        use_digest=True,
        nonce=case["nonce_raw_utf8"],
        created=created,
    )
    envelope = etree.fromstring(
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<e:Header/><e:Body/></e:Envelope>"
    )
    envelope, _ = token.apply(envelope, {})  # type: ignore[no-untyped-call]
    assert envelope.find(".//{*}Password").text == case["digest"]
    assert envelope.find(".//{*}Nonce").text == case["nonce_base64"]
    assert envelope.find(".//{*}UsernameToken/{*}Created").text == case["created"]


# -- the WSDL document cache -----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


URL = "http://127.0.0.1:9/ccx/service/t/Staffing/v26.1?wsdl"


def test_cache_returns_stored_document(tmp_path: Path) -> None:
    cache = WsdlDocumentCache(tmp_path, ttl=60)
    cache.add(URL, b"<definitions/>")
    assert cache.get(URL) == b"<definitions/>"


def test_cache_expires_after_ttl(tmp_path: Path) -> None:
    clock = Clock()
    cache = WsdlDocumentCache(tmp_path, ttl=60, clock=clock)
    cache.add(URL, b"<definitions/>")
    written = next(tmp_path.iterdir()).stat().st_mtime
    clock.now = written + 59
    assert cache.get(URL) == b"<definitions/>"
    clock.now = written + 60
    assert cache.get(URL) is None


def test_cache_ignores_local_paths(tmp_path: Path) -> None:
    cache = WsdlDocumentCache(tmp_path / "cache", ttl=60)
    cache.add("/srv/Staffing.wsdl", b"<definitions/>")
    assert cache.get("/srv/Staffing.wsdl") is None
    assert not (tmp_path / "cache").exists()


def test_cache_files_named_by_hash(tmp_path: Path) -> None:
    cache = WsdlDocumentCache(tmp_path, ttl=60)
    cache.add(URL, b"<definitions/>")
    names = [path.name for path in tmp_path.iterdir()]
    assert len(names) == 1
    assert "Staffing" not in names[0]


# -- logs --------------------------------------------------------------------------


async def test_build_time_logged_at_debug(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    wsdl = f"{harness.url}/ccx/service/impactin_sandbox/Staffing/v26.1?wsdl"
    _clients.clear()
    with caplog.at_level(logging.DEBUG, logger="impactin.workday"):
        await harness.send(harness.settings(wsdl=wsdl))
    (record,) = [r for r in caplog.records if "Built the Workday SOAP" in r.message]
    assert record.levelno == logging.DEBUG
    assert " s" in record.getMessage()


@pytest.mark.parametrize(
    ("arguments", "options"),
    [
        pytest.param({"workers": {"99999"}}, {}, id="validation-fault"),
        pytest.param({"write_permission": False}, {}, id="processing-fault"),
        pytest.param(
            {}, {"secrets": {"password": "wrong-password-5e1"}}, id="auth-fault"
        ),
    ],
)
async def test_no_employee_id_in_logs(
    serve: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
    arguments: dict[str, Any],
    options: dict[str, Any],
) -> None:
    harness = serve(**arguments)
    settings = harness.settings(**options)
    request = harness.map(settings, make_record(employee_id=PERSONAL_ID))
    with caplog.at_level(logging.DEBUG), pytest.raises(DeliveryError) as caught:
        await harness.send(settings, request)
    assert PERSONAL_ID not in caplog.text
    assert PERSONAL_ID not in str(caught.value)
    assert "wrong-password-5e1" not in caplog.text


async def test_missing_wsdl_is_config_error(harness: Harness, tmp_path: Path) -> None:
    """A missing local WSDL is a setting to fix, so the run stops."""
    missing = tmp_path / "absent.wsdl"
    with pytest.raises(ConfigError) as caught:
        await harness.send(harness.settings(wsdl=str(missing)))
    assert caught.value.key == "tenants.acme.platforms.workday.options.wsdl"
    assert "FileNotFoundError" in str(caught.value)
    assert repr(str(missing)) in str(caught.value)


def test_relative_wsdl_rejected(harness: Harness) -> None:
    with pytest.raises(ConfigError) as caught:
        WorkdayOptions.from_settings(harness.settings(wsdl="Staffing.wsdl"))
    assert caught.value.key == "tenants.acme.platforms.workday.options.wsdl"
    assert "absolute path" in str(caught.value)


async def test_wsdl_download_throttled_keeps_retry_after(harness: Harness) -> None:
    """A 429 on the WSDL download waits for the Retry-After that Workday sends."""
    from impactin_core import RateLimited

    wsdl = f"{harness.url}/ccx/service/impactin_sandbox/Staffing/v26.1?wsdl"
    _clients.clear()
    plan = {"script": ["429"], "retry_after": "7"}
    assert httpx.put(f"{harness.url}/_sandbox/faults", json=plan).status_code == 200
    with pytest.raises(RateLimited) as caught:
        await harness.send(harness.settings(wsdl=wsdl))
    error = caught.value
    assert (error.retry_after, error.status_code, error.sent) == (7.0, 429, False)
    assert "(HTTP 429)" in str(error)
    _clients.clear()


async def test_wsdl_download_failure_retryable(harness: Harness) -> None:
    """A 503 on the WSDL download sends nothing, so the delivery is retried."""
    from impactin_core import RetryableError

    wsdl = f"{harness.url}/ccx/service/impactin_sandbox/Staffing/v26.1?wsdl"
    _clients.clear()
    faults = httpx.put(f"{harness.url}/_sandbox/faults", json={"script": ["503"]})
    assert faults.status_code == 200
    with pytest.raises(RetryableError) as caught:
        await harness.send(harness.settings(wsdl=wsdl))
    assert caught.value.sent is False
    _clients.clear()
    outcome = await harness.send(harness.settings(wsdl=wsdl))
    assert outcome.status_code == 200
