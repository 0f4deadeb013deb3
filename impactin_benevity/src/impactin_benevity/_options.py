"""Tenant options of the Benevity connector, read from ``settings.options``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from impactin_core import ConfigError, check_option_names

__all__ = [
    "AUTH_KIND",
    "DEFAULT_PAYMENT_TYPE",
    "DEFAULT_WEBHOOK_SCHEME",
    "TOKEN_LIFETIME",
    "BenevityOptions",
    "option_key",
]

#: The kind of credentials the connector obtains: OAuth 2.0 client
#: credentials.
AUTH_KIND = "oauth2_client_credentials"

#: Token lifetime in seconds that Benevity documents, used when a token
#: response has no usable ``expires_in``.
TOKEN_LIFETIME = 3600

#: ``funds.paymentType`` of a post-paid company donation in Benevity's
#: published bulk-donation example: the company settles the month's
#: donations against a donation report.
DEFAULT_PAYMENT_TYPE = "DONATION_REPORT"

#: Benevity publishes no webhook signature scheme, so the connector verifies
#: inbound events with Standard Webhooks unless a tenant picks another one.
DEFAULT_WEBHOOK_SCHEME = "standard_webhooks"


def option_key(tenant: str, name: str) -> str:
    """Return the configuration key of the Benevity option ``name``."""
    return f"tenants.{tenant}.platforms.benevity.options.{name}"


@attrs.frozen(kw_only=True)
class BenevityOptions:
    """One tenant's Benevity options.

    Only ``foundation_id`` and ``receipted`` map to documented behaviour:
    Benevity picks a foundation when the donation names none, and receipts
    the donor unless ``receipted`` is false. The other defaults are the
    connector's choices, listed in the platform page.
    """

    foundation_id: str | None = None
    payment_type: str = DEFAULT_PAYMENT_TYPE
    funds_source: str | None = None
    receipted: bool = True
    token_url: str | None = None
    webhook_scheme: str = DEFAULT_WEBHOOK_SCHEME

    @classmethod
    def from_settings(cls, tenant: str, options: Mapping[str, Any]) -> BenevityOptions:
        """Build the options of ``tenant``, raising ``ConfigError`` on a bad value.

        An unknown key is an error too, so that a misspelled option is not
        ignored. The runtime's own keys (``RUNTIME_OPTIONS``) are accepted.
        """
        known = {field.name for field in attrs.fields(cls)}
        check_option_names(options, known, tenant=tenant, platform="benevity")
        values = {name: options[name] for name in known if name in options}
        parsed = cls(**values)
        parsed.check(tenant)
        return parsed

    def check(self, tenant: str) -> None:
        """Raise ``ConfigError`` naming the first option with an invalid value."""
        for name in ("foundation_id", "funds_source", "token_url"):
            value = getattr(self, name)
            if value is not None and not _is_text(value):
                _reject(tenant, name, "a non-empty string, or leave it unset")
        for name in ("payment_type", "webhook_scheme"):
            if not _is_text(getattr(self, name)):
                _reject(tenant, name, "a non-empty string")
        if not isinstance(self.receipted, bool):
            _reject(tenant, "receipted", "true or false")
        if self.token_url is not None and not self.token_url.startswith(
            ("http://", "https://")
        ):
            _reject(tenant, "token_url", "an http:// or https:// URL")


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _reject(tenant: str, name: str, expected: str) -> NoReturn:
    key = option_key(tenant, name)
    message = f"Benevity option {key} is invalid; set it to {expected}."
    raise ConfigError(message, key=key)
