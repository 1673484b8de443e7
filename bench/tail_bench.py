"""Live tail and streaming ingest: latency, idle cost and throughput against a large collection.

One run, one database (a fresh FerretDB, or MONGODB_URI), whose events collection first gets
--preload events of other sessions (general and co-browsing events of ~10,000 sessions, built with
the service's own conversion and slot ids). The service runs as separate `auditlog serve`
processes, so that their CPU and memory can be read from /proc; this process is the client.

1. Ack -> tail receipt latency at --rate events/s spread over --sessions sessions (an open-loop
   writer using LogEvent; one SDK tail per session, from now, caught up before the load):
   (a) writer and tails on server A, (b) writer on server A, tails on server B.
2. --idle-tails idle SDK tails on one server process: its CPU share, the database's, its RSS.
3. StreamEvents events/s (co-browsing and general events) against raw insert_many of the same
   documents into a scratch collection of the same database.

Run: `.venv/bin/python -m bench.tail_bench` (defaults: 1,000,000 preloaded events, 30 s
windows); while developing: `--preload 20000 --latency-seconds 5 --idle-seconds 5`.
`--baseline <checkout>` runs parts 1 and 2 on another checkout's code (`git archive <commit>
service clients/python/src` unpacked) and on this code, alternating for `--rounds` rounds,
each run on a database of its own: a before/after comparison under the same load.
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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from auditlog import AuditLogClient, bearer_interceptors
from auditlog.client import _SERVICE_CONFIG, SessionTail
from auditlog.v1 import audit_event_pb2, service_pb2, service_pb2_grpc
from auditlog_service import convert
from auditlog_service.config import Settings
from auditlog_service.storage import EventRepository
from bench.common import (
    CpuMeter,
    ServerProcess,
    bench_client,
    bench_token,
    cobrowse_event,
    code_version,
    cpu_pressure,
    database_process,
    event_document,
    general_event,
    load_average,
    log,
    percentile,
    rss_mb,
    write_result,
)

Event = audit_event_pb2.AuditEvent
Document = dict[str, Any]

TENANT = "acme"
PRELOAD_TENANTS = ("acme", "globex", "initech", "umbrella")
PRELOAD_SESSIONS = 10_000
SERVER_ARGS = ("--write-concern", "1")
GOALS = {
    "same_process_p99_ms": 50.0,
    "cross_process_p99_ms": 250.0,
    "idle_cpu_percent": 5.0,
    "idle_rss_mb": 200.0,
}


# ---- events ----------------------------------------------------------------------------------


def preload_documents(first: int, last: int) -> list[Document]:
    """Documents of events first..last-1 of the preload: even indexes general, odd co-browsing.

    Co-browsing event c (= index // 2) goes to session c % PRELOAD_SESSIONS with sequence
    c // PRELOAD_SESSIONS + 1, so every session's slots are 1..n without holes; each is preceded
    by its id claim, as the service writes them (convert.id_claim).
    """
    now = convert.now_millis()
    docs = []
    for index in range(first, last):
        if index % 2 == 0:
            docs.append(event_document(general_event(PRELOAD_TENANTS[index % 4], index), now))
            continue
        c = index // 2
        number = c % PRELOAD_SESSIONS
        tenant = PRELOAD_TENANTS[number % len(PRELOAD_TENANTS)]
        doc = event_document(cobrowse_event(tenant, f"pre-{number:05d}", c), now)
        convert.assign_slot(doc, c // PRELOAD_SESSIONS + 1)
        docs += [convert.id_claim(doc), doc]
    return docs


async def preload(db: AsyncDatabase[Document], count: int, chunk: int) -> dict[str, Any]:
    """Bulk-loads `count` events of other sessions; two writers, so building overlaps inserts."""
    events = db.get_collection("events")
    chunks = iter(range(0, count, chunk))
    done, build_s, last_report = 0, 0.0, 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal done, build_s, last_report
        for first in chunks:
            built = time.perf_counter()
            docs = preload_documents(first, min(first + chunk, count))
            build_s += time.perf_counter() - built
            await events.insert_many(docs, ordered=False)
            done += min(chunk, count - first)
            if done - last_report >= 100_000 or done == count:
                last_report = done
                elapsed = time.perf_counter() - started
                log(f"preload {done:,}/{count:,} events, {elapsed:.0f} s, {done / elapsed:,.0f}/s")

    await asyncio.gather(worker(), worker())
    seconds = time.perf_counter() - started
    # Counted, not asked: FerretDB v1 answers count commands by scanning the collection
    # (minutes at this size, and gigabytes of its memory).
    claims = count // 2
    return {
        "events": count,
        "documents": count + claims,
        "id_claims": claims,
        "seconds": round(seconds, 1),
        "events_per_s": round(count / seconds) if seconds else None,
        "document_build_s": round(build_s, 1),
        "chunk": chunk,
        "cobrowse_sessions": PRELOAD_SESSIONS,
    }


# ---- shared helpers --------------------------------------------------------------------------


def latency_summary(samples_s: list[float]) -> dict[str, Any]:
    if not samples_s:
        return {"count": 0}
    ms = [s * 1000 for s in samples_s]
    return {
        "count": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(percentile(ms, 0.90), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "min_ms": round(min(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


class OwnConnectionClient(AuditLogClient):
    """An SDK client on its own TCP connection (channels with equal arguments share one)."""

    def __init__(self, target: str, index: int) -> None:
        super().__init__(target)
        # The SDK takes no channel options; its own channel is lazy and is closed unused.
        self._unused = self._channel
        self._channel = grpc.aio.insecure_channel(
            target,
            interceptors=bearer_interceptors(bench_token()),
            options=[
                ("grpc.service_config", _SERVICE_CONFIG),
                ("grpc.enable_retries", 1),
                ("grpc.use_local_subchannel_pool", 1),
                ("bench.channel", index),
            ],
        )
        self.stub = service_pb2_grpc.AuditLogServiceStub(self._channel)

    async def close(self) -> None:
        await super().close()
        await self._unused.close(None)


def established_connections(port: int) -> int:
    """Client-side TCP connections to 127.0.0.1:<port> that are established."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # gRPC may use v4-mapped IPv6 sockets
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


@contextlib.asynccontextmanager
async def servers(
    uri: str, database_name: str, log_dir: Path, *names: str, env: dict[str, str] | None = None
) -> AsyncIterator[list[ServerProcess]]:
    started = [
        ServerProcess(uri, database_name, log_dir / f"server-{name}.log", *SERVER_ARGS, env=env)
        for name in names
    ]
    try:
        await asyncio.gather(*(server.wait_serving() for server in started))
        yield started
    finally:
        for server in started:
            server.stop()


async def drain(tail: SessionTail, on_event: Any = None) -> None:
    async for event in tail:
        if on_event is not None:
            on_event(event)


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> list[BaseException]:
    """Cancels tail tasks; returns the errors of those that had ended by themselves."""
    errors = [
        task.exception()
        for task in tasks
        if task.done() and not task.cancelled() and task.exception() is not None
    ]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return [error for error in errors if error is not None]


def contiguous(sequences: list[int]) -> bool:
    return sequences == list(range(1, len(sequences) + 1))


# ---- 1. ack -> receipt latency ---------------------------------------------------------------


async def latency_case(
    name: str, writer_server: ServerProcess, tail_server: ServerProcess, args: Any, pids: Any
) -> dict[str, Any]:
    sessions = [f"lat-{name}-{uuid.uuid4().hex[:6]}-{i:03d}" for i in range(args.sessions)]
    received: dict[str, float] = {}
    sequences: dict[str, list[int]] = {session: [] for session in sessions}
    expected: list[int] = []
    everything_in = asyncio.Event()

    def on_event(event: Event) -> None:
        received.setdefault(event.id, time.perf_counter())
        sequences[event.cobrowse.session_id].append(event.sequence)
        if expected and len(received) >= expected[0]:
            everything_in.set()

    async with (
        bench_client(writer_server.target) as writer,
        OwnConnectionClient(tail_server.target, 0) as reader,
    ):
        tails = [reader.tail_session(TENANT, session, from_now=True) for session in sessions]
        tasks = [asyncio.create_task(drain(tail, on_event)) for tail in tails]
        await asyncio.wait_for(asyncio.gather(*(t.caught_up.wait() for t in tails)), 60)
        log(f"latency {name}: {len(tails)} tails caught up; {args.rate}/s for {args.seconds} s")

        total = int(args.rate * (args.warmup + args.seconds))
        warm = int(args.rate * args.warmup)
        sent: dict[str, float] = {}
        acked: dict[str, float] = {}
        failures: list[str] = []
        lags: list[float] = []
        meter = CpuMeter(pids)

        async def send(event: Event) -> None:
            sent[event.id] = time.perf_counter()
            try:
                await writer.log_event(event)
            except Exception as exc:  # counted and reported; the schedule goes on
                failures.append(repr(exc))
                return
            acked[event.id] = time.perf_counter()

        measured_ids: list[str] = []
        sending: list[asyncio.Task[None]] = []
        t0 = time.perf_counter() + 0.1
        for i in range(total):
            event = cobrowse_event(TENANT, sessions[i % len(sessions)], i)
            if i >= warm:
                measured_ids.append(event.id)
            due = t0 + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == warm:
                meter.start()
            lags.append(time.perf_counter() - due)
            sending.append(asyncio.create_task(send(event)))
        await asyncio.gather(*sending)
        cpu = meter.stop()
        expected.append(len(acked))
        if len(received) >= len(acked):
            everything_in.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything_in.wait(), 10)
        tail_errors = await stop_tasks(tasks)

    pairs = [(acked[i], received[i], sent[i]) for i in measured_ids if i in acked and i in received]
    missing = [i for i in acked if i not in received]
    return {
        "case": name,
        "writer_server": writer_server.target,
        "tail_server": tail_server.target,
        "sessions": len(sessions),
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "events_sent": total,
        "events_measured": len(pairs),
        "ack_to_receipt": latency_summary([r - a for a, r, _ in pairs]),
        "received_before_ack": sum(1 for a, r, _ in pairs if r < a),
        "send_to_receipt": latency_summary([r - s for _, r, s in pairs]),
        "send_to_ack": latency_summary([a - s for a, _, s in pairs]),
        "schedule_lag": latency_summary(lags),
        "write_failures": len(failures),
        "missing_in_tails": len(missing),
        "sessions_without_gap_or_duplicate": sum(contiguous(s) for s in sequences.values()),
        "tail_errors": [repr(e) for e in tail_errors],
        "cpu_percent_of_core": cpu,
        "cpu_pressure_at_end": cpu_pressure(),
    }


async def part_latency(
    uri: str,
    database_name: str,
    log_dir: Path,
    ferret_pid: int | None,
    args: Any,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    async with servers(uri, database_name, log_dir, "a", "b", env=env) as (a, b):
        pids = {"server_a": a.pid, "server_b": b.pid, "database": ferret_pid, "bench": os.getpid()}
        same = await latency_case("same-process", a, a, args, pids)
        log(f"same process: {same['ack_to_receipt']}")
        cross = await latency_case("cross-process", a, b, args, pids)
        log(f"cross process: {cross['ack_to_receipt']}")
    same["goal_p99_ms"] = GOALS["same_process_p99_ms"]
    cross["goal_p99_ms"] = GOALS["cross_process_p99_ms"]
    for case in (same, cross):
        p99 = case["ack_to_receipt"].get("p99_ms")
        case["pass"] = bool(
            p99 is not None
            and p99 <= case["goal_p99_ms"]
            and case["missing_in_tails"] == 0
            and case["write_failures"] == 0
        )
    return {"same_process": same, "cross_process": cross}


# ---- 2. idle tails ---------------------------------------------------------------------------


async def part_idle(
    uri: str,
    database_name: str,
    log_dir: Path,
    ferret_pid: int | None,
    args: Any,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    count, channels = args.idle_tails, args.idle_channels
    sessions = [f"idle-{uuid.uuid4().hex[:6]}-{i:04d}" for i in range(count)]
    server_started = time.perf_counter()
    async with servers(uri, database_name, log_dir, "idle", env=env) as (server,):
        rss_started = rss_mb(server.pid)
        async with bench_client(server.target) as writer:
            events = [cobrowse_event(TENANT, s, k) for s in sessions for k in range(2)]
            for first in range(0, len(events), 500):
                response = await writer.log_events(events[first : first + 500])
                bad = [r for r in response.results if r.WhichOneof("result") != "event"]
                if bad:
                    raise RuntimeError(f"seeding idle sessions failed: {bad[0]}")
        clients = [OwnConnectionClient(server.target, i) for i in range(channels)]
        tails = [
            clients[i % channels].tail_session(TENANT, session)  # from the beginning
            for i, session in enumerate(sessions)
        ]
        started = time.perf_counter()
        tasks = [asyncio.create_task(drain(tail)) for tail in tails]
        await asyncio.wait_for(asyncio.gather(*(t.caught_up.wait() for t in tails)), 300)
        caught_up_s = time.perf_counter() - started
        connections = established_connections(server.port)
        replayed = sum(t.last_sequence for t in tails)
        log(f"idle: {count} tails caught up in {caught_up_s:.1f} s on {connections} connections")
        # The safety prober (up to ea07ab8) sleeps one full interval while it has no watches, so
        # wait until its first round over these tails has begun: the window then shows the
        # steady state. (Later code probes within a second of the first watch.)
        steady_at = server_started + Settings().tail_safety_probe_interval_s + 2
        await asyncio.sleep(max(args.idle_settle, steady_at - time.perf_counter()))
        settled_s = time.perf_counter() - started - caught_up_s
        rss_before = rss_mb(server.pid)
        heartbeats = sum(t.heartbeats for t in tails)
        meter = CpuMeter({"server": server.pid, "database": ferret_pid, "bench": os.getpid()})
        meter.start()
        await asyncio.sleep(args.idle_seconds)
        cpu = meter.stop()
        rss_end = rss_mb(server.pid)
        heartbeats = sum(t.heartbeats for t in tails) - heartbeats
        alive = sum(not task.done() for task in tasks)
        errors = await stop_tasks(tasks)
        for client in clients:
            await client.close()
    log(f"idle: cpu {cpu}, rss {rss_end} MB")
    server_cpu, database_cpu = cpu.get("server"), cpu.get("database")
    return {
        "tails": count,
        "channels": channels,
        "tcp_connections": connections,
        "events_per_session": 2,
        "replayed_events": replayed,
        "caught_up_seconds": round(caught_up_s, 2),
        "settle_seconds": round(settled_s, 1),
        "window_seconds": args.idle_seconds,
        "heartbeat_interval_s": Settings().tail_heartbeat_interval_s,
        "safety_probe_interval_s": Settings().tail_safety_probe_interval_s,
        "heartbeats_received": heartbeats,
        "tails_alive_at_end": alive,
        "tail_errors": [repr(e) for e in errors],
        "cpu_percent_of_core": cpu,
        "rss_mb": {"started": rss_started, "tails_caught_up": rss_before, "end": rss_end},
        "goals": {
            "server_cpu_percent": GOALS["idle_cpu_percent"],
            "database_cpu_percent": GOALS["idle_cpu_percent"],
            "server_rss_mb": GOALS["idle_rss_mb"],
        },
        "pass": {
            "server_cpu": server_cpu is not None and server_cpu <= GOALS["idle_cpu_percent"],
            "database_cpu": database_cpu is None or database_cpu <= GOALS["idle_cpu_percent"],
            "server_rss": rss_end <= GOALS["idle_rss_mb"],
        },
    }


# ---- 3. streaming ingest vs raw insert_many --------------------------------------------------


async def create_event_indexes(
    client: AsyncMongoClient[Document], database_name: str, collection: AsyncCollection[Document]
) -> None:
    """The indexes EventRepository.ensure_indexes() gives `events`, on another collection."""
    repository = EventRepository(client, database_name, 1)
    repository.events = collection
    await repository.ensure_indexes()


def ingest_events(kind: str, count: int, sessions: list[str]) -> Iterator[Event]:
    for i in range(count):
        if kind == "cobrowse":
            yield cobrowse_event(TENANT, sessions[i % len(sessions)], i)
        else:
            yield general_event(TENANT, i)


async def raw_insert(
    scratch: AsyncCollection[Document], kind: str, args: Any, pids: Any, with_claims: bool = False
) -> dict[str, Any]:
    """insert_many of prebuilt documents, 1,000 events per call, one call at a time.

    with_claims: each co-browsing event is preceded by its id claim, i.e. the very documents
    the service writes for it (two per event).
    """
    sessions = [f"raw-{uuid.uuid4().hex[:6]}-{i:02d}" for i in range(args.ingest_sessions)]
    built = time.perf_counter()
    now = convert.now_millis()
    batches: list[list[Document]] = [[]]
    next_sequence = dict.fromkeys(sessions, 1)
    for number, event in enumerate(ingest_events(kind, args.ingest_events, sessions)):
        if number and number % 1000 == 0:
            batches.append([])
        doc = event_document(event, now)
        if kind == "cobrowse":
            session = event.cobrowse.session_id
            convert.assign_slot(doc, next_sequence[session])
            next_sequence[session] += 1
            if with_claims:
                batches[-1].append(convert.id_claim(doc))
        batches[-1].append(doc)
    build_s = time.perf_counter() - built
    meter = CpuMeter(pids)
    meter.start()
    started = time.perf_counter()
    for batch in batches:
        # Ordered for co-browsing events (slot order, like the service), unordered for general.
        await scratch.insert_many(batch, ordered=kind == "cobrowse")
    seconds = time.perf_counter() - started
    cpu = meter.stop()
    events = args.ingest_events
    return {
        "events": events,
        "documents": sum(len(batch) for batch in batches),
        "events_per_insert_many": 1000,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "document_build_seconds_not_counted": round(build_s, 2),
        "cpu_percent_of_core": cpu,
    }


async def stream_ingest(target: str, kind: str, args: Any, pids: Any) -> dict[str, Any]:
    sessions = [f"ingest-{uuid.uuid4().hex[:6]}-{i:02d}" for i in range(args.ingest_sessions)]
    requests = [
        service_pb2.StreamEventsRequest(event=event)
        for event in ingest_events(kind, args.ingest_events, sessions)
    ]
    acks, errors = 0, []
    sequences: dict[str, list[int]] = {session: [] for session in sessions}

    async def outgoing() -> AsyncIterator[service_pb2.StreamEventsRequest]:
        for request in requests:
            yield request

    async with bench_client(target) as client:
        meter = CpuMeter(pids)
        meter.start()
        started = time.perf_counter()
        first_ack = None
        async for response in client.stub.StreamEvents(outgoing()):
            if response.WhichOneof("result") == "ack":
                acks += 1
                if first_ack is None:
                    first_ack = time.perf_counter() - started
                if kind == "cobrowse":
                    session = requests[response.request_index].event.cobrowse.session_id
                    sequences[session].append(response.ack.sequence)
            else:
                errors.append(str(response.error))
        seconds = time.perf_counter() - started
        cpu = meter.stop()
    result = {
        "events": len(requests),
        "acks": acks,
        "errors": len(errors),
        "seconds": round(seconds, 2),
        "events_per_s": round(acks / seconds),
        "first_ack_seconds": round(first_ack or 0.0, 3),
        "cpu_percent_of_core": cpu,
    }
    if kind == "cobrowse":
        result["sessions"] = len(sessions)
        result["sessions_with_sequences_1_to_n"] = sum(
            contiguous(sorted(s)) for s in sequences.values()
        )
    if errors:
        result["first_error"] = errors[0]
    return result


async def part_ingest(
    uri: str,
    database_name: str,
    client: AsyncMongoClient[Document],
    log_dir: Path,
    ferret_pid: int | None,
    args: Any,
) -> dict[str, Any]:
    scratch = client.get_database(database_name).get_collection("scratch_events")
    await scratch.drop()
    await create_event_indexes(client, database_name, scratch)
    results: dict[str, Any] = {}
    async with servers(uri, database_name, log_dir, "ingest") as (server,):
        pids = {"server": server.pid, "database": ferret_pid, "bench": os.getpid()}
        for kind in ("cobrowse", "general"):
            raw = await raw_insert(scratch, kind, args, pids)
            log(f"ingest {kind}: raw insert_many {raw['events_per_s']:,}/s")
            stream = await stream_ingest(server.target, kind, args, pids)
            log(f"ingest {kind}: StreamEvents {stream['events_per_s']:,}/s")
            results[kind] = {
                "raw_insert_many": raw,
                "stream_events": stream,
                "ratio_stream_to_raw": round(stream["events_per_s"] / raw["events_per_s"], 3),
            }
            if kind == "cobrowse":
                claims = await raw_insert(scratch, kind, args, pids, with_claims=True)
                log(f"ingest {kind}: raw insert_many with id claims {claims['events_per_s']:,}/s")
                results[kind]["raw_insert_many_with_id_claims"] = claims
                results[kind]["ratio_stream_to_raw_with_id_claims"] = round(
                    stream["events_per_s"] / claims["events_per_s"], 3
                )
    await scratch.drop()
    return results


# ---- report ----------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:g} %" for name, value in cpu.items())


def pressure(values: dict[str, float] | None) -> str:
    return "n/a" if values is None else "/".join(f"{v:g}" for v in values.values())


def markdown(data: dict[str, Any]) -> str:
    pre, settings = data["preload"], data["settings"]
    lines = [
        f"# Live tail and streaming ingest ({data['backend']})",
        "",
        f"Command: `{data['command']}` (code at commit {data['code'][:12]})",
        "",
        f"- Machine: {data['machine_cpus']} CPUs; load average (1/5/15 min) before "
        f"{data['load_before']}, after {data['load_after']}; CPU pressure (% of time some task "
        f"waited for a CPU, avg10/avg60/avg300) before {pressure(data['cpu_pressure_before'])}, "
        f"after {pressure(data['cpu_pressure_after'])}.",
        f"- Preload: {pre['events']:,} events of other sessions (half general, half co-browsing "
        f"in {pre['cobrowse_sessions']:,} sessions, each co-browsing event with its id claim: "
        f"{pre['documents']:,} documents) in {pre['seconds']:,} s ({pre['events_per_s']:,} "
        f"events/s; {pre['document_build_s']} s of it building documents, overlapped with the "
        f"inserts), into the collection the servers then use.",
        f"- Servers: `auditlog serve` subprocesses, write concern {settings['write_concern']}, "
        f"default tail settings (heartbeat {settings['tail_heartbeat_interval_s']:g} s, safety "
        f"probe {settings['tail_safety_probe_interval_s']:g} s, max tails "
        f"{settings['max_tails']:,}); this process is the client (SDK `AuditLogClient`).",
        "- CPU shares are % of one core over the measuring window, from /proc/<pid>/stat.",
        "",
    ]
    if "latency" in data:
        lines += [
            "## 1. Writer's ack -> tail's receipt",
            "",
            "Open-loop LogEvent writer (one task per event at its scheduled time); one SDK tail "
            "per session (`tail_session(..., from_now=True)`), caught up before the load; both "
            "times from `time.perf_counter()` in this process. The first "
            f"{data['latency']['same_process']['warmup_seconds']:g} s are warm-up, not counted.",
            "",
            "| case | events | p50 | p90 | p99 | max | goal p99 | result | send->ack p50 / p99 "
            "| missing | CPU (% of a core) |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        for key, label in (
            ("same_process", "same process (writer, tails -> A)"),
            ("cross_process", "across processes (writer -> A, tails -> B)"),
        ):
            case = data["latency"][key]
            lat, ack = case["ack_to_receipt"], case["send_to_ack"]
            lines.append(
                f"| {label} | {lat.get('count', 0):,} | {lat.get('p50_ms')} ms | "
                f"{lat.get('p90_ms')} ms | {lat.get('p99_ms')} ms | {lat.get('max_ms')} ms | "
                f"{case['goal_p99_ms']:g} ms | {mark(case['pass'])} | {ack.get('p50_ms')} / "
                f"{ack.get('p99_ms')} ms | {case['missing_in_tails']} | "
                f"{cpu_text(case['cpu_percent_of_core'])} |"
            )
        same, cross = data["latency"]["same_process"], data["latency"]["cross_process"]
        lines += [
            "",
            f"{same['rate_per_s']} events/s over {same['sessions']} sessions for "
            f"{same['seconds']:g} s per case. Receipt before the writer's ack (the tail was "
            f"woken by the write itself): {same['received_before_ack']} same-process, "
            f"{cross['received_before_ack']} cross-process events (negative latencies count as "
            f"such). Sessions whose tail saw sequences 1..n without gap or duplicate: "
            f"{same['sessions_without_gap_or_duplicate']}/{same['sessions']} and "
            f"{cross['sessions_without_gap_or_duplicate']}/{cross['sessions']}; write failures "
            f"{same['write_failures']} and {cross['write_failures']}; schedule lag p99 "
            f"{same['schedule_lag'].get('p99_ms')} and {cross['schedule_lag'].get('p99_ms')} ms.",
            "",
        ]
    if "idle" in data:
        idle = data["idle"]
        cpu, rss, ok = idle["cpu_percent_of_core"], idle["rss_mb"], idle["pass"]
        database_cpu = cpu.get("database")
        lines += [
            f"## 2. {idle['tails']:,} idle tails on one server process",
            "",
            f"{idle['tails']:,} SDK tails (from the beginning of sessions of "
            f"{idle['events_per_session']} events each) over {idle['channels']} channels "
            f"({idle['tcp_connections']} TCP connections), all caught up in "
            f"{idle['caught_up_seconds']} s; then {idle['settle_seconds']:g} s settling and a "
            f"{idle['window_seconds']:g} s idle window; {idle['heartbeats_received']:,} "
            f"heartbeats received in it; {idle['tails_alive_at_end']:,} tails alive at the end.",
            "",
            "| metric | value | goal | result |",
            "|---|---:|---:|---|",
            f"| server CPU | {cpu['server']:g} % of a core | <= 5 % | {mark(ok['server_cpu'])} |",
            f"| database (FerretDB) CPU | "
            f"{'n/a' if database_cpu is None else f'{database_cpu:g} %'} of a core | <= 5 % | "
            f"{mark(ok['database_cpu'])} |",
            f"| server RSS at the end | {rss['end']} MB | <= 200 MB | {mark(ok['server_rss'])} |",
            f"| server RSS before tails / all caught up | {rss['started']} / "
            f"{rss['tails_caught_up']} MB | | |",
            f"| client (this process) CPU | {cpu.get('bench', 0):g} % of a core | | |",
            "",
        ]
    if "ingest" in data:
        lines += [
            "## 3. Streaming ingest vs raw insert_many",
            "",
            "StreamEvents: one bidirectional stream, one event per request, acks counted; time "
            "from the first request to the last ack. Raw: `insert_many` of equivalent documents "
            "(built beforehand with the service's conversion, not timed) in batches of 1,000 "
            "into a scratch collection with the same indexes as `events`, one batch at a time.",
            "",
            "| events | path | events | seconds | events/s | stream / raw | CPU (% of a core) |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for kind, label in (("cobrowse", "co-browsing"), ("general", "general")):
            entry = data["ingest"][kind]
            raw, stream = entry["raw_insert_many"], entry["stream_events"]
            lines.append(
                f"| {label} | raw insert_many | {raw['events']:,} | {raw['seconds']} | "
                f"{raw['events_per_s']:,} | | {cpu_text(raw['cpu_percent_of_core'])} |"
            )
            claims = entry.get("raw_insert_many_with_id_claims")
            if claims:
                lines.append(
                    f"| {label} | raw insert_many, each event with its id claim (2 documents) | "
                    f"{claims['events']:,} | {claims['seconds']} | {claims['events_per_s']:,} | | "
                    f"{cpu_text(claims['cpu_percent_of_core'])} |"
                )
            lines.append(
                f"| {label} | StreamEvents | {stream['acks']:,} acked, {stream['errors']} errors "
                f"| {stream['seconds']} | {stream['events_per_s']:,} | "
                f"{entry['ratio_stream_to_raw']:g} | {cpu_text(stream['cpu_percent_of_core'])} |"
            )
        cobrowse = data["ingest"]["cobrowse"]
        cob = cobrowse["stream_events"]
        lines += [
            "",
            f"Co-browsing events went to {cob.get('sessions')} sessions; sessions whose acks "
            f"carried sequences 1..n: {cob.get('sessions_with_sequences_1_to_n')}. Against the "
            "raw insert of the same documents the service writes (event and id claim), "
            f"StreamEvents reaches {cobrowse.get('ratio_stream_to_raw_with_id_claims')} of it.",
            "",
        ]
    if data.get("runs"):
        lines += runs_markdown(data)
    if data.get("notes"):
        lines += ["## Notes", "", *[f"- {note}" for note in data["notes"]], ""]
    return "\n".join(lines)


# ---- main ------------------------------------------------------------------------------------


def baseline_path(checkout: str) -> str:
    """The PYTHONPATH that runs `auditlog serve` with another checkout's service and SDK."""
    base = Path(checkout).resolve()
    return f"{base / 'service'}:{base / 'clients/python/src'}"


async def baseline_runs(
    uri: str,
    database_name: str,
    client: AsyncMongoClient[Document],
    log_dir: Path,
    ferret_pid: int | None,
    args: Any,
) -> list[dict[str, Any]]:
    """Parts 1 and 2 (those asked for) with the baseline's code and this code, alternating
    (--rounds rounds, each round in the other order than the last), each run on a database of
    its own with its own preload, so that no run inherits another's ledger or sessions."""
    codes = [("baseline", {"PYTHONPATH": baseline_path(args.baseline)}), ("this code", {})]
    runs: list[dict[str, Any]] = []
    for number in range(args.rounds):
        for code, env in codes if number % 2 == 0 else codes[::-1]:
            name = f"{database_name}_{len(runs)}"
            await EventRepository(client, name, 1).ensure_indexes()
            run: dict[str, Any] = {"round": number + 1, "code": code}
            run["preload"] = await preload(client.get_database(name), args.preload, args.chunk)
            log(f"round {number + 1}, {code}: preloaded {args.preload:,} events into {name}")
            if "1" in args.parts:
                run["latency"] = await part_latency(uri, name, log_dir, ferret_pid, args, env)
            if "2" in args.parts:
                run["idle"] = await part_idle(uri, name, log_dir, ferret_pid, args, env)
            runs.append(run)
            await client.drop_database(name)
    return runs


def runs_markdown(data: dict[str, Any]) -> list[str]:
    """The baseline and this code, run after run, and the median of each."""
    runs = data["runs"]
    label = data.get("baseline_label") or data["baseline"]
    lines = [
        "## Baseline and this code, alternating",
        "",
        f"Baseline: {label} (`auditlog serve` with that checkout's service on its PYTHONPATH). "
        "Each run on a database of its own, with its own preload; the order alternates from "
        "round to round.",
        "",
    ]
    codes = list(dict.fromkeys(run["code"] for run in runs))
    if any("latency" in run for run in runs):
        lines += [
            "### 1. Writer's ack -> tail's receipt",
            "",
            "| round | code | same process p50 / p99 | across processes p50 / p99 | missing "
            "| server A / B CPU |",
            "|---:|---|---:|---:|---:|---|",
        ]
        for run in runs:
            same, cross = run["latency"]["same_process"], run["latency"]["cross_process"]
            a, c = same["ack_to_receipt"], cross["ack_to_receipt"]
            lines.append(
                f"| {run['round']} | {run['code']} | {a.get('p50_ms')} / {a.get('p99_ms')} ms | "
                f"{c.get('p50_ms')} / {c.get('p99_ms')} ms | "
                f"{same['missing_in_tails'] + cross['missing_in_tails']} | "
                f"{same['cpu_percent_of_core'].get('server_a')} / "
                f"{cross['cpu_percent_of_core'].get('server_b')} % |"
            )
        for code in codes:
            mine = [run["latency"] for run in runs if run["code"] == code]
            same_p99 = statistics.median(
                r["same_process"]["ack_to_receipt"]["p99_ms"] for r in mine
            )
            cross_p99 = statistics.median(
                r["cross_process"]["ack_to_receipt"]["p99_ms"] for r in mine
            )
            lines.append(f"| median | {code} | p99 {same_p99:g} ms | p99 {cross_p99:g} ms | | |")
        lines.append("")
    if any("idle" in run for run in runs):
        tails = next(run["idle"]["tails"] for run in runs if "idle" in run)
        lines += [
            f"### 2. {tails:,} idle tails on one server process",
            "",
            "| round | code | server CPU | database CPU | server RSS end | client CPU "
            "| heartbeats in window | tails alive |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for run in runs:
            idle = run["idle"]
            cpu = idle["cpu_percent_of_core"]
            lines.append(
                f"| {run['round']} | {run['code']} | {cpu['server']:g} % | "
                f"{cpu.get('database', 'n/a')} % | {idle['rss_mb']['end']} MB | "
                f"{cpu.get('bench', 0):g} % | {idle['heartbeats_received']:,} | "
                f"{idle['tails_alive_at_end']:,} |"
            )
        for code in codes:
            mine = [run["idle"] for run in runs if run["code"] == code]
            server = statistics.median(r["cpu_percent_of_core"]["server"] for r in mine)
            database = statistics.median(
                r["cpu_percent_of_core"].get("database", 0.0) for r in mine
            )
            rss = statistics.median(r["rss_mb"]["end"] for r in mine)
            lines.append(f"| median | {code} | {server:g} % | {database:g} % | {rss:g} MB | | | |")
        lines += [
            "",
            f"Goals: server CPU <= {GOALS['idle_cpu_percent']:g} % of a core, server RSS <= "
            f"{GOALS['idle_rss_mb']:g} MB. Each window {args_window(runs)} s, after the tails "
            "caught up and the safety prober's first round began.",
            "",
        ]
    return lines


def args_window(runs: list[dict[str, Any]]) -> str:
    windows = {run["idle"]["window_seconds"] for run in runs if "idle" in run}
    return "/".join(f"{w:g}" for w in sorted(windows))


async def main(args: Any, command: str) -> None:
    load_before, pressure_before = load_average(), cpu_pressure()
    log(f"load average before: {load_before}, CPU pressure {pressure_before}")
    database_name = f"bench_tail_{uuid.uuid4().hex[:8]}"
    data: dict[str, Any] = {
        "command": command,
        "code": code_version(),
        "machine_cpus": os.cpu_count(),
    }
    with (
        database_process() as (uri, backend, ferret_pid),
        tempfile.TemporaryDirectory(prefix="auditlog-tail-bench-") as tmp,
    ):
        log_dir = Path(tmp)
        data["backend"] = backend
        client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
        try:
            if args.baseline:
                data["baseline"] = args.baseline
                data["baseline_label"] = args.baseline_label
                data["runs"] = await baseline_runs(
                    uri, database_name, client, log_dir, ferret_pid, args
                )
                data["preload"] = data["runs"][-1]["preload"]
                args.parts = ""
            else:
                db = client.get_database(database_name)
                await EventRepository(client, database_name, 1).ensure_indexes()
                log(f"preloading {args.preload:,} events into {backend} ({uri}, {database_name})")
                data["preload"] = await preload(db, args.preload, args.chunk)
                log(f"preload done: {data['preload']}")
            if "1" in args.parts:
                data["latency"] = await part_latency(uri, database_name, log_dir, ferret_pid, args)
            if "2" in args.parts:
                data["idle"] = await part_idle(uri, database_name, log_dir, ferret_pid, args)
            if "3" in args.parts:
                data["ingest"] = await part_ingest(
                    uri, database_name, client, log_dir, ferret_pid, args
                )
            await client.drop_database(database_name)
        finally:
            await client.close()
    defaults = Settings()
    data["settings"] = {
        "write_concern": SERVER_ARGS[1],
        "tail_heartbeat_interval_s": defaults.tail_heartbeat_interval_s,
        "tail_safety_probe_interval_s": defaults.tail_safety_probe_interval_s,
        "max_tails": defaults.max_tails,
        "group_commit_max_events": defaults.group_commit_max_events,
        "group_commit_max_delay_ms": defaults.group_commit_max_delay_ms,
    }
    data["load_before"] = load_before
    data["load_after"] = load_average()
    data["cpu_pressure_before"] = pressure_before
    data["cpu_pressure_after"] = cpu_pressure()
    data["notes"] = args.note or []
    log(f"load average after: {data['load_after']}")
    write_result(args.output, data, markdown(data))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preload", type=int, default=1_000_000, help="events of other sessions")
    parser.add_argument("--chunk", type=int, default=5_000, help="preload insert_many size")
    parser.add_argument("--parts", default="123", help="which parts to run, e.g. 13")
    parser.add_argument("--rate", type=float, default=200.0, help="latency: events/s")
    parser.add_argument("--sessions", type=int, default=50, help="latency: sessions/tails")
    parser.add_argument("--latency-seconds", dest="seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="latency: uncounted seconds")
    parser.add_argument("--idle-tails", type=int, default=1000)
    parser.add_argument("--idle-channels", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--idle-settle", type=float, default=5.0)
    parser.add_argument("--ingest-events", type=int, default=20_000)
    parser.add_argument("--ingest-sessions", type=int, default=10)
    parser.add_argument("--output", default="tail_bench", help="bench/results/<output>.json/.md")
    parser.add_argument("--note", action="append", help="a line for the Notes section")
    parser.add_argument(
        "--baseline",
        default="",
        help="a checkout of other code (its service/ and clients/python/src/, e.g. `git archive "
        "<commit>` unpacked): parts 1 and 2 run on it and on this code, alternating",
    )
    parser.add_argument("--baseline-label", default="", help="what --baseline is, for the table")
    parser.add_argument("--rounds", type=int, default=2, help="with --baseline: rounds")
    arguments = parser.parse_args()
    asyncio.run(main(arguments, " ".join(["python -m bench.tail_bench", *sys.argv[1:]])))
