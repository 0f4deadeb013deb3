"""CPU time per record of map, redact, leak scan and logging, no network.

Each record goes through the steps the runtime runs before a send:
minimization with the tenant's policy, the connector's map and redact
hooks, and the leak scan. Then the two INFO log lines of a delivery pass
impactin's personal-data filter into a handler that writes to memory.
The figure is process CPU time divided by the record count, per step and
in total.

    python benchmarks/bench_cpu.py [--records N]
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import PLATFORM, bench_config, bench_environ, emit, machine, records

from impactin_core import EnvSecrets, RedactionPolicy, Runtime, leak_scan
from impactin_core._logging import install_filter
from impactin_core._redaction import minimize_record


def measure(count: int, padded: bool, start: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        environ = bench_environ()
        config = bench_config(
            Path(folder), "http://127.0.0.1:9", environ, concurrency=1
        )
        runtime = Runtime(config, secrets=EnvSecrets(environ))
        try:
            batch = list(records(count, "cpu", padded=padded, start=start))
            return run_steps(runtime, batch)
        finally:
            runtime.close()


def run_steps(runtime: Runtime, batch: list[Any]) -> dict[str, Any]:
    logger = logging.getLogger("impactin.runtime")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    install_filter()
    info = runtime.plugins.platform(PLATFORM).info
    mapper = runtime.plugins.hook(PLATFORM, "impactin_map")
    redactor = runtime.plugins.hook(PLATFORM, "impactin_redact")
    spent = dict.fromkeys(("minimize", "map", "redact", "leak_scan", "logging"), 0.0)

    try:
        for record in batch:
            mark = time.process_time()
            config = runtime.platform_config(record.tenant, PLATFORM)
            policy = RedactionPolicy.for_platform(
                info,
                record.tenant,
                runtime.tenant_key(record.tenant),
                deny=config.deny_fields,
                allow=config.allow_fields,
            )
            minimized, _ = minimize_record(record, policy)
            mark = _add(spent, "minimize", mark)

            requests = mapper(
                platform=info,
                records=[minimized],
                settings=runtime.settings(record.tenant, PLATFORM),
                idempotency_keys=[runtime.idempotency_key(record, PLATFORM)],
            )
            mark = _add(spent, "map", mark)

            redactor(platform=info, request=requests[0], policy=policy)
            mark = _add(spent, "redact", mark)

            findings = leak_scan(requests[0].payload, requests[0].personal_paths)
            if findings:
                found = ", ".join(f"{item.kind} at {item.path}" for item in findings)
                message = (
                    f"The leak scan blocks the payload of {record.source_id} "
                    f"({found}). An id with one leading zero can be a valid "
                    "national phone number; use a --first-id below 1000000."
                )
                raise RuntimeError(message)
            mark = _add(spent, "leak_scan", mark)

            for outcome in ("success", "delivered"):
                logger.info(
                    "Delivery %s attempt %d for tenant %s on %s: %s",
                    record.source_id,
                    1,
                    record.tenant,
                    PLATFORM,
                    outcome,
                )
            _add(spent, "logging", mark)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    count = len(batch)
    per_record = {
        f"{step}_us": round(total / count * 1e6, 1) for step, total in spent.items()
    }
    return {
        "records": count,
        **per_record,
        "total_us": round(sum(spent.values()) / count * 1e6, 1),
    }


def _add(spent: dict[str, float], step: str, mark: float) -> float:
    now = time.process_time()
    spent[step] += now - mark
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="Records to run.")
    parser.add_argument(
        "--padded-ids",
        action="store_true",
        help=(
            "Source ids of eight zero-padded digits (cpu-00004711), which the "
            "leak scan checks as possible phone numbers."
        ),
    )
    parser.add_argument(
        "--first-id",
        type=int,
        default=0,
        help=(
            "Number of the first record's id. With --padded-ids, 100000 gives "
            "ids with two leading zeros (cpu-00100000)."
        ),
    )
    args = parser.parse_args()
    measure(200, args.padded_ids)  # warm-up: imports, regexes, plugin loading
    result = measure(args.records, args.padded_ids, args.first_id)
    emit(
        "cpu",
        {
            **result,
            "padded_ids": args.padded_ids,
            "first_id": args.first_id,
            "machine": machine(),
        },
    )


if __name__ == "__main__":
    main()
