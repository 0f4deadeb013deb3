"""Run every benchmark in one go and collect the JSON lines in one file.

    python benchmarks/run_all.py [--out FILE] [--memory-sizes N ...]

Each benchmark runs as its own process, one after another, so none
competes with another for the CPU. The results are appended to ``--out``
(default ``bench-results.jsonl`` in the working directory) and printed.
The memory run with the default sizes and the 3-minute limiter run take
the longest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results.jsonl", help="Results file.")
    parser.add_argument(
        "--memory-sizes",
        nargs="+",
        default=["100000", "1000000"],
        help="Record counts for the memory benchmark, smallest first.",
    )
    parser.add_argument(
        "--memory-concurrency",
        default="2",
        help="Deliveries in flight in the memory benchmark.",
    )
    args = parser.parse_args()
    runs = [
        ["bench_startup.py"],
        ["bench_cpu.py"],
        ["bench_soap.py"],
        ["bench_throughput.py"],
        ["bench_throughput.py", "--delay-ms", "20", "--records", "400"],
        ["split_pipeline.py"],
        ["split_pipeline.py", "--concurrency", "16"],
        ["bench_limiter.py"],
        [
            "bench_memory.py",
            "--sizes",
            *args.memory_sizes,
            "--concurrency",
            args.memory_concurrency,
        ],
    ]
    environ = {**os.environ, "IMPACTIN_BENCH_OUT": str(Path(args.out).resolve())}
    failed = []
    for script, *options in runs:
        print(f"== {script} {' '.join(options)}", flush=True)
        command = [sys.executable, str(BENCH_DIR / script), *options]
        if subprocess.run(command, env=environ, check=False).returncode != 0:
            failed.append(script)
    if failed:
        sys.exit(f"These benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
