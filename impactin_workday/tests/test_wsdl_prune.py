"""The reduced WSDL copy: same envelopes and replies, and reuse by a new process."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from lxml import etree  # type: ignore[import-untyped]

from impactin_workday._soap import (
    STAFFING_BINDING,
    _clients,
    _load_client,
    build_envelope,
    bundled_wsdl,
    zeep_settings,
)
from impactin_workday._wsdl_cache import WsdlDocumentCache
from impactin_workday._wsdl_prune import PruneError, prune_wsdl

from .conftest import fixture_path

OPERATION = "Edit_Worker_Additional_Data"
HR_BINDING = "{urn:com.workday/bsvc/Human_Resources}Human_ResourcesBinding"
ENDPOINT = "http://127.0.0.1:9/ccx/service/acme1/Staffing/v26.1"
PAYLOAD = {
    "employee_id": "21001",
    "effective_date": "2026-03-14",
    "custom_object": "Volunteer_Activity",
    "row": {"Hours": "2.5", "Organization": "Food Bank"},
}
SUCCESS_REPLY = b"""<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/">
  <env:Body>
    <wd:Edit_Worker_Additional_Data_Response xmlns:wd="urn:com.workday/bsvc"
        wd:version="v26.1">
      <wd:Event_Reference>
        <wd:ID wd:type="WID">0f4c1e2d3b5a</wd:ID>
      </wd:Event_Reference>
      <wd:Effective_Date>2026-03-14</wd:Effective_Date>
    </wd:Edit_Worker_Additional_Data_Response>
  </env:Body>
</env:Envelope>
"""


def client_of(path: Path) -> Any:
    import zeep

    return zeep.Client(str(path), settings=zeep_settings())  # type: ignore[no-untyped-call]


def staffing_envelope(client: Any) -> bytes:
    service = client.create_service(STAFFING_BINDING, ENDPOINT)
    envelope = build_envelope(client, service, PAYLOAD, "v26.1")
    return bytes(etree.tostring(envelope))


def parsed_reply(client: Any) -> Any:
    import httpx
    from zeep.helpers import serialize_object

    operation = client.service._binding.get(OPERATION)
    response = httpx.Response(200, content=SUCCESS_REPLY)
    result = client.service._binding.process_reply(client, operation, response)
    return serialize_object(result)


def reduce_to(tmp_path: Path, source: Path, binding: str, operation: str) -> Path:
    reduced = tmp_path / "reduced.wsdl"
    reduced.write_bytes(prune_wsdl(source.read_bytes(), binding, operation))
    return reduced


@pytest.mark.parametrize("published", [True, False], ids=["published", "bundled"])
def test_reduced_staffing_renders_same_envelope(
    tmp_path: Path, published: bool
) -> None:
    source = (
        fixture_path("workday", "Staffing.wsdl") if published else Path(bundled_wsdl())
    )
    reduced = reduce_to(tmp_path, source, STAFFING_BINDING, OPERATION)
    full, small = client_of(source), client_of(reduced)
    assert staffing_envelope(small) == staffing_envelope(full)
    assert parsed_reply(small) == parsed_reply(full)
    assert parsed_reply(small)["Event_Reference"]["ID"][0]["_value_1"] == "0f4c1e2d3b5a"


def test_reduced_staffing_is_small_and_keeps_faults(tmp_path: Path) -> None:
    source = fixture_path("workday", "Staffing.wsdl")
    reduced = reduce_to(tmp_path, source, STAFFING_BINDING, OPERATION)
    assert reduced.stat().st_size < source.stat().st_size / 20
    client = client_of(reduced)
    operation = client.wsdl.bindings[STAFFING_BINDING].get(OPERATION)
    assert set(operation.faults) == {"Validation_Fault", "Processing_Fault"}
    port_type = next(iter(client.wsdl.port_types.values()))
    assert list(port_type.operations) == [OPERATION]


def test_reduced_hr_copy_renders_same_get_workers(tmp_path: Path) -> None:
    """The reduction is general: the Human Resources WSDL's Get_Workers too."""
    source = fixture_path("workday", "Human_Resources_v26.1.wsdl")
    reduced = reduce_to(tmp_path, source, HR_BINDING, "Get_Workers")
    bodies = []
    for client in (client_of(source), client_of(reduced)):
        service = client.create_service(HR_BINDING, ENDPOINT)
        worker = {"ID": [{"_value_1": "21001", "type": "Employee_ID"}]}
        envelope = client.create_message(
            service,
            "Get_Workers",
            version="v26.1",
            Request_References={"Worker_Reference": [worker]},
        )
        bodies.append(etree.tostring(envelope))
    assert bodies[0] == bodies[1]


def test_prune_rejects_imports() -> None:
    document = (
        Path(bundled_wsdl())
        .read_bytes()
        .replace(
            b"<wsdl:types>",
            b'<wsdl:import namespace="urn:other" location="other.wsdl"/><wsdl:types>',
            1,
        )
    )
    with pytest.raises(PruneError, match="import"):
        prune_wsdl(document, STAFFING_BINDING, OPERATION)


def test_prune_rejects_unknown_operation() -> None:
    document = Path(bundled_wsdl()).read_bytes()
    with pytest.raises(PruneError, match="Get_Workers"):
        prune_wsdl(document, STAFFING_BINDING, "Get_Workers")


def test_prune_rejects_missing_type() -> None:
    document = (
        Path(bundled_wsdl())
        .read_bytes()
        .replace(b'name="WorkerObjectType"', b'name="RenamedObjectType"', 1)
    )
    with pytest.raises(PruneError, match="WorkerObjectType"):
        prune_wsdl(document, STAFFING_BINDING, OPERATION)


def test_prune_rejects_dtd() -> None:
    document = Path(bundled_wsdl()).read_bytes()
    head, _, rest = document.partition(b"?>")
    with pytest.raises(PruneError, match="DTD"):
        document = head + b"?><!DOCTYPE definitions []>" + rest
        prune_wsdl(document, STAFFING_BINDING, OPERATION)


# -- the copy on disk --------------------------------------------------------------


def build(
    wsdl: Path, cache: WsdlDocumentCache, caplog: pytest.LogCaptureFixture
) -> str:
    """Build the client as a new process would and return how it was built."""
    _clients.clear()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="impactin.workday"):
        client, _ = _load_client(str(wsdl), ENDPOINT, cache)
    (message,) = [r.getMessage() for r in caplog.records if "Built" in r.getMessage()]
    assert staffing_envelope(client)
    return message


@pytest.fixture
def local_wsdl(tmp_path: Path) -> Path:
    target = tmp_path / "Staffing.wsdl"
    shutil.copyfile(bundled_wsdl(), target)
    return target


def test_second_build_uses_reduced_copy(
    local_wsdl: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = WsdlDocumentCache(tmp_path / "cache", ttl=3600)
    assert "(the full WSDL)" in build(local_wsdl, cache, caplog)
    assert len(list((tmp_path / "cache").glob("compiled-*.wsdl"))) == 1
    assert "(the reduced copy cached on disk)" in build(local_wsdl, cache, caplog)


def test_changed_local_wsdl_is_built_in_full(
    local_wsdl: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = WsdlDocumentCache(tmp_path / "cache", ttl=3600)
    build(local_wsdl, cache, caplog)
    local_wsdl.write_bytes(local_wsdl.read_bytes() + b"\n<!-- changed -->\n")
    assert "(the full WSDL)" in build(local_wsdl, cache, caplog)


def test_expired_copy_is_rebuilt(
    local_wsdl: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build(local_wsdl, WsdlDocumentCache(tmp_path / "cache", ttl=3600), caplog)
    expired = WsdlDocumentCache(tmp_path / "cache", ttl=0)
    assert "(the full WSDL)" in build(local_wsdl, expired, caplog)


@pytest.mark.parametrize(
    "damage",
    [
        b"<definitions",
        b"<a/>",
        b'<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" '
        b'targetNamespace="urn:com.workday/bsvc/Staffing"/>',
    ],
    ids=["truncated", "other-xml", "empty-wsdl"],
)
def test_damaged_copy_is_replaced(
    local_wsdl: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: bytes,
) -> None:
    cache = WsdlDocumentCache(tmp_path / "cache", ttl=3600)
    build(local_wsdl, cache, caplog)
    (copy,) = (tmp_path / "cache").glob("compiled-*.wsdl")
    copy.write_bytes(damage)
    os.utime(copy)
    assert "(the full WSDL)" in build(local_wsdl, cache, caplog)
    assert "(the reduced copy cached on disk)" in build(local_wsdl, cache, caplog)


def test_no_copy_without_cache_folder(
    local_wsdl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _clients.clear()
    with caplog.at_level(logging.DEBUG, logger="impactin.workday"):
        _load_client(str(local_wsdl), ENDPOINT, None)
    assert "(the full WSDL)" in caplog.text


def test_unwritable_ledger_is_config_error(tmp_path: Path) -> None:
    """The same-date check stops the run with a fix when its file cannot open."""
    from impactin_core import ConfigError, Credentials, PlatformSettings, SendContext
    from impactin_workday import PLATFORM, WorkdayOptions
    from impactin_workday._plugin import impactin_map
    from impactin_workday._soap import _claim_same_date_slot

    from .conftest import make_record

    settings = PlatformSettings(
        tenant="acme",
        platform="workday",
        base_url="http://127.0.0.1:9",
        protocol="soap",
        options={"tenant_name": "acme1"},
    )
    (request,) = impactin_map(
        platform=PLATFORM,
        records=[make_record()],
        settings=settings,
        idempotency_keys=["key-1"],
    )
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    context = SendContext(client=None, settings=settings, cache_dir=blocker)  # type: ignore[arg-type]
    credentials = Credentials(kind="ws_security", username="u", password="p")
    with pytest.raises(ConfigError) as caught:
        _claim_same_date_slot(
            request, credentials, context, WorkdayOptions.from_settings(settings)
        )
    assert caught.value.key == (
        "tenants.acme.platforms.workday.options.same_date_guard"
    )
    assert "same-date ledger" in str(caught.value)
