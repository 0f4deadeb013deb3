"""SOAP sends to the simulator's Staffing endpoint over real HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from lxml import etree  # type: ignore[import-untyped]

from impactin_core import (
    AuthenticationError,
    Credentials,
    PermanentError,
    RetryableError,
)
from impactin_core._models import MAX_AMOUNT_MINOR
from impactin_core.sandbox import FaultPlan
from impactin_workday import WorkdayFaultError, WorkdayOptions
from impactin_workday._sim_soap import password_digest
from impactin_workday._soap import build_envelope, security_token

from .conftest import EMPLOYEE_ID, Harness, fixture_path, make_record

BSVC = "{urn:com.workday/bsvc}"


def entries(harness: Harness) -> list[dict[str, Any]]:
    return harness.sim.journal.snapshot()["entries"]


async def test_send_accepted(harness: Harness) -> None:
    outcome = await harness.send(harness.settings())
    assert outcome.status_code == 200
    assert outcome.response_id
    assert len(entries(harness)) == 1


async def test_send_journals_row(harness: Harness) -> None:
    await harness.send(harness.settings())
    entry = entries(harness)[0]
    assert entry["key"] == "key-1"
    assert entry["employee_id"] == EMPLOYEE_ID
    assert entry["custom_object"] == "Volunteer_Activity"
    assert entry["row"]["Hours"] == "3.5"
    assert entry["effective_date"] == "2026-11-03"


MAX_DONATION = {"kind": "donation", "hours": None, "amount_minor": MAX_AMOUNT_MINOR}


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        pytest.param({"hours": 1e-7}, "Hours", "0.0000001", id="tiny-hours"),
        pytest.param(
            {**MAX_DONATION, "currency": "USD"},
            "Amount",
            "9999999999.99",
            id="max-amount-usd",
        ),
        pytest.param(
            {**MAX_DONATION, "currency": "JPY"},
            "Amount",
            "999999999999",
            id="max-amount-jpy",
        ),
    ],
)
async def test_send_journals_exact_decimal(
    harness: Harness, changes: dict[str, Any], field: str, expected: str
) -> None:
    settings = harness.settings()
    await harness.send(settings, harness.map(settings, make_record(**changes)))
    value = entries(harness)[0]["row"][field]
    assert value == expected
    assert "E" not in value.upper()


async def test_repeat_counts_as_repeat(harness: Harness) -> None:
    settings = harness.settings()
    first = await harness.send(settings)
    second = await harness.send(settings)
    assert second.response_id == first.response_id
    assert harness.sim.journal.snapshot()["repeats"] == {"key-1": 1}


@pytest.mark.parametrize(
    ("options", "password_type"),
    [
        pytest.param({}, "PasswordText", id="text-default"),
        pytest.param({"password_digest": True}, "PasswordDigest", id="digest"),
        pytest.param({"timestamp": True}, "PasswordText", id="text-timestamp"),
        pytest.param(
            {"password_digest": True, "timestamp": True},
            "PasswordDigest",
            id="digest-ts",
        ),
    ],
)
async def test_password_types_accepted(
    harness: Harness, options: dict[str, Any], password_type: str
) -> None:
    await harness.send(harness.settings(**options))
    assert entries(harness)[0]["password_type"] == password_type


def test_digest_matches_published_vector() -> None:
    vector = json.loads(fixture_path("vectors", "published.json").read_text())
    case = vector["wsse_password_digest"]
    nonce = case["nonce_raw_utf8"].encode()
    assert base64.b64encode(nonce).decode() == case["nonce_base64"]
    assert password_digest(nonce, case["created"], case["password"]) == case["digest"]


def _token_xml(options: dict[str, Any], now: dt.datetime) -> Any:
    settings = WorkdayOptions(
        protocol="soap", base_url="http://h", tenant_name="t", **options
    )
    credentials = Credentials(kind="wsse_username_token", username="u@t", password="pw")
    envelope = etree.fromstring(
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>'
    )
    token = security_token(credentials, settings, now=now, nonce="mocked-random")
    envelope, _ = token.apply(envelope, {})
    return envelope


def test_token_default_is_password_text() -> None:
    envelope = _token_xml({}, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    password = envelope.find(".//{*}Password")
    assert password.get("Type").endswith("#PasswordText")
    assert password.text == "pw"
    assert envelope.find(".//{*}Timestamp") is None


def test_token_digest_created_in_utc_z() -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    envelope = _token_xml({"password_digest": True}, now)
    created = envelope.find(".//{*}UsernameToken/{*}Created").text
    assert created == "2026-01-02T03:04:05Z"
    digest = password_digest(b"mocked-random", created, "pw")
    assert envelope.find(".//{*}Password").text == digest


def test_token_timestamp_has_expires() -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    envelope = _token_xml({"timestamp": True, "timestamp_ttl": 60}, now)
    assert envelope.find(".//{*}Timestamp/{*}Created").text == "2026-01-02T03:04:05Z"
    assert envelope.find(".//{*}Timestamp/{*}Expires").text == "2026-01-02T03:05:05Z"


async def test_bad_password_is_authentication_error(harness: Harness) -> None:
    settings = harness.settings(secrets={"password": "wrong"})
    with pytest.raises(AuthenticationError) as caught:
        await harness.send(settings)
    assert "authenticationError" in str(caught.value)
    assert "wrong" not in str(caught.value)


async def test_unknown_worker_is_validation_fault(
    serve: Callable[..., Harness],
) -> None:
    harness = serve(workers={"99999"})
    with pytest.raises(WorkdayFaultError) as caught:
        await harness.send(harness.settings())
    error = caught.value
    assert isinstance(error, PermanentError)
    assert error.fault_code == "SOAP-ENV:Client.validationError"
    assert len(error.validation_errors) == 1
    assert "is not a valid ID value" in error.validation_errors[0].message
    assert "Worker_Reference" in error.validation_errors[0].xpath
    assert EMPLOYEE_ID not in str(error)
    assert EMPLOYEE_ID not in repr(error.validation_errors)


async def test_unknown_custom_object_is_validation_fault(harness: Harness) -> None:
    with pytest.raises(WorkdayFaultError) as caught:
        await harness.send(harness.settings(custom_object="Other_Object"))
    assert "not configured" in caught.value.validation_errors[0].message


async def test_missing_permission_is_processing_fault(
    serve: Callable[..., Harness],
) -> None:
    harness = serve(write_permission=False)
    with pytest.raises(WorkdayFaultError) as caught:
        await harness.send(harness.settings())
    assert caught.value.fault_code == "SOAP-ENV:Server.processingError"
    assert "Processing_Fault" in str(caught.value)


async def test_plain_500_is_retryable(serve: Callable[..., Harness]) -> None:
    harness = serve(plan=FaultPlan(script=["500"]))
    with pytest.raises(RetryableError) as caught:
        await harness.send(harness.settings())
    assert caught.value.status_code == 500


async def test_dropped_connection_is_retryable(serve: Callable[..., Harness]) -> None:
    harness = serve(plan=FaultPlan(script=["drop"]))
    with pytest.raises(RetryableError):
        await harness.send(harness.settings())


async def test_html_404_keeps_status(harness: Harness) -> None:
    with pytest.raises(PermanentError) as caught:
        await harness.send(harness.settings(tenant_name="no_such_tenant"))
    assert caught.value.status_code == 404
    assert "HTML page" in str(caught.value)
    assert "fault" not in str(caught.value).lower()


def _answer(status: int, body: bytes, content_type: str) -> Callable[..., Any]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, content=body, headers={"content-type": content_type}
        )

    return handler


async def _send_with_transport(handler: Callable[..., Any]) -> None:
    """Send through an httpx.MockTransport that stands in for Workday."""
    from impactin_core import SendContext
    from impactin_workday import _plugin

    settings_ = _offline_settings()
    request = _plugin.impactin_map(
        platform=_plugin.PLATFORM,
        records=[make_record()],
        settings=settings_,
        idempotency_keys=["key-1"],
    )[0]
    credentials = Credentials(kind="wsse_username_token", username="u@t", password="pw")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        context = SendContext(client=client, settings=settings_)
        await _plugin.impactin_send(
            platform=_plugin.PLATFORM,
            request=request,
            credentials=credentials,
            context=context,
        )


def _offline_settings() -> Any:
    from impactin_core import PlatformSettings

    return PlatformSettings(
        tenant="acme",
        platform="workday",
        base_url="http://workday.test",
        protocol="soap",
        options={"tenant_name": "acme1"},
    )


_BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>&lol2;</e:Body></e:Envelope>"""
_EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>&x;</e:Body></e:Envelope>"""


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_BILLION_LAUGHS, id="entity-expansion"),
        pytest.param(_EXTERNAL_ENTITY, id="external-entity"),
    ],
)
async def test_dtd_response_rejected(body: bytes) -> None:
    with pytest.raises(PermanentError) as caught:
        await _send_with_transport(_answer(200, body, "text/xml"))
    assert "DTD" in str(caught.value)
    assert "root:" not in str(caught.value)


async def test_html_401_is_authentication_error() -> None:
    page = b"<html><body>Unauthorized</body></html>"
    with pytest.raises(AuthenticationError) as caught:
        await _send_with_transport(_answer(401, page, "text/html"))
    assert caught.value.status_code == 401


async def test_version_attribute_matches_url(harness: Harness) -> None:
    await harness.send(harness.settings(version="v40.2"))
    entry = entries(harness)[0]
    assert entry["version"] == "v40.2"


async def test_version_mismatch_rejected(harness: Harness) -> None:
    """The simulator compares bsvc:version with the version in the URL."""
    settings = harness.settings()
    request = harness.map(settings)
    envelope = await _rendered_envelope(settings, request.payload, version="v26.1")
    envelope.find(f".//{BSVC}Edit_Worker_Additional_Data_Request").set(
        f"{BSVC}version", "v25.0"
    )
    body = etree.tostring(envelope)
    url = f"{harness.url}/ccx/service/impactin_sandbox/Staffing/v26.1"
    async with httpx.AsyncClient() as client:
        response = await client.post(url, content=body)
    assert response.status_code == 500
    assert b"does not match the endpoint version" in response.content


async def _rendered_envelope(
    settings: Any, payload: dict[str, Any], version: str
) -> Any:
    from impactin_workday._soap import _client_for

    options = WorkdayOptions.from_settings(settings)
    client, service = await _client_for(options, "acme")
    envelope = build_envelope(client, service, payload, version)
    credentials = Credentials(
        kind="wsse_username_token",
        username=settings.secrets["username"],
        password=settings.secrets["password"],
    )
    envelope, _ = security_token(credentials, options).apply(envelope, {})
    return envelope


async def test_wsdl_served_and_loadable(harness: Harness) -> None:
    """The connector can load its WSDL from the simulator's ?wsdl URL."""
    wsdl = f"{harness.url}/ccx/service/impactin_sandbox/Staffing/v26.1?wsdl"
    outcome = await harness.send(harness.settings(wsdl=wsdl))
    assert outcome.status_code == 200


async def test_envelope_valid_against_real_wsdl(harness: Harness) -> None:
    """The body the connector renders is valid under Workday's published schema."""
    staffing = fixture_path("workday", "Staffing.wsdl")
    settings = harness.settings()
    request = harness.map(settings)
    envelope = await _rendered_envelope(settings, request.payload, version="v26.1")
    body = envelope.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")[0]
    schema_element = etree.parse(str(staffing)).find(
        ".//{http://www.w3.org/2001/XMLSchema}schema"
    )
    schema = etree.XMLSchema(schema_element)
    valid = schema.validate(etree.fromstring(etree.tostring(body)))
    assert valid, str(schema.error_log)


async def test_envelope_same_as_real_wsdl_render(harness: Harness) -> None:
    """zeep renders the same body from the published WSDL as from the bundled one."""
    staffing = fixture_path("workday", "Staffing.wsdl")
    settings = harness.settings()
    request = harness.map(settings)
    ours = await _rendered_envelope(settings, request.payload, version="v26.1")
    real_settings = harness.settings(wsdl=str(staffing))
    theirs = await _rendered_envelope(real_settings, request.payload, version="v26.1")
    body = "{http://schemas.xmlsoap.org/soap/envelope/}Body"
    assert etree.tostring(ours.find(body), method="c14n") == etree.tostring(
        theirs.find(body), method="c14n"
    )


def test_real_schema_rejects_broken_body() -> None:
    """The real-schema check can fail: a body without Effective_Date is invalid."""
    staffing = fixture_path("workday", "Staffing.wsdl")
    schema = etree.XMLSchema(
        etree.parse(str(staffing)).find(".//{http://www.w3.org/2001/XMLSchema}schema")
    )
    body = etree.fromstring(
        b'<wd:Edit_Worker_Additional_Data_Request xmlns:wd="urn:com.workday/bsvc">'
        b"<wd:Worker_Custom_Object_Data><wd:Worker_Reference/>"
        b"<wd:Business_Object_Additional_Data/></wd:Worker_Custom_Object_Data>"
        b"</wd:Edit_Worker_Additional_Data_Request>"
    )
    assert not schema.validate(body)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"password_digest": True}, id="digest"),
        pytest.param({"timestamp": True}, id="timestamp"),
        pytest.param({"password_digest": True, "timestamp": True}, id="both"),
    ],
)
def test_created_converted_to_utc(options: dict[str, Any]) -> None:
    """A local time two hours ahead of UTC is written as the UTC instant."""
    local = dt.timezone(dt.timedelta(hours=2))
    now = dt.datetime(2026, 1, 2, 5, 4, 5, tzinfo=local)
    envelope = _token_xml(options, now)
    created = [element.text for element in envelope.iter("{*}Created")]
    assert created
    assert set(created) == {"2026-01-02T03:04:05Z"}
