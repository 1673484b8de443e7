"""Prometheus metrics: what the service records (cheaply, on the hot path) and the endpoint."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server
from pymongo import monitoring

from .config import TlsFiles
from .event_types import REGISTRY as EVENT_TYPES
from .storage import EventWrite, Outcome, Stored

log = logging.getLogger(__name__)

# Unary calls take milliseconds; streams (tails, exports, ingest streams) minutes or hours,
# so the last buckets only say "a stream that long".
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
GROUP_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000)
TICK_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RPCS = Counter(
    "auditlog_rpcs",
    "RPCs finished, by method, status code and transport (grpc: the gRPC port; "
    "http-connect, http-grpc-web, http-grpc: the HTTP port)",
    ["method", "code", "transport"],
)
RPC_SECONDS = Histogram(
    "auditlog_rpc_duration_seconds",
    "How long RPCs took, from the token check to the last response",
    ["method", "code", "transport"],
    buckets=RPC_BUCKETS,
)
EVENTS_STORED = Counter(
    "auditlog_events_stored",
    "Events newly stored (not idempotent retries), by seed type string",
    ["type"],
)
GROUP_EVENTS = Histogram(
    "auditlog_group_commit_events",
    "Events per group commit (one group: one write of many callers' events)",
    buckets=GROUP_SIZE_BUCKETS,
)
GROUP_SECONDS = Histogram(
    "auditlog_group_commit_duration_seconds",
    "How long a group's write took, every database call of it included (slot races, ledger)",
    buckets=DB_BUCKETS,
)
GROUP_WAIT = Gauge(
    "auditlog_group_commit_wait_seconds",
    "How long a group of small calls waits for more before its write, as tuned under load "
    "(the shortest: AUDITLOG_GROUP_COMMIT_MAX_DELAY_MS)",
    multiprocess_mode="liveall",
)
DB_SECONDS = Histogram(
    "auditlog_db_command_duration_seconds",
    "Database command latency as the driver saw it, by command name and outcome",
    ["command", "outcome"],
    buckets=DB_BUCKETS,
)
OPEN_TAILS = Gauge(
    "auditlog_open_tails",
    "Tails being served by this process (session: TailSession; tenant: TailEvents)",
    ["kind"],
    # With several workers: one series per live worker (a pid label), gone when it exits.
    multiprocess_mode="liveall",
)
SLOW_CONSUMER_ENDINGS = Counter(
    "auditlog_slow_consumer_endings",
    "Server streams ended RESOURCE_EXHAUSTED because the client stopped reading",
    ["method"],
)
TICK_LAG = Histogram(
    "auditlog_tick_lag_seconds",
    "From a session advance in another process to this process reading its tick (wall clocks: "
    "across machines, their skew counts too)",
    buckets=TICK_LAG_BUCKETS,
)

# Recording is off until a server with a metrics endpoint (or a worker of one) turns it on: a
# process without an endpoint pays one flag check per hook.
_enabled = False

# `.labels()` takes a lock and builds a key; the children of the label values seen so far are
# kept here, so that a hot-path observation is one dict lookup.
_rpc_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_type_children = {
    spec.type_string: EVENTS_STORED.labels(spec.type_string) for spec in EVENT_TYPES.all()
}
_tail_children = {kind: OPEN_TAILS.labels(kind) for kind in ("session", "tenant")}
_db_children: dict[tuple[str, str], Any] = {}


def enable() -> None:
    global _enabled
    _enabled = True


def rpc_finished(method: str, code: str, protocol: str, seconds: float) -> None:
    """One finished RPC; `protocol` is the HTTP port's (connect, grpc-web, grpc), or "" for a
    call on the gRPC port."""
    if not _enabled:
        return
    key = (method, code, protocol)
    children = _rpc_children.get(key)
    if children is None:
        transport = f"http-{protocol}" if protocol else "grpc"
        children = (
            RPCS.labels(method, code, transport),
            RPC_SECONDS.labels(method, code, transport),
        )
        _rpc_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


GroupWrite = Callable[[list[EventWrite]], Awaitable[list[Outcome]]]


def _new_type(write: EventWrite, outcome: Outcome) -> str | None:
    """The type of an event this write newly stored; None for a retry or a failure."""
    if isinstance(outcome, Stored) and not outcome.already_stored:
        type_string: str = write.doc["type"]
        return type_string
    return None


def observed_group_write(write: GroupWrite, wait_s: Callable[[], float]) -> GroupWrite:
    """`write` (the group committer's), recording each group's size, its duration and the
    events it stored, by type, and the committer's wait (`wait_s`) as it is then."""

    async def observed(writes: list[EventWrite]) -> list[Outcome]:
        if not _enabled:
            return await write(writes)
        started = time.perf_counter()
        outcomes = await write(writes)
        GROUP_SECONDS.observe(time.perf_counter() - started)
        GROUP_EVENTS.observe(len(writes))
        GROUP_WAIT.set(wait_s())
        # One increment per type of the group, not one per event.
        stored = Tally(map(_new_type, writes, outcomes))
        for type_string, count in stored.items():
            if type_string is not None:
                _type_children[type_string].inc(count)
        return outcomes

    return observed


def tail_opened(kind: str) -> None:
    if _enabled:
        _tail_children[kind].inc()


def tail_closed(kind: str) -> None:
    if _enabled:
        _tail_children[kind].dec()


def slow_consumer_ended(method: str) -> None:
    if _enabled:
        SLOW_CONSUMER_ENDINGS.labels(method).inc()


def tick_read(lag_s: float) -> None:
    if _enabled:
        TICK_LAG.observe(max(lag_s, 0.0))


class DatabaseCommandTimer(monitoring.CommandListener):
    """Every database command's latency, from the driver's own timing (attached to a client)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._observe(event.command_name, "ok", event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._observe(event.command_name, "error", event.duration_micros)

    @staticmethod
    def _observe(command: str, outcome: str, micros: int) -> None:
        if not _enabled:
            return
        key = (command, outcome)
        child = _db_children.get(key)
        if child is None:
            child = _db_children[key] = DB_SECONDS.labels(command, outcome)
        child.observe(micros / 1e6)


# ---- the endpoint ------------------------------------------------------------------------------


class MetricsEndpoint:
    """/metrics over HTTP in a thread of its own: a scrape never waits for the event loop."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self.port: int = server.server_port

    async def stop(self) -> None:
        # shutdown() waits for the serving thread's next poll (up to half a second).
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def start_endpoint(
    listen: str, *, tls: TlsFiles | None = None, registry: CollectorRegistry = REGISTRY
) -> MetricsEndpoint:
    """Serves `registry` (this process's metrics by default) at http(s)://listen/metrics."""
    host, port = split_listen(listen)
    server, _ = _start_http_server(
        port,
        addr=host,
        registry=registry,
        certfile=tls.cert if tls else None,
        keyfile=tls.key if tls else None,
        client_cafile=(tls.client_ca or None) if tls else None,
        client_auth_required=bool(tls and tls.client_ca),
    )
    endpoint = MetricsEndpoint(server)
    log.info("metrics on http%s://%s:%d/metrics", "s" if tls else "", host, endpoint.port)
    return endpoint
