"""Where the tail benchmark's time goes: database commands per event and per idle second.

A diagnostic companion of bench/tail_bench.py. It runs the service in this process, so that a
PyMongo CommandListener (registered before the servers' clients exist) sees every command they
send, and counts them by command, collection and filter, with their durations as the client saw
them (FerretDB's queueing included), and how many writes were in flight when each began:
1. the LogEvent write path alone (--rate events/s over --sessions sessions, no tails);
2. the same with one tail per session on the writing server;
3. the same with the tails on a second server (the tick streams wake them);
4. --idle-tails idle tails on sessions the server has just written (as tail_bench's part 2):
   commands per second, by command and by the shape of the `_id` looked up (ledger block,
   writer slot, commit, outbox, session slot, tick, ...), right after the writes and later;
5. an idle `auditlog serve` process's CPU: without tails (ledger off and on, and just after
   writes), then with tails and heartbeats and safety probes switched off and on through its
   environment, and with the ledger off;
6. the database alone: insert_one with 1, 4 and 16 concurrent writers, and find_one.
Run: `.venv/bin/python -m bench.tail_db_commands [--seconds 10] [--idle-seconds 30]`;
`--only idle,breakdown --output <name>` runs some sections into bench/results/<name>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from auditlog import AuditLogClient
from auditlog_service.config import Settings
from auditlog_service.server import RunningServer
from bench.common import (
    CpuMeter,
    ServerProcess,
    bench_client,
    cobrowse_event,
    code_version,
    cpu_pressure,
    database_process,
    load_average,
    log,
    percentile,
    running_server,
    write_result,
)
from bench.tail_bench import (
    TENANT,
    OwnConnectionClient,
    baseline_path,
    drain,
    latency_summary,
    stop_tasks,
)

WRITES = {"insert", "update", "delete", "findAndModify"}
PROBE_INTERVAL_S = Settings().tail_safety_probe_interval_s


# What an `_id` names (see ledger.py's layout and storage's slot ids), by its shape.
LEDGER_ID_SHAPES = {
    "~o": "outbox",
    "w": "writer slot",
    "b": "block",
    "c": "commit",
    "p": "placement",
    "cp": "checkpoint",
    "a": "anchor",
}


def id_shape(doc_id: str) -> str:
    """A label for an `_id`: `~tl/<k>` (tenant list), `<T>/b/<n>` (block), `<T>/~o/<W>/<n>`
    (outbox), `<T>/<S>/<slot>` (session slot), `<process>/<n>` (tick), ..."""
    parts = doc_id.split("/")
    if parts[0] in ("~t", "~tl"):
        return "tenant list" if parts[0] == "~tl" else "tenant"
    if len(parts) >= 3 and parts[1] in LEDGER_ID_SHAPES:
        return LEDGER_ID_SHAPES[parts[1]]
    if len(parts) == 3 and parts[2].isdigit():
        return "session slot"
    if len(parts) == 2 and parts[1].isdigit():
        return "tick"
    return "other"


class CommandCounter(monitoring.CommandListener):
    """Counts commands by kind, keeps their durations and the writes in flight at each start."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.kinds: dict[int, str] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.durations_ms: dict[str, list[float]] = defaultdict(list)
        self.writes_in_flight = 0
        self.in_flight_at_write_start: list[int] = []

    @staticmethod
    def kind(event: monitoring.CommandStartedEvent) -> str:
        name = event.command_name
        command = event.command
        collection = command.get(name)
        if not isinstance(collection, str):
            return name
        shape = ""
        if name == "find":
            query = command.get("filter", {})
            shape = " {" + ",".join(sorted(query)) + "}"
            if list(query) == ["_id"] and isinstance(query["_id"], str):
                shape = " {_id: " + id_shape(query["_id"]) + "}"
        elif name in ("update", "delete"):
            key = "updates" if name == "update" else "deletes"
            first = (command.get(key) or [{}])[0]
            shape = " {" + ",".join(sorted(first.get("q", {}))) + "}"
        return f"{name} {collection}{shape}"

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        kind = self.kind(event)
        self.kinds[event.request_id] = kind
        self.counts[kind] += 1
        if event.command_name in WRITES:
            self.in_flight_at_write_start.append(self.writes_in_flight)
            self.writes_in_flight += 1

    def _ended(self, event: Any) -> None:
        kind = self.kinds.pop(event.request_id, None)
        if kind is None:
            return
        self.durations_ms[kind].append(event.duration_micros / 1000)
        if event.command_name in WRITES:
            self.writes_in_flight -= 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._ended(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._ended(event)

    def report(self, per: float, unit: str) -> list[dict[str, Any]]:
        rows = []
        for kind, count in sorted(self.counts.items(), key=lambda item: -item[1]):
            durations = self.durations_ms.get(kind) or [0.0]
            rows.append(
                {
                    "command": kind,
                    "count": count,
                    unit: round(count / per, 3),
                    "p50_ms": round(statistics.median(durations), 2),
                    "p99_ms": round(percentile(durations, 0.99), 2),
                    "max_ms": round(max(durations), 2),
                }
            )
        return rows

    def write_concurrency(self) -> dict[str, Any]:
        starts = self.in_flight_at_write_start
        if not starts:
            return {}
        return {
            "writes": len(starts),
            "share_started_while_another_in_flight": round(
                sum(1 for n in starts if n > 0) / len(starts), 3
            ),
            "p50_other_writes_in_flight": statistics.median(starts),
            "max_other_writes_in_flight": max(starts),
        }


COUNTER = CommandCounter()
# The processes whose CPU share is measured: this one (client and servers) and the database.
PIDS: dict[str, int | None] = {"this_process": os.getpid()}


async def write_load(
    writer: AuditLogClient, sessions: list[str], rate: float, seconds: float
) -> tuple[int, list[float]]:
    """Open-loop LogEvent at `rate`/s; returns the events sent and their ack latencies."""
    acks: list[float] = []

    async def send(index: int) -> None:
        event = cobrowse_event(TENANT, sessions[index % len(sessions)], index)
        started = time.perf_counter()
        await writer.log_event(event)
        acks.append(time.perf_counter() - started)

    total = int(rate * seconds)
    t0 = time.perf_counter() + 0.05
    tasks = []
    for index in range(total):
        delay = t0 + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(index)))
    await asyncio.gather(*tasks)
    return total, acks


@contextlib.asynccontextmanager
async def tails_on(
    target: str, sessions: list[str], channels: int, tenant: str = TENANT, **kwargs: Any
) -> AsyncIterator[list[Any]]:
    clients = [OwnConnectionClient(target, i) for i in range(channels)]
    tails = [
        clients[i % channels].tail_session(tenant, session, **kwargs)
        for i, session in enumerate(sessions)
    ]
    tasks = [asyncio.create_task(drain(tail)) for tail in tails]
    try:
        await asyncio.wait_for(asyncio.gather(*(t.caught_up.wait() for t in tails)), 300)
        yield tails
    finally:
        await stop_tasks(tasks)
        for client in clients:
            await client.close()


async def write_scenario(
    name: str, writer_server: RunningServer, tail_server: RunningServer | None, args: Any
) -> dict[str, Any]:
    sessions = [f"diag-{uuid.uuid4().hex[:6]}-{i:03d}" for i in range(args.sessions)]
    async with contextlib.AsyncExitStack() as stack:
        writer = await stack.enter_async_context(bench_client(f"127.0.0.1:{writer_server.port}"))
        if tail_server is not None:
            await stack.enter_async_context(
                tails_on(f"127.0.0.1:{tail_server.port}", sessions, 1, from_now=True)
            )
        await write_load(writer, sessions, args.rate, 1.0)  # warm-up: heads cached, pools open
        await asyncio.sleep(0.5)
        COUNTER.reset()
        meter = CpuMeter(PIDS)
        meter.start()
        events, acks = await write_load(writer, sessions, args.rate, args.seconds)
        await asyncio.sleep(0.5)  # let the tails' reads finish
        cpu = meter.stop()
    result = {
        "scenario": name,
        "events": events,
        "send_to_ack": latency_summary(acks),
        "commands": COUNTER.report(events, "per_event"),
        "write_concurrency": COUNTER.write_concurrency(),
        "cpu_percent_of_core": cpu,
        "cpu_pressure_at_end": cpu_pressure(),
    }
    log(f"{name}: cpu {cpu}, ack {result['send_to_ack']}; {COUNTER.write_concurrency()}")
    return result


async def seed_sessions(
    target: str, sessions: list[str], per_session: int = 2, tenant: str = TENANT
) -> None:
    """Writes `per_session` events into each session through the server, as tail_bench's part 2
    does: its tails then replay them, and the server has just written their tenant."""
    async with bench_client(target) as writer:
        events = [cobrowse_event(tenant, s, k) for s in sessions for k in range(per_session)]
        for first in range(0, len(events), 500):
            response = await writer.log_events(events[first : first + 500])
            bad = [r for r in response.results if r.WhichOneof("result") != "event"]
            if bad:
                raise RuntimeError(f"seeding sessions failed: {bad[0]}")


async def counted_window(seconds: float) -> dict[str, Any]:
    COUNTER.reset()
    meter = CpuMeter(PIDS)
    meter.start()
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    cpu = meter.stop()
    rows = COUNTER.report(elapsed, "per_second")
    log(f"idle: {sum(r['count'] for r in rows) / elapsed:.1f} commands/s, cpu {cpu}")
    return {"seconds": round(elapsed, 1), "commands": rows, "cpu_percent_of_core": cpu}


async def idle_scenario(server: RunningServer, args: Any) -> dict[str, Any]:
    """Idle tails as tail_bench's part 2 has them: sessions of 2 events written through the
    server, tails from the beginning. Two windows: right after the writes (the ledger has just
    sequenced their tenant), and once the safety prober's round has begun and the writes are
    more than a minute old."""
    sessions = [f"idle-{uuid.uuid4().hex[:6]}-{i:04d}" for i in range(args.idle_tails)]
    target = f"127.0.0.1:{server.port}"
    await seed_sessions(target, sessions)
    written_at = time.perf_counter()
    opened_at = time.perf_counter()
    async with tails_on(target, sessions, 20):
        after_writes = await counted_window(args.idle_seconds)
        # The safety prober (up to ea07ab8) sleeps a full interval while it has no watches.
        steady = max(opened_at + server.settings.tail_safety_probe_interval_s, written_at + 60)
        await asyncio.sleep(max(0.0, steady + 2 - time.perf_counter()))
        later = await counted_window(args.idle_seconds)
    return {
        "tails": len(sessions),
        "seconds": later["seconds"],
        "commands": later["commands"],
        "cpu_percent_of_core": later["cpu_percent_of_core"],
        "after_writes": after_writes,
    }


HEARTBEAT = "AUDITLOG_TAIL_HEARTBEAT_INTERVAL_S"
PROBE = "AUDITLOG_TAIL_SAFETY_PROBE_INTERVAL_S"
OFF = "1000000"


LEDGER = "AUDITLOG_LEDGER"


async def idle_breakdown(uri: str, database_name: str, args: Any) -> list[dict[str, Any]]:
    """An idle `auditlog serve` process's CPU with its periodic work switched off bit by bit.

    Variants "after writes" first write 2 events into each of --idle-tails sessions through
    the server (the tails then replay them, as in tail_bench's part 2) and measure from the
    moment the tails are caught up, within a minute of the writes; the others use sessions
    that were never written."""
    tails = args.idle_tails
    off = {HEARTBEAT: OFF, PROBE: OFF}
    variants = [
        ("no tails, ledger off", 0, {LEDGER: "0"}, False),
        ("no tails: the process's own pollers only", 0, {}, False),
        (f"no tails, just after writing {2 * tails:,} events of one tenant", 0, {}, True),
        (f"{tails:,} tails, heartbeats and safety probes off", tails, off, False),
        (f"{tails:,} tails, heartbeats on, safety probes off", tails, {PROBE: OFF}, False),
        (f"{tails:,} tails, defaults (heartbeats and safety probes on)", tails, {}, False),
        (f"{tails:,} tails, defaults, ledger off", tails, {LEDGER: "0"}, False),
        (f"{tails:,} tails after writes, heartbeats and safety probes off", tails, off, True),
    ]
    if args.variants:
        variants = [variants[int(k) - 1] for k in args.variants.split(",")]
    codes: list[tuple[str, dict[str, str]]] = [("this code", {})]
    if args.baseline:
        # The same variant with the code of another checkout (e.g. `git archive <commit>`
        # unpacked): its service and SDK folders first on the server's PYTHONPATH.
        codes.append(("baseline", {"PYTHONPATH": baseline_path(args.baseline)}))
    rows = []
    with tempfile.TemporaryDirectory(prefix="auditlog-diag-") as tmp:
        for number, (label, count, env, seeded) in enumerate(variants):
            # Alternating which code goes first, so that a drift in the machine's load does not
            # always favour the same one.
            for code, code_env in codes if number % 2 else codes[::-1]:
                cpu = await breakdown_variant(
                    uri, f"{database_name}_{len(rows)}", Path(tmp), count, {**env, **code_env},
                    seeded, args,
                )  # fmt: skip
                rows.append({"variant": label, "code": code, "cpu_percent_of_core": cpu})
                log(f"idle breakdown: {label} ({code}): {cpu}")
    return rows


async def breakdown_variant(
    uri: str,
    database_name: str,
    tmp: Path,
    count: int,
    env: dict[str, str],
    seeded: bool,
    args: Any,
) -> dict[str, float]:
    """One server process (on a database of its own) with `count` idle tails: its CPU share
    and the database's over --breakdown-seconds once steady."""
    tenant = f"brk-{uuid.uuid4().hex[:6]}"
    server = ServerProcess(uri, database_name, tmp / "server.log", "--write-concern", "1", env=env)
    try:
        await server.wait_serving()
        started = time.perf_counter()
        sessions = [f"s-{i:04d}" for i in range(args.idle_tails if seeded else count)]
        if seeded:
            await seed_sessions(server.target, sessions, tenant=tenant)
        sessions = sessions[:count]
        async with tails_on(server.target, sessions, 20, tenant=tenant, from_now=not seeded):
            # The safety prober (up to ea07ab8) sleeps a full interval before its first round.
            probing = count and PROBE not in env
            steady = started + (PROBE_INTERVAL_S + 2 if probing else 2)
            await asyncio.sleep(max(0.0 if seeded else 2.0, steady - time.perf_counter()))
            meter = CpuMeter({"server": server.pid, "database": PIDS.get("database")})
            meter.start()
            await asyncio.sleep(args.breakdown_seconds)
            return meter.stop()
    finally:
        server.stop()


async def database_alone(uri: str) -> list[dict[str, Any]]:
    """insert_one by 1, 4 and 16 concurrent writers, then sequential find_one by `_id`."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    collection = client.get_database(f"diag_{uuid.uuid4().hex[:8]}").get_collection("probe")
    await collection.insert_one({"_id": "warm-up"})
    rows = []

    async def measure(label: str, writers: int, operation: Any) -> None:
        latencies: list[float] = []

        async def worker(number: int) -> None:
            for i in range(1200 // writers):
                started = time.perf_counter()
                await operation(number, i)
                latencies.append(time.perf_counter() - started)

        meter = CpuMeter({"database": PIDS.get("database")})
        meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(writers)))
        seconds = time.perf_counter() - started
        cpu = meter.stop().get("database")
        rows.append(
            {
                "operation": label,
                "concurrency": writers,
                "per_s": round(len(latencies) / seconds),
                "database_cpu_ms_per_op": (
                    None if cpu is None else round(cpu / 100 * seconds / len(latencies) * 1000, 3)
                ),
                **latency_summary(latencies),
            }
        )
        log(f"database alone: {rows[-1]}")

    for writers in (1, 4, 16):

        async def insert(number: int, i: int, writers: int = writers) -> None:
            await collection.insert_one({"_id": f"{writers}-{number}-{i}", "n": i})

        await measure("insert_one", writers, insert)

    async def find(number: int, i: int) -> None:
        await collection.find_one({"_id": f"1-0-{i}"})

    await measure("find_one by _id", 1, find)
    # What one lookup costs the process that sends it: back to back, and paced at 50/s like an
    # idle poller (each then also pays for a timer, a wake-up and cold caches).
    for pace in (0.0, 0.02):
        cpu_started = time.process_time()
        for i in range(250):
            await collection.find_one({"_id": f"1-0-{i}"})
            if pace:
                await asyncio.sleep(pace)
        rows[-1].setdefault("client_cpu_ms_per_op", {})[
            "back_to_back" if not pace else "paced_50_per_s"
        ] = round((time.process_time() - cpu_started) / 250 * 1000, 3)
    log(f"database alone: client CPU per find_one {rows[-1]['client_cpu_ms_per_op']}")
    await client.drop_database(collection.database.name)
    await client.close()
    return rows


def breakdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """One line per variant; with a baseline, its figures beside this code's."""
    codes = list(dict.fromkeys(row.get("code", "this code") for row in rows))
    by_variant: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], {})[row.get("code", "this code")] = row[
            "cpu_percent_of_core"
        ]
    names = sorted(codes, key=lambda code: code != "baseline")
    lines = [
        "| variant | "
        + " | ".join(f"server CPU ({c})" for c in names)
        + " | "
        + " | ".join(f"database CPU ({c})" for c in names)
        + " |",
        "|---|" + "---:|" * (2 * len(names)),
    ]
    for variant, cpu in by_variant.items():
        servers = [f"{cpu[c].get('server')} %" if c in cpu else "" for c in names]
        databases = [f"{cpu[c].get('database', 'n/a')} %" if c in cpu else "" for c in names]
        lines.append(f"| {variant} | " + " | ".join(servers + databases) + " |")
    return lines


def command_table(rows: list[dict[str, Any]], unit: str) -> list[str]:
    lines = [
        f"| command | count | {unit.replace('_', ' ')} | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['command']}` | {row['count']:,} | {row[unit]:g} | {row['p50_ms']} ms | "
            f"{row['p99_ms']} ms | {row['max_ms']} ms |"
        )
    return lines


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# Database commands behind live tails ({data['backend']})",
        "",
        f"Command: `{data['command']}` (code at commit {data['code'][:12]}). Service in this "
        "process (write concern 1) unless said otherwise, commands seen by a PyMongo "
        "CommandListener, durations as the client saw them. Load average before "
        f"{data['load_before']}, after {data['load_after']}; CPU pressure (some, "
        f"avg10/avg60/avg300 %) before {data['cpu_pressure_before']}, after "
        f"{data['cpu_pressure_after']}.",
        "",
    ]
    for scenario in data.get("write", []):
        ack, conc = scenario["send_to_ack"], scenario["write_concurrency"]
        lines += [
            f"## {scenario['scenario']}",
            "",
            f"{scenario['events']:,} LogEvent calls at {data['rate']:g}/s over "
            f"{data['sessions']} sessions; send->ack p50 {ack.get('p50_ms')} ms, p99 "
            f"{ack.get('p99_ms')} ms. Writes: {conc.get('writes', 0):,}, "
            f"{100 * conc.get('share_started_while_another_in_flight', 0):.0f} % of them began "
            f"while another write was in flight (max {conc.get('max_other_writes_in_flight')} "
            f"others). CPU (% of a core): {scenario['cpu_percent_of_core']}.",
            "",
            *command_table(scenario["commands"], "per_event"),
            "",
        ]
    if "idle" in data:
        idle = data["idle"]
        lines += [
            f"## {idle['tails']:,} idle tails",
            "",
            "Sessions of 2 events each written through the server, then one tail per session "
            "from the beginning (as tail_bench's part 2); `find ... {_id: <shape>}` names what "
            "an `_id` lookup read (block, writer slot, commit, outbox, session slot, tick, ...).",
            "",
        ]
        after = idle.get("after_writes")
        if after is not None:
            lines += [
                f"### Right after the writes ({after['seconds']:g} s from the tails' catch-up)",
                "",
                f"CPU (% of a core): {after['cpu_percent_of_core']}.",
                "",
                *command_table(after["commands"], "per_second"),
                "",
            ]
        lines += [
            f"### Steady ({idle['seconds']:g} s, the safety prober's round begun, the writes more "
            "than a minute old)",
            "",
            f"CPU (% of a core): {idle['cpu_percent_of_core']}.",
            "",
            *command_table(idle["commands"], "per_second"),
            "",
        ]
    if "idle_breakdown" in data:
        lines += [
            f"## An idle `auditlog serve` process, piece by piece ({data['breakdown_seconds']:g} "
            "s windows)",
            "",
            "Periodic work switched off through the environment (AUDITLOG_TAIL_HEARTBEAT_"
            "INTERVAL_S, AUDITLOG_TAIL_SAFETY_PROBE_INTERVAL_S = 1,000,000 s, AUDITLOG_LEDGER=0). "
            '"After writes": 2 events in each session written through the server first, the '
            "window starting when the tails are caught up (within a minute of the writes); the "
            "other variants tail sessions never written. Each server runs on a database of its "
            "own. CPU from /proc, % of one core."
            + (
                f" Baseline: {data['baseline_label'] or data['baseline']}, each variant run on "
                "it and on this code one after the other (alternating which goes first)."
                if data.get("baseline")
                else ""
            ),
            "",
            *breakdown_table(data["idle_breakdown"]),
            "",
        ]
    if "database_alone" not in data:
        return "\n".join(lines) + "\n"
    lines += [
        "## The database alone: one-document commands, sequential and concurrent",
        "",
        "| command | concurrent | per second | database CPU per command | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["database_alone"]:
        lines.append(
            f"| {row['operation']} | {row['concurrency']} | {row['per_s']:,} | "
            f"{row['database_cpu_ms_per_op']} ms | {row['p50_ms']} ms | {row['p99_ms']} ms | "
            f"{row['max_ms']} ms |"
        )
    client_cpu = data["database_alone"][-1].get("client_cpu_ms_per_op", {})
    lines += [
        "",
        "CPU of the sending (PyMongo async) process per find_one: "
        f"{client_cpu.get('back_to_back')} ms back to back, {client_cpu.get('paced_50_per_s')} "
        "ms paced at 50/s as an idle poller sends them.",
    ]
    return "\n".join(lines) + "\n"


async def main(args: Any) -> None:
    monitoring.register(COUNTER)
    data: dict[str, Any] = {
        "command": " ".join(["python -m bench.tail_db_commands", *sys.argv[1:]]),
        "code": code_version(),
        "load_before": load_average(),
        "cpu_pressure_before": cpu_pressure(),
        "rate": args.rate,
        "sessions": args.sessions,
        "breakdown_seconds": args.breakdown_seconds,
        "baseline": args.baseline,
        "baseline_label": args.baseline_label,
    }
    with database_process() as (uri, backend, database_pid):
        data["backend"] = backend
        PIDS["database"] = database_pid
        name = f"bench_diag_{uuid.uuid4().hex[:8]}"
        if "write" in args.only:
            async with running_server(uri, name) as a, running_server(uri, name) as b:
                data["write"] = [
                    await write_scenario("LogEvent only", a, None, args),
                    await write_scenario("LogEvent, tails on the same server", a, a, args),
                    await write_scenario("LogEvent on A, tails on B", a, b, args),
                ]
        if "idle" in args.only:
            async with running_server(uri, name) as server:
                data["idle"] = await idle_scenario(server, args)
        if "breakdown" in args.only:
            data["idle_breakdown"] = await idle_breakdown(uri, name, args)
        if "database" in args.only:
            data["database_alone"] = await database_alone(uri)
    data["load_after"] = load_average()
    data["cpu_pressure_after"] = cpu_pressure()
    write_result(args.output, data, markdown(data))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle-tails", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--breakdown-seconds", type=float, default=20.0)
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default={"write", "idle", "breakdown", "database"},
        help="comma-separated sections: write, idle, breakdown, database (default: all)",
    )
    parser.add_argument("--output", default="tail_db_commands", help="bench/results/<output>")
    parser.add_argument(
        "--baseline",
        default="",
        help="a checkout of other code (its service/ and clients/python/src/): each breakdown "
        "variant also runs on it, alternating with this code",
    )
    parser.add_argument("--baseline-label", default="", help="what --baseline is, for the table")
    parser.add_argument(
        "--variants", default="", help="breakdown variants to run, by number (1-based), e.g. 3,8"
    )
    asyncio.run(main(parser.parse_args()))
