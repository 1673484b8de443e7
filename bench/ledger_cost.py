"""What the tenant ledger costs at ingest, how far it trails ingest, and one tenant vs two.

Two comparisons of the same load in one run, on one database:
- `ledger_vs_none`: one server process with the ledger and one without it (AUDITLOG_LEDGER=off),
  each on a database of its own, in pairs of short turns back to back; the ratio is the median
  of the pairs' ratios; goal: with / without >= 0.8.
- `one_tenant_vs_two`: two server processes with the ledger, alternating rounds; every writer on
  one tenant, against each process's writers on a tenant of their own; goal: one / two >= 0.9.
Writers send LogEvents batches of general and co-browsing events (each writer its own sessions:
the session race is bench/replica_contention.py's subject, not this one's).

Ledger lag: in one-tenant rounds of their own (after those of the ratio, which run without
these probes: the tail's events are delivered to this process, which also generates the load) a
poll of the database's next ledger block records, per event, the time from its writer's
acknowledgement to the block that holds it (goal: p99 <= 1 s); a TailEvents subscriber (from
now) records the arrival on a tail besides (the tail reads the ledger's blocks, which hold the
recorded events).

At the end every tenant's ledger is checked: it verifies (chain, no gap, checkpoints), and it
holds every acknowledged event exactly once.

    .venv/bin/python -m bench.ledger_cost [--pairs 10] [--pair-seconds 3] [--seconds 10]
        [--rounds 3] [--writers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from pymongo import AsyncMongoClient

from auditlog import AuditLogClient
from auditlog.ids import new_event_id
from auditlog.ledger import verify_ledger
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.ledger import LedgerStore, block_id
from bench.common import (
    CpuMeter,
    ServerProcess,
    bench_channel,
    bench_client,
    code_version,
    database_process,
    load_average,
    percentile,
    write_result,
)

Event = audit_event_pb2.AuditEvent


def mixed_batch(tenant: str, writer: str, start: int, size: int) -> list[Event]:
    """Half general events, half clicks in the writer's own sessions."""
    events = []
    for n in range(start, start + size):
        if n % 2:
            events.append(
                Event(
                    id=new_event_id(),
                    tenant_id=tenant,
                    tenant_user_id=f"agent-{n % 7}",
                    start_call=payloads_pb2.StartCallAttributes(
                        call_id=f"call-{writer}-{n}", customer_id=f"customer-{n % 101}"
                    ),
                )
            )
        else:
            events.append(
                Event(
                    id=new_event_id(),
                    tenant_id=tenant,
                    cobrowse=audit_event_pb2.CobrowseContext(
                        session_id=f"{writer}-s{n % 4}", actor=enums_pb2.ACTOR_AGENT
                    ),
                    click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"el{n}")),
                )
            )
    return events


class Load:
    """What the writers of one round stored, and when each event was acknowledged."""

    def __init__(self) -> None:
        self.stored = 0
        self.errors: dict[str, int] = {}
        self.acked: dict[str, dict[str, float]] = {}  # tenant -> event id -> ack time

    def ack(self, tenant: str, event_id: str, at: float) -> None:
        self.acked.setdefault(tenant, {})[event_id] = at
        self.stored += 1


async def writer(
    stub: Any, tenant: str, name: str, deadline: float, batch: int, load: Load
) -> None:
    number = 0
    while time.perf_counter() < deadline:
        events = mixed_batch(tenant, name, number, batch)
        number += batch
        request = service_pb2.LogEventsRequest(events=events, result_view=enums_pb2.RESULT_VIEW_ACK)
        try:
            response = await stub.LogEvents(request, timeout=60)
        except grpc.aio.AioRpcError as error:
            load.errors[error.code().name] = load.errors.get(error.code().name, 0) + len(events)
            continue
        now = time.perf_counter()
        for event, result in zip(events, response.results, strict=True):
            if result.WhichOneof("result") == "error":
                reason = enums_pb2.ErrorReason.Name(result.error.reason)
                load.errors[reason] = load.errors.get(reason, 0) + 1
            else:
                load.ack(tenant, event.id, now)


async def round_of(
    routes: list[tuple[Any, str]], writers_per_route: int, seconds: float, batch: int
) -> tuple[Load, float]:
    """Writers on each (stub, tenant) route for `seconds`; events/s."""
    load = Load()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            writer(stub, tenant, f"w{r}{k}-{uuid.uuid4().hex[:4]}", deadline, batch, load)
            for r, (stub, tenant) in enumerate(routes)
            for k in range(writers_per_route)
        )
    )
    return load, load.stored / (time.perf_counter() - started)


class LagProbe:
    """A tenant tail from now: per event, its arrival time."""

    def __init__(self, client: AuditLogClient, tenant: str) -> None:
        self.arrived: dict[str, float] = {}
        self.progress = asyncio.Event()
        self.tail = client.tail_events(tenant, from_now=True)
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for event in self.tail:
            self.arrived[event.id] = time.perf_counter()
            self.progress.set()

    async def lags(self, acked: dict[str, float], timeout_s: float = 60.0) -> list[float]:
        """Waits (bounded) for every acknowledged event on the tail; the lags in seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                missing = [i for i in acked if i not in self.arrived]
                while missing:
                    self.progress.clear()
                    await self.progress.wait()
                    missing = [i for i in missing if i not in self.arrived]
        return [max(0.0, self.arrived[i] - at) for i, at in acked.items() if i in self.arrived]

    async def close(self) -> None:
        self.task.cancel()


class SequencedProbe:
    """Watches the database for a tenant's new ledger blocks (a read of the next block's `_id`
    every 20 ms): per event, when the block holding it appeared - the ledger lag itself, without
    a tail's reads of the events."""

    def __init__(self, uri: str, database: str, tenant: str) -> None:
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        self.ledger = self.client[database]["ledger"]
        self.tenant = tenant
        self.sequenced: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None
        self.store: LedgerStore | None = None

    async def start(self) -> None:
        """Finds the tenant's last block before the round (the ledger's own O(log n) probe: a
        walk over every block did not keep up with a busy round) and starts polling for the
        next."""
        self.store = LedgerStore(self.ledger, self.client[self.ledger.database.name]["events"])
        last = await self.store.last_number(f"{self.tenant}/b/")
        self.task = asyncio.create_task(self._poll(last + 1))

    async def _poll(self, b: int) -> None:
        while True:
            block = await self.ledger.find_one({"_id": block_id(self.tenant, b)})
            if block is None:
                await asyncio.sleep(0.02)
                continue
            now = time.perf_counter()
            for entry in (await self.store.block_entries(block)).whole():
                if entry is not None:
                    self.sequenced[entry["k"].split("/", 1)[1]] = now
            b += 1

    def lags(self, acked: dict[str, float]) -> list[float]:
        return [max(0.0, self.sequenced[i] - at) for i, at in acked.items() if i in self.sequenced]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.client.close()


async def ledger_check(client: AuditLogClient, tenant: str, acked: set[str]) -> dict[str, Any]:
    """The tenant's ledger verifies and holds each acknowledged event exactly once."""
    report = await verify_ledger(client, tenant)
    ids: list[str] = []
    sequences: list[int] = []
    async for item in client.export_events(tenant):
        if item.WhichOneof("item") == "event":
            ids.append(item.event.entry.event_id)
            sequences.append(item.event.entry.ledger_sequence)
    return {
        "verifies": report.ok,
        "findings": [f.detail for f in report.findings[:5]],
        "entries": len(ids),
        "gap_free": sequences == list(range(1, len(sequences) + 1)),
        "each_ack_once": len(ids) == len(set(ids)) and set(ids) >= acked,
        "unacknowledged_entries": len(set(ids) - acked),
    }


def ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    scaled = [v * 1000 for v in values]
    return {
        "p50_ms": round(statistics.median(scaled), 1),
        "p99_ms": round(percentile(scaled, 0.99), 1),
        "max_ms": round(max(scaled), 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"args": vars(args)}
    acked_by_db: dict[tuple[str, str], set[str]] = {}
    with database_process() as (uri, backend, db_pid), tempfile.TemporaryDirectory() as tmp:
        result["backend"] = backend
        with_ledger = ServerProcess(uri, "with_ledger", Path(tmp) / "with.log")
        without = ServerProcess(
            uri, "without_ledger", Path(tmp) / "without.log", env={"AUDITLOG_LEDGER": "off"}
        )
        replicas = [ServerProcess(uri, "replicas", Path(tmp) / f"replica{n}.log") for n in (1, 2)]
        servers = [with_ledger, without, *replicas]
        try:
            for server in servers:
                await server.wait_serving()
            channels = {s.target: bench_channel(s.target) for s in servers}
            stubs = {t: service_pb2_grpc.AuditLogServiceStub(c) for t, c in channels.items()}

            # ---- 1. ledger vs none, one process each ----------------------------------------
            # Short turns, on and off back to back, the first of a pair alternating: this
            # machine's speed drifts by up to 2x over minutes (the load generator's own CPU per
            # event, the same work every turn, moved from 11 to 21 µs between runs of a minute),
            # and the ratio of each pair cancels what drifts slower than a pair.
            rates: dict[str, list[float]] = {"with": [], "without": []}
            cpu: dict[str, list[float]] = {"with": [], "without": []}
            per_event: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
            for r in range(args.pairs):
                pair = [("with", with_ledger), ("without", without)]
                for mode, server in pair if r % 2 == 0 else pair[::-1]:
                    meter = CpuMeter({"server": server.pid, "db": db_pid, "load": os.getpid()})
                    meter.start()
                    load, rate = await round_of(
                        [(stubs[server.target], "t-cost")],
                        args.writers,
                        args.pair_seconds,
                        args.batch,
                    )
                    used = meter.stop()
                    rates[mode].append(rate)
                    cpu[mode].append(used["server"])
                    stored = max(load.stored, 1)
                    per_event[mode].append(
                        {name: 1e6 * seconds / stored for name, seconds in meter.cpu_s.items()}
                    )
                    if mode == "with":
                        acked_by_db.setdefault((with_ledger.target, "t-cost"), set()).update(
                            load.acked.get("t-cost", {})
                        )
                    print(mode, round(rate), load.errors, used, flush=True)
            pair_ratios = [w / wo for w, wo in zip(rates["with"], rates["without"], strict=True)]
            result["ledger_vs_none"] = {
                "with_events_per_s": [round(x) for x in rates["with"]],
                "without_events_per_s": [round(x) for x in rates["without"]],
                "pair_ratios": [round(x, 3) for x in pair_ratios],
                "server_cpu_percent_with": cpu["with"],
                "server_cpu_percent_without": cpu["without"],
                "cpu_us_per_event": {
                    mode: {
                        name: round(statistics.median(turn[name] for turn in turns), 1)
                        for name in ("server", "db", "load")
                    }
                    for mode, turns in per_event.items()
                },
                "ratio": round(statistics.median(pair_ratios), 3),
                "ratio_of_medians": round(
                    statistics.median(rates["with"]) / statistics.median(rates["without"]), 3
                ),
            }

            # ---- 2. two replicas: one tenant vs two, and the ledger's lag --------------------
            a, b = (stubs[s.target] for s in replicas)
            one: list[float] = []
            two: list[float] = []
            lags: list[float] = []
            tail_lags: list[float] = []
            lagged: list[float] = []
            async with bench_client(replicas[0].target) as tail_client:
                # The ratio's rounds run without the lag's probes (a tail of the shared tenant
                # delivered to this process, which also generates the load, and a poll of its
                # blocks), which would weigh on the one-tenant side only: the lag has rounds of
                # its own, after them.
                modes = [
                    ("one", "two") if r % 2 == 0 else ("two", "one") for r in range(args.rounds)
                ]
                for mode in [m for pair in modes for m in pair] + ["lag"] * args.rounds:
                    if mode == "lag":
                        sequenced = SequencedProbe(uri, "replicas", "t-shared")
                        await sequenced.start()
                        probe = LagProbe(tail_client, "t-shared")
                        await asyncio.wait_for(probe.tail.caught_up.wait(), 30)
                    if mode in ("one", "lag"):
                        routes = [(a, "t-shared"), (b, "t-shared")]
                    else:
                        routes = [(a, "t-a"), (b, "t-b")]
                    load, rate = await round_of(
                        routes, args.writers // 2 or 1, args.seconds, args.batch
                    )
                    for tenant, acked in load.acked.items():
                        acked_by_db.setdefault((replicas[0].target, tenant), set()).update(acked)
                    if mode == "lag":
                        tail_lags += await probe.lags(load.acked.get("t-shared", {}))
                        await probe.close()
                        lags += sequenced.lags(load.acked.get("t-shared", {}))
                        await sequenced.close()
                        lagged.append(rate)
                    elif mode == "one":
                        one.append(rate)
                    else:
                        two.append(rate)
                    print(mode, round(rate), load.errors, flush=True)
            result["one_tenant_vs_two"] = {
                "one_tenant_events_per_s": [round(x) for x in one],
                "two_tenants_events_per_s": [round(x) for x in two],
                "ratio": round(statistics.median(one) / statistics.median(two), 3),
                "one_tenant_with_lag_probes_events_per_s": [round(x) for x in lagged],
            }
            result["ledger_lag"] = {"events": len(lags), **ms(lags)}
            result["tail_lag"] = {"events": len(tail_lags), **ms(tail_lags)}

            # ---- 3. every ledger verifies and holds each acknowledged event once -------------
            checks = {}
            for (target, tenant), acked in sorted(acked_by_db.items()):
                async with bench_client(target) as client:
                    checks[tenant] = await ledger_check(client, tenant, acked)
            result["ledger_checks"] = checks
            for channel in channels.values():
                await channel.close()
        finally:
            for server in servers:
                server.stop()
    return result


def markdown(result: dict[str, Any]) -> str:
    args = result["args"]
    cost = result["ledger_vs_none"]
    shared = result["one_tenant_vs_two"]
    lag = result["ledger_lag"]
    tail = result["tail_lag"]
    lines = [
        "# The tenant ledger: ingest cost, lag, one tenant through two replicas",
        "",
        f"{result['backend']}, {args['writers']} writers of LogEvents batches of {args['batch']} "
        f"(half general events, half clicks), code {code_version()[:12]}, load "
        f"{load_average()}.",
        "",
        "| comparison | rounds (events/s) | against (events/s) | ratio | goal |",
        "|---|---|---|---|---|",
        f"| ledger on vs off, one process ({args['pairs']} pairs of {args['pair_seconds']:g} s "
        "turns back to back; ratio: median of the pairs' ratios) | "
        f"{cost['with_events_per_s']} | {cost['without_events_per_s']} | **{cost['ratio']}** "
        f"(pairs {min(cost['pair_ratios'])}-{max(cost['pair_ratios'])}; ratio of medians "
        f"{cost['ratio_of_medians']}) | >= 0.8 |",
        f"| 2 replicas: one tenant vs two tenants ({args['rounds']} rounds of "
        f"{args['seconds']:g} s per mode, alternating; ratio of medians) | "
        f"{shared['one_tenant_events_per_s']} | "
        f"{shared['two_tenants_events_per_s']} | **{shared['ratio']}** | >= 0.9 |",
        "",
        f"Server CPU (% of a core) with the ledger {cost['server_cpu_percent_with']}, without "
        f"{cost['server_cpu_percent_without']}. CPU per event (µs, medians of the turns): "
        f"with the ledger {cost['cpu_us_per_event']['with']}, without "
        f"{cost['cpu_us_per_event']['without']} (`load`: this process, which makes the same "
        "requests either way: its figure shows how fast the machine ran).",
        "",
        f"Ledger lag (acknowledgement to the block holding the event in the database, "
        f"{lag['events']:,} events of {args['rounds']} more one-tenant rounds, with the probes "
        f"below: {shared.get('one_tenant_with_lag_probes_events_per_s')} events/s; seen by a "
        "20 ms poll): "
        f"p50 {lag['p50_ms']} ms, **p99 {lag['p99_ms']} ms**, max {lag['max_ms']} ms "
        "(goal p99 <= 1 s).",
        "",
        f"Tail lag (acknowledgement to arrival on a TailEvents subscriber: the above plus the "
        f"tail's wake-up and its read of the block (recorded events), {tail['events']:,} "
        f"events): p50 {tail['p50_ms']} ms, p99 {tail['p99_ms']} ms, max {tail['max_ms']} ms.",
        "",
        "| tenant | entries | verifies | gap-free | each acknowledged event once |",
        "|---|---|---|---|---|",
    ]
    for tenant, check in result["ledger_checks"].items():
        lines.append(
            f"| {tenant} | {check['entries']:,} | {check['verifies']} | {check['gap_free']} | "
            f"{check['each_ack_once']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=10, help="on/off pairs of turns")
    parser.add_argument("--pair-seconds", type=float, default=3.0, help="one turn of a pair")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    write_result("ledger_cost", result, markdown(result))


if __name__ == "__main__":
    main()
