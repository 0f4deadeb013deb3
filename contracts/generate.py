"""Regenerate the contract files by driving each connector against a Pact mock server.

Run from the repository root::

    python -m contracts.generate            # rewrite the files in contracts/
    python -m contracts.generate --out DIR  # write them to DIR instead

Each scenario gets its own mock server, because several scenarios send the
same request and expect different responses. The pact files of one
consumer and provider pair are then merged into one file, normalized
(interactions sorted by description, the Pact library's version metadata
removed) so that a regeneration with unchanged connectors rewrites the
same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pact import Pact

from . import benevity, goodera, workday_rest, workday_soap
from ._common import Scenario, disable_pact_tracking

__all__ = [
    "CONTRACTS_DIR",
    "PAIRS",
    "generate",
    "normalize_pact",
    "pact_file_name",
    "run_scenario",
]

CONTRACTS_DIR = Path(__file__).resolve().parent

#: (consumer, provider, scenarios) of each Pact file.
PAIRS: tuple[tuple[str, str, Sequence[Scenario]], ...] = (
    (benevity.CONSUMER, benevity.PROVIDER, benevity.SCENARIOS),
    (goodera.CONSUMER, goodera.PROVIDER, goodera.SCENARIOS),
    (workday_rest.CONSUMER, workday_rest.PROVIDER, workday_rest.SCENARIOS),
)


def pact_file_name(consumer: str, provider: str) -> str:
    """Return the file name the Pact library gives a consumer and provider pair."""
    return f"{consumer}-{provider}.json"


def run_scenario(
    scenario: Scenario, consumer: str, provider: str, folder: Path
) -> BaseException | None:
    """Drive one scenario against a fresh mock server and write its pact to ``folder``.

    Returns the exception the connector raised, or None when it returned an
    outcome. Raises ``pact.error.MismatchesError`` when the connector's
    requests do not match the interactions, and ``AssertionError`` when the
    connector's result is not the expected one.
    """
    pact = Pact(consumer, provider).with_specification("V4")
    scenario.define(pact)
    raised: BaseException | None = None
    with pact.serve(addr="127.0.0.1") as server:
        try:
            asyncio.run(scenario.run(str(server.url)))
        except Exception as exc:
            raised = exc
    _check_result(scenario, raised)
    pact.write_file(folder, overwrite=True)
    return raised


def _check_result(scenario: Scenario, raised: BaseException | None) -> None:
    if scenario.expected is None and raised is not None:
        message = (
            f"Scenario {scenario.platform}/{scenario.name} expected a successful "
            f"send, but the connector raised {type(raised).__name__}: {raised}"
        )
        raise AssertionError(message) from raised
    if scenario.expected is not None and not isinstance(raised, scenario.expected):
        found = "no error" if raised is None else type(raised).__name__
        message = (
            f"Scenario {scenario.platform}/{scenario.name} expected the connector "
            f"to raise {scenario.expected.__name__}, but it raised {found}."
        )
        raise AssertionError(message) from raised


def normalize_pact(document: dict[str, Any]) -> dict[str, Any]:
    """Return a pact with sorted interactions and no Pact library versions."""
    normalized: dict[str, Any] = json.loads(json.dumps(document))
    normalized.get("metadata", {}).pop("pactRust", None)
    normalized.get("metadata", {}).pop("pactPython", None)
    normalized["interactions"] = sorted(
        normalized["interactions"], key=lambda item: item["description"]
    )
    return normalized


def _merge(documents: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] | None = None
    by_description: dict[str, dict[str, Any]] = {}
    for document in documents:
        if merged is None:
            merged = document
        for interaction in document["interactions"]:
            description = interaction["description"]
            known = by_description.setdefault(description, interaction)
            if known != interaction:
                message = (
                    f"Two scenarios define the interaction {description!r} "
                    "differently; give one of them another description."
                )
                raise ValueError(message)
    if merged is None:
        raise ValueError("No scenario produced a pact.")
    merged["interactions"] = list(by_description.values())
    return normalize_pact(merged)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as sorted, indented JSON with a final newline."""
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def generate(out: Path) -> list[Path]:
    """Write every pact file and the Workday SOAP request template into ``out``."""
    disable_pact_tracking()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for consumer, provider, scenarios in PAIRS:
        documents = []
        for scenario in scenarios:
            with tempfile.TemporaryDirectory() as scratch:
                folder = Path(scratch)
                run_scenario(scenario, consumer, provider, folder)
                path = folder / pact_file_name(consumer, provider)
                documents.append(json.loads(path.read_text(encoding="utf-8")))
        target = out / pact_file_name(consumer, provider)
        write_json(target, _merge(documents))
        written.append(target)
    written.append(workday_soap.write_request_template(out))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contracts.generate",
        description="Regenerate the connector contracts from the connectors' requests.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=CONTRACTS_DIR,
        help="folder to write the contract files to (default: contracts/)",
    )
    arguments = parser.parse_args(argv)
    for path in generate(arguments.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
