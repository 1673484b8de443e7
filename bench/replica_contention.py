"""Two replicas writing the same co-browsing sessions: throughput, ABORTED and latency.

A co-browsing session is written by the agent's and the customer's side, through whichever
replica the load balancer picks. Runs, side by side on one database:
- `one`: one server process, every writer through it (the baseline);
- `affinity`: two server processes, each session always through the same one;
- `random`: two server processes, each call through a random one (the normal case);
- `paced`: two processes, random routing, a realistic mix: many sessions at a few events/s each.
Writers are concurrent unary LogEvent calls of co-browsing events.

    .venv/bin/python -m bench.replica_contention [--seconds 20] [--sessions 20] [--writers 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from auditlog.ids import new_event_id
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from bench.common import (
    CpuMeter,
    ServerProcess,
    bench_channel,
    code_version,
    database_process,
    load_average,
    percentile,
    write_result,
)

TENANT = "bench"


def click(session: str, number: int) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        id=new_event_id(),
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(session_id=session, actor=enums_pb2.ACTOR_AGENT),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"el-{number}")),
    )


class Tally:
    def __init__(self) -> None:
        self.stored = 0
        self.codes: dict[str, int] = {}
        self.latencies: list[float] = []

    def summary(self, seconds: float) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies] or [0.0]
        return {
            "events_per_s": round(self.stored / seconds, 1),
            "stored": self.stored,
            "errors": self.codes,
            "latency_p50_ms": round(statistics.median(ms), 2),
            "latency_p99_ms": round(percentile(ms, 0.99), 2),
            "latency_max_ms": round(max(ms), 2),
        }


async def _call(stub: Any, events: list[audit_event_pb2.AuditEvent], tally: Tally) -> None:
    """One LogEvent (one event) or LogEvents (several) call; latency per call."""
    started = time.perf_counter()
    try:
        if len(events) == 1:
            await stub.LogEvent(service_pb2.LogEventRequest(event=events[0]), timeout=30)
            tally.stored += 1
        else:
            request = service_pb2.LogEventsRequest(
                events=events, result_view=enums_pb2.RESULT_VIEW_ACK
            )
            response = await stub.LogEvents(request, timeout=30)
            for result in response.results:
                if result.WhichOneof("result") == "error":
                    name = enums_pb2.ErrorReason.Name(result.error.reason)
                    tally.codes[name] = tally.codes.get(name, 0) + 1
                else:
                    tally.stored += 1
        tally.latencies.append(time.perf_counter() - started)
    except grpc.aio.AioRpcError as error:
        name = error.code().name
        tally.codes[name] = tally.codes.get(name, 0) + len(events)


async def blast(
    stubs: list[Any], sessions: list[str], route: str, writers: int, seconds: float, batch: int
) -> Tally:
    """Writers as fast as they can, each call `batch` events of one session; route "random"
    or "affinity" (session -> one stub)."""
    tally = Tally()
    deadline = time.perf_counter() + seconds
    rng = random.Random(7)

    async def writer() -> None:
        number = 0
        while time.perf_counter() < deadline:
            index = rng.randrange(len(sessions))
            pick = index % len(stubs) if route == "affinity" else rng.randrange(len(stubs))
            number += batch
            events = [click(sessions[index], number + n) for n in range(batch)]
            await _call(stubs[pick], events, tally)

    await asyncio.gather(*(writer() for _ in range(writers)))
    return tally


async def paced(
    stubs: list[Any], sessions: int, rate_per_session: float, seconds: float, every_s: float
) -> Tally:
    """Every session writes `rate_per_session` events/s; like co-browsing gateways, the events
    due are sent every `every_s` as one LogEvents call to a random replica. Latency per call."""
    tally = Tally()
    rng = random.Random(11)
    names = [f"paced-{uuid.uuid4().hex[:6]}-{n}" for n in range(sessions)]
    per_tick = rate_per_session * sessions * every_s
    calls: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    due = 0.0
    number = 0
    tick = 0
    while time.perf_counter() - start < seconds:
        tick += 1
        due += per_tick
        events = []
        while due >= 1:
            due -= 1
            number += 1
            events.append(click(names[rng.randrange(sessions)], number))
        if events:
            stub = stubs[rng.randrange(len(stubs))]
            calls.append(asyncio.create_task(_call(stub, events, tally)))
        next_at = start + tick * every_s
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))  # pacing the load
    await asyncio.gather(*calls)
    return tally


async def run(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {}
    with database_process() as (uri, backend, db_pid), tempfile.TemporaryDirectory() as tmp:
        servers = [ServerProcess(uri, "contention", Path(tmp) / f"server{n}.log") for n in range(2)]
        try:
            for server in servers:
                await server.wait_serving()
            channels = [bench_channel(s.target) for s in servers]
            stubs = [service_pb2_grpc.AuditLogServiceStub(c) for c in channels]
            meter_pids = {
                "server0": servers[0].pid,
                "server1": servers[1].pid,
                "db": db_pid,
                "client": os.getpid(),
            }
            for mode in args.modes.split(","):
                sessions = [f"{mode}-{uuid.uuid4().hex[:6]}-{n}" for n in range(args.sessions)]
                use = stubs[:1] if mode == "one" else stubs
                meter = CpuMeter(meter_pids)
                meter.start()
                route = "affinity" if mode == "affinity" else "random"
                tally = await blast(use, sessions, route, args.writers, args.seconds, args.batch)
                summary = {**tally.summary(args.seconds), "cpu_percent": meter.stop()}
                results.setdefault(mode, []).append(summary)
                print(mode, summary, flush=True)
            for mode, use in (("paced_one", stubs[:1]), ("paced", stubs)):
                meter = CpuMeter(meter_pids)
                meter.start()
                tally = await paced(
                    use, args.paced_sessions, args.paced_rate, args.seconds, args.paced_every
                )
                results[mode] = [{**tally.summary(args.seconds), "cpu_percent": meter.stop()}]
                print(mode, results[mode][0], flush=True)
            for channel in channels:
                await channel.close()
        finally:
            for server in servers:
                server.stop()

    def best(mode: str) -> dict[str, Any]:
        return max(results.get(mode, [{"events_per_s": 0.0}]), key=lambda r: r["events_per_s"])

    one, rand, aff = best("one"), best("random"), best("affinity")
    ratio = round(rand["events_per_s"] / max(one["events_per_s"], 1.0), 2)
    lines = [
        "# Two replicas writing the same co-browsing sessions",
        "",
        f"{backend}, {args.sessions} sessions, {args.writers} concurrent writers of "
        f"{'unary LogEvent calls' if args.batch == 1 else f'LogEvents of {args.batch} events'}, "
        f"{args.seconds:g} s per run, code {code_version()[:12]}, load {load_average()}.",
        "",
        "| mode | events/s | errors | p50 ms | p99 ms | max ms |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for mode in ("one", "affinity", "random", "paced_one", "paced"):
        for r in results.get(mode, []):
            lines.append(
                f"| {mode} | {r['events_per_s']:,} | {r['errors'] or 'none'} | "
                f"{r['latency_p50_ms']} | {r['latency_p99_ms']} | {r['latency_max_ms']} |"
            )
    lines += [
        "",
        f"Two replicas with random routing reach **{ratio}x** one replica "
        f"({rand['events_per_s']:,} vs {one['events_per_s']:,} events/s; best of each); "
        f"with session affinity {aff['events_per_s']:,}/s.",
        f"Paced mix: {args.paced_sessions} sessions x {args.paced_rate:g} events/s, sent every "
        f"{args.paced_every * 1000:g} ms as one LogEvents call through a random replica: "
        f"{results['paced'][0]['events_per_s']:,} events/s stored, call latency p50 "
        f"{results['paced'][0]['latency_p50_ms']} ms, "
        f"p99 {results['paced'][0]['latency_p99_ms']} ms, errors "
        f"{results['paced'][0]['errors'] or 'none'}.",
        "",
    ]
    write_result(
        args.name,
        {"backend": backend, "args": vars(args), "ratio_random_vs_one": ratio, "runs": results},
        "\n".join(lines),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1, help="events a call (1: LogEvent)")
    parser.add_argument("--modes", default="one,affinity,random,one,random")
    parser.add_argument("--paced-sessions", type=int, default=1000)
    parser.add_argument("--paced-rate", type=float, default=5.0)
    parser.add_argument("--paced-every", type=float, default=0.02, help="seconds between calls")
    parser.add_argument("--name", default="replica_contention")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
