"""A logging filter that keeps personal data out of impactin's log records."""

from __future__ import annotations

import logging

from ._redaction import sanitize_text

__all__ = ["PersonalDataFilter", "install_filter"]

LOGGER_NAMES = (
    "impactin",
    "impactin.runtime",
    "impactin.plugins",
    "impactin.tokens",
    "impactin.benevity",
    "impactin.goodera",
    "impactin.workday",
)


class PersonalDataFilter(logging.Filter):
    """Replace emails, phone numbers and national ids in a record's message.

    The message is formatted once, scrubbed, and stored without arguments,
    so handlers further down see only the scrubbed text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = sanitize_text(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


_FILTER = PersonalDataFilter()


def install_filter() -> None:
    """Attach the filter to every impactin logger (idempotent)."""
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
