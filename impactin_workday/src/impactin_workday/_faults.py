"""Classify Workday's HTTP failures and SOAP faults into impactin errors.

Every text taken from a response passes through ``sanitize_text`` with the
worker's Employee_ID, because Workday faults often quote the value they
rejected.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NoReturn

import attrs
import httpx

from impactin_core import (
    AuthenticationError,
    PermanentError,
    RateLimited,
    RetryableError,
    parse_retry_after,
    sanitize_text,
)

from ._options import PLATFORM_ID

__all__ = [
    "ValidationMessage",
    "WorkdayFaultError",
    "classify_http_failure",
    "classify_soap_fault",
    "is_xml",
]

_BSVC = "{urn:com.workday/bsvc}"
#: Characters of one platform message kept in an error.
_TEXT_LIMIT = 300


@attrs.frozen
class ValidationMessage:
    """One ``Validation_Error`` entry of a ``Validation_Fault``, sanitized."""

    message: str
    detail_message: str
    xpath: str


class WorkdayFaultError(PermanentError):
    """A SOAP fault that repeating the request cannot fix.

    ``fault_code`` is the SOAP faultcode, such as
    ``SOAP-ENV:Client.validationError``, and ``validation_errors`` contains the
    parsed ``Validation_Error`` entries of a ``Validation_Fault``.
    """

    def __init__(
        self,
        message: str,
        *,
        fault_code: str,
        validation_errors: Iterable[ValidationMessage] = (),
        tenant: str,
        status_code: int,
    ) -> None:
        super().__init__(
            message, platform=PLATFORM_ID, tenant=tenant, status_code=status_code
        )
        self.fault_code = fault_code
        self.validation_errors = tuple(validation_errors)


def _clean(text: str | None, known: Iterable[str]) -> str:
    return sanitize_text((text or "").strip()[:_TEXT_LIMIT], known)


def _is_html(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "").lower()
    start = response.content.lstrip()[:15].lower()
    return "html" in content_type or start.startswith((b"<!doctype html", b"<html"))


def is_xml(response: httpx.Response) -> bool:
    """Return True when the body may be a SOAP envelope (XML, not HTML)."""
    return response.content.lstrip().startswith(b"<") and not _is_html(response)


def _body_kind(response: httpx.Response) -> str:
    if not response.content.strip():
        return "an empty body"
    if _is_html(response):
        return "an HTML page"
    return "a body that is not XML"


def classify_http_failure(
    response: httpx.Response, *, tenant: str, known: Iterable[str]
) -> NoReturn:
    """Raise the error for a response that carries no SOAP envelope.

    The body itself is left out of the message: HTML error pages can echo
    request data.
    """
    status = response.status_code
    message = f"Workday responded with HTTP {status} and {_body_kind(response)}"
    context: dict[str, Any] = {
        "platform": PLATFORM_ID,
        "tenant": tenant,
        "status_code": status,
    }
    delay = parse_retry_after(response.headers.get("retry-after"), time.time())
    if status == 429:
        raise RateLimited(
            f"{message}; the call is throttled.",
            retry_after=delay,
            sent=False,
            **context,
        )
    if status in (408, 503):
        # The server did not act on the request (RFC 9110 sections 15.5.9
        # and 15.6.4), so repeating it cannot create a duplicate.
        raise RetryableError(
            f"{message}; the service is unavailable or timed out the request.",
            retry_after=delay,
            sent=False,
            **context,
        )
    if status >= 500:
        # Workday can throttle SOAP calls with a plain HTTP 500.
        hint = "; the call may be throttled or the service unavailable."
        raise RetryableError(message + hint, retry_after=delay, **context)
    if status == 401:
        hint = "; check the integration system user name and password."
        raise AuthenticationError(message + hint, **context)
    if status == 404:
        hint = "; check the base URL, the tenant_name option and the version option."
        raise PermanentError(message + hint, **context)
    raise PermanentError(f"{message}; a SOAP envelope was expected.", **context)


def _validation_messages(detail: Any, known: list[str]) -> list[ValidationMessage]:
    messages = []
    for entry in detail.iter(f"{_BSVC}Validation_Error"):
        messages.append(
            ValidationMessage(
                message=_clean(entry.findtext(f"{_BSVC}Message"), known),
                detail_message=_clean(entry.findtext(f"{_BSVC}Detail_Message"), known),
                xpath=_clean(entry.findtext(f"{_BSVC}Xpath"), known),
            )
        )
    return messages


def classify_soap_fault(
    fault: Any, status: int, *, tenant: str, known: Iterable[str]
) -> NoReturn:
    """Raise the error for a zeep ``Fault`` parsed from Workday's response."""
    known = list(known)
    code = _clean(fault.code, known)
    text = _clean(fault.message, known)
    detail = fault.detail

    if code.endswith("authenticationError"):
        message = (
            f"Workday rejected the credentials ({code}: {text}); check the "
            "'username' secret (ISU_NAME@TENANT) and the 'password' secret."
        )
        # A WS-Security password cannot be refreshed, so resending is useless.
        raise AuthenticationError(
            message,
            platform=PLATFORM_ID,
            tenant=tenant,
            status_code=status,
            refreshable=False,
        )

    context: dict[str, Any] = {
        "fault_code": code,
        "tenant": tenant,
        "status_code": status,
    }
    if detail is not None and detail.find(f".//{_BSVC}Validation_Fault") is not None:
        errors = _validation_messages(detail, known)
        listed = "; ".join(f"{error.message} (at {error.xpath})" for error in errors)
        message = (
            f"Workday rejected the record with a Validation_Fault: {listed or text}"
        )
        raise WorkdayFaultError(message, validation_errors=errors, **context)

    processing = None if detail is None else detail.find(f".//{_BSVC}Processing_Fault")
    if processing is not None:
        reason = _clean(processing.findtext(f"{_BSVC}Detail_Message"), known) or text
        message = (
            f"Workday could not process the request (Processing_Fault: {reason}); "
            "check that the integration system user may edit the custom object."
        )
        raise WorkdayFaultError(message, **context)
    message = f"Workday responded with an unrecognized SOAP fault ({code}: {text})."
    raise WorkdayFaultError(message, **context)
