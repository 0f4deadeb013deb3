"""Read CSV and JSON Lines files into ``ImpactRecord`` values, one row at a time.

A file is either canonical (columns or JSON keys named like the fields of
``ImpactRecord``) or described by a ``ColumnMapping`` built from an
``[inputs.<name>]`` table of the configuration. ``read_records`` streams the
file and yields exactly one ``ParsedRow`` or ``RejectedRow`` per data row, so
an invalid row is reported with its reason and never dropped.

Rejection reasons name the field, the problem and the fix. They quote the
offending value only for fields that cannot hold personal data (kind, date,
hours, amount, currency).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Generator, Iterator, Mapping
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO

import attrs
import cattrs
from cattrs.errors import ClassValidationError

from ._converter import converter as shared_converter
from ._errors import ConfigError
from ._models import (
    KIND_FIELDS,
    MAX_AMOUNT_MINOR,
    MAX_METADATA_DEPTH,
    ImpactRecord,
    RecordKind,
    contains_email,
    described_text,
    quotable_text,
)

__all__ = [
    "ColumnMapping",
    "IdentityFunction",
    "ParsedRow",
    "RejectedRow",
    "currency_digits",
    "mappings_from_config",
    "read_records",
]

#: ``identity(row_number, raw_row)`` returns extra record fields for a row,
#: such as the employee's id and email. ``row_number`` counts data rows from 1.
IdentityFunction = Callable[[int, Mapping[str, Any]], Mapping[str, Any]]

FileFormat = Literal["csv", "jsonl"]
AmountFormat = Literal["decimal", "minor"]


#: Deepest nesting of JSON objects and arrays in one JSON Lines row, counting
#: the row's own object as level 1, so one level more than the record model
#: allows in metadata. About 500 levels exhaust the recursion limit of the
#: code that structures, redacts and serializes records. The limit of 32 is a
#: judgment, well below that and well above the 3 levels that the demo
#: records' metadata uses.
_MAX_JSON_DEPTH = MAX_METADATA_DEPTH + 1
#: Key of a rejected CSV row's ``raw`` that contains the cells beyond the header.
EXTRA_CELLS = "_extra_cells"
#: Largest CSV field read, in bytes.
_MAX_FIELD_BYTES = 16 * 1024 * 1024
_FIELDS = tuple(field.name for field in attrs.fields(ImpactRecord))
_MAPPABLE_FIELDS = frozenset(_FIELDS) - {"metadata"}
_REQUIRED_FIELDS = ("source_id", "tenant", "kind", "activity_date", "employee_id")
_TEXT_FIELDS = frozenset(
    {
        "source_id",
        "tenant",
        "employee_id",
        "employee_email",
        "employee_name",
        "employee_phone",
        "currency",
        "cause",
        "organization_name",
        "organization_id",
        "location",
        "description",
    }
)
# Fields whose values never identify a person, so a reason may quote them.
_QUOTABLE_FIELDS = frozenset(
    {"kind", "activity_date", "hours", "amount_minor", "currency"}
)
_SUFFIX_FORMATS: Mapping[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_CONFIG_KEYS = frozenset(
    {
        "format",
        "kind",
        "kind_column",
        "kind_values",
        "encoding",
        "delimiter",
        "columns",
        "formats",
        "defaults",
        "lists",
        "metadata",
    }
)
_FORMAT_KEYS = frozenset(
    {"activity_date", "amount", "decimal_separator", "thousands_separator"}
)

# ISO 4217 minor-unit digits of the currencies that do not use 2.
_CURRENCY_DIGITS: Mapping[str, int] = {
    **dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW"], 0),
    **dict.fromkeys(["PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF"], 0),
    **dict.fromkeys(["XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}


def currency_digits(currency: str | None) -> int:
    """Return the number of minor-unit digits of an ISO 4217 currency (2 if unknown)."""
    if currency is None:
        return 2
    return _CURRENCY_DIGITS.get(currency.upper(), 2)


@attrs.frozen
class ParsedRow:
    """A data row that became a valid record; ``line`` is where the row starts."""

    line: int
    record: ImpactRecord


def _opaque_source_id(value: Any) -> str | None:
    if not isinstance(value, str) or contains_email(value):
        return None
    return value


@attrs.frozen
class RejectedRow:
    """A data row that failed validation, with a reason naming the fix.

    ``raw`` is the row as read (column name to cell), kept for the
    quarantine. It may hold personal data, so it is not shown in ``repr``.
    """

    line: int
    #: The row's source id. It is None when the row has none, or when it
    #: contains an email address, because the quarantine stores and lists
    #: the source id in clear.
    source_id: str | None = attrs.field(converter=_opaque_source_id)
    field: str | None
    reason: str
    raw: dict[str, Any] = attrs.field(repr=False)
    #: Tenant of the row: its own tenant field or column, else the tenant
    #: being read. None when neither is known.
    tenant: str | None = None
    #: Kind of the row, when it could be read.
    kind: RecordKind | None = None


class _RowRejected(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


# ---------------------------------------------------------------------------
# Column mapping
# ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ColumnMapping:
    """Rules that turn the columns of one kind of input file into record fields.

    Column names are stored stripped of surrounding spaces and are compared
    with header names stripped the same way. ``defaults`` hold parsed values
    used when a field has no column or its cell is empty.
    """

    key: str
    format: FileFormat | None = None
    kind: RecordKind | None = None
    kind_column: str | None = None
    kind_values: Mapping[str, RecordKind] = attrs.field(factory=dict)
    encoding: str = "utf-8"
    delimiter: str = ","
    columns: Mapping[str, str] = attrs.field(factory=dict)
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    amount_format: AmountFormat = "minor"
    decimal_separator: str = "."
    thousands_separator: str = ","
    defaults: Mapping[str, Any] = attrs.field(factory=dict)
    lists: Mapping[str, str] = attrs.field(factory=dict)
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    #: True for a CSV file whose header names record fields. Its numbers are
    #: plain: hours use "." as the decimal point and amount_minor is an integer.
    is_canonical: bool = False

    @classmethod
    def from_config(cls, data: Mapping[str, Any], *, key: str) -> ColumnMapping:
        """Build a mapping from an ``[inputs.<name>]`` table as read from TOML.

        Raises ``ConfigError`` naming the full key of the first missing or
        malformed setting.
        """
        _require_table(data, key)
        unknown = sorted(set(data) - _CONFIG_KEYS)
        if unknown:
            message = (
                f"{key}.{unknown[0]} is not a known setting; use one of "
                f"{', '.join(sorted(_CONFIG_KEYS))}."
            )
            raise ConfigError(message, key=f"{key}.{unknown[0]}")
        columns = _config_columns(data, key)
        kind, kind_column, kind_values = _config_kind(data, key)
        lists = _config_lists(data, key, columns)
        formats = _config_formats(data, key, columns)
        mapping = cls(
            key=key,
            format=_config_format(data, key),
            kind=kind,
            kind_column=kind_column,
            kind_values=kind_values,
            encoding=_config_encoding(data, key),
            delimiter=_config_delimiter(data, key),
            columns=columns,
            lists=lists,
            metadata=_config_metadata(data, key, lists),
            **formats,
        )
        defaults = _config_defaults(data, key, mapping)
        return attrs.evolve(mapping, defaults=defaults)

    @classmethod
    def canonical(cls, header: list[str]) -> ColumnMapping:
        """Build the mapping of a CSV file whose header names record fields.

        A ``metadata.<name>`` column goes into ``record.metadata[<name>]``.
        Amounts are in minor units and dates in ISO 8601 (``2024-03-01``).
        """
        columns: dict[str, str] = {}
        metadata: dict[str, str] = {}
        for name in header:
            if name in _MAPPABLE_FIELDS and name != "kind":
                columns[name] = name
            elif name.startswith("metadata.") and len(name) > len("metadata."):
                metadata[name.removeprefix("metadata.")] = name
            elif name != "kind":
                message = (
                    f"Column {name!r} is not an ImpactRecord field; rename it to "
                    f"'metadata.{name}' to keep it in the record's metadata, or "
                    "read the file with a column mapping."
                )
                raise ConfigError(message)
        kind_column = "kind" if "kind" in header else None
        return cls(
            key="input",
            kind_column=kind_column,
            columns=columns,
            metadata=metadata,
            thousands_separator="",
            is_canonical=True,
        )

    def column_of(self, field: str) -> str | None:
        """Return the column that feeds ``field``, if any."""
        if field == "kind":
            return self.kind_column
        return self.columns.get(field)


def mappings_from_config(
    inputs: Mapping[str, Any], *, key: str = "inputs"
) -> dict[str, ColumnMapping]:
    """Build every mapping of an ``[inputs]`` table, keyed by its name."""
    _require_table(inputs, key)
    return {
        name: ColumnMapping.from_config(table, key=f"{key}.{name}")
        for name, table in inputs.items()
    }


def _require_table(data: Any, key: str) -> None:
    if not isinstance(data, Mapping):
        message = (
            f"{key} must be a table, not {type(data).__name__}; write it as [{key}]."
        )
        raise ConfigError(message, key=key)


def _config_string(data: Mapping[str, Any], name: str, key: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        message = f"{key}.{name} must be a non-empty string."
        raise ConfigError(message, key=f"{key}.{name}")
    return value


def _config_format(data: Mapping[str, Any], key: str) -> FileFormat | None:
    value = _config_string(data, "format", key)
    if value is None:
        return None
    if value == "csv":
        return "csv"
    if value == "jsonl":
        return "jsonl"
    message = f"{key}.format is {value!r}; set it to 'csv' or 'jsonl'."
    raise ConfigError(message, key=f"{key}.format")


def _config_encoding(data: Mapping[str, Any], key: str) -> str:
    value = _config_string(data, "encoding", key) or "utf-8"
    try:
        codecs.lookup(value)
    except LookupError:
        message = (
            f"{key}.encoding {value!r} is not a known text encoding; use a "
            "Python codec name such as 'utf-8' or 'cp1252'."
        )
        raise ConfigError(message, key=f"{key}.encoding") from None
    return value


def _config_delimiter(data: Mapping[str, Any], key: str) -> str:
    value = data.get("delimiter", ",")
    if not isinstance(value, str) or len(value) != 1:
        message = f"{key}.delimiter must be one character such as ',' or ';'."
        raise ConfigError(message, key=f"{key}.delimiter")
    return value


def _config_column_table(
    data: Mapping[str, Any], name: str, key: str
) -> dict[str, str]:
    table = data.get(name, {})
    _require_table(table, f"{key}.{name}")
    result: dict[str, str] = {}
    for entry, column in table.items():
        if not isinstance(column, str) or not column.strip():
            message = (
                f"{key}.{name}.{entry} must be the name of a column, as a "
                "non-empty string."
            )
            raise ConfigError(message, key=f"{key}.{name}.{entry}")
        result[entry] = column.strip()
    return result


def _config_columns(data: Mapping[str, Any], key: str) -> dict[str, str]:
    if "columns" not in data:
        message = (
            f"{key}.columns is missing; add a [{key}.columns] table that maps "
            "record fields to column names."
        )
        raise ConfigError(message, key=f"{key}.columns")
    columns = _config_column_table(data, "columns", key)
    for field in columns:
        if field == "kind":
            message = f"{key}.columns.kind is not used; set {key}.kind_column instead."
            raise ConfigError(message, key=f"{key}.columns.kind")
        if field not in _MAPPABLE_FIELDS:
            hint = " (amounts map to amount_minor)" if field == "amount" else ""
            message = (
                f"{key}.columns.{field} is not an ImpactRecord field{hint}; use "
                f"one of {', '.join(sorted(_MAPPABLE_FIELDS - {'kind'}))}, or "
                f"copy the column into {key}.metadata."
            )
            raise ConfigError(message, key=f"{key}.columns.{field}")
    if "source_id" not in columns:
        message = (
            f"{key}.columns.source_id is missing; map it to the column that "
            "identifies a row."
        )
        raise ConfigError(message, key=f"{key}.columns.source_id")
    return columns


def _config_kind(
    data: Mapping[str, Any], key: str
) -> tuple[RecordKind | None, str | None, dict[str, RecordKind]]:
    constant = _config_string(data, "kind", key)
    column = _config_string(data, "kind_column", key)
    if (constant is None) == (column is None):
        message = (
            f"Set exactly one of {key}.kind ('volunteer_time' or 'donation') "
            f"and {key}.kind_column (the column that holds the kind)."
        )
        raise ConfigError(message, key=f"{key}.kind")
    values = data.get("kind_values", {})
    _require_table(values, f"{key}.kind_values")
    kind_values = {
        label.strip().casefold(): _config_record_kind(
            value, f"{key}.kind_values.{label}"
        )
        for label, value in values.items()
    }
    if constant is not None:
        return _config_record_kind(constant, f"{key}.kind"), None, kind_values
    return None, (column or "").strip(), kind_values


def _config_record_kind(value: Any, key: str) -> RecordKind:
    try:
        return RecordKind(value)
    except ValueError:
        message = f"{key} is {value!r}; set it to 'volunteer_time' or 'donation'."
        raise ConfigError(message, key=key) from None


def _config_formats(
    data: Mapping[str, Any], key: str, columns: Mapping[str, str]
) -> dict[str, Any]:
    table = data.get("formats", {})
    _require_table(table, f"{key}.formats")
    unknown = sorted(set(table) - _FORMAT_KEYS)
    if unknown:
        message = (
            f"{key}.formats.{unknown[0]} is not a known format; use one of "
            f"{', '.join(sorted(_FORMAT_KEYS))}."
        )
        raise ConfigError(message, key=f"{key}.formats.{unknown[0]}")
    decimal_separator = table.get("decimal_separator", ".")
    default_thousands = "," if decimal_separator == "." else ""
    thousands_separator = table.get("thousands_separator", default_thousands)
    _check_separators(decimal_separator, thousands_separator, f"{key}.formats")
    return {
        "date_formats": _config_date_formats(table, key),
        "amount_format": _config_amount_format(table, key, columns),
        "decimal_separator": decimal_separator,
        "thousands_separator": thousands_separator,
    }


def _config_date_formats(table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = table.get("activity_date", "%Y-%m-%d")
    formats = (value,) if isinstance(value, str) else value
    if (
        not isinstance(formats, (list, tuple))
        or not formats
        or not all(isinstance(item, str) and "%" in item for item in formats)
    ):
        message = (
            f"{key}.formats.activity_date must be a strptime format such as "
            "'%d/%m/%Y', or a list of them tried in order."
        )
        raise ConfigError(message, key=f"{key}.formats.activity_date")
    return tuple(formats)


def _config_amount_format(
    table: Mapping[str, Any], key: str, columns: Mapping[str, str]
) -> AmountFormat:
    value = table.get("amount")
    if value is None and "amount_minor" in columns:
        # Guessing wrong scales every amount by 100, so the setting is required.
        message = (
            f"{key}.formats.amount is missing; set it to 'decimal' when column "
            f"{columns['amount_minor']!r} holds major units (20.00) or 'minor' "
            "when it holds minor units (2000)."
        )
        raise ConfigError(message, key=f"{key}.formats.amount")
    if value is None or value == "minor":
        return "minor"
    if value == "decimal":
        return "decimal"
    message = f"{key}.formats.amount is {value!r}; set it to 'decimal' or 'minor'."
    raise ConfigError(message, key=f"{key}.formats.amount")


def _check_separators(
    decimal_separator: Any, thousands_separator: Any, key: str
) -> None:
    if not isinstance(decimal_separator, str) or len(decimal_separator) != 1:
        message = f"{key}.decimal_separator must be one character, '.' or ','."
        raise ConfigError(message, key=f"{key}.decimal_separator")
    if (
        not isinstance(thousands_separator, str)
        or len(thousands_separator) > 1
        or thousands_separator == decimal_separator
    ):
        message = (
            f"{key}.thousands_separator must be one character other than the "
            "decimal separator, or '' for none."
        )
        raise ConfigError(message, key=f"{key}.thousands_separator")


def _config_lists(
    data: Mapping[str, Any], key: str, columns: Mapping[str, str]
) -> dict[str, str]:
    table = data.get("lists", {})
    _require_table(table, f"{key}.lists")
    lists: dict[str, str] = {}
    for field, separator in table.items():
        entry = f"{key}.lists.{field}"
        if field not in columns or field not in _TEXT_FIELDS:
            message = (
                f"{entry} must name a text field mapped in {key}.columns, "
                "such as cause."
            )
            raise ConfigError(message, key=entry)
        if not isinstance(separator, str) or not separator:
            message = f"{entry} must be the separator between values, such as ','."
            raise ConfigError(message, key=entry)
        lists[field] = separator
    return lists


def _config_metadata(
    data: Mapping[str, Any], key: str, lists: Mapping[str, str]
) -> dict[str, str]:
    metadata = _config_column_table(data, "metadata", key)
    for name in metadata:
        if name in lists:
            message = (
                f"{key}.metadata.{name} clashes with the list of {key}.lists.{name}, "
                "which is stored under the same metadata key; rename it."
            )
            raise ConfigError(message, key=f"{key}.metadata.{name}")
    return metadata


def _config_defaults(
    data: Mapping[str, Any], key: str, mapping: ColumnMapping
) -> dict[str, Any]:
    table = data.get("defaults", {})
    _require_table(table, f"{key}.defaults")
    defaults: dict[str, Any] = {}
    for field, value in table.items():
        entry = f"{key}.defaults.{field}"
        if field not in _MAPPABLE_FIELDS or field == "kind":
            message = (
                f"{entry} is not an ImpactRecord field that takes a default; "
                f"use one of {', '.join(sorted(_MAPPABLE_FIELDS - {'kind'}))}."
            )
            raise ConfigError(message, key=entry)
        try:
            defaults[field] = _parse_field(field, value, mapping, defaults, None)
        except _RowRejected as exc:
            raise ConfigError(f"{entry} is invalid: {exc.reason}", key=entry) from None
    return defaults


# ---------------------------------------------------------------------------
# Field parsers shared by the mapping and the defaults
# ---------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """Return ``value`` trimmed, or None for an empty cell."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _describe(field: str, value: Any, column: str | None) -> str:
    parts = [field]
    if field in _QUOTABLE_FIELDS and value is not None:
        parts.append(_shown(value))
    if column is not None:
        parts.append(f"in column {column!r}")
    return " ".join(parts)


def _shown(value: Any) -> str:
    """Quote a value of a field in ``_QUOTABLE_FIELDS`` when its shape is safe.

    A wrong column can put an email or a phone number into such a field, so
    text of another shape is described by its length instead.
    """
    if isinstance(value, str) and not quotable_text(value):
        return f"({described_text(value)})"
    return repr(value)


def _parse_field(
    field: str,
    value: Any,
    mapping: ColumnMapping,
    parsed: Mapping[str, Any],
    column: str | None,
) -> Any:
    if field == "activity_date":
        return _parse_date(value, mapping, column)
    if field == "hours":
        return float(_parse_number(field, value, mapping, column))
    if field == "amount_minor":
        return _parse_amount(value, mapping, parsed.get("currency"), column)
    if field == "currency":
        return _parse_text(field, value, column).upper()
    return _parse_text(field, value, column)


def _parse_text(field: str, value: Any, column: str | None) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    reason = f"{_describe(field, None, column)} is not text; give it as a string."
    raise _RowRejected(field, reason)


def _parse_date(value: Any, mapping: ColumnMapping, column: str | None) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        for date_format in mapping.date_formats:
            try:
                return dt.datetime.strptime(value.strip(), date_format).date()
            except ValueError:
                continue
    formats = " or ".join(repr(item) for item in mapping.date_formats)
    reason = (
        f"{_describe('activity_date', value, column)} does not match the date "
        f"format {formats}; fix the value or add its format to "
        f"{mapping.key}.formats.activity_date."
    )
    raise _RowRejected("activity_date", reason)


def _parse_number(
    field: str, value: Any, mapping: ColumnMapping, column: str | None
) -> Decimal:
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(str(value)) if math.isfinite(value) else None
    elif isinstance(value, str) and mapping.is_canonical:
        number = _canonical_decimal(field, value, column)
    elif isinstance(value, str):
        number = _decimal_from_text(field, value, mapping, column)
    else:
        number = None
    if number is None:
        reason = (
            f"{_describe(field, value, column)} is not a number; write it with "
            f"ASCII digits in the form {_number_example(mapping)!r}, or change "
            f"{mapping.key}.formats."
        )
        raise _RowRejected(field, reason)
    if number < 0:
        reason = (
            f"{_describe(field, value, column)} is negative; give a positive "
            "value, because refunds and corrections are not records."
        )
        raise _RowRejected(field, reason)
    return number


# Canonical CSV numbers: an optional sign, ASCII digits and, for hours, a "."
# decimal point with digits on both sides. A thousands separator is never
# accepted, so "1,5" cannot be read as 15.
_CANONICAL_HOURS = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_CANONICAL_MINOR = re.compile(r"[+-]?[0-9]+")
_ASCII_DIGITS = "0123456789"


def _canonical_decimal(field: str, text: str, column: str | None) -> Decimal:
    compact = text.strip()
    if field == "amount_minor":
        if _CANONICAL_MINOR.fullmatch(compact):
            return Decimal(compact)
        reason = (
            f"{_describe(field, text, column)} is not a whole number of minor "
            "units; write it as an integer of ASCII digits, such as 2500 for "
            "25.00 USD, or read the file with a column mapping whose "
            "formats.amount is 'decimal'."
        )
        raise _RowRejected(field, reason)
    if _CANONICAL_HOURS.fullmatch(compact):
        return Decimal(compact)
    reason = (
        f"{_describe(field, text, column)} is not a number; write it with ASCII "
        "digits and '.' as the decimal point, such as 1.5, and without a "
        "thousands separator."
    )
    raise _RowRejected(field, reason)


def _number_example(mapping: ColumnMapping) -> str:
    return f"1{mapping.thousands_separator}234{mapping.decimal_separator}50"


def _decimal_from_text(
    field: str, text: str, mapping: ColumnMapping, column: str | None
) -> Decimal | None:
    """Parse a number written with the mapping's separators.

    A thousands separator is accepted only between groups of three digits in
    the integer part, and any other "." or "," is rejected, so "12,34" or
    "1.000,00" in the wrong format is never read as a different number.
    Returns None for text that contains no number at all.
    """
    compact = text.strip()
    sign = compact[:1] if compact[:1] in ("+", "-") else ""
    body = compact[len(sign) :]
    decimal = mapping.decimal_separator
    thousands = mapping.thousands_separator
    allowed = set(_ASCII_DIGITS) | ({decimal, thousands} - {""})
    if not body or any(char not in allowed for char in body):
        foreign = sorted({char for char in body if char in ".,'"} - allowed)
        if foreign and all(char in allowed or char in foreign for char in body):
            _reject_number(
                field,
                text,
                mapping,
                column,
                f"it contains {foreign[0]!r}, which is neither the decimal "
                f"separator {decimal!r} nor a thousands separator",
            )
        return None
    integer, _, fraction = body.partition(decimal)
    if decimal in fraction:
        problem = f"it has more than one decimal separator {decimal!r}"
        _reject_number(field, text, mapping, column, problem)
    if thousands and thousands in fraction:
        problem = (
            f"it has the thousands separator {thousands!r} after the decimal "
            f"separator {decimal!r}"
        )
        _reject_number(field, text, mapping, column, problem)
    if thousands and thousands in integer:
        groups = integer.split(thousands)
        first_valid = 1 <= len(groups[0]) <= 3
        if not first_valid or any(len(group) != 3 for group in groups[1:]):
            problem = (
                f"its thousands separator {thousands!r} does not separate "
                "groups of three digits"
            )
            _reject_number(field, text, mapping, column, problem)
        integer = "".join(groups)
    if not integer and not fraction:
        return None
    digits = f"{integer or '0'}.{fraction}" if fraction else integer
    return Decimal(sign + digits)


def _reject_number(
    field: str, text: str, mapping: ColumnMapping, column: str | None, problem: str
) -> NoReturn:
    reason = (
        f"{_describe(field, text, column)} is not a number in the format of "
        f"{mapping.key}.formats, because {problem}; write it in the form "
        f"{_number_example(mapping)!r}, or set {mapping.key}.formats."
        "decimal_separator and thousands_separator to match the source."
    )
    raise _RowRejected(field, reason)


def _parse_amount(
    value: Any, mapping: ColumnMapping, currency: Any, column: str | None
) -> int:
    if (
        mapping.amount_format == "minor"
        and not mapping.is_canonical
        and isinstance(value, str)
        and mapping.decimal_separator in value
    ):
        # "25.00" in minor units would silently become 25 (0.25 USD).
        reason = (
            f"{_describe('amount_minor', value, column)} is not a whole number of "
            "minor units, because it has a decimal separator; write it as an "
            f"integer such as 2500 for 25.00 USD, or set {mapping.key}.formats."
            "amount to 'decimal' when the column holds major units."
        )
        raise _RowRejected("amount_minor", reason)
    number = _parse_number("amount_minor", value, mapping, column)
    code = currency if isinstance(currency, str) else None
    digits = currency_digits(code)
    scale = digits if mapping.amount_format == "decimal" else 0
    # The default 28-digit context would round a longer number while scaling
    # it, so a context as precise as the number keeps every digit.
    exact = Context(
        prec=max(len(number.as_tuple().digits), 1), Emin=MIN_EMIN, Emax=MAX_EMAX
    )
    minor = number.scaleb(scale, exact)
    if minor > MAX_AMOUNT_MINOR:
        reason = (
            f"{_describe('amount_minor', value, column)} is above the maximum of "
            f"{MAX_AMOUNT_MINOR} minor units; check that {mapping.key}.formats."
            "amount matches the unit of the source, because no real donation is "
            "this large."
        )
        raise _RowRejected("amount_minor", reason)
    if minor != minor.to_integral_value():
        if mapping.amount_format == "decimal":
            allowed = code or "the currency"
            problem = f"has more decimal places than {allowed} allows ({digits})"
        else:
            problem = "is not a whole number of minor units"
        reason = (
            f"{_describe('amount_minor', value, column)} {problem}; round it in "
            f"the source, or check {mapping.key}.formats.amount."
        )
        raise _RowRejected("amount_minor", reason)
    return int(minor)


def _parse_kind(value: Any, mapping: ColumnMapping, column: str | None) -> RecordKind:
    if isinstance(value, str):
        label = value.strip().casefold()
        if label in mapping.kind_values:
            return mapping.kind_values[label]
        for kind in RecordKind:
            if label == kind.value:
                return kind
    known = sorted({kind.value for kind in RecordKind} | set(mapping.kind_values))
    reason = (
        f"{_describe('kind', value, column)} is not a known kind; use one of "
        f"{', '.join(repr(item) for item in known)} or add the value to "
        f"{mapping.key}.kind_values."
    )
    raise _RowRejected("kind", reason)


# ---------------------------------------------------------------------------
# cattrs converter for canonical records
# ---------------------------------------------------------------------------


def _structure_text(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError("expected a string")


def _structure_float(value: Any, _: type) -> float:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        raise ValueError(
            "it is a JSON string; write it as a JSON number without quotes, such as 1.5"
        )
    raise ValueError("expected a finite number")


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    # JSON has one number type, so 2500.0 is the integer 2500. A fraction is
    # rejected, never rounded.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        raise ValueError(
            "it is a JSON string; write it as a JSON number without quotes, "
            "such as 2500 for 25.00 USD"
        )
    raise ValueError("expected a whole number of minor units")


def _structure_date(value: Any, _: type) -> dt.date:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("expected an ISO 8601 date such as '2024-03-01'")


def _structure_kind(value: Any, _: type) -> RecordKind:
    try:
        return RecordKind(value)
    except ValueError:
        raise ValueError("expected 'volunteer_time' or 'donation'") from None


def _structure_metadata(value: Any, _: type) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError("expected a JSON object")


def _make_converter() -> cattrs.Converter:
    result = shared_converter.copy()
    result.register_structure_hook(str, _structure_text)
    result.register_structure_hook(float, _structure_float)
    result.register_structure_hook(int, _structure_int)
    result.register_structure_hook(dt.date, _structure_date)
    result.register_structure_hook(RecordKind, _structure_kind)
    result.register_structure_hook_func(
        lambda type_: type_ == Mapping[str, Any], _structure_metadata
    )
    result.register_unstructure_hook(dt.date, dt.date.isoformat)
    return result


#: The shared converter with stricter hooks for untrusted input: they reject
#: what a lenient conversion would silently change, such as fractional minor
#: units, booleans given as numbers and non-ISO dates.
_converter = _make_converter()


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------


def read_records(
    path: str | Path,
    *,
    tenant: str | None,
    mapping: ColumnMapping | None = None,
    identity: IdentityFunction | None = None,
) -> Iterator[ParsedRow | RejectedRow]:
    """Stream the rows of a CSV or JSON Lines file as parsed or rejected rows.

    ``tenant`` fills rows that name no tenant, and a row naming another
    tenant is rejected. With ``tenant=None`` every row must name its own.
    Blank lines are skipped. The file is read one row at a time, so memory
    does not grow with its size. ``ConfigError`` is raised when iteration
    starts if a mapped column is missing from the header, and later if the
    file cannot be decoded.
    """
    path = Path(path)
    file_format = _file_format(path, mapping)
    encoding = mapping.encoding if mapping is not None else "utf-8"
    key = mapping.key if mapping is not None else "input"
    row_number = 0
    rows: Generator[tuple[int, dict[str, Any]] | RejectedRow, None, None] | None = None
    try:
        if file_format == "csv":
            delimiter = mapping.delimiter if mapping is not None else ","
            rows, mapping = _read_csv(path, encoding, delimiter, mapping)
        else:
            rows = _read_jsonl(path, encoding)
        for item in rows:
            row_number += 1
            if isinstance(item, RejectedRow):
                if item.tenant is None and tenant is not None:
                    item = attrs.evolve(item, tenant=tenant)
                yield item
                continue
            line, raw = item
            extra = identity(row_number, raw) if identity is not None else {}
            if mapping is None:
                row = _build_canonical(line, raw, tenant, extra)
            else:
                row = _build_mapped(line, raw, tenant, extra, mapping)
            if isinstance(row, RejectedRow) and row.tenant is None:
                row = attrs.evolve(row, tenant=tenant)
            yield row
    except UnicodeDecodeError as exc:
        if mapping is None:
            fix = (
                "describe the file in an [inputs.NAME] table with encoding set to "
                "the file's encoding, and pass --input NAME"
            )
        else:
            fix = f"set {key}.encoding to the file's encoding"
        # The file is decoded in blocks, so the invalid bytes lie somewhere
        # after the last row read, not necessarily in the next one.
        if row_number == 0:
            where = "in or before its first data row"
        else:
            where = f"after data row {row_number}"
        message = f"{path} is not valid {encoding} text {where}; {fix}."
        raise ConfigError(message, key=f"{key}.encoding") from exc
    finally:
        if rows is not None:
            rows.close()


def _file_format(path: Path, mapping: ColumnMapping | None) -> FileFormat:
    if mapping is not None and mapping.format is not None:
        return mapping.format
    file_format = _SUFFIX_FORMATS.get(path.suffix.lower())
    if file_format is None:
        if mapping is not None:
            fix = f"or set {mapping.key}.format to 'csv' or 'jsonl'"
        else:
            fix = "or read it with a column mapping (--input NAME) that sets format"
        message = (
            f"Cannot tell the format of {path} from its suffix; name it .csv or "
            f".jsonl, {fix}."
        )
        key = f"{mapping.key}.format" if mapping is not None else None
        raise ConfigError(message, key=key)
    return file_format


def _open_text(path: Path, encoding: str) -> TextIO:
    # utf-8-sig reads plain UTF-8 too and drops a leading byte order mark.
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    return path.open(encoding=encoding, newline="")


@attrs.frozen
class DuplicateKey:
    """A key that appears more than once in one JSON object of a line."""

    key: str
    #: True when the object is the line's own, not one nested in it.
    top_level: bool

    def reason(self, where: str) -> str:
        """Return the rejection reason; ``where`` is "line 3" or "the file"."""
        holder = where if self.top_level else f"an object nested in {where}"
        return (
            f"{holder[0].upper()}{holder[1:]} has the key {self.key!r} more than "
            "once; keep one of them, because a JSON reader keeps only one and "
            "which one differs between readers."
        )


class JsonObjectDecoder:
    """Decode JSON texts and report the first key an object repeats.

    The ``json`` module keeps the last value of a repeated key without a
    word. One decoder serves one file, because it keeps state between calls.
    """

    def __init__(self) -> None:
        self._decoder = json.JSONDecoder(object_pairs_hook=self._pairs)
        self._objects = 0
        self._first: tuple[int, str] | None = None

    def decode(self, text: str) -> tuple[Any, DuplicateKey | None]:
        """Return the value of ``text`` and its first repeated key, if any.

        Raises what ``json.loads`` raises for text that is not JSON.
        """
        self._objects = 0
        self._first = None
        value = self._decoder.decode(text)
        if self._first is None:
            return value, None
        # The hook runs for nested objects before the one that contains them,
        # so the line's own object is the last one.
        number, key = self._first
        return value, DuplicateKey(key, top_level=number == self._objects)

    def _pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self._objects += 1
        result = dict(pairs)
        if len(result) != len(pairs) and self._first is None:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self._first = (self._objects, key)
                    break
                seen.add(key)
        return result


def _read_jsonl(
    path: Path, encoding: str
) -> Generator[tuple[int, dict[str, Any]] | RejectedRow, None, None]:
    decoder = JsonObjectDecoder()
    with _open_text(path, encoding) as stream:
        for line, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            try:
                value, duplicate = decoder.decode(text)
            except json.JSONDecodeError as exc:
                reason = (
                    f"Line {line} is not valid JSON ({exc.msg} at column "
                    f"{exc.colno}); fix the line or remove it."
                )
                yield RejectedRow(line, None, None, reason, {"text": text})
                continue
            except RecursionError:
                # The json module recurses once per nesting level and raises
                # RecursionError at the interpreter's recursion limit (1000
                # frames by default).
                yield RejectedRow(line, None, None, _too_deep(line), {"text": text})
                continue
            except ValueError:
                # json raises a plain ValueError for an integer longer than
                # Python converts from text (4300 digits unless configured).
                reason = (
                    f"Line {line} has an integer with more digits than the JSON "
                    "reader accepts; fix the line or remove it."
                )
                yield RejectedRow(line, None, None, reason, {"text": text})
                continue
            if not isinstance(value, dict):
                reason = (
                    f"Line {line} contains a JSON {_json_type(value)}, but each "
                    "line must be one JSON object; wrap the record in {...}."
                )
                yield RejectedRow(line, None, None, reason, {"text": text})
                continue
            problem = _check_json_object(line, value)
            if problem is None and duplicate is not None:
                problem = _duplicate_problem(line, duplicate)
            if problem is not None:
                field, reason = problem
                if duplicate is not None and duplicate.top_level:
                    # Which of the repeated values is meant is unknown.
                    value = {k: v for k, v in value.items() if k != duplicate.key}
                tenant, kind = _row_context(value.get("tenant"), value.get("kind"))
                source_id = value.get("source_id")
                yield RejectedRow(
                    line,
                    source_id if _is_utf8_text(source_id) else None,
                    field,
                    reason,
                    {"text": text},
                    tenant=tenant,
                    kind=kind,
                )
                continue
            yield line, value


def _duplicate_problem(line: int, duplicate: DuplicateKey) -> tuple[str | None, str]:
    top_field = duplicate.key if duplicate.key in _FIELDS else None
    field = top_field if duplicate.top_level else None
    return field, duplicate.reason(f"line {line}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"


def _is_utf8_text(value: Any) -> bool:
    """Return True for a string that can be encoded as UTF-8.

    A JSON escape such as \\udc80 or a codec such as utf-7 can produce a
    lone surrogate, which UTF-8 cannot encode. Such a string would fail
    later, when the record is stored or sent, and stop the whole run.
    """
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_deep(line: int) -> str:
    return (
        f"Line {line} nests JSON objects and arrays more than {_MAX_JSON_DEPTH} "
        "levels deep; flatten the nested objects and arrays of this line."
    )


def _check_json_object(
    line: int, value: dict[str, Any]
) -> tuple[str | None, str] | None:
    """Find a string that is not UTF-8 text or nesting deeper than the limit.

    Returns the field and the rejection reason, or None for a valid line.
    The walk uses a stack, not recursion, so any depth json accepts is safe.
    """
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            return _top_field(path), _too_deep(line)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in items:
            if isinstance(key, str) and not _is_utf8_text(key):
                where = f"a key in {path}" if path else "a key"
                return _top_field(path), _not_utf8(where)
            if isinstance(node, dict):
                child = f"{path}.{key}" if path else str(key)
            else:
                child = f"{path}[{key}]"
            if isinstance(item, str) and not _is_utf8_text(item):
                return _top_field(child), _not_utf8(child)
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1, child))
    return None


def _row_context(tenant: Any, kind: Any) -> tuple[str | None, RecordKind | None]:
    """Return the tenant and kind of a rejected row, where the row names them."""
    tenant = _clean(tenant)
    if not isinstance(tenant, str) or not _is_utf8_text(tenant):
        tenant = None
    try:
        record_kind = RecordKind(_clean(kind)) if kind is not None else None
    except ValueError:
        record_kind = None
    return tenant, record_kind


def _top_field(path: str) -> str | None:
    top = path.split(".", 1)[0].split("[", 1)[0]
    return top if top in _FIELDS else None


def _not_utf8(where: str) -> str:
    return (
        f"{where} contains a lone surrogate such as \\udc80, which is not valid "
        "UTF-8 text; fix the escape or the encoding in the source file."
    )


def _read_csv(
    path: Path, encoding: str, delimiter: str, mapping: ColumnMapping | None
) -> tuple[
    Generator[tuple[int, dict[str, Any]] | RejectedRow, None, None], ColumnMapping
]:
    stream = _open_text(path, encoding)
    try:
        # The csv module stops at 128 KiB per field by default; real exports
        # can hold longer free text.
        csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD_BYTES))
        reader = csv.reader(stream, delimiter=delimiter)
        # A header name with a lone surrogate can match no mapped column, and
        # escaping it keeps rows of the file storable.
        header = [_escape_surrogates(name.strip()) for name in next(reader, [])]
        if mapping is None:
            mapping = ColumnMapping.canonical(header)
        _check_header(path, header, mapping)
    except BaseException:
        stream.close()
        raise
    return _csv_rows(stream, reader, header), mapping


def _check_header(path: Path, header: list[str], mapping: ColumnMapping) -> None:
    expected = {f"columns.{field}": column for field, column in mapping.columns.items()}
    expected.update(
        {f"metadata.{name}": column for name, column in mapping.metadata.items()}
    )
    if mapping.kind_column is not None:
        expected["kind_column"] = mapping.kind_column
    for entry, column in expected.items():
        count = header.count(column)
        if count == 1:
            continue
        problem = "has no such column" if count == 0 else f"has {count} such columns"
        found = ", ".join(repr(name) for name in header) or "no header at all"
        message = (
            f"{mapping.key}.{entry} names column {column!r}, but {path} "
            f"{problem}; the header has {found}. Fix the name in {mapping.key}."
        )
        raise ConfigError(message, key=f"{mapping.key}.{entry}")


def _csv_rows(
    stream: TextIO, reader: Any, header: list[str]
) -> Generator[tuple[int, dict[str, Any]] | RejectedRow, None, None]:
    with stream:
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                message = f"Cannot read the CSV row that starts on line {line}: {exc}."
                raise ConfigError(message) from exc
            if not cells:
                continue
            raw = dict(zip(header, cells, strict=False))
            if not all(_is_utf8_text(cell) for cell in cells):
                yield _reject_csv_text(line, header, cells)
                continue
            if len(cells) != len(header):
                raw[EXTRA_CELLS] = cells[len(header) :]
                reason = (
                    f"Row has {len(cells)} cells but the header has {len(header)} "
                    "columns; check the quoting of this row."
                )
                yield RejectedRow(line, _clean(raw.get("source_id")), None, reason, raw)
                continue
            yield line, raw


def _reject_csv_text(line: int, header: list[str], cells: list[str]) -> RejectedRow:
    names = [*header, *(f"_extra_cell_{n}" for n in range(len(cells) - len(header)))]
    bad = next(
        name
        for name, cell in zip(names, cells, strict=False)
        if not _is_utf8_text(cell)
    )
    # The store writes raw rows as UTF-8, so lone surrogates are kept as
    # backslash escapes.
    raw = {
        name: _escape_surrogates(cell) for name, cell in zip(names, cells, strict=False)
    }
    reason = _not_utf8(f"Column {bad!r}")
    return RejectedRow(line, raw.get("source_id"), None, reason, raw)


def _escape_surrogates(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------------------
# Building records
# ---------------------------------------------------------------------------


def _apply_tenant(values: dict[str, Any], tenant: str | None) -> None:
    row_tenant = values.get("tenant")
    if row_tenant is None:
        if tenant is not None:
            values["tenant"] = tenant
        return
    if tenant is not None and row_tenant != tenant:
        reason = (
            f"tenant of this row is not {tenant!r}, the tenant being read; "
            "split the file by tenant or read it without a tenant."
        )
        raise _RowRejected("tenant", reason)


def _field_of(message: str) -> str | None:
    # "metadata.team contains ..." names the metadata field.
    return _top_field(message.split(" ", 1)[0])


def _check_required(values: Mapping[str, Any], hint: Callable[[str], str]) -> None:
    for field in _REQUIRED_FIELDS:
        if values.get(field) is None:
            raise _RowRejected(field, f"{field} is missing; {hint(field)}.")


def _build_canonical(
    line: int, raw: dict[str, Any], tenant: str | None, extra: Mapping[str, Any]
) -> ParsedRow | RejectedRow:
    values = {name: _clean(value) for name, value in {**raw, **extra}.items()}
    source_cell = values.get("source_id")
    source_id = source_cell if isinstance(source_cell, str) else None
    try:
        unknown = sorted(set(values) - set(_FIELDS))
        if unknown:
            reason = (
                f"{unknown[0]} is not an ImpactRecord field; rename it to a "
                "field name or move it into metadata."
            )
            raise _RowRejected(None, reason)
        _apply_tenant(values, tenant)
        _check_required(values, lambda field: f"add {field!r} to the line")
        currency = values.get("currency")
        if isinstance(currency, str):
            # As the CSV reader does, so both accept "usd".
            values["currency"] = currency.upper()
        present = {name: value for name, value in values.items() if value is not None}
        record = _converter.structure(present, ImpactRecord)
    except _RowRejected as exc:
        field, reason = exc.field, exc.reason
    except ClassValidationError as exc:
        field, reason = _explain_structure_error(exc, values)
    except ValueError as exc:
        field, reason = _field_of(str(exc)), f"{exc}; fix the value on this line."
    else:
        return ParsedRow(line, record)
    tenant_of_row, kind = _row_context(values.get("tenant"), values.get("kind"))
    return RejectedRow(
        line, source_id, field, reason, raw, tenant=tenant_of_row, kind=kind
    )


def _explain_structure_error(
    exc: ClassValidationError, values: Mapping[str, Any]
) -> tuple[str | None, str]:
    with_notes, without_notes = exc.group_exceptions()
    if with_notes:
        error, note = with_notes[0]
        field = str(note.name)
        problem = f"{_describe(field, values.get(field), None)} is invalid: {error}"
        return field, f"{problem}; fix the value on this line."
    # attrs validators run in ImpactRecord.__init__, after cattrs has
    # structured every field, so their errors arrive without a field note.
    # Their messages start with the field name. A message of the form
    # "<field> must ..." states the rule without the value, so the value is
    # added here when it cannot hold personal data.
    if without_notes:
        message = str(without_notes[0])
        checked = _field_of(message)
        states_rule = message.startswith(f"{checked} must ")
        if checked in _QUOTABLE_FIELDS and states_rule:
            message += f" (the line has {_shown(values.get(checked))})"
        return checked, f"{message}; fix the value on this line."
    return None, "The line does not form a record; check its field names and types."


def _build_mapped(
    line: int,
    raw: dict[str, Any],
    tenant: str | None,
    extra: Mapping[str, Any],
    mapping: ColumnMapping,
) -> ParsedRow | RejectedRow:
    source_cell = _clean(raw.get(mapping.columns["source_id"]))
    source_id = str(source_cell) if source_cell is not None else None
    values: dict[str, Any] = {}
    try:
        metadata = _mapped_values(raw, extra, mapping, values)
        _apply_tenant(values, tenant)
        _check_required(values, lambda field: _missing_hint(field, mapping))
        record = ImpactRecord(**values, metadata=metadata)
    except _RowRejected as exc:
        field, reason = exc.field, exc.reason
    except ValueError as exc:
        field = _field_of(str(exc))
        where = (
            _describe(field, values.get(field), mapping.column_of(field))
            if field
            else ""
        )
        reason = f"{exc}; fix {where or 'the row'} in the source file."
    else:
        return ParsedRow(line, record)
    tenant_of_row, kind = _mapped_context(raw, extra, mapping)
    return RejectedRow(
        line, source_id, field, reason, raw, tenant=tenant_of_row, kind=kind
    )


def _mapped_context(
    raw: Mapping[str, Any], extra: Mapping[str, Any], mapping: ColumnMapping
) -> tuple[str | None, RecordKind | None]:
    """Return the tenant and kind of a mapped row that was rejected."""
    tenant = extra.get("tenant")
    column = mapping.columns.get("tenant")
    if _clean(tenant) is None and column is not None:
        tenant = raw.get(column)
    if _clean(tenant) is None:
        tenant = mapping.defaults.get("tenant")
    try:
        kind = _mapped_kind(raw, mapping)
    except _RowRejected:
        kind = None
    return _row_context(tenant, kind)


def _missing_hint(field: str, mapping: ColumnMapping) -> str:
    column = mapping.column_of(field)
    tenant_hint = ", or read the file with a tenant (--tenant)"
    if mapping.is_canonical:
        if column is not None:
            hint = f"column {column!r} is empty, so fill it"
        else:
            hint = f"the header has no {field!r} column, so add one"
        return hint + (tenant_hint if field == "tenant" else "")
    if field == "tenant" and column is None:
        return (
            f"no column, default or identity provides it, so map it in "
            f"{mapping.key}.columns.tenant{tenant_hint}"
        )
    if field == "kind" and column is None:
        return f"set {mapping.key}.kind or {mapping.key}.kind_column"
    if column is not None:
        default = f"{mapping.key}.defaults.{field}"
        return f"column {column!r} is empty, so fill it or set {default}"
    return (
        f"no column, default or identity provides it, so map it in "
        f"{mapping.key}.columns.{field}"
    )


def _mapped_values(
    raw: Mapping[str, Any],
    extra: Mapping[str, Any],
    mapping: ColumnMapping,
    values: dict[str, Any],
) -> dict[str, Any]:
    """Fill ``values`` with the parsed fields of one row and return its metadata."""
    metadata = {
        name: _clean(raw.get(column))
        for name, column in mapping.metadata.items()
        if _clean(raw.get(column)) is not None
    }
    cells = _mapped_cells(raw, mapping, metadata)
    for field, value in extra.items():
        if field not in _MAPPABLE_FIELDS:
            reason = f"identity returned {field!r}, which is not an ImpactRecord field."
            raise _RowRejected(None, reason)
        if _clean(value) is not None:
            cells[field] = (_clean(value), None)
    kind = values["kind"] = _mapped_kind(raw, mapping)
    # A default applies only to rows whose kind carries its field, so one
    # mapping can give donations a currency and volunteering its hours.
    other_kind_fields = {
        field
        for other, fields in KIND_FIELDS.items()
        if kind is not None and other is not kind
        for field in fields
    }
    for field, value in mapping.defaults.items():
        if field not in cells and field not in other_kind_fields:
            values[field] = value
    # Currency first, because the amount's minor-unit digits depend on it.
    for field in sorted(cells, key=lambda name: name != "currency"):
        cell, column = cells[field]
        values[field] = _parse_field(field, cell, mapping, values, column)
    return metadata


def _mapped_cells(
    raw: Mapping[str, Any], mapping: ColumnMapping, metadata: dict[str, Any]
) -> dict[str, tuple[Any, str | None]]:
    """Return the non-empty cells of mapped columns, splitting list columns."""
    cells: dict[str, tuple[Any, str | None]] = {}
    for field, column in mapping.columns.items():
        cell = _clean(raw.get(column))
        if cell is not None and field in mapping.lists:
            items = [item.strip() for item in str(cell).split(mapping.lists[field])]
            metadata[field] = [item for item in items if item]
            cell = metadata[field][0] if metadata[field] else None
        if cell is not None:
            cells[field] = (cell, column)
    return cells


def _mapped_kind(raw: Mapping[str, Any], mapping: ColumnMapping) -> RecordKind | None:
    if mapping.kind is not None:
        return mapping.kind
    column = mapping.kind_column
    cell = _clean(raw.get(column)) if column is not None else None
    if cell is None:
        return None
    return _parse_kind(cell, mapping, column)
