"""Unary LogEvent throughput of `auditlog serve` by workers, event loop (asyncio, uvloop), metrics.

Each configuration is a fresh `auditlog serve --workers N` process tree on one FerretDB, loaded
by 64 concurrent LogEvent callers (general events) over 8 connections, so that the kernel
spreads them over the workers (SO_REUSEPORT picks a worker per connection). Configurations
alternate within each round; the median of the rounds is reported, with the CPU per request
of the service processes and of the database. The client runs in this process (grpc.aio,
asyncio), the same for every configuration.

A configuration is `workers:loop`, or `workers:loop:metrics` with a metrics endpoint on.

    .venv/bin/python -m bench.workers [--seconds 10] [--rounds 3] [--configs 1:asyncio,1:uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from auditlog import bearer_interceptors
from auditlog.v1 import service_pb2, service_pb2_grpc
from auditlog_service.workers import child_pids
from bench.auth_cost import CONCURRENCY, event
from bench.common import (
    CpuMeter,
    ServerProcess,
    bench_token,
    code_version,
    database_process,
    load_average,
    write_result,
)

CONNECTIONS = 8
DEFAULT_CONFIGS = "1:asyncio,1:uvloop,2:asyncio,2:uvloop"


async def blast(target: str, seconds: float) -> int:
    """LogEvent calls completed in `seconds` by CONCURRENCY callers over CONNECTIONS channels."""
    channels = [
        grpc.aio.insecure_channel(
            target,
            # A connection per channel: channels with equal options would share one otherwise.
            options=[("grpc.use_local_subchannel_pool", 1)],
            interceptors=bearer_interceptors(bench_token()),
        )
        for _ in range(CONNECTIONS)
    ]
    stubs = [service_pb2_grpc.AuditLogServiceStub(channel) for channel in channels]
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        stub = stubs[offset % CONNECTIONS]
        number = offset
        while time.perf_counter() < deadline:
            await stub.LogEvent(service_pb2.LogEventRequest(event=event(number)))
            number += CONCURRENCY
            done += 1

    try:
        await asyncio.gather(*(caller(n) for n in range(CONCURRENCY)))
    finally:
        for channel in channels:
            await channel.close()
    return done


async def measure(
    uri: str, db_pid: int | None, config: str, seconds: float, log_dir: Path
) -> dict[str, Any]:
    workers, loop, *options = config.split(":")
    env = {"AUDITLOG_EVENT_LOOP": loop}
    if "metrics" in options:
        env["AUDITLOG_METRICS_LISTEN"] = "127.0.0.1:0"
    name = config.replace(":", "_")
    server = ServerProcess(
        uri, f"bench_{name}", log_dir / f"{name}.log", "--workers", workers, env=env
    )
    try:
        await server.wait_serving()
        # Every worker started, then a warm-up: connections, token caches, first groups.
        for _ in range(600):
            if workers == "1" or len(child_pids(server.pid)) == int(workers):
                break
            await asyncio.sleep(0.1)
        await blast(server.target, 2.0)
        pids = child_pids(server.pid) if workers != "1" else [server.pid]
        meter = CpuMeter({"database": db_pid, **{f"service-{p}": p for p in pids}})
        meter.start()
        started = time.perf_counter()
        calls = await blast(server.target, seconds)
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
    finally:
        server.stop()
    service_cpu = sum(v for k, v in cpu.items() if k.startswith("service-"))
    rate = calls / elapsed
    return {
        "req_per_s": round(rate, 1),
        "service_cpu_pct": round(service_cpu, 1),
        "database_cpu_pct": cpu.get("database"),
        "service_cpu_us_per_req": round(service_cpu / 100 / rate * 1e6, 1),
    }


async def run(args: argparse.Namespace) -> None:
    configs = args.configs.split(",")
    results: dict[str, list[dict[str, Any]]] = {config: [] for config in configs}
    loads = [load_average()]
    with database_process() as (uri, backend, db_pid), tempfile.TemporaryDirectory() as logs:
        for round_number in range(args.rounds):
            # Alternating order, so that drift (a growing collection, a busier machine) is shared.
            ordered = configs if round_number % 2 == 0 else configs[::-1]
            for config in ordered:
                result = await measure(uri, db_pid, config, args.seconds, Path(logs))
                results[config].append(result)
                print(config, result, flush=True)
            loads.append(load_average())
    medians = {
        name: {
            key: statistics.median(r[key] for r in runs if r[key] is not None)
            for key in ("req_per_s", "service_cpu_us_per_req", "service_cpu_pct")
        }
        for name, runs in results.items()
    }
    rows = []
    for name, m in medians.items():
        workers, loop, *options = name.split(":")
        runs = ", ".join(f"{r['req_per_s']:,.0f}" for r in results[name])
        metrics = "on" if options else "off"
        rows.append(
            f"| {workers} | {loop} | {metrics} | {m['req_per_s']:,.1f} "
            f"| {m['service_cpu_us_per_req']:,.0f} | {m['service_cpu_pct']:.0f} | {runs} |"
        )
    markdown = "\n".join(
        [
            "# Unary LogEvent by workers, event loop and metrics",
            "",
            f"{backend}, {CONCURRENCY} concurrent callers over {CONNECTIONS} connections, "
            f"{args.rounds} alternating rounds of {args.seconds:g} s per configuration, "
            f"code {code_version()[:12]}, load averages {loads}.",
            "",
            "| workers | loop | metrics | req/s (median) | service CPU µs/req | service CPU % "
            "| runs |",
            "|---:|---|---|---:|---:|---:|---|",
            *rows,
            "",
        ]
    )
    write_result(
        args.name,
        {"backend": backend, "args": vars(args), "results": results, "load": loads},
        markdown,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="workers:loop[:metrics],...")
    parser.add_argument("--name", default="workers", help="of the result files")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
