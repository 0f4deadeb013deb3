"""The Staffing SOAP endpoint of the Workday simulator.

It checks the WS-Security UsernameToken, validates the request body against
the bundled WSDL's schema, then checks the worker, the custom object and the
``bsvc:version`` attribute, and returns Workday's fault shapes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import uuid
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from lxml import etree  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import Response

from ._soap import BSVC_NS, CUSTOM_DATA_NS, bundled_wsdl

if TYPE_CHECKING:
    from .simulator import WorkdaySimulatorState

__all__ = ["html_not_found", "password_digest", "staffing_endpoint"]

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
)
WSU_NS = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
)
_TOKEN_PROFILE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
)
PASSWORD_TEXT = f"{_TOKEN_PROFILE}#PasswordText"
PASSWORD_DIGEST = f"{_TOKEN_PROFILE}#PasswordDigest"
_BSVC = f"{{{BSVC_NS}}}"
logger = logging.getLogger("impactin.workday.simulator")
_XML = "text/xml; charset=utf-8"
_NOT_CONFIGURED = (
    "One or more of the custom objects submitted is not configured in the "
    "business process definition."
)


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """Return Base64(SHA-1(nonce + created + password)), the UsernameToken digest."""
    digest = hashlib.sha1(nonce + created.encode() + password.encode()).digest()
    return base64.b64encode(digest).decode("ascii")


def _hardened_parser() -> Any:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
    )


@lru_cache(maxsize=1)
def _request_schema() -> Any:
    tree = etree.parse(bundled_wsdl(), parser=_hardened_parser())
    schema = tree.find(".//{http://www.w3.org/2001/XMLSchema}schema")
    # Serializing the element carries the namespace declarations of its
    # WSDL ancestors, which the schema's QName values need.
    standalone = etree.fromstring(etree.tostring(schema), parser=_hardened_parser())
    return etree.XMLSchema(standalone)


def html_not_found() -> Response:
    """Return an HTML 404 page like the one Workday serves for unknown paths."""
    page = (
        "<html><head><title>Not Found</title></head>"
        "<body><h1>404 Not Found</h1></body></html>"
    )
    return Response(page, status_code=404, media_type="text/html")


def _fault(code: str, text: str, detail: Any = None) -> Response:
    # Only the fault code is logged, because fault texts can quote request data.
    logger.info("Simulator rejected a SOAP request with fault %s", code)
    envelope = etree.Element(
        f"{{{SOAP_ENV_NS}}}Envelope", nsmap={"SOAP-ENV": SOAP_ENV_NS}
    )
    body = etree.SubElement(envelope, f"{{{SOAP_ENV_NS}}}Body")
    fault = etree.SubElement(body, f"{{{SOAP_ENV_NS}}}Fault", nsmap={"wd": BSVC_NS})
    etree.SubElement(fault, "faultcode").text = code
    etree.SubElement(fault, "faultstring").text = text
    if detail is not None:
        etree.SubElement(fault, "detail").append(detail)
    content = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    # SOAP 1.1 sends a fault with HTTP status 500.
    return Response(content, status_code=500, media_type=_XML)


def _validation_fault(errors: list[tuple[str, str]]) -> Response:
    detail = etree.Element(f"{_BSVC}Validation_Fault")
    for message, xpath in errors:
        entry = etree.SubElement(detail, f"{_BSVC}Validation_Error")
        etree.SubElement(entry, f"{_BSVC}Message").text = message
        etree.SubElement(entry, f"{_BSVC}Detail_Message").text = message
        etree.SubElement(entry, f"{_BSVC}Xpath").text = xpath
    text = f"Validation error occurred. {errors[0][0]}"
    return _fault("SOAP-ENV:Client.validationError", text, detail)


def _processing_fault(message: str) -> Response:
    detail = etree.Element(f"{_BSVC}Processing_Fault")
    etree.SubElement(detail, f"{_BSVC}Detail_Message").text = message
    return _fault("SOAP-ENV:Server.processingError", message, detail)


def _authentication_fault() -> Response:
    return _fault("SOAP-ENV:Client.authenticationError", "invalid username or password")


def _check_token(envelope: Any, state: WorkdaySimulatorState) -> str | None:
    """Return the password type used, or None when the token is not accepted."""
    token = envelope.find(
        f"{{{SOAP_ENV_NS}}}Header/{{{WSSE_NS}}}Security/{{{WSSE_NS}}}UsernameToken"
    )
    if token is None:
        return None
    username = token.findtext(f"{{{WSSE_NS}}}Username") or ""
    password = token.find(f"{{{WSSE_NS}}}Password")
    if password is None or not hmac.compare_digest(username, state.username):
        return None
    kind = password.get("Type", PASSWORD_TEXT)
    received = (password.text or "").strip()
    if kind == PASSWORD_TEXT:
        expected = state.password
    elif kind == PASSWORD_DIGEST:
        nonce = token.findtext(f"{{{WSSE_NS}}}Nonce") or ""
        created = token.findtext(f"{{{WSU_NS}}}Created") or ""
        try:
            raw_nonce = base64.b64decode(nonce, validate=True)
        except ValueError:
            return None
        expected = password_digest(raw_nonce, created, state.password)
    else:
        return None
    if not hmac.compare_digest(received.encode(), expected.encode()):
        return None
    return "PasswordDigest" if kind == PASSWORD_DIGEST else "PasswordText"


def _schema_errors(operation: Any) -> list[tuple[str, str]]:
    schema = _request_schema()
    # Validate a detached copy, because the schema expects the request as the root.
    document = etree.fromstring(etree.tostring(operation), parser=_hardened_parser())
    if schema.validate(document):
        return []
    return [(error.message, error.path) for error in schema.error_log]


def _check_request(
    operation: Any, version: str, state: WorkdaySimulatorState
) -> list[tuple[str, str]]:
    errors = _schema_errors(operation)
    if errors:
        return errors

    root = "/bsvc:Edit_Worker_Additional_Data_Request"
    sent_version = operation.get(f"{_BSVC}version")
    if sent_version != version:
        message = (
            f"The request version {sent_version!r} does not match the endpoint "
            f"version {version!r}."
        )
        return [(message, f"{root}/@bsvc:version")]
    data = operation.find(f"{_BSVC}Worker_Custom_Object_Data")
    worker = data.find(f"{_BSVC}Worker_Reference/{_BSVC}ID")
    worker_path = f"{root}/bsvc:Worker_Custom_Object_Data/bsvc:Worker_Reference/bsvc:ID"
    if worker is None or worker.get(f"{_BSVC}type") != "Employee_ID":
        return [("A Worker_Reference ID of type Employee_ID is required.", worker_path)]

    employee_id = (worker.text or "").strip()
    if not state.knows_worker(employee_id):
        message = (
            f"Invalid ID value.  '{employee_id}' is not a valid ID value "
            "for type = 'Employee_ID'"
        )
        return [(message, worker_path)]

    rows = list(data.find(f"{_BSVC}Business_Object_Additional_Data"))
    data_path = (
        f"{root}/bsvc:Worker_Custom_Object_Data/bsvc:Business_Object_Additional_Data"
    )
    if len(rows) != 1 or etree.QName(rows[0]).namespace != CUSTOM_DATA_NS:
        return [(_NOT_CONFIGURED, data_path)]
    if etree.QName(rows[0]).localname not in state.custom_objects:
        return [(_NOT_CONFIGURED, data_path)]
    if not rows[0].findtext(f"{{{CUSTOM_DATA_NS}}}{state.row_id_field}"):
        message = f"The custom object row has no {state.row_id_field} value."
        return [(message, f"{data_path}/{state.row_id_field}")]
    return []


def _success(operation: Any, version: str, event_id: str) -> Response:
    data = operation.find(f"{_BSVC}Worker_Custom_Object_Data")
    envelope = etree.Element(f"{{{SOAP_ENV_NS}}}Envelope", nsmap={"env": SOAP_ENV_NS})
    body = etree.SubElement(envelope, f"{{{SOAP_ENV_NS}}}Body")
    answer = etree.SubElement(
        body, f"{_BSVC}Edit_Worker_Additional_Data_Response", nsmap={"wd": BSVC_NS}
    )
    answer.set(f"{_BSVC}version", version)
    event = etree.SubElement(answer, f"{_BSVC}Event_Reference")
    etree.SubElement(event, f"{_BSVC}ID", {f"{_BSVC}type": "WID"}).text = event_id
    answer.append(_copy(data.find(f"{_BSVC}Worker_Reference")))
    answer.append(_copy(data.find(f"{_BSVC}Effective_Date")))
    additional = etree.SubElement(answer, f"{_BSVC}Additional_Data")
    for row in data.find(f"{_BSVC}Business_Object_Additional_Data"):
        additional.append(_copy(row))
    content = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return Response(content, status_code=200, media_type=_XML)


def _copy(element: Any) -> Any:
    return etree.fromstring(etree.tostring(element), parser=_hardened_parser())


def _journal_entry(operation: Any, tenant: str, password_type: str) -> dict[str, Any]:
    data = operation.find(f"{_BSVC}Worker_Custom_Object_Data")
    row = data.find(f"{_BSVC}Business_Object_Additional_Data")[0]
    return {
        "protocol": "soap",
        "tenant": tenant,
        "version": operation.get(f"{_BSVC}version"),
        "password_type": password_type,
        "employee_id": data.findtext(f"{_BSVC}Worker_Reference/{_BSVC}ID"),
        "effective_date": data.findtext(f"{_BSVC}Effective_Date"),
        "custom_object": etree.QName(row).localname,
        "row": {etree.QName(field).localname: field.text for field in row},
    }


def _parse_envelope(body: bytes) -> Any:
    """Parse a request without resolving entities; return None for a DTD or bad XML."""
    try:
        envelope = etree.fromstring(body, parser=_hardened_parser())
    except etree.XMLSyntaxError:
        return None
    if envelope.getroottree().docinfo.internalDTD is not None:
        return None
    if envelope.tag != f"{{{SOAP_ENV_NS}}}Envelope":
        return None
    return envelope


async def staffing_endpoint(request: Request, state: WorkdaySimulatorState) -> Response:
    """Serve ``/ccx/service/{tenant}/{service}/{version}``: the WSDL or a SOAP call."""
    tenant = request.path_params["tenant"]
    version = request.path_params["version"]
    if tenant != state.tenant_name or request.path_params["service"] != "Staffing":
        return html_not_found()
    if request.method == "GET":
        if "wsdl" not in request.query_params:
            return html_not_found()
        state.count_wsdl_request()
        with open(bundled_wsdl(), "rb") as wsdl:
            return Response(wsdl.read(), media_type=_XML)

    envelope = _parse_envelope(await request.body())
    if envelope is None:
        return _fault(
            "SOAP-ENV:Client",
            "The request is not a well-formed SOAP envelope without a DTD.",
        )
    password_type = _check_token(envelope, state)
    if password_type is None:
        return _authentication_fault()
    operation = envelope.find(
        f"{{{SOAP_ENV_NS}}}Body/{_BSVC}Edit_Worker_Additional_Data_Request"
    )
    if operation is None:
        return _fault(
            "SOAP-ENV:Client", "The simulator serves only Edit_Worker_Additional_Data."
        )
    if not state.write_permission:
        return _processing_fault("The task submitted is not authorized.")
    errors = _check_request(operation, version, state)
    if errors:
        return _validation_fault(errors)
    data = operation.find(f"{_BSVC}Worker_Custom_Object_Data")
    row = data.find(f"{_BSVC}Business_Object_Additional_Data")[0]
    key = row.findtext(f"{{{CUSTOM_DATA_NS}}}{state.row_id_field}")
    event_id, _ = state.journal.accept(
        key, _journal_entry(operation, tenant, password_type), lambda: uuid.uuid4().hex
    )
    return _success(operation, version, event_id)
