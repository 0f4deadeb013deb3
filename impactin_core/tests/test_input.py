"""Tests of the CSV and JSON Lines readers and the column mapping."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import tracemalloc
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from impactin_core._errors import ConfigError
from impactin_core._input import (
    ColumnMapping,
    ParsedRow,
    RejectedRow,
    currency_digits,
    mappings_from_config,
    read_records,
)
from impactin_core._models import (
    MAX_AMOUNT_MINOR,
    MAX_METADATA_DEPTH,
    ImpactRecord,
    RecordKind,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found, no-redef]

REPO = Path(__file__).resolve().parents[2]
ACTIVITIES = REPO.parent / "shared" / "fixtures" / "activities"
REAL_INPUT = REPO / "tests" / "real_input.toml"

FIRST_NAMES = ["ana", "bo", "cyd", "dee", "eli", "fay", "gus"]
LAST_NAMES = ["north", "south", "east", "west", "lake"]


def generated_employee(row_number: int, raw: Mapping[str, Any]) -> dict[str, str]:
    """Return a deterministic fictional employee for a data row."""
    first = FIRST_NAMES[row_number % len(FIRST_NAMES)]
    last = LAST_NAMES[row_number % len(LAST_NAMES)]
    return {
        "employee_id": f"E-{row_number:06d}",
        "employee_email": f"{first}.{last}@example.com",
    }


def mapping(**table: Any) -> ColumnMapping:
    base: dict[str, Any] = {
        "kind": "donation",
        "columns": {
            "source_id": "id",
            "activity_date": "date",
            "amount_minor": "amount",
            "currency": "currency",
            "employee_id": "employee",
        },
        "formats": {"activity_date": "%d/%m/%Y", "amount": "decimal"},
    }
    base.update(table)
    return ColumnMapping.from_config(base, key="inputs.test")


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def read_all(path: Path, **options: Any) -> list[ParsedRow | RejectedRow]:
    options.setdefault("tenant", "acme")
    return list(read_records(path, **options))


def only_rejected(rows: list[ParsedRow | RejectedRow]) -> RejectedRow:
    assert len(rows) == 1
    row = rows[0]
    assert isinstance(row, RejectedRow)
    return row


def only_parsed(rows: list[ParsedRow | RejectedRow]) -> ParsedRow:
    assert len(rows) == 1
    row = rows[0]
    assert isinstance(row, ParsedRow), getattr(row, "reason", row)
    return row


# -- configuration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        pytest.param(
            {"columns": {"activity_date": "date"}},
            "inputs.test.columns.source_id",
            "map it to the column that identifies a row",
            id="no-source-id",
        ),
        pytest.param(
            {"kind": None},
            "inputs.test.kind",
            "kind_column",
            id="no-kind",
        ),
        pytest.param(
            {"kind": "gift"},
            "inputs.test.kind",
            "'volunteer_time' or 'donation'",
            id="bad-kind",
        ),
        pytest.param(
            {"formats": {"activity_date": "%d/%m/%Y"}},
            "inputs.test.formats.amount",
            "'decimal' when column 'amount' holds major units",
            id="no-amount-format",
        ),
        pytest.param(
            {"formats": {"amount": "cents"}},
            "inputs.test.formats.amount",
            "'decimal' or 'minor'",
            id="bad-amount-format",
        ),
        pytest.param(
            {"formats": {"amount": "decimal", "activity_date": 12}},
            "inputs.test.formats.activity_date",
            "strptime format",
            id="bad-date-format",
        ),
        pytest.param(
            {"encoding": "utf-99"},
            "inputs.test.encoding",
            "not a known text encoding",
            id="bad-encoding",
        ),
        pytest.param(
            {"colums": {}},
            "inputs.test.colums",
            "not a known setting",
            id="typo-setting",
        ),
        pytest.param(
            {"columns": {"source_id": "id", "amount": "Amount"}},
            "inputs.test.columns.amount",
            "amounts map to amount_minor",
            id="unknown-field",
        ),
        pytest.param(
            {"defaults": {"hours": "lots"}},
            "inputs.test.defaults.hours",
            "is not a number",
            id="bad-default",
        ),
        pytest.param(
            {"lists": {"cause": ","}},
            "inputs.test.lists.cause",
            "mapped in inputs.test.columns",
            id="list-not-mapped",
        ),
        pytest.param(
            {"formats": {"amount": "decimal", "thousands_separator": "."}},
            "inputs.test.formats.thousands_separator",
            "other than the decimal separator",
            id="same-separators",
        ),
    ],
)
def test_config_error(change: dict[str, Any], key: str, words: str) -> None:
    table: dict[str, Any] = {
        "kind": "donation",
        "columns": {"source_id": "id", "amount_minor": "amount"},
        "formats": {"amount": "decimal"},
    }
    table.update(change)
    table = {name: value for name, value in table.items() if value is not None}
    with pytest.raises(ConfigError) as caught:
        ColumnMapping.from_config(table, key="inputs.test")
    assert caught.value.key == key
    assert key in str(caught.value)
    assert words in str(caught.value)


def test_config_strips_column_names() -> None:
    result = mapping(columns={"source_id": " Amount Awarded "})
    assert result.columns["source_id"] == "Amount Awarded"


def test_config_parses_defaults() -> None:
    result = mapping(defaults={"hours": 2, "activity_date": dt.date(2024, 5, 1)})
    assert result.defaults == {"hours": 2.0, "activity_date": dt.date(2024, 5, 1)}


def test_mappings_from_config_names_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        mappings_from_config({"nyc": {"kind": "donation", "columns": {}}})
    assert caught.value.key == "inputs.nyc.columns.source_id"


@pytest.mark.parametrize(
    ("currency", "digits"),
    [
        pytest.param("USD", 2, id="usd"),
        pytest.param("JPY", 0, id="jpy"),
        pytest.param("KWD", 3, id="kwd"),
        pytest.param("XYZ", 2, id="unknown"),
        pytest.param(None, 2, id="none"),
    ],
)
def test_currency_digits(currency: str | None, digits: int) -> None:
    assert currency_digits(currency) == digits


# -- CSV with a mapping ---------------------------------------------------------


HEADER = "id,date,amount,currency,employee\n"


def test_csv_parses_padded_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.csv", HEADER + 'g1, 19/09/2001 ," 2,000.00 ", usd ,E-1\n'
    )
    record = only_parsed(read_all(path, mapping=mapping())).record
    assert record.source_id == "g1"
    assert record.activity_date == dt.date(2001, 9, 19)
    assert record.amount_minor == 200000
    assert record.currency == "USD"
    assert record.tenant == "acme"


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        pytest.param("20", "USD", 2000, id="whole-usd"),
        pytest.param("1,234.5", "USD", 123450, id="thousands"),
        pytest.param("5000", "JPY", 5000, id="jpy"),
        pytest.param("1.234", "KWD", 1234, id="kwd"),
        pytest.param("9,999,999,999.99", "USD", MAX_AMOUNT_MINOR, id="max-usd"),
        pytest.param("999999999.999", "KWD", MAX_AMOUNT_MINOR, id="max-kwd"),
        pytest.param("1.2345", "CLF", 12345, id="clf-four-digits"),
        pytest.param("1." + "0" * 40, "USD", 100, id="long-zero-fraction"),
    ],
)
def test_csv_amount_to_minor_units(
    tmp_path: Path, amount: str, currency: str, minor: int
) -> None:
    path = write(
        tmp_path / "a.csv", HEADER + f'g1,01/02/2024,"{amount}",{currency},E-1\n'
    )
    record = only_parsed(read_all(path, mapping=mapping())).record
    assert record.amount_minor == minor


def test_csv_amount_european_format(tmp_path: Path) -> None:
    formats = {
        "activity_date": "%d/%m/%Y",
        "amount": "decimal",
        "decimal_separator": ",",
        "thousands_separator": ".",
    }
    path = write(tmp_path / "a.csv", HEADER + 'g1,01/02/2024,"1.234,50",EUR,E-1\n')
    record = only_parsed(read_all(path, mapping=mapping(formats=formats))).record
    assert record.amount_minor == 123450


@pytest.mark.parametrize(
    ("amount", "currency", "words"),
    [
        pytest.param("-5.00", "USD", "is negative", id="negative"),
        pytest.param("abc", "USD", "is not a number", id="not-number"),
        pytest.param("1.5", "JPY", "more decimal places than JPY allows (0)", id="jpy"),
        pytest.param("2.005", "USD", "more decimal places than USD allows", id="usd"),
        pytest.param("0", "USD", "is the int 0, but donation records", id="zero"),
        pytest.param(
            "10000000000.00",
            "USD",
            "is above the maximum of 999999999999 minor units",
            id="above-max",
        ),
        pytest.param(
            "1" + "0" * 5000,
            "USD",
            "is above the maximum of 999999999999 minor units",
            id="5001-digits",
        ),
        pytest.param(
            "1.0000000000000000000000000001",
            "USD",
            "more decimal places than USD allows",
            id="29-significant-digits",
        ),
    ],
)
def test_csv_rejects_bad_amount(
    tmp_path: Path, amount: str, currency: str, words: str
) -> None:
    path = write(
        tmp_path / "a.csv", HEADER + f"g1,01/02/2024,{amount},{currency},E-1\n"
    )
    row = only_rejected(read_all(path, mapping=mapping()))
    assert row.field == "amount_minor"
    assert words in row.reason
    assert "'amount'" in row.reason
    assert row.source_id == "g1"


@pytest.mark.parametrize(
    ("amount", "words"),
    [
        pytest.param("1.000,00", "',' after the decimal separator '.'", id="eu"),
        pytest.param("12,34", "does not separate groups of three", id="pair"),
        pytest.param("1,2,3", "does not separate groups of three", id="singles"),
        pytest.param(",123", "does not separate groups of three", id="leading"),
        pytest.param("1.2.3", "more than one decimal separator", id="two-points"),
        pytest.param("\u0661\u0662", "is not a number", id="arabic-indic"),
        pytest.param("1_000", "is not a number", id="underscore"),
        pytest.param("1e3", "is not a number", id="exponent"),
    ],
)
def test_csv_rejects_misformatted_decimal(
    tmp_path: Path, amount: str, words: str
) -> None:
    path = write(tmp_path / "a.csv", HEADER + f'g1,01/02/2024,"{amount}",USD,E-1\n')
    row = only_rejected(read_all(path, mapping=mapping()))
    assert row.field == "amount_minor"
    assert words in row.reason
    assert f"{amount!r} in column 'amount'" in row.reason
    assert "'1,234.50'" in row.reason


def test_csv_comma_decimal_rejects_point(tmp_path: Path) -> None:
    formats = {
        "activity_date": "%d/%m/%Y",
        "amount": "decimal",
        "decimal_separator": ",",
    }
    text = HEADER + 'g1,01/02/2024,1.000,EUR,E-1\ng2,01/02/2024,"1000,5",EUR,E-1\n'
    rows = read_all(write(tmp_path / "a.csv", text), mapping=mapping(formats=formats))
    assert len(rows) == 2
    assert isinstance(rows[0], RejectedRow)
    assert "contains '.', which is neither the decimal separator ','" in rows[0].reason
    assert "'1234,50'" in rows[0].reason
    assert isinstance(rows[1], ParsedRow)
    assert rows[1].record.amount_minor == 100050


def test_csv_european_rejects_bad_groups(tmp_path: Path) -> None:
    formats = {
        "activity_date": "%d/%m/%Y",
        "amount": "decimal",
        "decimal_separator": ",",
        "thousands_separator": ".",
    }
    path = write(tmp_path / "a.csv", HEADER + "g1,01/02/2024,1.2345,EUR,E-1\n")
    row = only_rejected(read_all(path, mapping=mapping(formats=formats)))
    assert "does not separate groups of three digits" in row.reason


def test_csv_minor_rejects_decimal_point(tmp_path: Path) -> None:
    formats = {"activity_date": "%d/%m/%Y", "amount": "minor"}
    text = HEADER + 'g1,01/02/2024,25.00,USD,E-1\ng2,01/02/2024,"2,500",USD,E-1\n'
    rows = read_all(write(tmp_path / "a.csv", text), mapping=mapping(formats=formats))
    assert len(rows) == 2
    assert isinstance(rows[0], RejectedRow)
    assert "'25.00' in column 'amount'" in rows[0].reason
    assert "inputs.test.formats.amount to 'decimal'" in rows[0].reason
    assert isinstance(rows[1], ParsedRow)
    assert rows[1].record.amount_minor == 2500


def test_csv_rejects_minor_units_above_max(tmp_path: Path) -> None:
    formats = {"activity_date": "%d/%m/%Y", "amount": "minor"}
    path = write(tmp_path / "a.csv", HEADER + "g1,01/02/2024,1000000000000,USD,E-1\n")
    row = only_rejected(read_all(path, mapping=mapping(formats=formats)))
    assert row.field == "amount_minor"
    assert "(a number of 13 digits)" in row.reason
    assert "above the maximum of 999999999999 minor units" in row.reason
    assert "inputs.test.formats.amount" in row.reason


def test_csv_rejects_fractional_minor_units(tmp_path: Path) -> None:
    formats = {"activity_date": "%d/%m/%Y", "amount": "minor"}
    path = write(tmp_path / "a.csv", HEADER + "g1,01/02/2024,12.5,USD,E-1\n")
    row = only_rejected(read_all(path, mapping=mapping(formats=formats)))
    assert "not a whole number of minor units" in row.reason


def test_csv_rejects_bad_date(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", HEADER + "g1,2024-02-01,10,USD,E-1\n")
    row = only_rejected(read_all(path, mapping=mapping()))
    assert row.field == "activity_date"
    assert "'2024-02-01'" in row.reason
    assert "inputs.test.formats.activity_date" in row.reason


def test_csv_tries_date_formats_in_order(tmp_path: Path) -> None:
    formats = {"activity_date": ["%d/%m/%Y", "%B %d %Y"], "amount": "decimal"}
    path = write(tmp_path / "a.csv", HEADER + "g1,March 17 2011,10,USD,E-1\n")
    record = only_parsed(read_all(path, mapping=mapping(formats=formats))).record
    assert record.activity_date == dt.date(2011, 3, 17)


def test_csv_reason_hides_personal_value(tmp_path: Path) -> None:
    columns = {
        "source_id": "id",
        "activity_date": "date",
        "amount_minor": "amount",
        "currency": "currency",
        "employee_id": "employee",
        "employee_email": "email",
    }
    text = "id,date,amount,currency,employee,email\n"
    text += "g1,01/02/2024,10,USD,E-1,jo.bloggs-at-example.com\n"
    path = write(tmp_path / "a.csv", text)
    row = only_rejected(read_all(path, mapping=mapping(columns=columns)))
    assert row.field == "employee_email"
    assert "jo.bloggs" not in row.reason
    assert "'email'" in row.reason


def test_csv_missing_employee(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", HEADER + "g1,01/02/2024,10,USD,\n")
    row = only_rejected(read_all(path, mapping=mapping()))
    assert row.field == "employee_id"
    assert "column 'employee' is empty" in row.reason


def test_csv_missing_column_names_headers(tmp_path: Path) -> None:
    path = write(tmp_path / "grants.csv", "id,when,amount,currency,employee\n")
    with pytest.raises(ConfigError) as caught:
        read_all(path, mapping=mapping())
    message = str(caught.value)
    assert caught.value.key == "inputs.test.columns.activity_date"
    assert "'date'" in message
    assert "grants.csv" in message
    assert "'when'" in message


def test_csv_multiline_field_and_bom(tmp_path: Path) -> None:
    columns = {
        "source_id": "id",
        "activity_date": "date",
        "amount_minor": "amount",
        "currency": "currency",
        "employee_id": "employee",
    }
    text = "\ufeffid,date,amount,currency,employee,address\n"
    text += 'g1,01/02/2024,10,USD,E-1,"5 Main St\nNew York\n(40.7, -73.9)"\n'
    text += "g2,02/02/2024,10,USD,E-2,\n"
    path = write(tmp_path / "a.csv", text)
    rows = read_all(
        path, mapping=mapping(columns=columns, metadata={"address": "address"})
    )
    first, second = rows
    assert isinstance(first, ParsedRow)
    assert first.record.metadata["address"] == "5 Main St\nNew York\n(40.7, -73.9)"
    assert second.line == 5
    assert isinstance(second, ParsedRow)
    assert "address" not in second.record.metadata


def test_csv_rejects_wrong_cell_count(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", HEADER + "g1,01/02/2024,10,USD,E-1,extra\n")
    row = only_rejected(read_all(path, mapping=mapping()))
    assert "6 cells but the header has 5 columns" in row.reason
    assert row.raw["_extra_cells"] == ["extra"]


def test_csv_lists_and_defaults(tmp_path: Path) -> None:
    columns = {
        "source_id": "id",
        "activity_date": "date",
        "employee_id": "employee",
        "cause": "causes",
    }
    text = 'id,date,employee,causes\nv1,01/02/2024,E-1,"Health, Education ,"\n'
    path = write(tmp_path / "a.csv", text)
    table = {
        "kind": "volunteer_time",
        "columns": columns,
        "defaults": {"hours": 2.0},
        "lists": {"cause": ","},
        "formats": {"activity_date": "%d/%m/%Y"},
    }
    result = ColumnMapping.from_config(table, key="inputs.test")
    record = only_parsed(read_all(path, mapping=result)).record
    assert record.cause == "Health"
    assert record.metadata["cause"] == ["Health", "Education"]
    assert record.hours == 2.0


def test_csv_kind_column(tmp_path: Path) -> None:
    table = {
        "kind_column": "Type",
        "kind_values": {"Volunteering": "volunteer_time", "Gift": "donation"},
        "columns": {
            "source_id": "id",
            "activity_date": "date",
            "employee_id": "employee",
            "hours": "hours",
        },
    }
    text = "id,date,employee,hours,Type\nv1,2024-02-01,E-1,1.5,volunteering\n"
    text += "v2,2024-02-01,E-1,1.5,Sabbatical\n"
    path = write(tmp_path / "a.csv", text)
    first, second = read_all(path, mapping=ColumnMapping.from_config(table, key="k"))
    assert isinstance(first, ParsedRow)
    assert first.record.kind is RecordKind.VOLUNTEER_TIME
    assert isinstance(second, RejectedRow)
    assert second.field == "kind"
    assert "'Sabbatical'" in second.reason


def test_csv_mixed_kinds_with_defaults(tmp_path: Path) -> None:
    table = {
        "kind_column": "Type",
        "columns": {
            "source_id": "id",
            "activity_date": "date",
            "employee_id": "employee",
            "amount_minor": "amount",
        },
        "formats": {"amount": "decimal"},
        "defaults": {"hours": 2.0, "currency": "USD"},
    }
    text = "id,date,employee,amount,Type\n"
    text += "v1,2024-02-01,E-1,,volunteer_time\n"
    text += "d1,2024-02-01,E-1,20.00,donation\n"
    text += "v2,2024-02-01,E-1,20.00,volunteer_time\n"
    path = write(tmp_path / "a.csv", text)
    volunteer, gift, mixed = read_all(
        path, mapping=ColumnMapping.from_config(table, key="inputs.mixed")
    )
    assert isinstance(volunteer, ParsedRow)
    assert volunteer.record.hours == 2.0
    assert volunteer.record.currency is None
    assert isinstance(gift, ParsedRow)
    assert gift.record.hours is None
    assert gift.record.amount_minor == 2000
    assert gift.record.currency == "USD"
    assert isinstance(mixed, RejectedRow)
    assert mixed.field == "amount_minor"
    assert "must be empty for volunteer_time records" in mixed.reason
    assert "column 'amount'" in mixed.reason


def test_csv_other_encoding(tmp_path: Path) -> None:
    text = HEADER + "g1,01/02/2024,10,USD,Zoë\n"
    path = write(tmp_path / "a.csv", text, encoding="cp1252")
    record = only_parsed(read_all(path, mapping=mapping(encoding="cp1252"))).record
    assert record.employee_id == "Zoë"


def test_csv_wrong_encoding_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", HEADER + "g1,01/02/2024,10,USD,Zoë\n", "cp1252")
    with pytest.raises(ConfigError) as caught:
        read_all(path, mapping=mapping())
    assert caught.value.key == "inputs.test.encoding"
    assert "set inputs.test.encoding" in str(caught.value)
    assert "in or before its first data row" in str(caught.value)
    assert "data row 0" not in str(caught.value)


def test_csv_wrong_encoding_counts_rows(tmp_path: Path) -> None:
    # The reader decodes 8 KiB blocks, so the bad byte sits past the first
    # block and the rows of that block are read.
    good = "".join(f"g{n},01/02/2024,10,USD,E-{n}\n" for n in range(1, 1001))
    path = tmp_path / "a.csv"
    path.write_bytes((HEADER + good).encode() + b"g0,01/02/2024,10,USD,Zo\xeb\n")
    with pytest.raises(ConfigError) as caught:
        read_all(path, mapping=mapping())
    found = re.search(
        r"is not valid utf-8 text after data row (\d+);", str(caught.value)
    )
    assert found is not None
    assert 0 < int(found.group(1)) <= 1000


def test_jsonl_wrong_encoding_names_fix(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes('{"source_id": "Zo\u00eb"}\n'.encode("cp1252"))

    with pytest.raises(ConfigError) as caught:
        list(read_records(path, tenant="acme"))

    assert "[inputs.NAME]" in str(caught.value)
    assert "--input NAME" in str(caught.value)


def test_csv_tenant_mismatch_rejected(tmp_path: Path) -> None:
    columns = {
        "source_id": "id",
        "activity_date": "date",
        "amount_minor": "amount",
        "currency": "currency",
        "employee_id": "employee",
        "tenant": "tenant",
    }
    text = HEADER.strip() + ",tenant\ng1,01/02/2024,10,USD,E-1,globex\n"
    path = write(tmp_path / "a.csv", text)
    row = only_rejected(read_all(path, mapping=mapping(columns=columns)))
    assert row.field == "tenant"


def test_csv_identity_fills_employee(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", HEADER + "g1,01/02/2024,10,USD,\n")
    rows = read_all(path, mapping=mapping(), identity=generated_employee)
    record = only_parsed(rows).record
    assert record.employee_id == "E-000001"
    assert record.employee_email == "bo.south@example.com"


def test_canonical_csv(tmp_path: Path) -> None:
    text = "source_id,kind,activity_date,employee_id,hours,metadata.team\n"
    text += "v1,volunteer_time,2024-02-01,E-1,2.5,blue\n"
    record = only_parsed(read_all(write(tmp_path / "a.csv", text))).record
    assert record.hours == 2.5
    assert record.metadata == {"team": "blue"}


CANONICAL_HEADER = (
    "source_id,kind,activity_date,employee_id,hours,amount_minor,currency\n"
)


@pytest.mark.parametrize(
    ("cells", "field", "words"),
    [
        pytest.param(
            'volunteer_time,2024-02-01,E-1,"1,5",,',
            "hours",
            "hours '1,5' in column 'hours' is not a number",
            id="comma-hours",
        ),
        pytest.param(
            "volunteer_time,2024-02-01,E-1,\u0661,,",
            "hours",
            "'.' as the decimal point",
            id="arabic-indic-hours",
        ),
        pytest.param(
            "volunteer_time,2024-02-01,E-1,.5,,",
            "hours",
            "hours '.5' in column 'hours' is not a number",
            id="no-integer-part",
        ),
        pytest.param(
            "volunteer_time,2024-02-01,E-1,2.,,",
            "hours",
            "hours '2.' in column 'hours' is not a number",
            id="no-fraction-part",
        ),
        pytest.param(
            "donation,2024-02-01,E-1,,25.00,USD",
            "amount_minor",
            "amount_minor '25.00' in column 'amount_minor' is not a whole number",
            id="point-amount",
        ),
        pytest.param(
            'donation,2024-02-01,E-1,,"2,500",USD',
            "amount_minor",
            "integer of ASCII digits",
            id="thousands-amount",
        ),
    ],
)
def test_canonical_csv_rejects_number(
    tmp_path: Path, cells: str, field: str, words: str
) -> None:
    text = CANONICAL_HEADER + f"r1,{cells}\nr2,donation,2024-02-01,E-1,,2500,USD\n"
    rows = read_all(write(tmp_path / "a.csv", text))
    assert len(rows) == 2
    assert isinstance(rows[0], RejectedRow)
    assert rows[0].field == field
    assert words in rows[0].reason
    assert "input.formats" not in rows[0].reason
    assert isinstance(rows[1], ParsedRow)
    assert rows[1].record.amount_minor == 2500


@pytest.mark.parametrize(
    ("header", "cells", "field", "words"),
    [
        pytest.param(
            "source_id,kind,employee_id,hours",
            "v1,volunteer_time,E-1,2",
            "activity_date",
            "activity_date is missing; the header has no 'activity_date' column, "
            "so add one.",
            id="no-column",
        ),
        pytest.param(
            "source_id,kind,activity_date,employee_id,hours",
            "v1,volunteer_time,,E-1,2",
            "activity_date",
            "column 'activity_date' is empty, so fill it.",
            id="empty-cell",
        ),
        pytest.param(
            "source_id,kind,activity_date,employee_id,hours",
            "v1,volunteer_time,2024-02-01,E-1,2",
            "tenant",
            "the header has no 'tenant' column, so add one, or read the file "
            "with a tenant (--tenant).",
            id="no-tenant",
        ),
    ],
)
def test_canonical_csv_missing_hint(
    tmp_path: Path, header: str, cells: str, field: str, words: str
) -> None:
    path = write(tmp_path / "a.csv", f"{header}\n{cells}\n")
    tenant = None if field == "tenant" else "acme"
    row = only_rejected(read_all(path, tenant=tenant))
    assert row.field == field
    assert words in row.reason
    assert "input.columns" not in row.reason
    assert "input.defaults" not in row.reason


def test_canonical_csv_unknown_column(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "source_id,colour\nv1,red\n")
    with pytest.raises(ConfigError, match=r"'metadata\.colour'"):
        read_all(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"name it \.csv or \.jsonl"):
        read_all(write(tmp_path / "a.txt", "{}\n"))


# -- JSON Lines -----------------------------------------------------------------


VALID_LINE = {
    "source_id": "d1",
    "tenant": "acme",
    "kind": "donation",
    "activity_date": "2024-03-01",
    "employee_id": "E-1",
    "amount_minor": 2500,
    "currency": "USD",
    "metadata": {"channel": "payroll"},
}


def write_lines(path: Path, *lines: Any) -> Path:
    texts = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    return write(path, "\n".join(texts) + "\n")


def test_jsonl_parses_canonical(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.jsonl", VALID_LINE)
    record = only_parsed(read_all(path)).record
    assert record.amount_minor == 2500
    assert record.activity_date == dt.date(2024, 3, 1)
    assert record.metadata == {"channel": "payroll"}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        pytest.param({"amount_minor": 12.5}, "amount_minor", "whole number", id="frac"),
        pytest.param({"amount_minor": True}, "amount_minor", "whole number", id="bool"),
        pytest.param(
            {"amount_minor": -5}, "amount_minor", "is the int -5, but", id="neg"
        ),
        pytest.param(
            {"amount_minor": 1e12},
            "amount_minor",
            "amount_minor 1000000000000 is above the maximum",
            id="float-above-max",
        ),
        pytest.param(
            {"activity_date": "01/03/2024"}, "activity_date", "ISO", id="date"
        ),
        pytest.param(
            {"activity_date": None}, "activity_date", "is missing", id="nodate"
        ),
        pytest.param({"currency": "US$"}, "currency", "ISO 4217", id="currency"),
        pytest.param(
            {"currency": "ABC"}, "currency", "(the line has 'ABC')", id="not-iso"
        ),
        pytest.param(
            {"currency": "XXX"}, "currency", "(the line has 'XXX')", id="no-money"
        ),
        pytest.param(
            {"activity_date": "0001-01-01"},
            "activity_date",
            "between 1900-01-01 and 2100-12-31",
            id="year-1",
        ),
        pytest.param(
            {"activity_date": "9999-12-31"},
            "activity_date",
            "(the line has '9999-12-31')",
            id="year-9999",
        ),
        pytest.param(
            {"kind": "volunteer_time", "hours": 2.0},
            "amount_minor",
            "amount_minor must be empty for volunteer_time records",
            id="volunteer-amount",
        ),
        pytest.param(
            {"hours": 2.0},
            "hours",
            "hours must be empty for donation records",
            id="donation-hours",
        ),
        pytest.param({"kind": "gift"}, "kind", "'volunteer_time' or", id="kind"),
        pytest.param({"metadata": [1]}, "metadata", "JSON object", id="metadata"),
        pytest.param({"ammount": 1}, None, "ammount is not an", id="unknown-key"),
        pytest.param({"tenant": "globex"}, "tenant", "'acme'", id="other-tenant"),
    ],
)
def test_jsonl_rejects(
    tmp_path: Path, change: dict[str, Any], field: str | None, words: str
) -> None:
    path = write_lines(tmp_path / "a.jsonl", {**VALID_LINE, **change})
    row = only_rejected(read_all(path))
    assert row.field == field
    assert words in row.reason
    assert row.source_id == "d1"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"currency": "XAF"}, id="cfa-franc"),
        pytest.param({"currency": "CLF"}, id="clf"),
        pytest.param({"currency": "UYW"}, id="uyw"),
        pytest.param({"activity_date": "1900-01-01"}, id="first-date"),
        pytest.param({"activity_date": "2100-12-31"}, id="last-date"),
    ],
)
def test_jsonl_accepts_edge_values(tmp_path: Path, change: dict[str, Any]) -> None:
    line = {**VALID_LINE, **change}
    record = only_parsed(read_all(write_lines(tmp_path / "a.jsonl", line))).record
    assert record.currency == line["currency"]
    assert record.activity_date.isoformat() == line["activity_date"]


def test_jsonl_amount_max_accepted(tmp_path: Path) -> None:
    line = {**VALID_LINE, "amount_minor": MAX_AMOUNT_MINOR}
    record = only_parsed(read_all(write_lines(tmp_path / "a.jsonl", line))).record
    assert record.amount_minor == 999_999_999_999


def test_jsonl_amount_above_max_rejected(tmp_path: Path) -> None:
    line = {**VALID_LINE, "amount_minor": 10**12}
    row = only_rejected(read_all(write_lines(tmp_path / "a.jsonl", line)))
    assert row.field == "amount_minor"
    assert row.reason.startswith(
        "amount_minor 1000000000000 is above the maximum of 999999999999 "
        "minor units; check that the source gives the amount in minor units"
    )
    assert row.reason.count("1000000000000") == 1
    assert row.reason.endswith("; fix the value on this line.")


def test_jsonl_overlong_integer_rejected(tmp_path: Path) -> None:
    overlong = json.dumps(VALID_LINE).replace("2500", "1" + "0" * 5000)
    path = write_lines(tmp_path / "a.jsonl", overlong, VALID_LINE)
    rows = read_all(path)
    assert len(rows) == 2
    assert isinstance(rows[0], RejectedRow)
    assert "more digits than the JSON reader accepts" in rows[0].reason
    assert isinstance(rows[1], ParsedRow)


def test_jsonl_reason_hides_personal_value(tmp_path: Path) -> None:
    line = {**VALID_LINE, "employee_email": "no-at-sign.example.com"}
    row = only_rejected(read_all(write_lines(tmp_path / "a.jsonl", line)))
    assert row.field == "employee_email"
    assert "no-at-sign" not in row.reason


def test_jsonl_bad_lines_rejected(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.jsonl", "{not json", "", "[1, 2]", VALID_LINE)
    rows = read_all(path)
    assert [row.line for row in rows] == [1, 3, 4]
    assert isinstance(rows[0], RejectedRow)
    assert "not valid JSON" in rows[0].reason
    assert isinstance(rows[1], RejectedRow)
    assert "contains a JSON array" in rows[1].reason
    assert isinstance(rows[2], ParsedRow)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        pytest.param("null", "contains a JSON null", id="null"),
        pytest.param('"text"', "contains a JSON string", id="string"),
        pytest.param("1.5", "contains a JSON number", id="number"),
        pytest.param("true", "contains a JSON boolean", id="boolean"),
    ],
)
def test_jsonl_names_json_types(tmp_path: Path, line: str, words: str) -> None:
    row = only_rejected(read_all(write_lines(tmp_path / "a.jsonl", line)))
    assert row.line == 1
    assert words in row.reason
    assert "NoneType" not in row.reason


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"child": value}
    return value


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        pytest.param(
            {"description": "x\udc80y"},
            "description",
            "description contains a lone surrogate",
            id="description",
        ),
        pytest.param(
            {"metadata": {"note": ["ok", "\ud800"]}},
            "metadata",
            "metadata.note[1] contains a lone surrogate",
            id="metadata-list",
        ),
        pytest.param(
            {"metadata": {"k\udc80": 1}},
            "metadata",
            "a key in metadata contains a lone surrogate",
            id="metadata-key",
        ),
        pytest.param(
            {"metadata": nested(500)},
            "metadata",
            "more than 32 levels deep",
            id="depth-500",
        ),
    ],
)
def test_jsonl_rejects_unstorable_row(
    tmp_path: Path, change: dict[str, Any], field: str, words: str
) -> None:
    bad = json.dumps({**VALID_LINE, **change})
    good = {**VALID_LINE, "source_id": "d2"}
    rows = read_all(write_lines(tmp_path / "a.jsonl", bad, good))
    assert len(rows) == 2
    assert isinstance(rows[0], RejectedRow)
    assert rows[0].field == field
    assert words in rows[0].reason
    assert rows[0].source_id == "d1"
    assert rows[0].raw == {"text": bad + "\n"}
    assert isinstance(rows[1], ParsedRow)


def test_jsonl_accepts_depth_limit(tmp_path: Path) -> None:
    # The line's object is level 1, so metadata may nest 31 levels.
    line = {**VALID_LINE, "metadata": nested(31)}
    record = only_parsed(read_all(write_lines(tmp_path / "a.jsonl", line))).record
    assert record.metadata == nested(31)


def test_jsonl_rejects_depth_json_cannot_parse(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    bad = json.dumps(VALID_LINE)[:-1] + f', "metadata": {{"list": {deep}}}}}'
    rows = read_all(write_lines(tmp_path / "a.jsonl", bad, VALID_LINE))
    assert len(rows) == 2
    assert isinstance(rows[0], RejectedRow)
    assert "Line 1 nests JSON objects and arrays more than 32" in rows[0].reason
    assert isinstance(rows[1], ParsedRow)


def test_csv_rejects_lone_surrogate(tmp_path: Path) -> None:
    # utf-7 decodes "+3IA-" to the lone surrogate U+DC80.
    text = HEADER + "g1,01/02/2024,10,USD,E+3IA-\ng2,01/02/2024,10,USD,E-2\n"
    path = write(tmp_path / "a.csv", text)
    rows = read_all(path, mapping=mapping(encoding="utf-7"))
    assert len(rows) == 2
    assert isinstance(rows[0], RejectedRow)
    assert "Column 'employee' contains a lone surrogate" in rows[0].reason
    assert rows[0].raw["employee"] == "E\\udc80"
    stored = json.dumps(rows[0].raw, ensure_ascii=False).encode("utf-8")
    assert stored.count(b"\\udc80") == 1
    assert isinstance(rows[1], ParsedRow)


def test_rejected_rows_keep_tenant(tmp_path: Path) -> None:
    table = {
        "kind_column": "type",
        "columns": {
            "source_id": "id",
            "tenant": "company",
            "activity_date": "date",
            "employee_id": "employee",
        },
    }
    text = "id,company,date,employee,type\n"
    text += "v1,globex,not-a-date,E-1,volunteer_time\n"
    text += "v2,,not-a-date,E-1,donation\n"
    path = write(tmp_path / "a.csv", text)
    mapped = ColumnMapping.from_config(table, key="inputs.hr")
    own, filled = read_all(path, mapping=mapped, tenant=None)
    assert isinstance(own, RejectedRow)
    assert own.tenant == "globex"
    assert own.kind is RecordKind.VOLUNTEER_TIME
    assert isinstance(filled, RejectedRow)
    assert filled.tenant is None
    assert filled.kind is RecordKind.DONATION
    _, read_as = read_all(path, mapping=mapped, tenant="initech")
    assert isinstance(read_as, RejectedRow)
    assert read_as.tenant == "initech"


def test_jsonl_rejected_rows_keep_tenant(tmp_path: Path) -> None:
    bad_date = {**VALID_LINE, "tenant": "globex", "activity_date": "2024-13-01"}
    surrogate = {**VALID_LINE, "tenant": "globex", "description": "x\udc80"}
    path = write_lines(tmp_path / "a.jsonl", bad_date, surrogate, "[1]")
    rows = read_all(path, tenant=None)
    assert [row.tenant for row in rows if isinstance(row, RejectedRow)] == [
        "globex",
        "globex",
        None,
    ]
    assert [row.kind for row in rows if isinstance(row, RejectedRow)] == [
        RecordKind.DONATION,
        RecordKind.DONATION,
        None,
    ]


def test_jsonl_without_tenant_needs_row_tenant(tmp_path: Path) -> None:
    line = {name: value for name, value in VALID_LINE.items() if name != "tenant"}
    row = only_rejected(read_all(write_lines(tmp_path / "a.jsonl", line), tenant=None))
    assert row.field == "tenant"


def test_jsonl_with_mapping(tmp_path: Path) -> None:
    line = {"id": 7, "date": "01/02/2024", "amount": 12.5, "currency": "EUR"}
    path = write_lines(tmp_path / "a.jsonl", {**line, "employee": "E-1"})
    record = only_parsed(read_all(path, mapping=mapping())).record
    assert record.source_id == "7"
    assert record.amount_minor == 1250


def test_reader_streams_in_constant_memory(tmp_path: Path) -> None:
    """Memory use while reading stays far below the file's size."""
    path = tmp_path / "big.jsonl"
    line = json.dumps(VALID_LINE) + "\n"
    with path.open("w", encoding="utf-8") as file:
        for _ in range(20_000):
            file.write(line)
    rows = read_records(path, tenant="acme")
    tracemalloc.start()
    try:
        count = sum(1 for _ in rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < path.stat().st_size / 10


# -- real public files ------------------------------------------------------------


def real_mappings() -> dict[str, ColumnMapping]:
    if not ACTIVITIES.is_dir():
        pytest.skip("the public activity fixtures are not checked out next to the repo")
    with REAL_INPUT.open("rb") as file:
        config = tomllib.load(file)
    return mappings_from_config(config["inputs"])


def read_real(name: str, file_name: str) -> list[ParsedRow | RejectedRow]:
    mappings = real_mappings()
    return read_all(
        ACTIVITIES / file_name, mapping=mappings[name], identity=generated_employee
    )


def parsed_by_source(rows: list[ParsedRow | RejectedRow]) -> dict[str, Any]:
    return {
        row.record.source_id: row.record for row in rows if isinstance(row, ParsedRow)
    }


def test_nyc_every_row_accounted() -> None:
    rows = read_real("nyc", "nyc_service_volunteer_opportunities.csv")
    parsed = [row for row in rows if isinstance(row, ParsedRow)]
    rejected = [row for row in rows if isinstance(row, RejectedRow)]
    assert len(rows) == 665
    assert len(parsed) + len(rejected) == 665
    assert all(row.reason for row in rejected)
    assert len({row.record.source_id for row in parsed}) == len(parsed)


def test_nyc_known_rows() -> None:
    records = parsed_by_source(
        read_real("nyc", "nyc_service_volunteer_opportunities.csv")
    )
    first = records["5211"]
    assert first.activity_date == dt.date(2011, 3, 17)
    assert first.kind is RecordKind.VOLUNTEER_TIME
    assert first.hours == 2.0
    assert first.organization_name == "Dorchester Senior Citizens Center, Inc."
    assert first.employee_id == "E-000001"
    assert records["5008"].metadata["address"].count("\n") == 2


def test_nyc_padded_values_trimmed() -> None:
    records = parsed_by_source(
        read_real("nyc", "nyc_service_volunteer_opportunities.csv")
    )
    locations = {record.location for record in records.values()}
    assert "QUEENS" in locations
    assert "STATEN IS" in locations
    assert all(location == location.strip() for location in locations)


def test_quixote_every_row_accounted() -> None:
    rows = read_real("quixote", "quixote_foundation_grants.csv")
    parsed = [row for row in rows if isinstance(row, ParsedRow)]
    rejected = [row for row in rows if isinstance(row, RejectedRow)]
    assert len(rows) == 548
    assert len(parsed) + len(rejected) == 548
    assert all(row.reason for row in rejected)


@pytest.mark.parametrize(
    ("source_id", "amount_minor", "activity_date"),
    [
        pytest.param(
            "360G-quixote-0064000000DRXLSAA5", 200000, dt.date(2001, 9, 19), id="2k"
        ),
        pytest.param(
            "360G-quixote-0064000000DRXbTAAX", 500000, dt.date(2002, 5, 24), id="5k"
        ),
        pytest.param(
            "360G-quixote-0063300000krqRwAAI",
            10000000,
            dt.date(2016, 10, 25),
            id="100k",
        ),
    ],
)
def test_quixote_known_rows(
    source_id: str, amount_minor: int, activity_date: dt.date
) -> None:
    record = parsed_by_source(read_real("quixote", "quixote_foundation_grants.csv"))[
        source_id
    ]
    assert record.amount_minor == amount_minor
    assert record.currency == "USD"
    assert record.activity_date == activity_date


def test_quixote_causes_split() -> None:
    records = parsed_by_source(read_real("quixote", "quixote_foundation_grants.csv"))
    record = records["360G-quixote-0063300000krqRwAAI"]
    assert record.cause == "Racial Equity"
    assert record.metadata["cause"] == ["Racial Equity", "Arts Organizing"]


# -- record model ---------------------------------------------------------------


def donation(amount_minor: Any = 2500, **changes: Any) -> ImpactRecord:
    values: dict[str, Any] = {
        "source_id": "d1",
        "tenant": "acme",
        "kind": "donation",
        "activity_date": dt.date(2024, 3, 1),
        "employee_id": "E-1",
        "amount_minor": amount_minor,
        "currency": "USD",
    }
    values.update(changes)
    return ImpactRecord(**values)


def test_amount_max_below_double_limit() -> None:
    """JSON parsers that read numbers as doubles carry every valid amount exactly."""
    assert MAX_AMOUNT_MINOR < 2**53
    assert int(float(MAX_AMOUNT_MINOR)) == MAX_AMOUNT_MINOR


@pytest.mark.parametrize(
    ("amount_minor", "words"),
    [
        pytest.param(
            10**12,
            "amount_minor 1000000000000 is above the maximum of "
            "999999999999 minor units",
            id="ten-pow-12",
        ),
        pytest.param(
            10**5000,
            "amount_minor of more than 40 digits is above the maximum",
            id="5001-digits",
        ),
        pytest.param(1e30, "not the float 1e+30", id="float"),
    ],
)
def test_record_rejects_amount(amount_minor: Any, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        donation(amount_minor)
    assert str(caught.value).startswith("amount_minor ")
    assert words in str(caught.value)


def test_record_accepts_max_amount() -> None:
    assert donation(MAX_AMOUNT_MINOR).amount_minor == MAX_AMOUNT_MINOR


def volunteering(**changes: Any) -> ImpactRecord:
    values: dict[str, Any] = {
        "source_id": "v1",
        "tenant": "acme",
        "kind": "volunteer_time",
        "activity_date": dt.date(2026, 3, 11),
        "employee_id": "E-1",
        "hours": 2.0,
    }
    values.update(changes)
    return ImpactRecord(**values)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        pytest.param({"amount_minor": 25.7}, "not the float 25.7", id="fraction"),
        pytest.param({"amount_minor": 2500.0}, "not the float 2500.0", id="whole"),
        pytest.param({"amount_minor": "2500"}, "not the str '2500'", id="amount-text"),
        pytest.param(
            {"activity_date": "2026-03-11"},
            "datetime.date.fromisoformat",
            id="date-text",
        ),
        pytest.param(
            {"activity_date": dt.datetime(2026, 3, 11, 9, 30)},
            "pass value.date()",
            id="datetime",
        ),
        pytest.param({"tenant": None}, "tenant must be a str, not None", id="tenant"),
        pytest.param({"source_id": 17}, "source_id must be a str, not int", id="id"),
        pytest.param({"employee_id": ""}, "employee_id must not be empty", id="blank"),
        pytest.param({"description": b"x"}, "description must be a str", id="bytes"),
        pytest.param(
            {"metadata": {"team": object()}},
            "metadata.team has type object, which is not a JSON value",
            id="metadata-object",
        ),
        pytest.param(
            {"metadata": {"scores": [1.0, float("nan")]}},
            "metadata.scores[1] is nan",
            id="metadata-nan",
        ),
        pytest.param(
            {"metadata": {7: "x"}}, "metadata has a key of type int", id="key"
        ),
        pytest.param({"metadata": ["x"]}, "metadata must be a mapping", id="list"),
    ],
)
def test_record_rejects_wrong_type(changes: dict[str, Any], words: str) -> None:
    field = next(iter(changes))

    with pytest.raises(ValueError) as caught:
        donation(**changes)

    assert str(caught.value).startswith(field)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("hours", "words"),
    [
        pytest.param("2", "not the str '2'", id="text"),
        pytest.param(True, "not bool", id="bool"),
        pytest.param(Decimal("NaN"), "not a non-finite Decimal", id="nan"),
        pytest.param(float("inf"), "hours is inf, but", id="infinite"),
        pytest.param(-1, "hours is -1, but", id="negative"),
        pytest.param(None, "hours is missing, but", id="missing"),
    ],
)
def test_record_rejects_hours(hours: Any, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        volunteering(hours=hours)

    assert str(caught.value).startswith("hours ")
    assert words in str(caught.value)


def test_record_kind_error_lists_kinds() -> None:
    with pytest.raises(ValueError) as caught:
        volunteering(kind="volunteer")

    assert str(caught.value) == (
        "kind is the str 'volunteer', not a record kind; use one of "
        "'volunteer_time', 'donation'"
    )


def test_record_hours_decimal_becomes_float() -> None:
    record = volunteering(hours=Decimal("1.5"))

    assert record.hours == 1.5
    assert type(record.hours) is float


def test_record_accepts_int_hours() -> None:
    assert volunteering(hours=3).hours == 3


@pytest.mark.parametrize(
    ("email", "words"),
    [
        pytest.param("zzz secret-person@@example", "contains whitespace", id="space"),
        pytest.param("Fl6 <fl6@example.com>", "without a display name", id="name"),
        pytest.param("<fl6@example.com>", "an angle bracket", id="brackets"),
        pytest.param("fl6@example.com (Fl6)", "contains whitespace", id="comment"),
        pytest.param('"fl6"@example.com', "the character '\"'", id="quotes"),
        pytest.param("fl6@@example.com", "has 2 '@' signs", id="two-at"),
        pytest.param("fl6.example.com", "has 0 '@' signs", id="no-at"),
        pytest.param("@example.com", "nothing before the '@'", id="no-local"),
        pytest.param("fl6@example", "domain without a dot", id="no-dot"),
        pytest.param("fl6@example..com", "empty label", id="empty-label"),
        pytest.param("fl6@.example.com", "empty label", id="leading-dot"),
        pytest.param("fl6@example.com.", "empty label", id="trailing-dot"),
        pytest.param("f" * 243 + "@example.com", "longer than 254", id="long"),
    ],
)
def test_record_rejects_email(email: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        donation(employee_email=email)

    message = str(caught.value)
    assert message.startswith("employee_email ")
    assert words in message
    assert "fl6" not in message
    assert "secret-person" not in message


def test_record_accepts_bare_email() -> None:
    record = donation(employee_email="ana.silva+gifts@mail.example.org")
    assert record.employee_email == "ana.silva+gifts@mail.example.org"


@pytest.mark.parametrize(
    "source_id",
    [
        pytest.param("zelda39.quux@example.org", id="plain"),
        pytest.param("row-7:zelda39.quux@example.org", id="inside"),
        pytest.param("zelda39.quux%40example.org", id="escaped"),
        pytest.param("zelda39.quux\uff20example.org", id="full-width"),
        pytest.param("zelda39.quux(at)example.org", id="written-out"),
        pytest.param("zelda39.quux&#64;example.org", id="html-entity"),
    ],
)
def test_record_rejects_email_in_source_id(source_id: str) -> None:
    with pytest.raises(ValueError) as caught:
        donation(source_id=source_id)

    message = str(caught.value)
    assert message.startswith("source_id contains an email address")
    assert "opaque id" in message
    assert "zelda39" not in message


def test_record_accepts_source_id_with_at_sign() -> None:
    assert donation(source_id="batch@7").source_id == "batch@7"


@pytest.mark.parametrize(
    "field", ["organization_name", "description", "cause", "employee_name"]
)
@pytest.mark.parametrize("character", ["\x00", "\x07", "\x0b", "\x1b"])
def test_record_rejects_control_character(field: str, character: str) -> None:
    with pytest.raises(ValueError) as caught:
        donation(**{field: f"Open{character}Doors"})

    message = str(caught.value)
    assert message.startswith(f"{field} contains the control character U+00")
    assert "at index 4" in message


def test_record_rejects_control_character_in_metadata() -> None:
    with pytest.raises(ValueError, match=r"^metadata\.notes\[0\] contains"):
        donation(metadata={"notes": ["a\x00b"]})


def test_record_accepts_tab_and_line_breaks() -> None:
    record = donation(description="Line one\r\nLine\ttwo")
    assert record.description == "Line one\r\nLine\ttwo"


def test_record_rejects_lone_surrogate() -> None:
    with pytest.raises(ValueError, match=r"^location contains the lone surrogate"):
        donation(location="Quay \udc80")


def test_record_metadata_depth_limit() -> None:
    deepest: Any = "leaf"
    for _ in range(MAX_METADATA_DEPTH - 1):
        deepest = {"level": deepest}
    too_deep = {"level": [deepest]}

    assert donation(metadata=deepest).metadata == deepest
    with pytest.raises(ValueError, match=f"more than {MAX_METADATA_DEPTH} levels"):
        donation(metadata=too_deep)


def test_record_lower_case_currency_names_fix() -> None:
    with pytest.raises(ValueError, match=r"currency must be upper case.*write 'USD'"):
        donation(currency="usd")


# -- readers build records with the model's checks --------------------------------


def jsonl_donation(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "source_id": "g-1",
        "tenant": "acme",
        "kind": "donation",
        "activity_date": "2026-03-11",
        "employee_id": "E-1",
        "amount_minor": 2500,
        "currency": "USD",
    }
    row.update(changes)
    return row


def write_jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    return write(path, "".join(line + "\n" for line in lines))


def test_jsonl_rejects_invalid_rows_one_by_one(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            jsonl_donation(source_id="g-1"),
            jsonl_donation(source_id="g-2", employee_email="Fl6 <fl6@example.com>"),
            jsonl_donation(source_id="g-3", organization_name="Open\x00Doors"),
            jsonl_donation(source_id="g-4", metadata={"team": "a\x01"}),
            jsonl_donation(source_id="g-5"),
        ],
    )

    rows = read_all(path)

    parsed = [row.record.source_id for row in rows if isinstance(row, ParsedRow)]
    rejected = {row.source_id: row for row in rows if isinstance(row, RejectedRow)}
    assert parsed == ["g-1", "g-5"]
    assert rejected["g-2"].field == "employee_email"
    assert "fl6" not in rejected["g-2"].reason
    assert rejected["g-3"].field == "organization_name"
    assert "U+0000" in rejected["g-3"].reason
    assert rejected["g-4"].field == "metadata"


def test_jsonl_email_source_id_not_kept(tmp_path: Path) -> None:
    row = jsonl_donation(source_id="zelda39.quux@example.org")
    path = write_jsonl(tmp_path / "rows.jsonl", [row])

    rejected = only_rejected(read_all(path))

    assert rejected.field == "source_id"
    assert rejected.source_id is None
    assert "opaque id" in rejected.reason
    assert "zelda39" not in rejected.reason


def test_csv_email_source_id_not_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rows.csv",
        "source_id,kind,activity_date,employee_id,hours\n"
        "zelda39.quux@example.org,volunteer_time,2026-03-11,E-1,2\n",
    )

    rejected = only_rejected(read_all(path))

    assert rejected.field == "source_id"
    assert rejected.source_id is None
    assert "zelda39" not in rejected.reason


def test_csv_rejects_control_character(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rows.csv",
        "source_id,kind,activity_date,employee_id,hours,organization_name\n"
        "v-1,volunteer_time,2026-03-11,E-1,2,Open\x07Doors\n"
        "v-2,volunteer_time,2026-03-11,E-1,2,Open Doors\n",
    )

    first, second = read_all(path)

    assert isinstance(first, RejectedRow)
    assert first.field == "organization_name"
    assert "U+0007" in first.reason
    assert isinstance(second, ParsedRow)


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        pytest.param(
            '{"source_id": "g-1", "source_id": "g-2", "tenant": "acme", '
            '"kind": "donation", "activity_date": "2026-03-11", '
            '"employee_id": "E-1", "amount_minor": 2500, "currency": "USD"}',
            "source_id",
            "Line 1 has the key 'source_id' more than once",
            id="top-level",
        ),
        pytest.param(
            '{"source_id": "g-1", "tenant": "acme", "kind": "donation", '
            '"activity_date": "2026-03-11", "employee_id": "E-1", '
            '"amount_minor": 2500, "currency": "USD", '
            '"metadata": {"team": "a", "team": "b"}}',
            None,
            "An object nested in line 1 has the key 'team' more than once",
            id="nested",
        ),
    ],
)
def test_jsonl_rejects_duplicate_key(
    tmp_path: Path, line: str, field: str | None, words: str
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [line, jsonl_donation(source_id="g-9")])

    rejected, parsed = read_all(path)

    assert isinstance(rejected, RejectedRow)
    assert rejected.field == field
    assert words in rejected.reason
    assert isinstance(parsed, ParsedRow)


def test_jsonl_duplicate_source_id_not_kept(tmp_path: Path) -> None:
    line = json.dumps(jsonl_donation()).replace(
        '"source_id": "g-1"', '"source_id": "g-1", "source_id": "g-2"'
    )
    path = write_jsonl(tmp_path / "rows.jsonl", [line])

    rejected = only_rejected(read_all(path))

    assert rejected.source_id is None
    assert rejected.tenant == "acme"


@pytest.mark.parametrize(
    ("field", "value", "example"),
    [
        pytest.param("amount_minor", "2500", "such as 2500", id="amount"),
        pytest.param("hours", "1.5", "such as 1.5", id="hours"),
    ],
)
def test_jsonl_number_as_string(
    tmp_path: Path, field: str, value: str, example: str
) -> None:
    row = jsonl_donation(**{field: value})
    if field == "hours":
        row.update(kind="volunteer_time", amount_minor=None, currency=None)
    path = write_jsonl(tmp_path / "rows.jsonl", [row])

    rejected = only_rejected(read_all(path))

    assert rejected.field == field
    assert "it is a JSON string" in rejected.reason
    assert "write it as a JSON number without quotes" in rejected.reason
    assert example in rejected.reason


def test_jsonl_whole_float_amount_is_int(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [jsonl_donation(amount_minor=2500.0)])

    (row,) = read_all(path)

    assert isinstance(row, ParsedRow)
    assert row.record.amount_minor == 2500
    assert type(row.record.amount_minor) is int


def test_jsonl_fractional_amount_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [jsonl_donation(amount_minor=2500.5)])

    rejected = only_rejected(read_all(path))

    assert rejected.field == "amount_minor"


def test_readers_upper_case_currency(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "rows.jsonl", [jsonl_donation(currency="usd")])
    csv_file = write(
        tmp_path / "rows.csv",
        "source_id,kind,activity_date,employee_id,amount_minor,currency\n"
        "g-1,donation,2026-03-11,E-1,2500,usd\n",
    )

    for path in (jsonl, csv_file):
        (row,) = read_all(path)
        assert isinstance(row, ParsedRow), path
        assert row.record.currency == "USD"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("kind", "maria.lopez@example.org", id="email-in-kind"),
        pytest.param("kind", "E-004217", id="id-in-kind"),
        pytest.param("hours", "Maria Lopez", id="name-in-hours"),
        pytest.param("amount_minor", "+1 415 555 0100", id="phone-in-amount"),
        pytest.param("amount_minor", "4155550100", id="digits-in-amount"),
    ],
)
def test_misplaced_personal_value_is_not_quoted(
    tmp_path: Path, field: str, value: str
) -> None:
    """A personal value in a field meant for a kind or number stays out of reasons."""
    row = {
        "source_id": "b1",
        "tenant": "acme",
        "kind": "donation",
        "activity_date": "2026-03-02",
        "employee_id": "E-004217",
        "amount_minor": 2500,
        "currency": "USD",
        field: value,
    }
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")

    (rejected,) = read_all(path)

    assert isinstance(rejected, RejectedRow)
    assert rejected.field == field
    assert value not in rejected.reason
    assert value.split()[0] not in rejected.reason


@pytest.mark.parametrize(
    ("changes", "hidden"),
    [
        pytest.param({"kind": "jane.doe@example.com"}, "jane.doe", id="kind"),
        pytest.param({"kind": "+1 415 555 0100"}, "415", id="kind-phone"),
        pytest.param({"amount_minor": "4155550100"}, "4155550100", id="amount"),
    ],
)
def test_record_error_hides_misplaced_personal_value(
    changes: dict[str, Any], hidden: str
) -> None:
    values: dict[str, Any] = {
        "source_id": "s",
        "tenant": "t",
        "kind": "donation",
        "activity_date": dt.date(2026, 1, 5),
        "employee_id": "E1",
        "amount_minor": 2500,
        "currency": "USD",
        **changes,
    }
    with pytest.raises(ValueError) as caught:
        ImpactRecord(**values)

    assert hidden not in str(caught.value)
