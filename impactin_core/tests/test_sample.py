"""Tests of the bundled demo dataset and its generator."""

from __future__ import annotations

import collections
import importlib.resources
from pathlib import Path

import pytest

from impactin_core._input import ParsedRow, RejectedRow, read_records
from impactin_core._models import RecordKind
from impactin_core._redaction import RedactionPolicy, detect, leak_scan, minimize_record
from impactin_core._sample import (
    INVALID_COUNT,
    RECORD_COUNT,
    generate_records,
    main,
    render_jsonl,
)

DATASET = Path(
    str(importlib.resources.files("impactin_core") / "data" / "demo_records.jsonl")
)


@pytest.fixture(scope="module")
def rows() -> list[ParsedRow | RejectedRow]:
    return list(read_records(DATASET, tenant=None))


def test_committed_file_matches_generator() -> None:
    expected = render_jsonl(generate_records()).encode("utf-8")
    assert DATASET.read_bytes() == expected


def test_generator_is_deterministic() -> None:
    assert generate_records() == generate_records()


def test_main_writes_dataset(tmp_path: Path) -> None:
    output = tmp_path / "demo.jsonl"
    assert main([str(output)]) == 0
    assert output.read_bytes() == DATASET.read_bytes()


def test_dataset_split(rows: list[ParsedRow | RejectedRow]) -> None:
    rejected = [row for row in rows if isinstance(row, RejectedRow)]
    assert len(rows) == RECORD_COUNT
    assert len(rejected) == INVALID_COUNT
    assert all(row.reason for row in rejected)


def test_dataset_rejected_fields(rows: list[ParsedRow | RejectedRow]) -> None:
    fields = collections.Counter(
        row.field for row in rows if isinstance(row, RejectedRow)
    )
    assert fields == {
        "amount_minor": 4,
        "activity_date": 4,
        "hours": 4,
        "currency": 4,
        "employee_id": 4,
    }


def test_dataset_kinds_and_tenants(rows: list[ParsedRow | RejectedRow]) -> None:
    records = [row.record for row in rows if isinstance(row, ParsedRow)]
    assert {record.kind for record in records} == set(RecordKind)
    assert {record.tenant for record in records} == {"acme", "globex", "initech"}


def test_dataset_values_in_range(rows: list[ParsedRow | RejectedRow]) -> None:
    records = [row.record for row in rows if isinstance(row, ParsedRow)]
    hours = [record.hours for record in records if record.hours is not None]
    assert min(hours) >= 0.5
    assert max(hours) <= 8
    assert {record.currency for record in records} >= {"USD", "GBP", "JPY"}


def test_dataset_uses_reserved_domains(rows: list[ParsedRow | RejectedRow]) -> None:
    domains = {
        row.record.employee_email.rsplit("@", 1)[1]
        for row in rows
        if isinstance(row, ParsedRow) and row.record.employee_email
    }
    assert domains == {"example.com", "example.org", "example.net"}


def test_dataset_free_text_has_personal_data(
    rows: list[ParsedRow | RejectedRow],
) -> None:
    """Some descriptions and metadata carry an email or phone to redact."""
    records = [row.record for row in rows if isinstance(row, ParsedRow)]
    in_description = [r for r in records if r.description and detect(r.description)]
    in_metadata = [r for r in records if leak_scan(dict(r.metadata))]
    assert len(in_description) >= 10
    assert len(in_metadata) >= 5


def test_dataset_redaction_removes_personal_data(
    rows: list[ParsedRow | RejectedRow],
) -> None:
    """A platform that needs no personal field receives none in free text."""
    for row in rows:
        if not isinstance(row, ParsedRow):
            continue
        policy = RedactionPolicy(
            platform="demo",
            tenant=row.record.tenant,
            keep=frozenset(),
            pseudonymize=frozenset({"employee_id"}),
            key=b"k" * 32,
        )
        record, _ = minimize_record(row.record, policy)
        free_text = {"description": record.description, "metadata": record.metadata}
        assert leak_scan(free_text) == [], record.source_id
