"""Peak memory of ``impactin deliver FILE`` as the input grows.

Each size runs ``impactin deliver`` on a JSON Lines file of that many
donations, in a child process, against the minimal sink of ``_sink.py``
(its own process on 127.0.0.1). The figure is the child's peak resident
set size from ``getrusage``, with the wall time of the run.

    python benchmarks/bench_memory.py [--sizes 100000 1000000] [--concurrency C]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    STORE_KEY_ENV,
    TENANT_KEY_ENV,
    bench_environ,
    emit,
    machine,
    sink_server,
    write_jsonl,
)

_CONFIG = """\
[store]
path = "bench.db"
key_env = "{store_key_env}"

[runtime]
concurrency = {concurrency}

[tenants.bench]
key_env = "{tenant_key_env}"

[tenants.bench.platforms.benevity]
base_url = "{url}"
credentials = {{ client_id = "BENCH_CLIENT_ID", client_secret = "BENCH_CLIENT_SECRET" }}
options = {{ foundation_id = "bench-foundation" }}
rate_limit = {{ calls = 1000000, period = 1 }}
"""


def deliver(url: str, count: int, concurrency: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        data = folder / "records.jsonl"
        write_jsonl(data, count, f"mem{count}")
        config = folder / "impactin.toml"
        config.write_text(
            _CONFIG.format(
                url=url,
                store_key_env=STORE_KEY_ENV,
                tenant_key_env=TENANT_KEY_ENV,
                concurrency=concurrency,
            ),
            encoding="utf-8",
        )
        environ = {
            **os.environ,
            **bench_environ(),
            "BENCH_CLIENT_ID": "sink",
            "BENCH_CLIENT_SECRET": "sink",
        }
        command = [
            sys.executable,
            "-m",
            "impactin_core._cli",
            "--config",
            str(config),
            "deliver",
            str(data),
        ]
        started = time.perf_counter()
        result = subprocess.run(
            command, env=environ, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        store_bytes = (folder / "bench.db").stat().st_size
    if result.returncode != 0:
        code = result.returncode
        message = f"impactin deliver failed with exit code {code}: {result.stderr}"
        raise RuntimeError(message)
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far, in KiB on
    # Linux, so sizes must run from small to large.
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "records": count,
        "concurrency": concurrency,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "wall_s": round(elapsed, 1),
        "store_mib": round(store_bytes / 1024 / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000],
        help="Record counts to deliver, run in increasing order.",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="Deliveries in flight at once (runtime.concurrency).",
    )
    args = parser.parse_args()
    with sink_server() as url:
        for count in sorted(args.sizes):
            result = deliver(url, count, args.concurrency)
            emit("memory", {**result, "machine": machine()})


if __name__ == "__main__":
    main()
