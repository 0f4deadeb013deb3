"""Data models shared by the runtime and every connector.

Values are frozen attrs classes. Fields that hold personal data or secrets
have ``repr=False`` so that a stray ``repr()`` in a log or a traceback never
shows them.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
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


def _record_kind(value: RecordKind | str) -> RecordKind:
    try:
        return RecordKind(value)
    except ValueError:
        known = ", ".join(repr(kind.value) for kind in RecordKind)
        raise ValueError(
            f"kind is {_shown_value(value)}, not a record kind; use one of {known}"
        ) from None


def _kind_set(values: Iterable[RecordKind | str]) -> frozenset[RecordKind]:
    return frozenset(_record_kind(value) for value in values)


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
#: Deepest nesting of lists and mappings in ``metadata``, counting the
#: metadata mapping itself as level 1. The JSON Lines reader allows one
#: level more for the line's own object.
MAX_METADATA_DEPTH = 31
#: Longest ``employee_email``: the 254 characters that fit in the SMTP path
#: of RFC 5321 (256 octets with the angle brackets).
MAX_EMAIL_LENGTH = 254
# C0 control characters other than tab, line feed and carriage return, which
# XML cannot carry and a C string ends at (NUL), and lone surrogates, which
# UTF-8 cannot encode.
BAD_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
# Characters that a bare address cannot contain: whitespace, and the
# display-name and comment syntax of "Name <a@example.com>" or
# "a@example.com (Name)".
_NAME_SYNTAX = r"\s<>()\[\]\",;:\\"
# One "@" between a non-empty local part and a domain of at least two
# non-empty labels. Addresses that fail it get a diagnosis from _email_problem.
_BARE_EMAIL = re.compile(
    rf"[^{_NAME_SYNTAX}@]+@[^{_NAME_SYNTAX}@.]+(?:\.[^{_NAME_SYNTAX}@.]+)+"
)
_NAME_SYNTAX_CHAR = re.compile(rf"[{_NAME_SYNTAX}]")


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


_NUMBER_TEXT = re.compile(r"[-+]?[\d.,_' ]*\d[\d.,_' ]*(?:[eE][-+]?\d+)?")
_DATE_TEXT = re.compile(r"\d{1,4}[-./]\d{1,2}[-./]\d{1,4}")
_WORD_TEXT = re.compile(r"[A-Za-z_]{1,24}")


def quotable_text(text: str) -> bool:
    """Return whether an error about a kind, date, number or code may quote ``text``.

    A wrong column can put an email, a name or a phone number there. So only
    a number with at most six digits (phone numbers and ids have more), a
    date of digits and separators, or one word of letters is quoted.
    """
    text = text.strip()
    if _NUMBER_TEXT.fullmatch(text):
        return sum(char.isdigit() for char in text) <= 6
    return bool(_DATE_TEXT.fullmatch(text) or _WORD_TEXT.fullmatch(text))


def described_text(text: str) -> str:
    """Describe text that ``quotable_text`` rejects by its shape and length."""
    stripped = text.strip()
    if _NUMBER_TEXT.fullmatch(stripped):
        digits = sum(char.isdigit() for char in stripped)
        return f"a number of {digits} digits"
    return f"text of {len(text)} characters"


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _shown_value(value: Any) -> str:
    """Describe a value of a field meant for a kind, a date, a number or a code.

    Such a field may still receive a personal value from a wrong column, such
    as an email in ``kind`` or a phone number in ``amount_minor``. So only
    text of a safe shape is quoted (see ``quotable_text``), and other text is
    described by its shape and length.
    """
    if isinstance(value, str):
        if quotable_text(value):
            return f"the str {value!r}"
        return f"a str ({described_text(value)})"
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        text = repr(value) if not isinstance(value, int) else _shown_number(value)
        if len(text) <= 40:
            return f"the {type(value).__name__} {text}"
    return _type_name(value)


def _check_text(field: str, value: str) -> None:
    # Printable text has neither control characters nor surrogates, and
    # str.isprintable is faster than the search.
    if value.isprintable():
        return
    bad = BAD_TEXT.search(value)
    if bad is None:
        return
    code_point = f"U+{ord(bad.group()):04X}"
    if "\ud800" <= bad.group() <= "\udfff":
        message = (
            f"{field} contains the lone surrogate {code_point} at index "
            f"{bad.start()}, which is not valid UTF-8 text; fix the escape or "
            "the decoding that produced it"
        )
    else:
        message = (
            f"{field} contains the control character {code_point} at index "
            f"{bad.start()}; remove it, because of the control characters text "
            "may contain only tab, line feed and carriage return"
        )
    raise ValueError(message)


def _required_text(
    instance: object, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if not isinstance(value, str):
        raise ValueError(
            f"{attribute.name} must be a str, not {_type_name(value)}; pass it "
            "as text, such as str(value) for a number"
        )
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")
    _check_text(attribute.name, value)


#: Text fields of ``ImpactRecord`` that may be None, other than
#: ``employee_email`` and ``currency``, which have validators of their own.
_OPTIONAL_TEXT_FIELDS = (
    "employee_name",
    "employee_phone",
    "cause",
    "organization_name",
    "organization_id",
    "location",
    "description",
)


def _check_optional_text(field: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(
            f"{field} must be a str or None, not {_type_name(value)}; pass it as text"
        )
    _check_text(field, value)


#: Characters that start an "@", written plainly or out.
_MAY_HOLD_AT = re.compile(r"[@%(\[{&]")


def contains_email(text: str) -> bool:
    """Return True when the leak scan would find an email address in ``text``.

    Only text that may contain an "@" is scanned: an "@", a %-escape, a
    non-ASCII character (NFKC turns U+FF20 into "@"), or a bracket or an
    ampersand, which start "(at)" and "&#64;". Most identifiers cost one
    fast check.
    """
    if text.isascii() and not _MAY_HOLD_AT.search(text):
        return False
    # Imported here because _redaction imports this module.
    from ._redaction import detect

    return "email" in detect(text)


def _email_problem(value: str) -> str:
    """Return what makes ``value`` other than one bare address, without the value."""
    if len(value) > MAX_EMAIL_LENGTH:
        return (
            f"is longer than {MAX_EMAIL_LENGTH} characters, the maximum of an "
            "address; give one bare address, such as name@example.com"
        )
    syntax = _NAME_SYNTAX_CHAR.search(value)
    if syntax is not None:
        char = syntax.group()
        if char.isspace():
            found = "whitespace"
        elif char in "<>":
            found = "an angle bracket"
        else:
            found = f"the character {char!r}"
        return (
            f"contains {found}, which a bare address cannot contain; give the "
            "bare address, such as name@example.com, without a display name, "
            "comment or quotes"
        )
    signs = value.count("@")
    if signs != 1:
        return (
            f"has {signs} '@' signs; give one bare address with exactly one '@', "
            "such as name@example.com"
        )
    if value.startswith("@"):
        return (
            "has nothing before the '@'; give the full address, such as "
            "name@example.com"
        )
    return (
        "has a domain without a dot or with an empty label; give the full "
        "domain, such as name@example.com"
    )


def _check_metadata_values(metadata: Mapping[Any, Any]) -> None:
    """Raise ValueError for anything in ``metadata`` that is not JSON data.

    The walk uses a stack, so deep nesting cannot exhaust the recursion limit
    before the depth check. Printable strings and plain scalars, nearly every
    value, are checked inline, because a call per value costs more than the
    check.
    """
    stack: list[tuple[Any, int, str]] = [(metadata, 1, "metadata")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(
                f"metadata nests lists and dicts more than {MAX_METADATA_DEPTH} "
                f"levels deep at {path}; flatten it"
            )
        is_mapping = isinstance(node, Mapping)
        items: Iterable[tuple[Any, Any]] = (
            node.items() if is_mapping else enumerate(node)
        )
        for key, item in items:
            if is_mapping and not (isinstance(key, str) and key.isprintable()):
                _check_metadata_key(path, key)
            if isinstance(item, str):
                if item.isprintable():
                    continue
            elif item is None or isinstance(item, int):
                continue
            child = f"{path}.{key}" if is_mapping else f"{path}[{key}]"
            _check_metadata_value(child, item, depth, stack)


def _check_metadata_key(path: str, key: Any) -> None:
    if not isinstance(key, str):
        raise ValueError(
            f"{path} has a key of type {_type_name(key)}; JSON object keys are "
            "text, so convert it with str()"
        )
    _check_text(f"a key in {path}", key)


def _check_metadata_value(
    path: str, value: Any, depth: int, stack: list[tuple[Any, int, str]]
) -> None:
    if isinstance(value, str):
        _check_text(path, value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{path} is {value!r}, which JSON cannot represent; give a finite "
                "number or None"
            )
    elif isinstance(value, (dict, list, tuple)):
        stack.append((value, depth + 1, path))
    else:
        raise ValueError(
            f"{path} has type {_type_name(value)}, which is not a JSON value; use "
            "str, int, float, bool, None, or lists and dicts of these"
        )


def _shown_number(value: float) -> str:
    # str() raises ValueError for integers of more than 4300 digits (the
    # default of sys.get_int_max_str_digits), so long values are described.
    if isinstance(value, int) and abs(value) >= 10**40:
        return "of more than 40 digits"
    return str(value)


def _hours_value(value: Any) -> Any:
    # Records are stored and compared as JSON, which has no decimal type.
    if isinstance(value, Decimal) and value.is_finite():
        return float(value)
    return value


@attrs.frozen(kw_only=True)
class ImpactRecord:
    """One volunteering or giving activity of one employee.

    Amounts are integers in the currency's minor unit (cents for USD), so a
    donation of 20.00 USD is ``amount_minor=2000, currency="USD"``. They are
    at most ``MAX_AMOUNT_MINOR``.
    """

    source_id: str = attrs.field()
    tenant: str = attrs.field(validator=_required_text)
    kind: RecordKind = attrs.field(converter=_record_kind)
    activity_date: dt.date = attrs.field()
    employee_id: str = attrs.field(repr=False, validator=_required_text)
    employee_email: str | None = attrs.field(default=None, repr=False)
    employee_name: str | None = attrs.field(default=None, repr=False)
    employee_phone: str | None = attrs.field(default=None, repr=False)
    #: A finite ``Decimal`` is converted to float.
    hours: float | None = attrs.field(default=None, converter=_hours_value)
    amount_minor: int | None = attrs.field(default=None)
    currency: str | None = attrs.field(default=None)
    cause: str | None = None
    organization_name: str | None = None
    organization_id: str | None = None
    location: str | None = None
    description: str | None = attrs.field(default=None, repr=False)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        # One loop checks the optional text fields, because a validator per
        # field costs a call each, and a delivery builds each record several
        # times (read or passed in, loaded from the store, minimized).
        for name in _OPTIONAL_TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, str) and value.isprintable()
            ):
                _check_optional_text(name, value)

    @source_id.validator
    def _check_source_id(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        _required_text(self, attribute, value)
        if contains_email(value):
            # The source id is stored in clear and listed by the CLI, so the
            # message does not repeat it.
            raise ValueError(
                "source_id contains an email address, which would be stored and "
                "listed in clear; use an opaque id from the source system, such "
                "as a row number or a database key"
            )

    @activity_date.validator
    def _check_date(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, dt.datetime):
            raise ValueError(
                "activity_date must be a datetime.date, not a datetime.datetime; "
                "pass value.date(), taken in the time zone of the activity"
            )
        if not isinstance(value, dt.date):
            raise ValueError(
                f"activity_date must be a datetime.date, not {_shown_value(value)}; "
                "convert ISO 8601 text with datetime.date.fromisoformat()"
            )
        if not MIN_ACTIVITY_DATE <= value <= MAX_ACTIVITY_DATE:
            raise ValueError(
                f"activity_date must be between {MIN_ACTIVITY_DATE.isoformat()} "
                f"and {MAX_ACTIVITY_DATE.isoformat()}"
            )

    @hours.validator
    def _check_hours(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        _check_kind_fields(self, "hours", value)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float))
        ):
            # _hours_value has converted every finite Decimal.
            if isinstance(value, Decimal):
                described = "a non-finite Decimal"
            else:
                described = _shown_value(value)
            raise ValueError(
                "hours must be a finite number (int, float or Decimal), not "
                f"{described}; convert it before building "
                "the record"
            )
        invalid = value is None or not 0 < value <= 24
        if self.kind is RecordKind.VOLUNTEER_TIME and invalid:
            found = "missing" if value is None else f"{value!r}"
            raise ValueError(
                f"hours is {found}, but volunteer_time records need a number "
                "above 0 and at most 24"
            )

    @amount_minor.validator
    def _check_amount(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        _check_kind_fields(self, "amount_minor", value)
        if value is not None and not isinstance(value, int):
            # A float is rejected even when it is whole: it often means an
            # amount in major units or the result of arithmetic, and the
            # model never rounds.
            raise ValueError(
                "amount_minor must be an int of minor units, such as 2570 for "
                f"25.70 USD, not {_shown_value(value)}; convert the amount to "
                "an int before building the record, because a float is rejected "
                "even when it is whole and no amount is rounded"
            )
        if value is None or isinstance(value, bool) or value <= 0:
            if self.kind is RecordKind.DONATION:
                found = "missing" if value is None else _shown_value(value)
                raise ValueError(
                    f"amount_minor is {found}, but donation records need a "
                    "positive integer of minor units (cents for USD)"
                )
            return
        if value > MAX_AMOUNT_MINOR:
            raise ValueError(
                f"amount_minor {_shown_number(value)} is above the maximum of "
                f"{MAX_AMOUNT_MINOR} minor units; check that the source gives the "
                "amount in minor units (cents for USD), because no real donation "
                "is this large"
            )

    @currency.validator
    def _check_currency(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        _check_kind_fields(self, "currency", value)
        if self.kind is not RecordKind.DONATION:
            return
        if isinstance(value, str) and _CURRENCY.match(value):
            if value in _currency_codes():
                return
        elif isinstance(value, str) and value.upper() in _currency_codes():
            raise ValueError(
                f"currency must be upper case for donation records; write "
                f"{value.upper()!r}"
            )
        raise ValueError(
            "currency must be an ISO 4217 code of a currency, such as 'USD', "
            "for donation records"
        )

    @employee_email.validator
    def _check_email(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        _check_optional_text("employee_email", value)
        if len(value) > MAX_EMAIL_LENGTH or not _BARE_EMAIL.fullmatch(value):
            raise ValueError(f"employee_email {_email_problem(value)}")

    @metadata.validator
    def _check_metadata(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, Mapping):
            raise ValueError(
                f"metadata must be a mapping of str keys to JSON values, not "
                f"{_type_name(value)}; pass a dict"
            )
        if value:
            _check_metadata_values(value)


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
    #: The platform's ``allow_http`` setting: whether a connector may also
    #: send to plain http:// URLs on other machines (a token URL, say).
    allow_http: bool = False

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
