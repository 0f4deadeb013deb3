"""Delivery throughput: the full pipeline against a bare httpx loop.

Both post the same Benevity payloads to one simulator process on
127.0.0.1, at the same concurrency, in alternating rounds. The bare loop
runs twice per round: with one shared client, and with a client per
worker as the pipeline has. The pipeline
run covers everything ``Runtime.deliver`` does: the outbox and
idempotency keys in SQLite, minimization, redaction, the leak scan, the
rate limiter (set far above the load), the circuit breaker, the attempt
log and the audit fields. The bare loop authenticates once and then only
posts. The figure is the median of the rounds.

With ``--delay-ms`` both talk to the minimal sink of ``_sink.py`` instead,
which responds after that delay, to show the ratio when the platform is
across a network rather than on loopback.

    python benchmarks/bench_throughput.py [--records N] [--rounds R] [--delay-ms D]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import (
    PLATFORM,
    TENANT,
    bench_config,
    bench_environ,
    emit,
    machine,
    prepare_request,
    records,
    simulator_server,
    sink_server,
)

from impactin_core import AuthContext, EnvSecrets, Runtime


def new_runtime(folder: Path, url: str, concurrency: int) -> Runtime:
    environ = bench_environ()
    config = bench_config(folder, url, environ, concurrency=concurrency)
    return Runtime(config, secrets=EnvSecrets(environ))


async def run_pipeline(
    url: str, concurrency: int, count: int, prefix: str
) -> tuple[float, float, int]:
    """Deliver ``count`` records; return wall and CPU seconds and the failed count."""
    with tempfile.TemporaryDirectory() as folder:
        runtime = new_runtime(Path(folder), url, concurrency)
        try:
            batch = list(records(count, prefix))
            started, cpu_started = time.perf_counter(), time.process_time()
            report = await runtime.deliver(batch)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        finally:
            runtime.close()
    return elapsed, cpu, count - report.platform(PLATFORM).delivered


async def run_bare(
    url: str, concurrency: int, count: int, prefix: str, *, own_clients: bool = False
) -> tuple[float, float, int]:
    """Post ``count`` payloads; return wall and CPU seconds and the failed count.

    The loop shares one client, as a hand-written loop usually does. With
    ``own_clients`` each worker has its own, as the pipeline's workers do.
    """
    with tempfile.TemporaryDirectory() as folder:
        runtime = new_runtime(Path(folder), url, concurrency)
        try:
            payloads = [
                prepare_request(runtime, record).payload
                for record in records(count, prefix)
            ]
            async with httpx.AsyncClient(timeout=30.0) as client:
                headers = await bare_headers(runtime, client)
            settings = runtime.settings(TENANT, PLATFORM)
        finally:
            runtime.close()
    donations = settings.base_url + "/donations"
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    # Building a TLS context loads the CA bundle (about 20 ms), so the
    # clients share one, as the pipeline's do.
    tls = httpx.create_ssl_context()
    pending = iter(payloads)
    failed = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failed
        for payload in pending:
            try:
                response = await client.post(donations, json=payload, headers=headers)
            except httpx.HTTPError:
                failed += 1
                continue
            if response.status_code != 201:
                failed += 1

    async def worker_with_own_client() -> None:
        async with httpx.AsyncClient(timeout=30.0, limits=limits, verify=tls) as client:
            await worker(client)

    started, cpu_started = time.perf_counter(), time.process_time()
    if own_clients:
        await asyncio.gather(*(worker_with_own_client() for _ in range(concurrency)))
    else:
        async with httpx.AsyncClient(timeout=30.0, limits=limits, verify=tls) as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return elapsed, time.process_time() - cpu_started, failed


async def bare_headers(runtime: Runtime, client: httpx.AsyncClient) -> dict[str, str]:
    """Fetch one token through the connector, as a hand-written loop would once."""
    info = runtime.plugins.platform(PLATFORM).info
    context = AuthContext(client=client, tokens=runtime.tokens, clock=time.time)
    credentials = await runtime.plugins.hook(PLATFORM, "impactin_authenticate")(
        platform=info, settings=runtime.settings(TENANT, PLATFORM), context=context
    )
    return {**credentials.headers, "Accept": "application/json"}


async def measure(
    url: str, concurrency: int, count: int, rounds: int
) -> dict[str, Any]:
    # One small round of each first, so imports and connection setup are
    # not in the figures.
    await run_bare(url, concurrency, 20, f"warm-bare-{concurrency}")
    await run_pipeline(url, concurrency, 20, f"warm-pipe-{concurrency}")
    bare: list[float] = []
    bare_own: list[float] = []
    pipeline: list[float] = []
    # Client CPU (this process only; the server runs in its own) per record.
    bare_cpu: list[float] = []
    bare_own_cpu: list[float] = []
    pipeline_cpu: list[float] = []
    failed = {"bare": 0, "bare_own_clients": 0, "pipeline": 0}
    for round_number in range(rounds):
        prefix = f"c{concurrency}-r{round_number}"
        # Rates count only the records that arrived.
        elapsed, cpu, lost = await run_bare(url, concurrency, count, prefix + "-bare")
        bare.append((count - lost) / elapsed)
        bare_cpu.append(cpu / count)
        failed["bare"] += lost
        elapsed, cpu, lost = await run_bare(
            url, concurrency, count, prefix + "-bare-own", own_clients=True
        )
        bare_own.append((count - lost) / elapsed)
        bare_own_cpu.append(cpu / count)
        failed["bare_own_clients"] += lost
        elapsed, cpu, lost = await run_pipeline(
            url, concurrency, count, prefix + "-pipe"
        )
        pipeline.append((count - lost) / elapsed)
        pipeline_cpu.append(cpu / count)
        failed["pipeline"] += lost
    bare_median = statistics.median(bare)
    bare_own_median = statistics.median(bare_own)
    pipeline_median = statistics.median(pipeline)
    return {
        "concurrency": concurrency,
        "records": count,
        "rounds": rounds,
        "bare_per_s": round(bare_median, 1),
        "bare_own_clients_per_s": round(bare_own_median, 1),
        "pipeline_per_s": round(pipeline_median, 1),
        "ratio": round(pipeline_median / bare_median, 3),
        "ratio_to_own_clients": round(pipeline_median / bare_own_median, 3),
        "bare_rounds": [round(value, 1) for value in bare],
        "bare_own_clients_rounds": [round(value, 1) for value in bare_own],
        "pipeline_rounds": [round(value, 1) for value in pipeline],
        "bare_cpu_ms_per_record": round(statistics.median(bare_cpu) * 1000, 3),
        "bare_own_clients_cpu_ms_per_record": round(
            statistics.median(bare_own_cpu) * 1000, 3
        ),
        "pipeline_cpu_ms_per_record": round(statistics.median(pipeline_cpu) * 1000, 3),
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="Records per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per concurrency.")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 16], help="Levels to run."
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=None,
        help="Use the sink, which responds after this many milliseconds.",
    )
    args = parser.parse_args()
    if args.delay_ms is None:
        server, label = simulator_server(), "Benevity simulator"
    else:
        server, label = sink_server(args.delay_ms), f"sink, {args.delay_ms:g} ms delay"
    with server as url:
        for concurrency in args.concurrency:
            result = asyncio.run(measure(url, concurrency, args.records, args.rounds))
            emit("throughput", {**result, "server": label, "machine": machine()})


if __name__ == "__main__":
    main()
