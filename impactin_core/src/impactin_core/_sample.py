"""Generate the bundled demo dataset ``data/demo_records.jsonl``.

Run ``python -m impactin_core._sample OUTPUT`` to write it. The generator is
seeded, so every run writes the same bytes and a test can compare the
committed file with a fresh generation.

The dataset contains 400 records in canonical field names for three tenants
(acme, globex, initech). Employees, organizations and contact details are
fictional: emails use the example.com, example.org and example.net domains,
and phone numbers come from ranges reserved for fiction (UK 07700 900xxx,
North American 555-01xx). Exactly 20 rows are invalid on purpose, four each
of negative amount, missing date, 30 hours, bad currency and missing
employee id. About one record in ten carries an employee's email or phone
number inside its description or metadata, for redaction to remove.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFECTS",
    "INVALID_COUNT",
    "RECORD_COUNT",
    "SEED",
    "generate_records",
    "main",
    "render_jsonl",
]

SEED = 20250417
RECORD_COUNT = 400
#: The invalid rows, by defect; each defect appears this many times.
DEFECTS = (
    "negative_amount",
    "missing_date",
    "hours_30",
    "bad_currency",
    "missing_employee_id",
)
_PER_DEFECT = 4
INVALID_COUNT = len(DEFECTS) * _PER_DEFECT

_FIELD_ORDER = (
    "source_id",
    "tenant",
    "kind",
    "activity_date",
    "employee_id",
    "employee_email",
    "employee_name",
    "employee_phone",
    "hours",
    "amount_minor",
    "currency",
    "cause",
    "organization_name",
    "organization_id",
    "location",
    "description",
    "metadata",
)

_FIRST_NAMES = [
    "Amara",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Imogen",
    "Jonah",
    "Keiko",
    "Liam",
    "Maya",
    "Nikhil",
    "Olivia",
    "Priya",
    "Quinn",
    "Rosa",
    "Samuel",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoe",
]
_LAST_NAMES = [
    "Abbott",
    "Barnes",
    "Castillo",
    "Dubois",
    "Evans",
    "Fischer",
    "Gupta",
    "Hughes",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreno",
    "Novak",
    "Okafor",
    "Patel",
    "Reyes",
    "Sato",
    "Thompson",
    "Walsh",
]


class _Tenant:
    """A fictional company: email domain, currency, offices and phone style."""

    def __init__(
        self,
        name: str,
        domain: str,
        currency: str,
        offices: Sequence[str],
        phone_format: str,
        id_offset: int,
    ) -> None:
        self.name = name
        self.domain = domain
        self.currency = currency
        self.offices = tuple(offices)
        self.phone_format = phone_format
        self.id_offset = id_offset


_TENANTS = (
    _Tenant(
        "acme",
        "example.com",
        "USD",
        ("New York, NY", "Chicago, IL", "Austin, TX"),
        "+1 212 555 01{:02d}",
        100,
    ),
    _Tenant(
        "globex",
        "example.org",
        "GBP",
        ("London", "Manchester", "Bristol"),
        "07700 900{:03d}",
        400,
    ),
    _Tenant(
        "initech",
        "example.net",
        "USD",
        ("Seattle, WA", "Denver, CO", "Tokyo"),
        "(206) 555-01{:02d}",
        700,
    ),
)

# Fictional organizations, grouped by the cause they serve.
_CAUSES: dict[str, tuple[tuple[str, str], ...]] = {
    "Education": (
        ("ORG-1101", "Northside Reading Partners"),
        ("ORG-1102", "Bright Futures Tutoring Network"),
    ),
    "Environment": (
        ("ORG-1201", "Riverbank Cleanup Alliance"),
        ("ORG-1202", "Urban Tree Canopy Trust"),
    ),
    "Hunger Relief": (
        ("ORG-1301", "Eastside Community Food Bank"),
        ("ORG-1302", "Second Helping Kitchens"),
    ),
    "Health": (
        ("ORG-1401", "Neighborhood Health Outreach"),
        ("ORG-1402", "Blood Drive Volunteers Association"),
    ),
    "Animal Welfare": (("ORG-1501", "Harbor Animal Rescue League"),),
    "Disaster Relief": (("ORG-1601", "Ready Response Volunteers"),),
    "Arts and Culture": (("ORG-1701", "Open Doors Community Arts"),),
    "Strengthening Communities": (
        ("ORG-1801", "Main Street Neighbors Council"),
        ("ORG-1802", "Youth Mentoring Circle"),
    ),
}

_VOLUNTEER_TASKS = {
    "Education": "Tutored primary school pupils in reading.",
    "Environment": "Planted street trees and cleared litter along the river path.",
    "Hunger Relief": "Sorted donated food and packed weekend meal bags.",
    "Health": "Staffed the welcome desk at a community health fair.",
    "Animal Welfare": "Walked dogs and cleaned kennels at the shelter.",
    "Disaster Relief": "Assembled emergency kits for flood-affected families.",
    "Arts and Culture": "Helped set up and run a children's painting workshop.",
    "Strengthening Communities": "Mentored teenagers on CV writing and interviews.",
}
_HOURS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.5, 8.0)
_AMOUNTS_MAJOR = (5, 10, 20, 25, 40, 50, 75, 100, 150, 250, 500)
_AMOUNTS_JPY = (1000, 3000, 5000, 10000, 20000)
_CAMPAIGNS = ("spring-giving", "volunteer-week", "year-end-appeal", "team-challenge")


def _employees(tenant: _Tenant, rng: random.Random) -> list[dict[str, str]]:
    employees = []
    for index in range(15):
        first = rng.choice(_FIRST_NAMES)
        last = rng.choice(_LAST_NAMES)
        number = tenant.id_offset + index
        employees.append(
            {
                "employee_id": f"E-{number:06d}",
                "employee_email": f"{first}.{last}@{tenant.domain}".lower(),
                "employee_name": f"{first} {last}",
                "employee_phone": tenant.phone_format.format(index + 10),
            }
        )
    return employees


def _activity_date(rng: random.Random) -> str:
    day = dt.date(2025, 1, 6) + dt.timedelta(days=rng.randrange(345))
    return day.isoformat()


def _base_record(
    index: int, tenant: _Tenant, employee: dict[str, str], rng: random.Random
) -> dict[str, Any]:
    cause = rng.choice(sorted(_CAUSES))
    organization_id, organization_name = rng.choice(_CAUSES[cause])
    record: dict[str, Any] = {
        "source_id": f"{tenant.name}-{index:04d}",
        "tenant": tenant.name,
        "activity_date": _activity_date(rng),
        "employee_id": employee["employee_id"],
        "employee_email": employee["employee_email"],
        "employee_name": employee["employee_name"],
        "cause": cause,
        "organization_name": organization_name,
        "organization_id": organization_id,
        "location": rng.choice(tenant.offices),
        "metadata": {"campaign": rng.choice(_CAMPAIGNS)},
    }
    if rng.random() < 0.3:
        record["employee_phone"] = employee["employee_phone"]
    return record


def _make_volunteering(record: dict[str, Any], rng: random.Random) -> None:
    record["kind"] = "volunteer_time"
    record["hours"] = rng.choice(_HOURS)
    record["description"] = _VOLUNTEER_TASKS[record["cause"]]
    record["metadata"]["team_event"] = rng.random() < 0.4


def _make_donation(record: dict[str, Any], tenant: _Tenant, rng: random.Random) -> None:
    record["kind"] = "donation"
    if record["location"] == "Tokyo":
        # JPY has no minor unit, so the amount is in whole yen.
        record["currency"] = "JPY"
        record["amount_minor"] = rng.choice(_AMOUNTS_JPY)
    else:
        record["currency"] = tenant.currency
        record["amount_minor"] = rng.choice(_AMOUNTS_MAJOR) * 100
    record["description"] = f"Gift to {record['organization_name']}."
    record["metadata"]["channel"] = rng.choice(("payroll", "card", "matching"))
    record["metadata"]["matched"] = rng.random() < 0.5


def _add_personal_data(
    record: dict[str, Any], employee: dict[str, str], rng: random.Random
) -> None:
    """Put the employee's email or phone number where redaction must find it."""
    choice = rng.randrange(3)
    if choice == 0:
        record["description"] += f" Questions to {employee['employee_email']} please."
    elif choice == 1:
        record["description"] += (
            f" Call me on {employee['employee_phone']} if plans change."
        )
    else:
        record["metadata"]["contact"] = {"phone": employee["employee_phone"]}


def _apply_defect(record: dict[str, Any], defect: str, rng: random.Random) -> None:
    if defect == "negative_amount":
        record["amount_minor"] = -abs(record["amount_minor"])
    elif defect == "missing_date":
        del record["activity_date"]
    elif defect == "hours_30":
        record["hours"] = 30.0
    elif defect == "bad_currency":
        record["currency"] = rng.choice(("US$", "POUNDS", "EURO"))
    elif defect == "missing_employee_id":
        del record["employee_id"]


def _defect_kind(defect: str) -> str | None:
    if defect in ("negative_amount", "bad_currency"):
        return "donation"
    if defect == "hours_30":
        return "volunteer_time"
    return None


def generate_records(seed: int = SEED) -> list[dict[str, Any]]:
    """Return the demo records as canonical dictionaries, in file order."""
    rng = random.Random(seed)
    staff = {tenant.name: _employees(tenant, rng) for tenant in _TENANTS}
    invalid = rng.sample(range(RECORD_COUNT), INVALID_COUNT)
    defects = {row: DEFECTS[slot // _PER_DEFECT] for slot, row in enumerate(invalid)}
    records = []
    for index in range(RECORD_COUNT):
        tenant = rng.choice(_TENANTS)
        employee = rng.choice(staff[tenant.name])
        record = _base_record(index + 1, tenant, employee, rng)
        defect = defects.get(index)
        kind = _defect_kind(defect) if defect else None
        if kind is None:
            kind = "volunteer_time" if rng.random() < 0.55 else "donation"
        if kind == "volunteer_time":
            _make_volunteering(record, rng)
        else:
            _make_donation(record, tenant, rng)
        if rng.random() < 0.1:
            _add_personal_data(record, employee, rng)
        if defect is not None:
            _apply_defect(record, defect, rng)
        records.append({name: record[name] for name in _FIELD_ORDER if name in record})
    return records


def render_jsonl(records: Sequence[dict[str, Any]]) -> str:
    """Return the records as JSON Lines text, one object per line."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the demo dataset to the path given on the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m impactin_core._sample",
        description="Write the impactin demo dataset as JSON Lines.",
    )
    parser.add_argument("output", type=Path, help="file to write")
    arguments = parser.parse_args(argv)
    records = generate_records()
    arguments.output.write_text(render_jsonl(records), encoding="utf-8", newline="\n")
    print(f"Wrote {len(records)} records to {arguments.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
