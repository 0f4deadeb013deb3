"""The XML contract of the Workday SOAP call ``Edit_Worker_Additional_Data``.

Pact has no SOAP support, so this contract is a set of XML templates in
``workday-soap/``: ``contract.json`` lists the interactions, and each
template marks a variable text or attribute value as ``${name}``, matched
by the regular expression ``markers[name]``. The request template is
generated from the connector's real envelope. The response and fault
templates are written by hand: they list what the connector reads.

``mismatches`` compares a document with a template: tags and attribute
names by namespace URI (prefixes may differ), text exactly unless marked,
and whitespace-only text ignored. A request must match exactly; a response
may carry extra elements after or between the template's ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impactin_core import ImpactRecord, SendOutcome
from impactin_core.sandbox import SandboxServer
from impactin_workday import _plugin
from impactin_workday._plugin import PLATFORM

from ._common import deliver, settings_for

__all__ = [
    "CONTRACT_DIR",
    "REQUEST_TEMPLATE",
    "SoapExchange",
    "fill",
    "load_contract",
    "mismatches",
    "run_consumer",
    "template_from_request",
    "write_request_template",
]

CONTRACT_DIR = Path(__file__).resolve().parent / "workday-soap"
REQUEST_TEMPLATE = "edit-worker-additional-data.request.xml"

_MARKER = re.compile(r"^\$\{([a-z_]+)\}$")
_WSSE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
)
_BSVC = "urn:com.workday/bsvc"
_CUSTOM = "urn:com.workday/tenants/super/data/custom"
#: Elements of the request whose text varies per tenant or record.
_REQUEST_MARKERS = {
    f"{{{_WSSE}}}Username": "username",
    f"{{{_WSSE}}}Password": "password",
    f"{{{_BSVC}}}ID": "employee_id",
    f"{{{_BSVC}}}Effective_Date": "date",
    f"{{{_CUSTOM}}}Activity_ID": "row_id",
    f"{{{_CUSTOM}}}Activity_Date": "date",
}


def _parser() -> Any:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True
    )


def load_contract(folder: Path = CONTRACT_DIR) -> dict[str, Any]:
    """Return ``contract.json`` of the SOAP contract in ``folder``."""
    contract: dict[str, Any] = json.loads(
        (folder / "contract.json").read_text(encoding="utf-8")
    )
    return contract


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace each ``${name}`` in ``template`` with the XML-escaped value."""

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in values:
            message = f"No value for the marker ${{{name}}} in the SOAP contract."
            raise KeyError(message)
        return escape(values[name], {'"': "&quot;"})

    return re.sub(r"\$\{([a-z_]+)\}", replace, template)


def _text_mismatch(
    expected: str, actual: str, markers: Mapping[str, str], where: str
) -> str | None:
    marker = _MARKER.match(expected)
    if marker is None:
        if expected != actual:
            return f"{where}: expected {expected!r}, found {actual!r}"
        return None
    pattern = markers[marker.group(1)]
    if re.match(pattern, actual) is None:
        return f"{where}: {actual!r} does not match ${{{marker.group(1)}}} ({pattern})"
    return None


def _children(element: Any) -> list[Any]:
    return [child for child in element if isinstance(child.tag, str)]


def _compare(
    expected: Any,
    actual: Any,
    markers: Mapping[str, str],
    path: str,
    problems: list[str],
    *,
    allow_extra: bool,
) -> None:
    where = f"{path}/{etree.QName(expected).localname}"
    if expected.tag != actual.tag:
        problems.append(f"{where}: expected element {expected.tag}, found {actual.tag}")
        return
    for name, value in expected.attrib.items():
        if name not in actual.attrib:
            problems.append(f"{where}: attribute {name} is missing")
            continue
        found = _text_mismatch(value, actual.attrib[name], markers, f"{where}/@{name}")
        if found:
            problems.append(found)
    extra_attributes = set(actual.attrib) - set(expected.attrib)
    if extra_attributes and not allow_extra:
        problems.append(f"{where}: unexpected attributes {sorted(extra_attributes)}")
    expected_children = _children(expected)
    actual_children = _children(actual)
    if not expected_children:
        text = (expected.text or "").strip()
        if text or not allow_extra:
            found = _text_mismatch(text, (actual.text or "").strip(), markers, where)
            if found:
                problems.append(found)
        if actual_children and not allow_extra:
            problems.append(f"{where}: unexpected child elements")
        return
    _compare_children(
        expected_children, actual_children, markers, where, problems, allow_extra
    )


def _compare_children(
    expected: list[Any],
    actual: list[Any],
    markers: Mapping[str, str],
    where: str,
    problems: list[str],
    allow_extra: bool,
) -> None:
    if not allow_extra:
        if [child.tag for child in expected] != [child.tag for child in actual]:
            found = [etree.QName(child).localname for child in actual]
            wanted = [etree.QName(child).localname for child in expected]
            problems.append(f"{where}: expected children {wanted}, found {found}")
            return
        for want, have in zip(expected, actual, strict=True):
            _compare(want, have, markers, where, problems, allow_extra=False)
        return
    # A response may add elements: match the template's children in order.
    position = 0
    for want in expected:
        while position < len(actual) and actual[position].tag != want.tag:
            position += 1
        if position == len(actual):
            name = etree.QName(want).localname
            problems.append(f"{where}: element {name} is missing or out of order")
            return
        _compare(want, actual[position], markers, where, problems, allow_extra=True)
        position += 1


def mismatches(
    template: str,
    document: bytes,
    markers: Mapping[str, str],
    *,
    allow_extra: bool,
) -> list[str]:
    """Return how ``document`` differs from ``template``, empty when it matches."""
    expected = etree.fromstring(template.encode("utf-8"), parser=_parser())
    try:
        actual = etree.fromstring(document, parser=_parser())
    except etree.XMLSyntaxError as exc:
        return [f"the document is not well-formed XML: {exc}"]
    problems: list[str] = []
    _compare(expected, actual, markers, "", problems, allow_extra=allow_extra)
    return problems


def template_from_request(body: bytes) -> str:
    """Turn a captured request envelope into the request template."""
    root = etree.fromstring(body, parser=_parser())
    for element in root.iter():
        name = (
            _REQUEST_MARKERS.get(element.tag) if isinstance(element.tag, str) else None
        )
        if name is not None:
            element.text = f"${{{name}}}"
    etree.indent(root, space="  ")
    text: str = etree.tostring(root, encoding="unicode")
    return "<?xml version='1.0' encoding='utf-8'?>\n" + text + "\n"


class SoapExchange:
    """A loopback server that records SOAP requests and returns a fixed answer."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.app = Starlette(
            routes=[Route("/{path:path}", self._answer, methods=["POST"])]
        )

    async def _answer(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append((request.url.path, dict(request.headers), body))
        return Response(
            self.body, status_code=self.status, media_type="text/xml; charset=utf-8"
        )


def _record(contract: Mapping[str, Any]) -> ImpactRecord:
    examples = contract["examples"]
    return ImpactRecord(
        source_id="shift-4001",
        tenant="acme",
        kind="volunteer_time",
        activity_date=dt.date.fromisoformat(examples["date"]),
        employee_id=examples["employee_id"],
        employee_email="dana.reyes@example.org",
        hours=3.5,
        organization_name="Riverside Food Bank",
        cause="Food security",
    )


#: Sandbox credentials the consumer sends; they are marked in the template.
CONSUMER_SECRETS = {"username": "ISU_Impactin@impactin_sandbox", "password": "sandbox"}


def run_consumer(
    interaction: Mapping[str, Any], folder: Path = CONTRACT_DIR
) -> tuple[SoapExchange, SendOutcome | Exception]:
    """Send the example record through the connector and answer from the contract.

    Returns the exchange, with the captured request, and the connector's
    outcome or the exception it raised.
    """
    contract = load_contract(folder)
    examples = contract["examples"]
    response = interaction["response"]
    template = (folder / response["body"]).read_text(encoding="utf-8")
    exchange = SoapExchange(response["status"], fill(template, examples))
    options = {"tenant_name": examples["tenant"], "version": examples["version"]}
    with SandboxServer(exchange.app) as server:
        settings = settings_for(
            "workday", server.url, CONSUMER_SECRETS, protocol="soap", options=options
        )
        try:
            outcome: SendOutcome | Exception = asyncio.run(
                deliver(
                    plugin=_plugin,
                    platform=PLATFORM,
                    settings=settings,
                    record=_record(contract),
                    idempotency_key=examples["row_id"],
                )
            )
        except Exception as exc:
            outcome = exc
    return exchange, outcome


def write_request_template(out: Path) -> Path:
    """Capture the connector's envelope and write the request template under ``out``."""
    contract = load_contract()
    exchange, _ = run_consumer(contract["interactions"][0])
    (_, _, body) = exchange.requests[0]
    target = out / "workday-soap" / REQUEST_TEMPLATE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(template_from_request(body), encoding="utf-8")
    return target
