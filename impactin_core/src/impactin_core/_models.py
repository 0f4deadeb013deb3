"""Data models shared by the runtime and every connector.

Values are frozen attrs classes. Fields that hold personal data or secrets
have ``repr=False`` so that a stray ``repr()`` in a log or a traceback never
shows them.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = [
    "CORE_API_VERSION",
    "PERSONAL_FIELDS",
    "Credentials",
    "DeliveryStatus",
    "ImpactRecord",
    "PlatformInfo",
    "PlatformRequest",
    "PlatformSettings",
    "RateLimit",
    "RecordKind",
    "SendOutcome",
    "WebhookEvent",
]

#: Version of the hook and model contract that connectors declare they target.
CORE_API_VERSION = 1

#: Fields of ``ImpactRecord`` that identify or contact an employee.
PERSONAL_FIELDS = frozenset(
    {"employee_id", "employee_email", "employee_name", "employee_phone"}
)


def _kind_set(values: Iterable[RecordKind | str]) -> frozenset[RecordKind]:
    return frozenset(RecordKind(value) for value in values)


def _name_set(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _name_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


#: Largest ``amount_minor`` a record may carry: 12 digits, just under 10
#: billion USD or 1 trillion JPY. No employee donation or match comes near
#: it, so a larger value is a unit or data error. An amount written as text
#: then has at most 12 digits in a row, so the leak scan never reads it as a
#: payment card number (13 to 19 digits). JSON parsers that read numbers as
#: IEEE 754 doubles also keep every digit.
MAX_AMOUNT_MINOR = 10**12 - 1

_CURRENCY = re.compile(r"^[A-Z]{3}$")
# ISO 4217 codes that name no money a donation can be made in: gold, silver,
# palladium and platinum, bond-market units, units of account (XDR, XSU,
# XUA), the testing code XTS and XXX for "no currency".
_NOT_MONEY = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS"}
    | {"XUA", "XXX"}
)
#: Earliest and latest ``activity_date``. A date outside this range, such as
#: 0001-01-01 or 9999-12-31, is a placeholder or a parsing error.
MIN_ACTIVITY_DATE = dt.date(1900, 1, 1)
MAX_ACTIVITY_DATE = dt.date(2100, 12, 31)
_PLATFORM_ID = re.compile(r"^[a-z][a-z0-9_]{1,31}$")


class RecordKind(str, enum.Enum):
    """The kind of activity: time given or money given."""

    VOLUNTEER_TIME = "volunteer_time"
    DONATION = "donation"


#: Fields that only one kind carries. A record of the other kind must leave
#: them empty, because no connector sends them for that kind.
KIND_FIELDS: Mapping[RecordKind, frozenset[str]] = {
    RecordKind.VOLUNTEER_TIME: frozenset({"hours"}),
    RecordKind.DONATION: frozenset({"amount_minor", "currency"}),
}


@functools.cache
def _currency_codes() -> frozenset[str]:
    # pycountry ships the ISO 4217 list. It is imported here, on first use,
    # so that commands that validate no record do not pay for the import.
    import pycountry

    codes = {currency.alpha_3 for currency in pycountry.currencies}
    return frozenset(codes - _NOT_MONEY)


def _check_kind_fields(record: ImpactRecord, field: str, value: Any) -> None:
    if value is None:
        return
    for kind, fields in KIND_FIELDS.items():
        if field in fields and record.kind is not kind:
            raise ValueError(
                f"{field} must be empty for {record.kind.value} records, because "
                f"only {kind.value} records carry it; remove it or set kind to "
                f"{kind.value!r}"
            )


class DeliveryStatus(str, enum.Enum):
    """Life cycle of one record's delivery to one platform."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    BLOCKED = "blocked"


def _non_empty(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not str(value).strip():
        raise ValueError(f"{attribute.name} must not be empty")


def _shown_number(value: float) -> str:
    # str() raises ValueError for integers of more than 4300 digits (the
    # default of sys.get_int_max_str_digits), so long values are described.
    if isinstance(value, int) and value >= 10**40:
        return "of more than 40 digits"
    return str(value)


@attrs.frozen(kw_only=True)
class ImpactRecord:
    """One volunteering or giving activity of one employee.

    Amounts are integers in the currency's minor unit (cents for USD), so a
    donation of 20.00 USD is ``amount_minor=2000, currency="USD"``. They are
    at most ``MAX_AMOUNT_MINOR``.
    """

    source_id: str = attrs.field(validator=_non_empty)
    tenant: str = attrs.field(validator=_non_empty)
    kind: RecordKind = attrs.field(converter=RecordKind)
    activity_date: dt.date = attrs.field()
    employee_id: str = attrs.field(repr=False, validator=_non_empty)
    employee_email: str | None = attrs.field(default=None, repr=False)
    employee_name: str | None = attrs.field(default=None, repr=False)
    employee_phone: str | None = attrs.field(default=None, repr=False)
    hours: float | None = attrs.field(default=None)
    amount_minor: int | None = attrs.field(default=None)
    currency: str | None = attrs.field(default=None)
    cause: str | None = None
    organization_name: str | None = None
    organization_id: str | None = None
    location: str | None = None
    description: str | None = attrs.field(default=None, repr=False)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @activity_date.validator
    def _check_date(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, dt.date) and not (
            MIN_ACTIVITY_DATE <= value <= MAX_ACTIVITY_DATE
        ):
            raise ValueError(
                f"activity_date must be between {MIN_ACTIVITY_DATE.isoformat()} "
                f"and {MAX_ACTIVITY_DATE.isoformat()}"
            )

    @hours.validator
    def _check_hours(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        _check_kind_fields(self, "hours", value)
        invalid = value is None or not 0 < value <= 24
        if self.kind is RecordKind.VOLUNTEER_TIME and invalid:
            raise ValueError(
                "hours must be a number above 0 and at most 24 for "
                "volunteer_time records"
            )

    @amount_minor.validator
    def _check_amount(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        _check_kind_fields(self, "amount_minor", value)
        invalid = value is None or isinstance(value, bool) or value <= 0
        if self.kind is RecordKind.DONATION and invalid:
            raise ValueError(
                "amount_minor must be a positive integer (minor units, "
                "cents for USD) for donation records"
            )
        if not invalid and value > MAX_AMOUNT_MINOR:
            raise ValueError(
                f"amount_minor {_shown_number(value)} is above the maximum of "
                f"{MAX_AMOUNT_MINOR} minor units; check that the source gives the "
                "amount in minor units (cents for USD), because no real donation "
                "is this large"
            )

    @currency.validator
    def _check_currency(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        _check_kind_fields(self, "currency", value)
        if self.kind is RecordKind.DONATION and (
            not isinstance(value, str)
            or not _CURRENCY.match(value)
            or value not in _currency_codes()
        ):
            raise ValueError(
                "currency must be an ISO 4217 code of a currency, such as 'USD', "
                "for donation records"
            )

    @employee_email.validator
    def _check_email(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and "@" not in value:
            raise ValueError("employee_email must be an email address")


@attrs.frozen
class RateLimit:
    """A quota of ``calls`` per ``period`` seconds."""

    calls: int = attrs.field(validator=attrs.validators.gt(0))
    period: float = attrs.field(validator=attrs.validators.gt(0))


class InvalidPlatformInfo(ValueError):
    """A ``PlatformInfo`` field has a value the runtime cannot use."""


def _check_platform_id(info: PlatformInfo, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not _PLATFORM_ID.match(value):
        message = (
            f"PlatformInfo.id {value!r} is invalid; a platform id is 2 to 32 "
            "lower-case letters, digits or underscores, starting with a letter "
            f"(pattern {_PLATFORM_ID.pattern})."
        )
        raise InvalidPlatformInfo(message)


def _check_webhook_scheme(info: PlatformInfo, attribute: Any, value: Any) -> None:
    # Imported here because the webhooks module imports this one.
    from .webhooks import SCHEMES

    if value is None or value in SCHEMES:
        return
    accepted = ", ".join(repr(scheme) for scheme in SCHEMES)
    message = (
        f"PlatformInfo.webhook_scheme {value!r} of platform {info.id!r} is not a "
        f"known scheme; use one of {accepted}, or None when the platform sends "
        "no webhooks."
    )
    raise InvalidPlatformInfo(message)


@attrs.frozen(kw_only=True)
class PlatformInfo:
    """A connector's declaration of its platform, made when it registers."""

    id: str = attrs.field(validator=_check_platform_id)
    name: str
    kinds: frozenset[RecordKind] = attrs.field(converter=_kind_set)
    auth_kinds: tuple[str, ...] = attrs.field(converter=_name_tuple)
    transports: tuple[str, ...] = attrs.field(converter=_name_tuple, default=("rest",))
    batch_limit: int = 1
    rate_limit: RateLimit = RateLimit(60, 60.0)
    #: ``ImpactRecord`` fields the platform needs to receive in clear.
    personal_fields: frozenset[str] = attrs.field(
        converter=_name_set, factory=frozenset
    )
    #: Personal fields a tenant may additionally allow through.
    widenable_fields: frozenset[str] = attrs.field(
        converter=_name_set, factory=frozenset
    )
    webhook_scheme: str | None = attrs.field(
        default=None, validator=_check_webhook_scheme
    )
    #: Names the connector reads from ``PlatformSettings.secrets``. When
    #: declared, a ``credentials`` table with another name is an error before
    #: anything is sent; None accepts any name.
    credential_names: frozenset[str] | None = attrs.field(
        converter=attrs.converters.optional(_name_set), default=None
    )
    #: True when the platform honours the idempotency key the connector sends,
    #: so an ambiguous failure of a POST may be repeated.
    honours_idempotency_key: bool = False
    #: ``"module:function"`` of the simulator factory, see ``impactin_core.sandbox``.
    simulator: str | None = None
    core_api: int = CORE_API_VERSION


@attrs.frozen(kw_only=True)
class PlatformSettings:
    """One tenant's settings for one platform, with secrets already resolved.

    ``secrets`` maps a connector's credential names (``client_id``,
    ``api_key``) to their values; it is never shown in ``repr``.
    """

    tenant: str
    platform: str
    base_url: str
    enabled: bool = True
    protocol: str = "rest"
    secrets: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    options: Mapping[str, Any] = attrs.field(factory=dict)

    def secret(self, name: str) -> str:
        """Return the secret ``name`` or raise a ConfigError naming the fix."""
        from ._errors import ConfigError

        try:
            return self.secrets[name]
        except KeyError:
            key = f"tenants.{self.tenant}.platforms.{self.platform}.credentials.{name}"
            message = (
                f"Tenant {self.tenant!r} has no {name!r} credential for "
                f"{self.platform!r}; set {key} to the name of an environment "
                "variable that holds it."
            )
            raise ConfigError(message, key=key) from None


@attrs.frozen(kw_only=True)
class PlatformRequest:
    """One call (or one short sequence of calls) a connector will make.

    ``payload`` is JSON-compatible data; the runtime redacts and scans it
    before the send. ``personal_paths`` lists the dotted payload paths where
    the platform's declared personal fields are expected, so the leak scan
    allows them there and nowhere else.
    """

    platform: str
    tenant: str
    operation: str
    idempotency_key: str
    source_ids: tuple[str, ...] = attrs.field(converter=_name_tuple)
    payload: dict[str, Any] = attrs.field(repr=False)
    personal_paths: frozenset[str] = attrs.field(converter=_name_set, factory=frozenset)
    #: The connector states that repeating this call cannot create a duplicate.
    safe_to_repeat: bool = False


@attrs.frozen(kw_only=True)
class Credentials:
    """The credentials ``impactin_authenticate`` returns for one send."""

    kind: str
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    expires_at: float | None = None


@attrs.frozen(kw_only=True)
class SendOutcome:
    """A successful send: the platform accepted the request."""

    status_code: int
    response_id: str | None = None
    #: True when the platform reported the request as a repeat it already had.
    duplicate: bool = False


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """An inbound event whose signature was verified."""

    platform: str
    event_id: str | None
    timestamp: int | None
    payload: Any = attrs.field(repr=False)
