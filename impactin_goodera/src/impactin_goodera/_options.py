"""Tenant options of the Goodera connector, read from ``settings.options``."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from impactin_core import ConfigError, check_option_names

__all__ = ["OBJECT_ID", "GooderaOptions", "is_object_id"]

#: Goodera identifies opportunities, events and registrations by MongoDB
#: ObjectIds: 24 hexadecimal characters.
OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")

_CLOCK_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_object_id(value: object) -> bool:
    """Return True when ``value`` is a 24-hex ObjectId string."""
    return isinstance(value, str) and OBJECT_ID.match(value) is not None


@attrs.frozen(kw_only=True)
class GooderaOptions:
    """One tenant's Goodera options, checked once per map or send.

    Goodera publishes the event fields but not their defaults, so every
    default here is the connector's choice, listed in the platform page.
    """

    opportunity_id: str | None = None
    timezone: str = "UTC"
    country: str = "US"
    language: str = "en"
    event_start: str = "09:00"
    event_end: str = "17:00"
    expected_volunteer_count: int = 1
    event_contact_email: str | None = attrs.field(default=None, repr=False)
    hours_field: str = "hours"
    webhook_scheme: str = "standard_webhooks"

    @classmethod
    def from_settings(cls, tenant: str, options: Mapping[str, Any]) -> GooderaOptions:
        """Build the options of ``tenant``, raising ``ConfigError`` on a bad value.

        An unknown key is an error too, so that a misspelled option is not
        ignored. The runtime's own keys (``RUNTIME_OPTIONS``) are accepted.
        """
        known = {field.name for field in attrs.fields(cls)}
        check_option_names(options, known, tenant=tenant, platform="goodera")
        values = {name: options[name] for name in known if name in options}
        parsed = cls(**values)
        parsed.check(tenant)
        return parsed

    def check(self, tenant: str) -> None:
        """Raise ``ConfigError`` naming the first option with an invalid value."""
        if self.opportunity_id is not None and not is_object_id(self.opportunity_id):
            _reject(tenant, "opportunity_id", "a 24-hex ObjectId")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            _reject(tenant, "timezone", "an IANA time zone name such as 'Europe/Paris'")
        if not re.match(r"^[A-Z]{2}$", self.country):
            _reject(tenant, "country", "an ISO 3166-1 alpha-2 code such as 'US'")
        for name in ("event_start", "event_end"):
            if not _CLOCK_TIME.match(getattr(self, name)):
                _reject(tenant, name, "a 24-hour clock time such as '09:00'")
        if self.event_end <= self.event_start:
            _reject(tenant, "event_end", "a time later than event_start")
        count = self.expected_volunteer_count
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            _reject(tenant, "expected_volunteer_count", "a positive integer")
        if self.event_contact_email is not None and "@" not in self.event_contact_email:
            _reject(tenant, "event_contact_email", "an email address")
        if not _FIELD_NAME.match(self.hours_field):
            _reject(tenant, "hours_field", "a JSON field name such as 'hours'")

    def event_window(self, day: dt.date) -> tuple[str, str]:
        """Return the ISO 8601 start and end of the event held on ``day``."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        start = dt.datetime.combine(day, dt.time.fromisoformat(self.event_start), zone)
        end = dt.datetime.combine(day, dt.time.fromisoformat(self.event_end), zone)
        return start.isoformat(), end.isoformat()


def _reject(tenant: str, name: str, expected: str) -> NoReturn:
    key = f"tenants.{tenant}.platforms.goodera.options.{name}"
    message = f"Goodera option {key} is invalid; set it to {expected}."
    raise ConfigError(message, key=key)
