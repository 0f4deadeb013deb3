"""Helpers shared by the benchmark scripts.

Every server a benchmark talks to is started here, on 127.0.0.1, and
stopped when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: Public sample files kept next to the repository, which may be absent.
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"

TENANT = "bench"
PLATFORM = "benevity"
STORE_KEY_ENV = "IMPACTIN_BENCH_STORE_KEY"
TENANT_KEY_ENV = "IMPACTIN_BENCH_TENANT_KEY"


def machine() -> dict[str, Any]:
    """Describe the CPU, cores, memory and Python that ran a benchmark."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as file:
        for line in file:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as file:
        for line in file:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        # The 1-minute load average at the end of a benchmark shows how busy
        # other programs kept the machine.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            message = f"The server on port {port} exited with {process.returncode}."
            raise RuntimeError(message)
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    message = f"The server on port {port} did not listen within {timeout} s."
    raise RuntimeError(message)


@contextlib.contextmanager
def server_process(args: list[str], timeout: float = 30.0) -> Iterator[str]:
    """Run a server in its own process on a free 127.0.0.1 port; yield its URL.

    ``args`` is the command after the interpreter, with ``{port}`` filled
    in. A process of its own keeps the server's CPU time and memory out
    of the client's figures.
    """
    port = free_port()
    command = [sys.executable, *(arg.format(port=port) for arg in args)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process, timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def simulator_server() -> contextlib.AbstractContextManager[str]:
    """Serve the Benevity simulator without faults through ``impactin sandbox``."""
    return server_process(
        ["-m", "impactin_core._cli", "sandbox", PLATFORM, "--port", "{port}"]
    )


def sink_server(delay_ms: float = 0.0) -> contextlib.AbstractContextManager[str]:
    """Serve the minimal Benevity-shaped sink of ``_sink.py``."""
    return server_process([str(BENCH_DIR / "_sink.py"), "{port}", str(delay_ms)])


def bench_environ() -> dict[str, str]:
    """Return fresh store and tenant keys, so each run starts with new keys."""
    from impactin_core._crypto import generate_key

    return {
        STORE_KEY_ENV: generate_key(),
        TENANT_KEY_ENV: secrets.token_urlsafe(32),
    }


def bench_config(
    folder: Path,
    base_url: str,
    environ: dict[str, str],
    *,
    concurrency: int,
    rate_limit: tuple[int, float] = (1_000_000, 1.0),
) -> Any:
    """Return a one-tenant configuration that delivers to ``base_url``.

    The default ``rate_limit`` of a million calls per second is far above
    any load here, so the limiter admits every call at once.
    """
    from impactin_benevity._simulator import create_simulator
    from impactin_core._config import parse_config

    simulator = create_simulator()
    credentials = {}
    for name, value in simulator.credentials.items():
        env_name = f"IMPACTIN_BENCH_{name.upper()}"
        environ[env_name] = value
        credentials[name] = env_name
    data = {
        "store": {"path": "bench.db", "key_env": STORE_KEY_ENV},
        "runtime": {"concurrency": concurrency},
        "tenants": {
            TENANT: {
                "key_env": TENANT_KEY_ENV,
                "platforms": {
                    PLATFORM: {
                        "base_url": base_url,
                        "credentials": credentials,
                        "options": {"foundation_id": "bench-foundation"},
                        "retry": {"base_delay": 0.05, "max_delay": 1.0},
                        "rate_limit": {"calls": rate_limit[0], "period": rate_limit[1]},
                    }
                },
            }
        },
    }
    return parse_config(data, base_dir=folder)


def record_dict(index: int, prefix: str, *, padded: bool = False) -> dict[str, Any]:
    """Return one donation row with personal data in every field that takes it.

    ``padded`` writes source ids as eight digits with leading zeros, which
    the leak scan must test as possible national phone numbers.
    """
    day = dt.date(2026, 1, 1) + dt.timedelta(days=index % 300)
    return {
        "source_id": f"{prefix}-{index:08d}" if padded else f"{prefix}-{index}",
        "tenant": TENANT,
        "kind": "donation",
        "activity_date": day.isoformat(),
        "employee_id": f"E-{index % 50_000:06d}",
        "employee_email": f"person{index % 50_000}@example.org",
        "employee_name": "Alex Example",
        "amount_minor": 500 + index % 10_000,
        "currency": "USD",
        "cause": "Education",
        "organization_name": "Riverside Literacy Project",
        "organization_id": f"ORG-{index % 900:04d}",
        "location": "Austin, TX",
        "description": "Monthly gift to Riverside Literacy Project.",
        "metadata": {"campaign": "year-end", "channel": "payroll"},
    }


def records(
    count: int, prefix: str, *, padded: bool = False, start: int = 0
) -> Iterator[Any]:
    """Yield ``count`` ``ImpactRecord`` donations with unique source ids.

    The ids number the records from ``start``.
    """
    from impactin_core import ImpactRecord
    from impactin_core._converter import converter

    for index in range(start, start + count):
        row = record_dict(index, prefix, padded=padded)
        yield converter.structure(row, ImpactRecord)


def write_jsonl(path: Path, count: int, prefix: str) -> None:
    with path.open("w", encoding="utf-8") as file:
        for index in range(count):
            file.write(json.dumps(record_dict(index, prefix)))
            file.write("\n")


def emit(name: str, result: dict[str, Any]) -> None:
    """Print a result as one JSON line, and append it to $IMPACTIN_BENCH_OUT."""
    line = json.dumps({"benchmark": name, **result}, sort_keys=True)
    print(line, flush=True)
    out = os.environ.get("IMPACTIN_BENCH_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as file:
            file.write(line + "\n")


def prepare_request(runtime: Any, record: Any) -> Any:
    """Minimize, map, redact and leak-scan one record as the runtime does.

    These are the steps of ``Runtime._prepare`` without the store read, so
    the bare loop posts the very payloads the pipeline would post.
    """
    from impactin_core import RedactionPolicy, leak_scan
    from impactin_core._redaction import minimize_record

    info = runtime.plugins.platform(PLATFORM).info
    config = runtime.platform_config(record.tenant, PLATFORM)
    policy = RedactionPolicy.for_platform(
        info,
        record.tenant,
        runtime.tenant_key(record.tenant),
        deny=config.deny_fields,
        allow=config.allow_fields,
    )
    minimized, _ = minimize_record(record, policy)
    requests = runtime.plugins.hook(PLATFORM, "impactin_map")(
        platform=info,
        records=[minimized],
        settings=runtime.settings(record.tenant, PLATFORM),
        idempotency_keys=[runtime.idempotency_key(record, PLATFORM)],
    )
    request = requests[0]
    runtime.plugins.hook(PLATFORM, "impactin_redact")(
        platform=info, request=request, policy=policy
    )
    findings = leak_scan(request.payload, request.personal_paths)
    if findings:
        message = f"The benchmark record {record.source_id} would leak {findings}."
        raise RuntimeError(message)
    return request
