"""Keep personal data out of log records, span attributes and stored errors.

Patterns (emails, phone numbers, national ids, cards, IBANs, dates of birth)
are found in any text. An employee id such as ``E-004217`` matches no
pattern, so the runtime also binds the personal values of the record it is
delivering (``bind_personal_values``). The filter and ``scrub_known`` then
remove those values too, in the same task or thread context.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ._models import PERSONAL_FIELDS
from ._redaction import _known_names, _KnownName, _scrub

__all__ = [
    "SCRUBBED_MARK",
    "PersonalDataFilter",
    "bind_personal_values",
    "detach_chained",
    "filter_handler",
    "guard_attributes",
    "install_filter",
    "register_secrets",
    "scrub_known",
    "strip_secrets",
]

#: Loggers the filter is attached to, besides every existing logger under the
#: prefixes of ``_COVERED_PREFIXES``. The module loggers of httpcore and zeep
#: are named because a filter does not reach a child logger's records, and
#: zeep's loggers do not exist yet when the filter is installed. httpx and
#: zeep log URLs and, at DEBUG, SOAP envelopes that contain the worker's
#: Employee_ID; httpcore quotes a header value it cannot send.
LOGGER_NAMES = (
    "impactin",
    "impactin.runtime",
    "impactin.plugins",
    "impactin.tokens",
    "impactin.webhooks",
    "impactin.benevity",
    "impactin.goodera",
    "impactin.workday",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "zeep",
    "zeep.cache",
    "zeep.client",
    "zeep.proxy",
    "zeep.transports",
    "zeep.wsdl",
    "zeep.wsdl.bindings.http",
    "zeep.wsdl.bindings.soap",
    "zeep.wsdl.wsdl",
    "zeep.xsd.elements.any",
    "zeep.xsd.elements.attribute",
    "zeep.xsd.elements.element",
    "zeep.xsd.schema",
    "zeep.xsd.types.any",
    "zeep.xsd.types.complex",
    "zeep.xsd.types.simple",
    "zeep.xsd.visitor",
)

#: Prefixes of loggers that get the filter when they already exist, for
#: module loggers of these libraries that the list above does not name.
_COVERED_PREFIXES = ("impactin", "httpx", "httpcore", "zeep")

#: The bound personal values, prepared for scrubbing once per binding rather
#: than once per log record.
_known_values: contextvars.ContextVar[tuple[_KnownName, ...]] = contextvars.ContextVar(
    "impactin_known_personal_values", default=()
)


def bind_personal_values(values: Iterable[str | None] | Any) -> None:
    """Make these personal values known to the filter in the current context.

    Accepts strings or a record with the ``PERSONAL_FIELDS`` attributes. The
    binding lasts until the next call in the same context. asyncio tasks
    copy the context when they start, so one delivery's values do not reach
    another worker's task.
    """
    if isinstance(values, (list, tuple, set, frozenset)):
        items: Iterable[str | None] = values
    else:
        items = [getattr(values, field, None) for field in sorted(PERSONAL_FIELDS)]
    cleaned = tuple(
        value.strip() for value in items if isinstance(value, str) and value.strip()
    )
    _known_values.set(tuple(_known_names(cleaned)))


def scrub_known(text: str) -> str:
    """Return ``text`` without personal data, bound personal values or secrets."""
    return strip_secrets(_scrub(text, _known_values.get())[0])


#: Secrets the runtime has used in this process, newest last, so that log
#: records of other libraries (httpcore quotes a header value it refused,
#: zeep logs SOAP envelopes at DEBUG) and error texts never show them. Only
#: the newest ``MAX_SECRETS`` are kept, as tokens are renewed all day long.
_secrets: dict[str, None] = {}
_secrets_by_length: tuple[str, ...] = ()
_secrets_lock = threading.Lock()
MAX_SECRETS = 512
#: Shorter values are not registered, because replacing a value such as
#: "test" would also replace ordinary words.
MIN_SECRET_LENGTH = 8


def register_secrets(values: Iterable[str | None]) -> None:
    """Make these secret values known to the filter and to ``scrub_known``.

    Each value is also registered trimmed and in its escaped form, as a
    ``repr`` in an exception message would show it.
    """
    global _secrets_by_length
    added = False
    with _secrets_lock:
        for value in values:
            if not value:
                continue
            for form in {value, value.strip(), repr(value)[1:-1]}:
                if len(form) < MIN_SECRET_LENGTH:
                    continue
                if form in _secrets:
                    continue
                _secrets[form] = None
                added = True
        if added:
            while len(_secrets) > MAX_SECRETS:
                del _secrets[next(iter(_secrets))]
            # The longest come first, so a header is replaced before its parts.
            _secrets_by_length = tuple(sorted(_secrets, key=len, reverse=True))


def strip_secrets(text: str) -> str:
    """Replace every registered secret in ``text`` with ``[secret]``."""
    for value in _secrets_by_length:
        if value in text:
            text = text.replace(value, "[secret]")
    return text


def detach_chained(exc: BaseException) -> None:
    """Drop the exceptions chained to ``exc`` (``__cause__`` and ``__context__``).

    A connector's error message is sanitized, but the library exception it
    was raised from can quote the platform's raw answer, and a formatted
    traceback or a span's ``exception.stacktrace`` would show it.
    """
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = True


def guard_attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return span or event attributes with every string value scrubbed."""
    guarded: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str):
            guarded[name] = scrub_known(value)
        elif isinstance(value, (list, tuple)):
            guarded[name] = [
                scrub_known(item) if isinstance(item, str) else item for item in value
            ]
        else:
            guarded[name] = value
    return guarded


class PersonalDataFilter(logging.Filter):
    """Scrub personal data from a log record's message and exception text.

    The message is formatted once, scrubbed, and stored without arguments,
    so handlers further down see only the scrubbed text. Exception and stack
    text is formatted and scrubbed the same way, and ``exc_info`` is cleared
    so that no handler formats the original exception again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SCRUBBED_MARK, None) is not None:
            # Seen already, by the filter of a logger or of another handler.
            return True
        message = record.getMessage()
        cleaned = scrub_known(message)
        changed = cleaned != message
        if changed or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub_known(text)
            record.exc_info = None
            changed = changed or record.exc_text != text
        elif record.exc_text:
            text = record.exc_text
            record.exc_text = scrub_known(text)
            changed = changed or record.exc_text != text
        if record.stack_info:
            text = record.stack_info
            record.stack_info = scrub_known(text)
            changed = changed or record.stack_info != text
        setattr(record, SCRUBBED_MARK, changed)
        return True


#: The attribute that ``PersonalDataFilter`` sets on each record it checks:
#: True when it replaced something, False when the record was clean.
SCRUBBED_MARK = "impactin_scrubbed"

_FILTER = PersonalDataFilter()


def install_filter() -> None:
    """Attach the filter to the impactin, httpx and zeep loggers (idempotent).

    A filter on a logger applies only to records created on that logger, not
    to those of its children (``httpcore.http11`` logs on its own logger),
    so it is attached to each named logger and to every existing logger
    under impactin, httpx, httpcore or zeep. A logger created later under
    another name is not covered until ``install_filter`` runs again.
    """
    names = set(LOGGER_NAMES)
    for name in list(logging.root.manager.loggerDict):
        root = name.split(".")[0]
        if root in _COVERED_PREFIXES or name.startswith("impactin_"):
            names.add(name)
    for name in sorted(names):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def filter_handler(handler: logging.Handler) -> None:
    """Attach the filter to ``handler`` (idempotent).

    A handler's filter receives the records of every logger that reaches the
    handler, including loggers that connectors create after
    ``install_filter`` ran.
    """
    if _FILTER not in handler.filters:
        handler.addFilter(_FILTER)
