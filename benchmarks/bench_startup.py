"""Start-up time of ``impactin --help`` and ``impactin plugins``, and their imports.

Each command runs as a new process several times, and the median wall
time and median CPU time (user plus system) of the process are reported.
CPU time depends less on other programs competing for the machine. A
further run under ``python -X importtime`` lists whether zeep or lxml was
imported, which only a SOAP send should do.

The commands run with bytecode caching on, as Python runs by default: the
first, untimed run writes the ``__pycache__`` files, which pip writes at
install time for a regular (not editable) install. An environment that
sets ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module of
the editable packages on each start.

    python benchmarks/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import emit, machine

COMMANDS = (("--help",), ("plugins",))
WATCHED = ("zeep", "lxml")


def run_timed(command: list[str], environ: dict[str, str]) -> tuple[float, float]:
    """Run ``command`` and return its wall time and CPU time in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, env=environ)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def imported_top_level(arguments: tuple[str, ...]) -> set[str]:
    command = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "impactin_core._cli",
        *arguments,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="Runs per command.")
    args = parser.parse_args()
    script = Path(sys.executable).parent / "impactin"
    environ = {**os.environ, "COLUMNS": "132"}
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for arguments in COMMANDS:
        command = [str(script), *arguments]
        subprocess.run(command, capture_output=True, check=True, env=environ)
        runs = [run_timed(command, environ) for _ in range(args.runs)]
        times = [wall for wall, _ in runs]
        imported = imported_top_level(arguments)
        emit(
            "startup",
            {
                "command": "impactin " + " ".join(arguments),
                "runs": args.runs,
                "median_ms": round(statistics.median(times) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1),
                "median_cpu_ms": round(
                    statistics.median(cpu for _, cpu in runs) * 1000, 1
                ),
                "imports": {name: name in imported for name in WATCHED},
                "machine": machine(),
            },
        )


if __name__ == "__main__":
    main()
