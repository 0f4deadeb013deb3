"""Workday SOAP: client build cold and warm, envelope build and reply parse.

The WSDL is the published Staffing WSDL kept next to the repository when
it is there, else the minimal one bundled with impactin-workday. "Cold" is
the first parse of the WSDL in the process (zeep is imported beforehand,
so its import is reported on its own). "Warm" is a later lookup, served
from the connector's client cache. "First with disk cache" is the cold
build plus writing the reduced WSDL copy to a cache folder, and "new
process" is the build that a later process makes from that copy (the
in-memory cache is cleared in between, as in a new process). "Envelope"
renders and signs one ``Edit_Worker_Additional_Data`` request
(PasswordText UsernameToken) to bytes. "Parse" runs zeep's reply
processing on a real reply that the Workday simulator returned for such a
request over 127.0.0.1.

    python benchmarks/bench_soap.py [--requests N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import FIXTURES, emit, machine

from impactin_core import Credentials
from impactin_core.sandbox import SandboxServer

PAYLOAD = {
    "employee_id": "E-000105",
    "effective_date": "2026-03-01",
    "custom_object": "Volunteer_Activity",
    "row": {
        "Activity_ID": "ik_0123456789abcdef0123456789abcdef01234567",
        "Activity_Type": "volunteer_time",
        "Activity_Date": "2026-03-01",
        "Hours": "2.5",
        "Cause": "Education",
        "Organization_Name": "Riverside Literacy Project",
    },
}


def wsdl_source() -> tuple[str, str]:
    from impactin_workday._soap import bundled_wsdl

    published = FIXTURES / "workday" / "Staffing.wsdl"
    if published.is_file():
        return str(published), "published Staffing WSDL"
    return bundled_wsdl(), "bundled minimal WSDL"


def measure(count: int) -> dict[str, Any]:
    started = time.perf_counter()
    import zeep  # noqa: F401
    from lxml import etree  # type: ignore[import-untyped]

    zeep_import = time.perf_counter() - started

    from impactin_workday import WorkdayOptions
    from impactin_workday._soap import (
        _clients,
        _load_client,
        _process_reply,
        _runtime_transport,
        build_envelope,
        security_token,
    )
    from impactin_workday._wsdl_cache import (
        DEFAULT_WSDL_CACHE_TTL,
        WsdlDocumentCache,
    )
    from impactin_workday.simulator import create_simulator

    simulator = create_simulator()
    state = simulator.state
    if state is None:
        raise RuntimeError("The Workday simulator exposes no state.")
    wsdl, wsdl_kind = wsdl_source()
    with SandboxServer(simulator.app) as server:
        options = WorkdayOptions(
            protocol="soap",
            base_url=server.url,
            tenant_name=state.tenant_name,
            wsdl=wsdl,
        )
        endpoint = options.soap_endpoint
        credentials = Credentials(
            kind="ws_security",
            username=simulator.credentials["username"],
            password=simulator.credentials["password"],
        )
        _clients.pop((wsdl, endpoint), None)
        started = time.perf_counter()
        client, service = _load_client(wsdl, endpoint, None)
        cold = time.perf_counter() - started

        with tempfile.TemporaryDirectory() as folder:
            disk = WsdlDocumentCache(Path(folder), DEFAULT_WSDL_CACHE_TTL)
            _clients.pop((wsdl, endpoint), None)
            started = time.perf_counter()
            _load_client(wsdl, endpoint, disk)
            first_with_disk = time.perf_counter() - started
            disk_times = []
            for _ in range(5):
                _clients.pop((wsdl, endpoint), None)
                started = time.perf_counter()
                _load_client(wsdl, endpoint, disk)
                disk_times.append(time.perf_counter() - started)

        warm_times = []
        for _ in range(count):
            started = time.perf_counter()
            _load_client(wsdl, endpoint, None)
            warm_times.append(time.perf_counter() - started)

        build_times = []
        body = b""
        headers: dict[str, str] = {}
        for _ in range(count):
            started = time.perf_counter()
            envelope = build_envelope(client, service, PAYLOAD, options.version)
            headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
            envelope, headers = security_token(credentials, options).apply(
                envelope, headers
            )
            body = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
            build_times.append(time.perf_counter() - started)

        reply = httpx.post(endpoint, content=body, headers=headers, timeout=30.0)
        if reply.status_code != 200:
            status = reply.status_code
            message = f"The simulator rejected the envelope with HTTP {status}."
            raise RuntimeError(message)

    transport = _runtime_transport(httpx.AsyncClient())
    parse_times = []
    for _ in range(count):
        response = httpx.Response(
            200, content=reply.content, headers=reply.headers, request=reply.request
        )
        started = time.perf_counter()
        outcome = _process_reply(client, service, transport, response, "bench", [])
        parse_times.append(time.perf_counter() - started)
    if outcome.response_id is None:
        raise RuntimeError("The reply was parsed without its event id.")
    return {
        "wsdl": wsdl_kind,
        "zeep_lxml_import_ms": round(zeep_import * 1000, 1),
        "cold_build_ms": round(cold * 1000, 1),
        "warm_build_us": round(statistics.median(warm_times) * 1e6, 2),
        "first_build_with_disk_cache_ms": round(first_with_disk * 1000, 1),
        "new_process_build_from_disk_ms": round(
            statistics.median(disk_times) * 1000, 1
        ),
        "envelope_build_us": round(statistics.median(build_times) * 1e6, 1),
        "reply_parse_us": round(statistics.median(parse_times) * 1e6, 1),
        "requests": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="Repeats per step.")
    args = parser.parse_args()
    emit("soap", {**measure(args.requests), "machine": machine()})


if __name__ == "__main__":
    main()
