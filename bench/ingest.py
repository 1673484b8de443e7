"""Ingest against its baselines: issue 11's table (events/s, ratio, CPU per event), re-measured.

For each path, the service and its baseline take turns within each round (the order flips every
round) on one database (a fresh FerretDB, or MONGODB_URI); medians of --rounds rounds. Every turn
writes to a database of its own, so no side inserts into a bigger collection than the other:
- batch-general: LogEvents of 1,000 general events, 4 concurrent callers (one connection each),
  against raw `insert_many(ordered=False)` of the documents the service stores for the same
  events (built beforehand with its own conversion, untimed), 1,000 events per call, 4 callers;
- batch-cobrowse: the same with co-browsing events; the raw baseline writes each event's id
  claim beside it, as the service does (two documents per event), and also without the claims;
- stream-general: StreamEvents, one event per message (--stream-batch N: N per message), 1 stream;
  the baseline of batch-general;
- stream-cobrowse: 4 streams of co-browsing events; the baselines of batch-cobrowse;
- stream-sdk: one stream of general events sent by the Python SDK's EventStream with its
  defaults (each message what is ready, up to 1,000 events; 4,000 unanswered at most), as a
  producer that uses the SDK streams; the baseline of batch-general;
- unary: LogEvent, 64 concurrent callers over 8 connections, against a bare grpc.aio server of
  the same method that answers with the event and no database (`--echo-server`, this file);
  beside it, not as the goal's baseline, the same server answering each call after a timer the
  waiting calls share (`echo_grouped`): what answering calls in groups costs without any work.
The service (`auditlog serve --write-concern 1`, started afresh for each turn) and the echo server
run as child processes: CPU of the service (every process of it, with --workers), of the database
and of this client is read from /proc over each window and reported per event. Callers send
requests built before the window; a caller that runs out ends the window early (see `cut`).
--compare-workers adds `--workers 1` against `--workers 2` for batch-general and unary, when the
server has that flag (else it says so and skips them).

    .venv/bin/python -m bench.ingest [--seconds 5] [--rounds 3] [--paths unary,batch-general]
        [--workers N] [--compare-workers] [--stream-batch N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from auditlog.client import AuditLogError
from auditlog.stream import EventStream
from auditlog.v1 import audit_event_pb2, enums_pb2, service_pb2, service_pb2_grpc
from auditlog_service import convert
from auditlog_service.config import Settings, settings_from_env
from auditlog_service.convert import Document
from auditlog_service.devdb import free_port
from auditlog_service.ledger import outbox_id
from auditlog_service.server import run_on_loop
from auditlog_service.storage import EventRepository
from bench.common import (
    RESULTS,
    ChildServer,
    CpuMeter,
    ServerProcess,
    bench_channel,
    cobrowse_event,
    code_version,
    cpu_pressure,
    database_process,
    descendants,
    event_document,
    general_event,
    load_average,
    log,
    serve_flags,
    write_result,
)

Event = audit_event_pb2.AuditEvent
T = TypeVar("T")

TENANT = "bench"
WARM_UP_TENANT = "warm-up"
BATCH = 1000  # events per LogEvents call and per raw insert_many call
RAW_CALLERS = 4
SESSIONS_PER_CALLER = 10  # co-browsing sessions of each caller or stream
# Events per group commit (the service's largest): one outbox id per group.
GROUP = Settings().group_commit_max_events
# Unanswered events of a path's streams together: what the raw side has in flight (its callers'
# inserts). One stream keeps them all, as the SDK's EventStream allows one stream by default
# (4 x its batch of 1,000); four streams keep 1,000 each.
STREAM_IN_FLIGHT = RAW_CALLERS * BATCH
# The unary path's second echo waits this long for a shared timer before each answer: the
# service's shortest group-commit wait (group_commit.LingerTuner tries longer ones under load).
GROUPED_ECHO_WAIT_MS = Settings().group_commit_max_delay_ms
ROOT = Path(__file__).resolve().parents[1]
GOALS = {"ratio": 0.8, "batch_service_cpu_us": 20.0}
# Events/s the prepared requests suffice for, by default: about twice the raw baselines' rates on
# the 2-core dev machine (up to 29,000 events/s on 2026-12-04; with 15,000, `make bench` cut
# every batch round short that day).
MAX_RATE = 60_000.0
# This bench's own run before issue 11's work (`--output ingest_before`): later runs show it too.
BEFORE_RUN = "ingest_before"


@dataclass(frozen=True)
class PathSpec:
    label: str
    rpc: str  # LogEvents, StreamEvents or LogEvent
    kind: str  # general or cobrowse
    callers: int  # concurrent callers, or streams
    connections: int
    # Sent through the SDK's EventStream, which makes the messages (events, not requests, are
    # built beforehand).
    sdk: bool = False


PATHS = {
    "batch-general": PathSpec(
        "LogEvents, 1,000 per call, 4 callers, general", "LogEvents", "general", 4, 4
    ),
    "batch-cobrowse": PathSpec(
        "LogEvents, co-browsing (event + id claim)", "LogEvents", "cobrowse", 4, 4
    ),
    "stream-general": PathSpec("StreamEvents, 1 stream, general", "StreamEvents", "general", 1, 1),
    "stream-cobrowse": PathSpec(
        "StreamEvents, 4 streams, co-browsing", "StreamEvents", "cobrowse", 4, 4
    ),
    "stream-sdk": PathSpec(
        "StreamEvents, 1 stream, general, the SDK's EventStream",
        "StreamEvents",
        "general",
        1,
        1,
        sdk=True,
    ),
    "unary": PathSpec("unary LogEvent, 64 concurrent", "LogEvent", "general", 64, 8),
}
WORKER_PATHS = ("batch-general", "unary")
View: TypeAlias = enums_pb2.ResultView.ValueType
# What LogEvents results carry: whole events (the server's default) or acks (the SDK's batches).
RESULT_VIEWS: dict[str, View] = {
    "default": enums_pb2.RESULT_VIEW_UNSPECIFIED,
    "ack": enums_pb2.RESULT_VIEW_ACK,
}

# Issue 11's table (before the work), beside which the new figures stand.
BEFORE: dict[str, dict[str, float]] = {
    "batch-general": {"service": 4275, "baseline": 6987, "ratio": 0.53, "service_cpu_us": 52},
    "batch-cobrowse": {
        "service": 2459,
        "baseline": 3879,
        "baseline_events_only": 7442,
        "ratio": 0.53,
        "ratio_events_only": 0.32,
        "service_cpu_us": 91,
    },
    "stream-general": {"service": 2610, "baseline": 7126, "ratio": 0.40, "service_cpu_us": 209},
    # The row of one stream of general events, as stream-general.
    "stream-sdk": {"service": 2610, "baseline": 7126, "ratio": 0.40, "service_cpu_us": 209},
    "stream-cobrowse": {"service": 2230, "baseline": 4552, "ratio": 0.46, "service_cpu_us": 226},
    "unary": {
        "service": 1652,
        "baseline": 2624,
        "ratio": 0.61,
        "service_cpu_us": 393,
        "baseline_cpu_us": 267,
    },
}


# ---- the bare echo server (the unary baseline) ------------------------------------------------


class SharedWait:
    """One timer for every call that waits: the first waiting call starts it and all of them
    go on together when it fires, as a group commit's callers do, with no write in between."""

    def __init__(self, wait_s: float) -> None:
        self._wait_s = wait_s
        self._group: asyncio.Future[None] | None = None

    def _release(self) -> None:
        group, self._group = self._group, None
        if group is not None and not group.done():
            group.set_result(None)

    async def wait(self) -> None:
        if self._group is None:
            loop = asyncio.get_running_loop()
            self._group = loop.create_future()
            loop.call_later(self._wait_s, self._release)
        await self._group


def echo_handler(
    wait_ms: float,
) -> Callable[
    [service_pb2.LogEventRequest, grpc.aio.ServicerContext[Any, Any]],
    Awaitable[service_pb2.LogEventResponse],
]:
    """LogEvent of the echo server: the event back, with a receive time as the service sets one
    (a response of its size); with `wait_ms`, after a wait shared with the other calls."""
    shared = SharedWait(wait_ms / 1000) if wait_ms > 0 else None

    async def echo_log_event(
        request: service_pb2.LogEventRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> service_pb2.LogEventResponse:
        if shared is not None:
            await shared.wait()
        response = service_pb2.LogEventResponse(event=request.event)
        response.event.receive_time.GetCurrentTime()
        return response

    return echo_log_event


async def serve_echo(listen: str, wait_ms: float = 0.0) -> None:
    """The AuditLogService LogEvent method alone, on a bare grpc.aio server, until SIGTERM."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    method = grpc.unary_unary_rpc_method_handler(
        echo_handler(wait_ms),
        request_deserializer=service_pb2.LogEventRequest.FromString,
        response_serializer=service_pb2.LogEventResponse.SerializeToString,
    )
    name = service_pb2.DESCRIPTOR.services_by_name["AuditLogService"].full_name
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(name, {"LogEvent": method}),)
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(listen)
    await server.start()
    loop = asyncio.get_running_loop()
    log(
        f"echo server on {listen}, event loop {type(loop).__module__}.{type(loop).__name__}, "
        f"shared wait {wait_ms:g} ms"
    )
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)


def service_event_loop() -> str:
    """The event loop `auditlog serve` runs on in this environment, which the echo runs on too."""
    return settings_from_env(os.environ).event_loop


class EchoProcess(ChildServer):
    def __init__(self, log_path: Path, wait_ms: float = 0.0) -> None:
        port = free_port()
        command = [sys.executable, "-m", "bench.ingest", "--echo-server", f"127.0.0.1:{port}"]
        command += ["--echo-wait-ms", f"{wait_ms:g}"]
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        super().__init__(command, port, log_path, {"PYTHONPATH": path})


# ---- what the callers send, built before any window -------------------------------------------


@dataclass
class Pool:
    """A path's requests per caller, and the raw baselines' insert_many batches of the documents
    the service stores for the same events. Every turn writes to a fresh database, so each
    round sends the very same requests (and ids)."""

    requests: list[list[Any]]
    raw: list[list[tuple[int, list[Document]]]] = field(default_factory=list)  # (events, docs)
    raw_events_only: list[list[tuple[int, list[Document]]]] = field(default_factory=list)
    events: int = 0


def caller_events(spec: PathSpec, tenant: str, caller: int, count: int) -> list[Event]:
    first = caller * count
    if spec.kind == "general":
        return [general_event(tenant, n) for n in range(first, first + count)]
    sessions = [f"c{caller}-s{s}" for s in range(SESSIONS_PER_CALLER)]
    return [
        cobrowse_event(tenant, sessions[n % len(sessions)], n) for n in range(first, first + count)
    ]


def requests_of(
    spec: PathSpec, events: list[Event], batch: int, view: View = enums_pb2.RESULT_VIEW_UNSPECIFIED
) -> list[Any]:
    """`view`: the LogEvents result view (the server's default unless set). A path through the
    SDK's EventStream sends the events themselves."""
    if spec.sdk:
        return list(events)
    if spec.rpc == "LogEvents":
        return [
            service_pb2.LogEventsRequest(events=events[n : n + batch], result_view=view)
            for n in range(0, len(events), batch)
        ]
    if spec.rpc == "StreamEvents" and batch > 1:
        return [
            service_pb2.StreamEventsRequest(events=events[n : n + batch])
            for n in range(0, len(events), batch)
        ]
    if spec.rpc == "StreamEvents":
        return [service_pb2.StreamEventsRequest(event=event) for event in events]
    return [service_pb2.LogEventRequest(event=event) for event in events]


def stored_documents(events: list[Event], with_claims: bool) -> list[list[Document]]:
    """Per event, the documents the service writes for it (storage._GroupWrite): the event with
    its outbox id (the ledger's), and for a co-browsing event its slot, run end and id claim."""
    now = convert.stored_time_now()  # the service's receive times are StoredTime
    heads: dict[str, int] = {}
    documents = []
    for number, event in enumerate(events):
        doc = event_document(event, now)
        doc["ob"] = outbox_id(event.tenant_id, "bench-writer", number // GROUP + 1)
        if not event.HasField("cobrowse"):
            documents.append([doc])
            continue
        session = event.cobrowse.session_id
        heads[session] = heads.get(session, 0) + 1
        convert.assign_slot(doc, heads[session])
        doc["run_end"] = heads[session]
        documents.append([convert.id_claim(doc), doc] if with_claims else [doc])
    return documents


def raw_batches(per_event: list[list[Document]]) -> list[list[tuple[int, list[Document]]]]:
    """RAW_CALLERS callers' insert_many batches, BATCH events each."""
    batches = [
        (len(chunk), [doc for docs in chunk for doc in docs])
        for chunk in (per_event[n : n + BATCH] for n in range(0, len(per_event), BATCH))
    ]
    return [batches[k::RAW_CALLERS] for k in range(RAW_CALLERS)]


def build_pool(
    spec: PathSpec,
    tenant: str,
    events_per_caller: int,
    batch: int,
    view: View = enums_pb2.RESULT_VIEW_UNSPECIFIED,
) -> Pool:
    """`batch`: events per LogEvents request, or per StreamEvents message; `view`: as in
    requests_of."""
    if spec.rpc == "LogEvents":
        events_per_caller = max(batch, math.ceil(events_per_caller / batch) * batch)
    per_caller = [caller_events(spec, tenant, k, events_per_caller) for k in range(spec.callers)]
    pool = Pool([requests_of(spec, events, batch, view) for events in per_caller])
    pool.events = events_per_caller * spec.callers
    if spec.rpc != "LogEvent":
        everything = [event for events in per_caller for event in events]
        pool.raw = raw_batches(stored_documents(everything, with_claims=True))
        if spec.kind == "cobrowse":
            pool.raw_events_only = raw_batches(stored_documents(everything, with_claims=False))
    return pool


# ---- one window of load -----------------------------------------------------------------------


class Window:
    """One measured run: events stored, errors by reason, and how long it took (until the last
    answer). It closes at its deadline, or earlier when a caller has nothing left to send."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.events = 0
        self.errors: dict[str, int] = {}
        self.cut = False
        self.started = self.deadline = self.elapsed = 0.0

    def begin(self) -> None:
        self.started = time.perf_counter()
        self.deadline = self.started + self.seconds

    def open(self) -> bool:
        return not self.cut and time.perf_counter() < self.deadline

    def ran_out(self) -> None:
        if self.open():
            self.cut = True

    def error(self, reason: str, count: int = 1) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + count

    def end(self) -> None:
        self.elapsed = time.perf_counter() - self.started


Load = Callable[[Window], Awaitable[None]]


async def drive(
    pools: Sequence[Sequence[T]], send: Callable[[int, T], Awaitable[int]], window: Window
) -> None:
    """Caller k sends the items of pools[k] one after the other (send: events stored)."""

    async def caller(k: int) -> None:
        for item in pools[k]:
            if not window.open():
                return
            stored = await send(k, item)
            # Not `window.events += await ...`: that reads the count before the await.
            window.events += stored
        window.ran_out()

    await asyncio.gather(*(caller(k) for k in range(len(pools))))


def service_load(spec: PathSpec, stubs: list[Any], requests: list[list[Any]]) -> Load:
    """The path's RPCs, caller k on connection k % len(stubs)."""

    async def log_events(k: int, request: service_pb2.LogEventsRequest, window: Window) -> int:
        try:
            response = await stubs[k % len(stubs)].LogEvents(request, timeout=120)
        except grpc.aio.AioRpcError as error:
            window.error(error.code().name, len(request.events))
            return 0
        stored = 0
        for result in response.results:
            if result.WhichOneof("result") == "error":
                window.error(enums_pb2.ErrorReason.Name(result.error.reason))
            else:
                stored += 1
        return stored

    async def log_event(k: int, request: service_pb2.LogEventRequest, window: Window) -> int:
        try:
            await stubs[k % len(stubs)].LogEvent(request, timeout=60)
        except grpc.aio.AioRpcError as error:
            window.error(error.code().name)
            return 0
        return 1

    async def stream(k: int, window: Window) -> None:
        # Unanswered events are bounded, as a producer that buffers would bound them: as many
        # as the raw side has in flight, few enough that answering what was sent before the
        # deadline does not take the window far past it.
        per_message = max([len(request.events) for request in requests[k][:1]] + [1])
        per_stream = STREAM_IN_FLIGHT // len(requests)
        unanswered = asyncio.Semaphore(max(1, per_stream // per_message))

        def tally(result: Any, events: int) -> None:
            if result.WhichOneof("result") == "ack":
                window.events += events
            else:
                window.error(enums_pb2.ErrorReason.Name(result.error.reason), events)

        async def outgoing() -> Any:
            for request in requests[k]:
                await unanswered.acquire()
                if not window.open():
                    return  # half-closes: the stream ends once the rest is answered
                yield request
            window.ran_out()

        # Never cancelled: cancelling a StreamEvents call in flight crashed the server here
        # (SIGSEGV at context.peer() in grpc_transport's finally, grpcio 1.85.1).
        try:
            async for response in stubs[k % len(stubs)].StreamEvents(outgoing(), timeout=300):
                unanswered.release()
                for result in response.results:  # a batch's, one per event
                    tally(result, 1)
                if not response.results:  # one event's, or why none of a batch was taken
                    tally(response, len(requests[k][response.request_index].events) or 1)
        except grpc.aio.AioRpcError as error:
            window.error(error.code().name)

    async def sdk_stream(k: int, window: Window) -> None:
        async def source() -> AsyncIterator[Event]:
            for event in requests[k]:
                if not window.open():
                    return  # the stream half-closes once the rest is answered
                yield event
            window.ran_out()

        try:
            async for result in EventStream(stubs[k % len(stubs)], source(), timeout_s=300):
                if result.WhichOneof("result") == "ack":
                    window.events += 1
                else:
                    window.error(enums_pb2.ErrorReason.Name(result.error.reason))
        except AuditLogError as error:
            window.error(error.code.name)

    async def load(window: Window) -> None:
        if spec.sdk:
            await asyncio.gather(*(sdk_stream(k, window) for k in range(len(requests))))
        elif spec.rpc == "StreamEvents":
            await asyncio.gather(*(stream(k, window) for k in range(len(requests))))
        else:
            send = log_events if spec.rpc == "LogEvents" else log_event
            await drive(requests, lambda k, request: send(k, request, window), window)

    return load


def raw_load(collection: Any, batches: list[list[tuple[int, list[Document]]]]) -> Load:
    async def insert(k: int, batch: tuple[int, list[Document]], window: Window) -> int:
        events, docs = batch
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            window.error(f"write error {error.details['writeErrors'][0].get('code')}")
            return events - len(error.details["writeErrors"])
        return events

    async def load(window: Window) -> None:
        await drive(batches, lambda k, batch: insert(k, batch, window), window)

    return load


async def measure(load: Load, seconds: float, pids: dict[str, int | None]) -> dict[str, Any]:
    """A window of `load`; CPU of the named processes (the service's with its workers)."""
    window = Window(seconds)
    meter = CpuMeter(pids, trees=("service",))
    meter.start()
    window.begin()
    await load(window)
    window.end()
    meter.stop()
    events = window.events
    return {
        "events": events,
        "seconds": round(window.elapsed, 3),
        "events_per_s": round(events / window.elapsed, 1),
        "cut": window.cut,
        "errors": window.errors,
        "cpu_s": {name: round(used, 3) for name, used in meter.cpu_s.items()},
        "cpu_us_per_event": {
            name: round(used * 1e6 / events, 1) if events else None
            for name, used in meter.cpu_s.items()
        },
    }


# ---- the turns: one side of a path in one round ------------------------------------------------


@dataclass
class Bench:
    """What every turn shares: the database, this run's names, the pools and the options."""

    uri: str
    db_pid: int | None
    mongo: AsyncMongoClient[Document]
    log_dir: Path
    seconds: float
    warm_up_s: float
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    turns: int = 0

    def database_name(self, path: str, side: str) -> str:
        self.turns += 1
        return f"ingest_{self.run_id}_{path}_{side}_{self.turns}".replace("-", "_")

    def pids(self, service: int | None = None) -> dict[str, int | None]:
        return {"service": service, "database": self.db_pid, "client": os.getpid()}


async def wait_workers(server: ServerProcess, workers: int, timeout_s: float = 60.0) -> None:
    """Until every worker of a supervisor runs (each then binds the shared port)."""
    deadline = time.monotonic() + timeout_s
    while len(descendants(server.pid)) < workers and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # nothing to wait on but /proc


async def grpc_turn(
    bench: Bench, spec: PathSpec, pool: Pool, warm: Pool, server: ChildServer
) -> dict[str, Any]:
    """Warm-up (connections, token caches, the first groups), then the window."""
    channels = [bench_channel(server.target, own_connection=True) for _ in range(spec.connections)]
    stubs = [service_pb2_grpc.AuditLogServiceStub(channel) for channel in channels]
    try:
        await measure(service_load(spec, stubs, warm.requests), bench.warm_up_s, {})
        return await measure(
            service_load(spec, stubs, pool.requests), bench.seconds, bench.pids(server.pid)
        )
    finally:
        for channel in channels:
            await channel.close(None)


async def service_turn(
    bench: Bench, name: str, spec: PathSpec, pool: Pool, warm: Pool, workers: int | None
) -> dict[str, Any]:
    database = bench.database_name(name, "service")
    extra = ["--write-concern", "1"] + (["--workers", str(workers)] if workers else [])
    server = ServerProcess(bench.uri, database, bench.log_dir / f"{database}.log", *extra)
    try:
        await server.wait_serving()
        if workers and workers > 1:
            await wait_workers(server, workers)
        return await grpc_turn(bench, spec, pool, warm, server)
    finally:
        server.stop()
        await bench.mongo.drop_database(database)


async def echo_turn(
    bench: Bench, spec: PathSpec, pool: Pool, warm: Pool, wait_ms: float = 0.0
) -> dict[str, Any]:
    server = EchoProcess(bench.log_dir / "echo.log", wait_ms)
    try:
        await server.wait_serving()
        return await grpc_turn(bench, spec, pool, warm, server)
    finally:
        server.stop()


async def raw_turn(
    bench: Bench,
    name: str,
    batches: list[list[tuple[int, list[Document]]]],
    warm: list[list[tuple[int, list[Document]]]],
) -> dict[str, Any]:
    database = bench.database_name(name, "raw")
    # The indexes the service would have made (none on FerretDB, which would scan anyway).
    repository = EventRepository(bench.mongo, database, 1)
    await repository.detect_backend()
    await repository.ensure_indexes()
    events = bench.mongo[database].get_collection("events", write_concern=WriteConcern(w=1))
    try:
        await measure(raw_load(events, warm), bench.warm_up_s, {})
        return await measure(raw_load(events, batches), bench.seconds, bench.pids())
    finally:
        await bench.mongo.drop_database(database)


def summary(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of a side's rounds, and the rounds."""
    names = turns[0]["cpu_us_per_event"].keys()
    return {
        "events_per_s": round(statistics.median(t["events_per_s"] for t in turns), 1),
        "cpu_us_per_event": {
            name: round(statistics.median(t["cpu_us_per_event"][name] or 0.0 for t in turns), 1)
            for name in names
        },
        "cut_rounds": sum(t["cut"] for t in turns),
        "errors": sum(sum(t["errors"].values()) for t in turns),
        "rounds": turns,
    }


async def compare(
    bench: Bench, name: str, sides: dict[str, Callable[[], Awaitable[dict[str, Any]]]], rounds: int
) -> dict[str, dict[str, Any]]:
    """Every side once per round, in an order that flips every round."""
    turns: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for number in range(rounds):
        order = list(sides) if number % 2 == 0 else list(sides)[::-1]
        for side in order:
            result = await sides[side]()
            turns[side].append(result)
            cut = " (cut short)" if result["cut"] else ""
            errors = f", errors {result['errors']}" if result["errors"] else ""
            log(
                f"{name} round {number + 1} {side}: {result['events_per_s']:,.0f}/s, CPU µs/event "
                f"{result['cpu_us_per_event']}{cut}{errors}"
            )
    return {side: summary(results) for side, results in turns.items()}


def ratio(sides: dict[str, dict[str, Any]], numerator: str, denominator: str) -> float:
    value: float = sides[numerator]["events_per_s"] / sides[denominator]["events_per_s"]
    return round(value, 3)


def path_pools(spec: PathSpec, args: argparse.Namespace) -> tuple[int, Pool, Pool]:
    """Events per request or message, and the requests of a window (--max-rate for --seconds)
    and of its warm-up."""
    batch = {"LogEvents": BATCH, "StreamEvents": args.stream_batch}.get(spec.rpc, 1)
    view = RESULT_VIEWS[args.result_view]
    per_caller = math.ceil(args.max_rate * args.seconds / spec.callers)
    pool = build_pool(spec, TENANT, per_caller, batch, view)
    # Enough for the warm-up's seconds at today's rates, in smaller batches: it should warm
    # connections, caches and the first groups, not fill the database. Unary's lasts about
    # 3 s at 3,000 calls a second: the server's group-commit wait is tuned under load, a step
    # every second or so (group_commit.LingerTuner), and the window measures where it settles.
    warm = build_pool(
        spec, WARM_UP_TENANT, 1000 if spec.callers < 64 else 150, min(batch, 100), view
    )
    return batch, pool, warm


async def run_path(
    bench: Bench, name: str, args: argparse.Namespace, workers: int | None, compare_workers: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    spec = PATHS[name]
    started = time.perf_counter()
    batch, pool, warm = path_pools(spec, args)
    label = spec.label + (
        f", {batch} per message"
        if spec.rpc == "StreamEvents" and batch > 1 and not spec.sdk
        else ""
    )
    log(f"{name}: {pool.events:,} events built in {time.perf_counter() - started:.1f} s")

    def service(count: int | None) -> Callable[[], Awaitable[dict[str, Any]]]:
        return lambda: service_turn(bench, name, spec, pool, warm, count)

    sides = {"service": service(workers)}
    if spec.rpc == "LogEvent":
        sides["echo"] = lambda: echo_turn(bench, spec, pool, warm)
        # Not the goal's baseline: the echo with the service's shortest group wait, to tell
        # what answering calls in groups costs from what the service's own work does.
        sides["echo_grouped"] = lambda: echo_turn(bench, spec, pool, warm, GROUPED_ECHO_WAIT_MS)
        baseline = "echo"
    else:
        sides["raw"] = lambda: raw_turn(bench, name, pool.raw, warm.raw)
        baseline = "raw"
        if pool.raw_events_only:
            sides["raw_events_only"] = lambda: raw_turn(
                bench, name, pool.raw_events_only, warm.raw_events_only
            )
    measured = await compare(bench, name, sides, args.rounds)
    result: dict[str, Any] = {
        "label": label,
        "rpc": spec.rpc,
        "kind": spec.kind,
        "callers": spec.callers,
        "connections": spec.connections,
        "pool_events": pool.events,
        "baseline": baseline,
        "sides": measured,
        "ratio": ratio(measured, "service", baseline),
        "goal": GOALS["ratio"],
        "before": BEFORE[name],
    }
    if "raw_events_only" in measured:
        result["ratio_events_only"] = ratio(measured, "service", "raw_events_only")
    if not compare_workers or name not in WORKER_PATHS:
        return result, None
    by_workers = await compare(
        bench,
        f"{name} workers",
        {"workers_1": service(1), "workers_2": service(2), baseline: sides[baseline]},
        args.rounds,
    )
    return result, {
        "label": label,
        "baseline": baseline,
        "sides": by_workers,
        "ratio_2_to_1": ratio(by_workers, "workers_2", "workers_1"),
        "ratio_1": ratio(by_workers, "workers_1", baseline),
        "ratio_2": ratio(by_workers, "workers_2", baseline),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {
        "args": vars(args),
        "code": code_version(),
        "load_before": load_average(),
        "cpu_pressure_before": cpu_pressure(),
        # Of `auditlog serve` (its default, or AUDITLOG_EVENT_LOOP) and of the echo server.
        "event_loop": service_event_loop(),
        "notes": [],
    }
    has_workers = "--workers" in serve_flags()
    data["server_has_workers_flag"] = has_workers
    workers = args.workers
    if workers is not None and not has_workers:
        data["notes"].append(
            f"--workers {workers} asked for, but this server has no --workers flag: one process."
        )
        workers = None
    compare_workers = args.compare_workers and has_workers
    if args.compare_workers and not has_workers:
        data["notes"].append("--compare-workers skipped: this server has no --workers flag.")
    paths: dict[str, Any] = {}
    by_workers: dict[str, Any] = {}
    with (
        database_process() as (uri, backend, db_pid),
        tempfile.TemporaryDirectory(prefix="auditlog-ingest-bench-") as tmp,
    ):
        data["backend"] = backend
        mongo: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
        bench = Bench(uri, db_pid, mongo, Path(tmp), args.seconds, args.warm_up)
        try:
            for name in args.paths:
                paths[name], compared = await run_path(bench, name, args, workers, compare_workers)
                if compared is not None:
                    by_workers[name] = compared
        finally:
            await mongo.close()
    data["paths"] = paths
    if by_workers:
        data["workers"] = by_workers
    data["load_after"] = load_average()
    data["cpu_pressure_after"] = cpu_pressure()
    return data


def before_run(earlier: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per path, the figures of an earlier run in the shape of BEFORE."""
    figures = {}
    for name, path in earlier["paths"].items():
        sides = path["sides"]
        figures[name] = {
            "service": sides["service"]["events_per_s"],
            "baseline": sides[path["baseline"]]["events_per_s"],
            "ratio": path["ratio"],
            "service_cpu_us": sides["service"]["cpu_us_per_event"]["service"],
        }
        if "ratio_events_only" in path:
            figures[name]["ratio_events_only"] = path["ratio_events_only"]
    return figures


# ---- report ------------------------------------------------------------------------------------


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} µs"


def before_cell(before: dict[str, float] | None) -> str:
    if before is None:
        return "n/a"
    text = f"{before['service']:,.0f} vs {before['baseline']:,.0f}: {before['ratio']:g}"
    if "ratio_events_only" in before:
        text += f" ({before['ratio_events_only']:g})"
    return text + f", {before['service_cpu_us']:,.0f} µs"


def main_row(path: dict[str, Any], with_before_run: bool) -> str:
    sides = path["sides"]
    service, baseline = sides["service"], sides[path["baseline"]]
    cpu = service["cpu_us_per_event"]
    db_service = us(cpu.get("database"))
    db_baseline = us(baseline["cpu_us_per_event"].get("database"))
    if path["baseline"] == "echo":
        base = f"bare grpc.aio echo: {rate(baseline['events_per_s'])}"
        service_cpu = (
            f"{us(cpu['service'])} (echo: {us(baseline['cpu_us_per_event'].get('service'))})"
        )
        database = db_service
    else:
        base = rate(baseline["events_per_s"])
        service_cpu = us(cpu["service"])
        database = f"{db_service} / {db_baseline}"
    ratio_text = f"**{path['ratio']:g}**"
    if "raw_events_only" in sides:
        only = sides["raw_events_only"]
        base += f" ({rate(only['events_per_s'])} event docs only)"
        ratio_text += f" ({path['ratio_events_only']:g})"
        database += f" ({us(only['cpu_us_per_event'].get('database'))})"
    earlier = f" {before_cell(path.get('before_run'))} |" if with_before_run else ""
    return (
        f"| {path['label']} | {rate(service['events_per_s'])} | {base} | {ratio_text} | "
        f"{service_cpu} | {database} | {before_cell(path['before'])} |{earlier}"
    )


def rounds_line(name: str, path: dict[str, Any]) -> str:
    parts = []
    for side, result in path["sides"].items():
        rates = ", ".join(f"{t['events_per_s']:,.0f}" for t in result["rounds"])
        flags = []
        if result["cut_rounds"]:
            flags.append(f"{result['cut_rounds']} cut short")
        if result["errors"]:
            flags.append(f"{result['errors']} errors")
        parts.append(f"{side} {rates}" + (f" ({', '.join(flags)})" if flags else ""))
    return f"- {name}: " + "; ".join(parts)


def workers_section(data: dict[str, Any]) -> list[str]:
    cpus = data["machine_cpus"]
    lines = [
        "## 1 worker vs 2",
        "",
        "`auditlog serve --workers 1` and `--workers 2` (a supervisor and its workers on one "
        "port), with the path's baseline, alternating in each round; service CPU counts every "
        "process of the server. The database ceiling is the events/s at which the database "
        f"alone would use all {cpus} cores at its CPU per event.",
        "",
        "| path | 1 worker | 2 workers | 2 / 1 | baseline | service / baseline, 1 / 2 workers "
        "| service CPU per event 1 / 2 | database CPU per event 1 / 2 | database ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for compared in data["workers"].values():
        sides = compared["sides"]
        one, two = sides["workers_1"], sides["workers_2"]
        base = sides[compared["baseline"]]
        db_us = two["cpu_us_per_event"].get("database")
        ceiling = rate(cpus * 1e6 / db_us) if db_us else "n/a"
        lines.append(
            f"| {compared['label']} | {rate(one['events_per_s'])} | {rate(two['events_per_s'])} "
            f"| **{compared['ratio_2_to_1']:g}** | {rate(base['events_per_s'])} | "
            f"{compared['ratio_1']:g} / {compared['ratio_2']:g} | "
            f"{us(one['cpu_us_per_event']['service'])} / "
            f"{us(two['cpu_us_per_event']['service'])} | "
            f"{us(one['cpu_us_per_event'].get('database'))} / {us(db_us)} | {ceiling} |"
        )
    lines += [
        "",
        *[rounds_line(name, compared) for name, compared in data["workers"].items()],
        "",
    ]
    return lines


def machine_us(side: dict[str, Any]) -> float:
    """CPU per event of the server, the database and the client together."""
    return sum(value or 0.0 for value in side["cpu_us_per_event"].values())


def cores_busy(side: dict[str, Any]) -> float:
    """How many of the machine's cores the side's processes kept busy over the window."""
    return machine_us(side) * side["events_per_s"] / 1e6


def unary_section(
    path: dict[str, Any], cpus: int | None, batch: dict[str, Any] | None
) -> list[str]:
    """What the bare echo's lead over the service is made of: answering in groups (the grouped
    echo) and the service's own work, with the database's, on the machine's cores."""
    sides = path["sides"]
    if "echo_grouped" not in sides:
        return []
    lines = [
        "## Unary: what the echo's lead is made of",
        "",
        "Not the goal's baseline: `echo_grouped` is the same echo with every call first "
        f"waiting for a timer it shares with the others ({GROUPED_ECHO_WAIT_MS:g} ms, the "
        "service's shortest group-commit wait), then answered as the bare echo answers, with "
        "no work and no database. CPU per call of each process over the window; the machine's "
        "is their sum, and cores busy is that times the calls a second.",
        "",
        "| side | calls/s | server | database | client | machine | cores busy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("service", "echo", "echo_grouped"):
        side = sides[name]
        cpu = side["cpu_us_per_event"]
        lines.append(
            f"| {name} | {rate(side['events_per_s'])} | {us(cpu.get('service'))} | "
            f"{us(cpu.get('database'))} | {us(cpu.get('client'))} | {us(machine_us(side))} | "
            f"{cores_busy(side):.2f} |"
        )

    def bound(database: float) -> float:
        return machine_us(sides["echo"]) / (machine_us(sides["echo_grouped"]) + database)

    database = sides["service"]["cpu_us_per_event"].get("database") or 0.0
    text = (
        f"A service whose calls cost no more than the grouped echo's, and whose database used "
        f"what this one's did ({us(database)} a call), would reach about "
        f"**{bound(database):.2f}** of the bare echo: the echo's machine CPU per call over "
        f"that service's, as long as both sides keep the machine as busy (the bare echo's side "
        f"keeps {cores_busy(sides['echo']):.2f} of its "
        f"{cpus} cores busy)."
    )
    batch_database = (batch or {}).get("sides", {}).get("service", {}).get("cpu_us_per_event")
    batch_us = (batch_database or {}).get("database")
    if batch_us:
        # Part of what the database spends on a group is per command, not per event: in
        # larger groups than the service's it would spend less per call, down to this.
        text += (
            f" With the database's CPU per event of the batch path's 1,000-event groups "
            f"({us(batch_us)}), about **{bound(batch_us):.2f}**."
        )
    text += " The service's own work per call has to fit in what is left above the goal."
    return [*lines, "", text, ""]


def markdown(data: dict[str, Any]) -> str:
    args = data["args"]
    earlier = data.get("before_run")
    earlier_header = (
        f" before, this bench (`{BEFORE_RUN}.md`, code {earlier['code'][:12]}) |" if earlier else ""
    )
    lines = [
        "# Ingest against its baselines (issue 11)",
        "",
        f"{data['backend']}, {data['machine_cpus']} CPUs, write concern 1, {args['rounds']} "
        f"rounds of {args['seconds']:g} s per side, alternating, medians; event loop of the "
        f"service and the echo server: {data.get('event_loop', 'asyncio')}; code "
        f"{data['code'][:12]}; load average before {data['load_before']}, after "
        f"{data['load_after']}. Command: `{data['command']}`.",
        "",
        "| path | service | raw `insert_many` of the same documents | ratio (goal >= 0.8) | "
        "service CPU per event (batch goal <= 20 µs) | database CPU per event: service / "
        "baseline | before (issue 11): service vs baseline: ratio, CPU |" + earlier_header,
        "|---|---:|---:|---:|---:|---:|---|" + "---|" * bool(earlier),
        *[main_row(path, bool(earlier)) for path in data["paths"].values()],
        "",
        "Rounds (events/s):",
        "",
        *[rounds_line(name, path) for name, path in data["paths"].items()],
        "",
        "Method: each side's turn writes into a database of its own (a fresh `auditlog serve "
        "--write-concern 1` for the service), after an unmeasured warm-up. Callers send requests "
        "built before the window (general or co-browsing events of four kinds each, client-chosen "
        "ids, one connection per batch caller or stream, 8 for the 64 unary callers; a path's "
        f"streams keep at most {STREAM_IN_FLIGHT:,} events unanswered together, as many as the "
        "raw side's callers have in flight: 4,000 for one stream, the SDK's default for one, "
        "1,000 each for four; the SDK's EventStream, which keeps 4,000 unanswered by default, "
        "makes its own messages of what is ready, up to 1,000 events). The "
        "raw baseline inserts the documents the service's conversion makes for the same events "
        "(with the ledger's outbox id; co-browsing ones in their slots, each after its id claim, "
        "as the service writes them), 1,000 events per `insert_many(ordered=False)`, 4 "
        "concurrent callers; it writes neither the ledger's outboxes and commits nor the "
        "sequencer's blocks, which the service does. A window ends with the answer to the last "
        "request sent before its deadline (`cut short`: earlier, because a caller had sent "
        "everything it had; raise --max-rate). CPU per event is CPU time over the window "
        "divided by the events stored in it; the client (this process) shares the machine.",
        "",
    ]
    if "unary" in data["paths"]:
        paths = data["paths"]
        lines += unary_section(paths["unary"], data.get("machine_cpus"), paths.get("batch-general"))
    if "workers" in data:
        lines += workers_section(data)
    if data["notes"]:
        lines += ["## Notes", "", *[f"- {note}" for note in data["notes"]], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--paths",
        type=lambda text: text.split(","),
        default=list(PATHS),
        help=f"comma-separated, of {','.join(PATHS)} (default all)",
    )
    parser.add_argument("--workers", type=int, help="auditlog serve --workers N (if it has it)")
    parser.add_argument(
        "--compare-workers",
        action="store_true",
        help=f"also --workers 1 vs 2 on {' and '.join(WORKER_PATHS)}",
    )
    parser.add_argument(
        "--stream-batch",
        type=int,
        default=1,
        help="events per StreamEvents message (default 1; more: a batch, servers since 1983d45)",
    )
    parser.add_argument("--warm-up", type=float, default=3.0, help="unmeasured seconds per turn")
    parser.add_argument(
        "--result-view",
        choices=list(RESULT_VIEWS),
        default="default",
        help="what LogEvents results carry: the server's default (whole events), or acks",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=MAX_RATE,
        help="events/s the prepared requests suffice for over --seconds",
    )
    parser.add_argument("--output", default="ingest", help="bench/results/<output>.json/.md")
    parser.add_argument("--note", action="append", default=[], help="a line for the Notes")
    parser.add_argument("--echo-server", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--echo-wait-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        # On the event loop the service's processes run on (the same environment): the ratio
        # is then the service's own cost, not the loop's.
        run_on_loop(service_event_loop(), serve_echo(args.echo_server, args.echo_wait_ms))
        return
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}; choose from {','.join(PATHS)}")
    data = asyncio.run(run(args))
    earlier = RESULTS / f"{BEFORE_RUN}.json"
    if args.output != BEFORE_RUN and earlier.exists():
        earlier_data = json.loads(earlier.read_text())
        data["before_run"] = {"code": earlier_data["code"], "load": earlier_data["load_before"]}
        for name, figures in before_run(earlier_data).items():
            if name in data["paths"]:
                data["paths"][name]["before_run"] = figures
    data["machine_cpus"] = os.cpu_count()
    data["command"] = " ".join(["python -m bench.ingest", *sys.argv[1:]])
    data["notes"] += args.note
    write_result(args.output, data, markdown(data))


if __name__ == "__main__":
    main()
