"""The logging filter, bound personal values and the span-attribute guard."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator

import pytest

from impactin_core._logging import (
    SCRUBBED_MARK,
    PersonalDataFilter,
    bind_personal_values,
    detach_chained,
    filter_handler,
    guard_attributes,
    install_filter,
    register_secrets,
    scrub_known,
)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, Capture]]:
    logger = logging.getLogger("impactin.test_logging")
    handler = Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.addFilter(PersonalDataFilter())
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()


def run_isolated(function: object) -> None:
    """Run in a copied context so bound values do not reach other tests."""
    contextvars.copy_context().run(function)  # type: ignore[arg-type]


def test_filter_scrubs_arguments(captured: tuple[logging.Logger, Capture]) -> None:
    logger, handler = captured

    logger.info("Contact %s or %s", "maria@example.org", "+44 7700 900123")

    assert handler.lines == ["Contact [email] or [phone]"]


def test_filter_scrubs_bound_employee_id(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, handler = captured

    def body() -> None:
        bind_personal_values(["E-004217"])
        logger.warning("Worker %s rejected", "E-004217")

    run_isolated(body)

    assert handler.lines == ["Worker [id] rejected"]


def test_filter_scrubs_id_without_separator(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, handler = captured

    def body() -> None:
        bind_personal_values(["E-004217"])
        logger.warning("Worker %s rejected", "E004217")

    run_isolated(body)

    assert handler.lines == ["Worker [id] rejected"]


def test_filter_scrubs_exception_text(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, handler = captured

    try:
        raise ValueError("bad email maria@example.org")
    except ValueError:
        logger.exception("Send failed")

    assert "maria@example.org" not in handler.lines[0]
    assert "[email]" in handler.lines[0]


def test_binding_stays_in_its_context() -> None:
    def body() -> None:
        bind_personal_values(["E-004217"])

    run_isolated(body)

    assert scrub_known("E-004217") == "E-004217"


def test_bind_reads_record_fields() -> None:
    class Record:
        employee_id = "E-004217"
        employee_email = None
        employee_name = "Maria Lopez"
        employee_phone = None

    def body() -> None:
        bind_personal_values(Record())
        assert scrub_known("Maria Lopez / E-004217") == "[name] / [id]"

    run_isolated(body)


def test_guard_scrubs_string_attributes() -> None:
    guarded = guard_attributes(
        {"note": "call 07700 900 123", "attempt": 2, "tags": ["bob@example.net"]}
    )

    assert guarded == {"note": "call [phone]", "attempt": 2, "tags": ["[email]"]}


def test_detach_chained_drops_context() -> None:
    try:
        try:
            raise KeyError("E-004217")
        except KeyError:
            raise RuntimeError("sanitized") from None
    except RuntimeError as exc:
        error = exc
    error.__context__ = KeyError("E-004217")

    detach_chained(error)

    assert error.__context__ is None
    assert error.__cause__ is None


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("impactin.runtime", id="runtime"),
        pytest.param("impactin.webhooks", id="webhooks"),
        pytest.param("httpx", id="httpx"),
        pytest.param("zeep.transports", id="zeep"),
    ],
)
def test_install_filter_covers_logger(name: str) -> None:
    install_filter()

    filters = logging.getLogger(name).filters

    assert any(isinstance(item, PersonalDataFilter) for item in filters)


def test_filter_replaces_registered_secrets(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, handler = captured
    register_secrets(["goodera-test-key-4711\n", "Bearer tok-0a1b2c3d4e", "short"])

    logger.debug("Illegal header value %r", b"goodera-test-key-4711\n")
    logger.debug("sent %s", "Authorization: Bearer tok-0a1b2c3d4e")
    logger.debug("a short word stays")

    assert handler.lines == [
        "Illegal header value b'[secret]'",
        "sent Authorization: [secret]",
        "a short word stays",
    ]
    assert scrub_known("with Bearer tok-0a1b2c3d4e") == "with [secret]"


@pytest.mark.parametrize(
    "name", ["httpcore.http11", "httpcore.connection", "zeep.xsd.schema"]
)
def test_filter_covers_library_child_logger(name: str) -> None:
    install_filter()
    register_secrets(["child-logger-secret-77"])
    logger = logging.getLogger(name)
    handler = Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("header b'child-logger-secret-77' for maria@example.org")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)

    assert handler.lines == ["header b'[secret]' for [email]"]


def test_filter_marks_scrubbed_records(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, _ = captured
    marks: list[bool] = []

    class Marks(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            marks.append(getattr(record, SCRUBBED_MARK))

    handler = Marks()
    logger.addHandler(handler)
    try:
        logger.info("Delivery %s sent", "d-1")
        logger.info("Contact %s", "maria@example.org")
    finally:
        logger.removeHandler(handler)

    assert marks == [False, True]


def test_handler_filter_covers_loggers_created_later() -> None:
    """The command line's handler scrubs a logger that a connector makes later."""
    handler = Capture()
    filter_handler(handler)
    filter_handler(handler)
    logger = logging.getLogger("impactin_created_after_the_filter")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("Mapped the activity of %s", "maria@example.org")
    finally:
        logger.removeHandler(handler)

    assert logger.filters == []
    assert len(handler.filters) == 1
    assert handler.lines == ["Mapped the activity of [email]"]
