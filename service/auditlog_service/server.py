"""The one place that wires the service: settings, database, servicers, health, signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import PyMongoError

from auditlog.v1 import service_pb2

from . import loop_idle, metrics
from .access import CallGuard, TenantLimits
from .auth import AuthSettings, TokenVerifier
from .changefeed import TickReader, TickWriter
from .config import Settings, check_settings
from .connect_transport import (
    BrowserApp,
    BrowserServer,
    ConnectTransport,
    default_console_dir,
)
from .convert import Document, EventPreparer
from .devkeys import DEV_AUDIENCE, DEV_ISSUER, ensure_dev_keys
from .errors import AuditLogError, DatabaseUnavailable
from .grpc_transport import GrpcTransport
from .ingest import EventWriter
from .ledger import LedgerSigner, LedgerStore, LedgerWorker, Sequencer
from .metrics import MetricsEndpoint
from .retention import RetentionJob
from .rpcs import AuditLogRpcs
from .storage import EventRepository
from .tail import TailHub, TailSettings
from .tokens import TokenSigner

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a stop may run past its grace period before the process ends without it.
STOP_OVERRUN_S = 20.0
# Objects allocated (net of those freed) between young collections of the garbage collector.
YOUNG_COLLECTION_THRESHOLD = 50_000
SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["AuditLogService"].full_name


@dataclass
class RunningServer:
    """A started server and what it owns, for tests and the CLI."""

    server: grpc.aio.Server
    port: int
    settings: Settings
    client: AsyncMongoClient[Document]
    repository: EventRepository
    writer: EventWriter
    health: HealthServicer
    serving: asyncio.Event
    hub: TailHub
    tick_writer: TickWriter
    tick_reader: TickReader
    rpcs: AuditLogRpcs
    sequencer: Sequencer
    ledger_worker: LedgerWorker
    retention: RetentionJob
    health_client: AsyncMongoClient[Document]
    _watchdog: asyncio.Task[None]
    # The HTTP port for browsers (Connect, gRPC-Web, gRPC; the console): 0 and None when off.
    http_port: int = 0
    http: BrowserServer | None = None
    # The Prometheus endpoint of this process: 0 and None when off, or served by a supervisor.
    metrics_port: int = 0
    metrics_endpoint: MetricsEndpoint | None = None
    _stopping: bool = False

    async def ready(self) -> None:
        """Wait until the database answered and the indexes exist."""
        await self.serving.wait()

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING first, let calls finish, then close the database."""
        if self._stopping:
            return
        self._stopping = True
        # pymongo turns a CancelledError that lands in some socket operations into AutoReconnect,
        # which the watchdog takes for an outage and pings again (a stop hung on that ping):
        # cancel until the task has ended.
        while not self._watchdog.done():
            self._watchdog.cancel()
            await asyncio.wait({self._watchdog}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            await self._watchdog
        await self.health.enter_graceful_shutdown()
        # Tails and ingest streams never finish by themselves: end them first, tails with
        # UNAVAILABLE and a cursor, ingest streams UNAVAILABLE once what they read is answered.
        await self.hub.close()
        if self.rpcs.ledger_watches is not None:
            await self.rpcs.ledger_watches.close()
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        self.rpcs.stop_ingest(drain_s=grace / 2)
        # Both ports stop together: calls in flight get the same grace on either.
        stops = [self.server.stop(grace)]
        if self.http is not None:
            stops.append(self.http.stop(grace))
        await asyncio.gather(*stops)
        await self.writer.drain()
        await self.ledger_worker.close()
        await self.retention.close()
        await self.tick_reader.close()
        await self.tick_writer.close()
        await self.client.close()
        await self.health_client.close()
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.stop()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server, services: tuple[str, ...]) -> None:
    """Server reflection under both names: grpc.reflection.v1 (what current tools ask first)
    and v1alpha. grpcio-reflection implements only v1alpha, whose messages are the same on the
    wire (same fields and numbers), so one servicer answers both.
    """
    names = (*services, reflection.SERVICE_NAME, REFLECTION_V1)
    servicer = reflection_aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )


async def _watch_database(
    repository: EventRepository,
    health_client: AsyncMongoClient[Document],
    health_servicer: HealthServicer,
    settings: Settings,
    serving_event: asyncio.Event,
) -> None:
    """Keeps the health status in step with the database; creates indexes once it is reachable.

    Health pings go through a client of their own: with every pooled connection of the service
    busy with slow queries, a ping queued behind them would report a healthy database as down.
    """
    indexed = False
    serving: bool | None = None
    while True:
        try:
            try:
                await health_client.admin.command("ping")
            except PyMongoError as exc:
                raise DatabaseUnavailable(type(exc).__name__) from exc
            if not indexed:
                await repository.detect_backend()
                await repository.ensure_indexes()
                indexed = True
            ok = True
        except AuditLogError as exc:
            ok = False
            if serving is not False:
                log.warning("database unreachable: %s", exc.message)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        if ok != serving:
            for name in ("", SERVICE_NAME):
                await health_servicer.set(name, status)
            serving = ok
            if ok:
                serving_event.set()
            else:
                serving_event.clear()
            log.info("health: %s", "SERVING" if ok else "NOT_SERVING")
        await asyncio.sleep(settings.health_check_interval_s)


def _listen(server: grpc.aio.Server, settings: Settings) -> int:
    """Adds the listening port: TLS (mTLS with a client CA) or, where allowed, plaintext."""
    if settings.tls:
        client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
        credentials = grpc.ssl_server_credentials(
            [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        port = server.add_secure_port(settings.listen, credentials)
        mode = "TLS with client certificates (mTLS)" if client_ca else "TLS"
    else:
        port = server.add_insecure_port(settings.listen)
        mode = "PLAINTEXT" + (" (--insecure)" if settings.insecure else " (loopback only)")
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    log.info("listening on %s, %s", settings.listen.rsplit(":", 1)[0] + f":{port}", mode)
    return port


def resolve_dev_mode(settings: Settings) -> Settings:
    """In dev mode, the secrets and JWT key that are not given come from the dev folder."""
    if not settings.dev:
        return settings
    keys = ensure_dev_keys(Path(settings.dev_dir))
    log.warning("DEV MODE: secrets and the JWT key come from %s; never use this in production",
                settings.dev_dir)  # fmt: skip
    return replace(
        settings,
        token_secret=settings.token_secret or keys.token_secret,
        jwks_file=settings.jwks_file or (str(keys.jwks_file) if not settings.jwks_url else ""),
        jwt_issuer=settings.jwt_issuer or DEV_ISSUER,
        jwt_audience=settings.jwt_audience or DEV_AUDIENCE,
        checkpoint_key_file=settings.checkpoint_key_file or str(keys.checkpoint_key_file),
    )


async def start_server(settings: Settings, *, worker: int | None = None) -> RunningServer:
    """Starts serving; `worker` is this process's number under a supervisor (workers.py): its
    ports are shared with the other workers (SO_REUSEPORT) and the supervisor serves metrics."""
    settings = resolve_dev_mode(settings)
    check_settings(settings)
    listeners: list[monitoring.CommandListener] = []
    if settings.metrics_listen:
        metrics.enable()
        listeners.append(metrics.DatabaseCommandTimer())
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongodb_uri,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
        # Also the timeout of PyMongo's heartbeats, and a heartbeat that times out interrupts
        # every operation in flight: at 3 s, a database pausing for a few seconds (a busy
        # machine) failed the writes in flight with UNAVAILABLE; a dead one refuses
        # connections at once, and serverSelectionTimeoutMS still bounds the wait for it.
        connectTimeoutMS=max(10_000, settings.mongodb_timeout_ms),
        socketTimeoutMS=max(10_000, settings.mongodb_timeout_ms * 4),
        retryWrites=True,
        event_listeners=listeners,
    )
    repository = EventRepository(client, settings.database, settings.write_concern_w)
    writer = EventWriter(
        repository,
        EventPreparer(settings.token_secret),
        max_group=settings.group_commit_max_events,
        max_delay_s=settings.group_commit_max_delay_ms / 1000,
        longest_delay_s=settings.group_commit_longest_delay_ms / 1000,
        max_in_flight=settings.group_commit_in_flight,
        parallel_min_items=settings.group_commit_parallel_min_events,
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            # Only workers share a port: a lone server on a taken port must fail, loudly.
            ("grpc.so_reuseport", 0 if worker is None else 1),
        ]
    )
    token_signer = TokenSigner(settings.token_secret)
    tail_settings = TailSettings(
        max_tails=settings.max_tails,
        heartbeat_interval_s=settings.tail_heartbeat_interval_s,
        slow_consumer_timeout_s=settings.tail_slow_consumer_timeout_s,
        safety_probe_interval_s=settings.tail_safety_probe_interval_s,
    )
    hub = TailHub(repository, token_signer, tail_settings)
    database = client.get_database(settings.database)
    tick_writer = TickWriter(database)

    def tick_seen(tenant_id: str, session_id: str, head: int) -> None:
        hub.advanced(tenant_id, session_id, head)
        # Another replica wrote this far: aim this replica's next write past it, not at it.
        repository.remember_head(tenant_id, session_id, head)

    tick_reader = TickReader(
        database,
        tick_seen,
        process_gone=hub.process_gone,
        own_process_id=tick_writer.process_id,
        listening=hub.has_watches,
    )

    def session_advanced(tenant_id: str, session_id: str, head: int) -> None:
        hub.advanced(tenant_id, session_id, head)
        tick_writer.note(tenant_id, session_id, head)

    repository.on_session_advanced = session_advanced
    signer = LedgerSigner.from_file(
        settings.checkpoint_key_file, settings.checkpoint_public_keys_file
    )
    ledger_store = LedgerStore(database.get_collection("ledger"), repository.events)
    if settings.ledger:
        repository.attach_ledger(ledger_store, tick_writer.process_id)
    sequencer = Sequencer(
        ledger_store,
        signer,
        checkpoint_every=settings.checkpoint_every_events,
        checkpoint_interval_s=settings.checkpoint_interval_s,
        resolve_orphan=repository.resolve_outbox,
        process_live=tick_reader.is_live,
    )
    tick_reader.on_liveness_change = sequencer.liveness_changed
    repository.before_commit = tick_writer.fresh_beat
    ledger_worker = LedgerWorker(sequencer, repository.recently_written)
    repository.on_committed = ledger_worker.committed
    guard = CallGuard(
        TokenVerifier(
            AuthSettings(
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                jwks_file=settings.jwks_file,
                jwks_url=settings.jwks_url,
                leeway_s=settings.jwt_leeway_s,
            )
        ),
        TenantLimits(
            rpcs_per_s=settings.tenant_rpcs_per_s,
            rpc_burst=settings.tenant_rpc_burst,
            events_per_s=settings.tenant_events_per_s,
            event_burst=settings.tenant_event_burst,
            max_tails=settings.tenant_max_tails,
        ),
        access_log=settings.access_log,
    )
    rpcs = AuditLogRpcs(
        repository=repository,
        writer=writer,
        limits=settings.limits,
        signer=token_signer,
        hub=hub,
        guard=guard,
        max_read_time_s=settings.max_read_time_s,
        sequencer=sequencer,
        list_from=settings.list_from,
        tail_settings=tail_settings,
        default_retention_days=settings.retention_days,
    )
    retention = RetentionJob(
        sequencer,
        repository,
        signer,
        default_days=settings.retention_days,
        interval_s=settings.retention_interval_s,
    )
    transport = GrpcTransport(
        rpcs, guard, slow_consumer_timeout_s=settings.tail_slow_consumer_timeout_s
    )
    server.add_generic_rpc_handlers((transport.handler(),))
    health_servicer = HealthServicer()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection_enabled:
        enable_reflection(server, (SERVICE_NAME, health.SERVICE_NAME))
    port = _listen(server, settings)
    http = _browser_server(rpcs, guard, settings)
    http_port = http.bind(reuse_port=worker is not None) if http is not None else 0
    endpoint = (
        metrics.start_endpoint(settings.metrics_listen, tls=settings.tls_files)
        if settings.metrics_listen and worker is None
        else None
    )
    await server.start()
    if http is not None:
        http.start()
    hub.start()
    tick_writer.start()
    tick_reader.start()
    if settings.ledger:
        ledger_worker.start()
        if rpcs.ledger_watches is not None:
            rpcs.ledger_watches.start()
        retention.start()
    serving = asyncio.Event()
    health_client: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongodb_uri,
        maxPoolSize=1,
        serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
        connectTimeoutMS=settings.mongodb_timeout_ms,
        socketTimeoutMS=settings.mongodb_timeout_ms,
    )
    watchdog = asyncio.create_task(
        _watch_database(repository, health_client, health_servicer, settings, serving)
    )
    log.info("auditlog serving on port %d (database %s)", port, settings.database)
    if http is not None:
        log.info(
            "HTTP port %d: Connect, gRPC-Web, gRPC and the web console (%s)",
            http_port,
            "TLS" if settings.tls else "plaintext",
        )
    return RunningServer(
        server,
        port,
        settings,
        client,
        repository,
        writer,
        health_servicer,
        serving,
        hub,
        tick_writer,
        tick_reader,
        rpcs,
        sequencer,
        ledger_worker,
        retention,
        health_client,
        watchdog,
        http_port,
        http,
        endpoint.port if endpoint is not None else 0,
        endpoint,
    )


def _browser_server(
    rpcs: AuditLogRpcs, guard: CallGuard, settings: Settings
) -> BrowserServer | None:
    """The HTTP port (unless switched off): the same RPCs, guard and limits as the gRPC port."""
    if not settings.http_listen:
        return None
    transport = ConnectTransport(rpcs, guard, read_max_bytes=settings.max_receive_message_bytes)
    app = BrowserApp(
        transport.app,
        console_dir=Path(settings.console_dir) if settings.console_dir else default_console_dir(),
        cors_origins=settings.cors_origin_list,
        slow_consumer_timeout_s=settings.tail_slow_consumer_timeout_s,
        drain_limit_bytes=settings.max_receive_message_bytes,
    )
    return BrowserServer(app, settings.http_listen, settings.tls_files)


def run_on_loop(event_loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Runs `main` to its end on the named event loop: "asyncio" or "uvloop"."""
    if event_loop == "uvloop":
        import uvloop  # only where chosen: a dependency the rest of the package does without

        return uvloop.run(main)
    # asyncio's own loop, on a selector that tells the group commit's tuner how idle it is.
    return loop_idle.run(main)


async def serve(
    settings: Settings, *, worker: int | None = None, supervisor_fd: int | None = None
) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully. A worker also stops when its
    supervisor is gone: `supervisor_fd` is the read end of a pipe only the supervisor writes
    to, which reads as EOF once it has exited, however it ended."""
    running = await start_server(settings, worker=worker)
    # What start-up built lives as long as the process; frozen, the collector stops walking it
    # on every full collection (measured on the batch path: server CPU per event 112-117 ->
    # 99-102 us; a higher young-generation threshold on top made no difference beyond noise).
    gc.freeze()
    # A young generation of 50,000 objects, not 700: an export or a verify holds thousands of
    # decoded documents and messages in flight, which survived young collections and made every
    # older one walk them (verify of 100,000 events, 3 runs: 1.0-1.6 s of collections, 17-18 %
    # of the server's time; then 0.02-0.04 s, and 16,300-18,000 -> 21,400-24,900 events/s). The
    # batch ingest path measured the same either way (78 and 79 us per event).
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("event loop: %s.%s", type(loop).__module__, type(loop).__name__)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    if supervisor_fd is not None:

        def supervisor_gone() -> None:
            loop.remove_reader(supervisor_fd)
            log.warning("the supervisor is gone; stopping")
            stop_requested.set()

        loop.add_reader(supervisor_fd, supervisor_gone)
    await stop_requested.wait()
    log.info("shutting down")
    stopping = asyncio.create_task(running.stop())
    bound_s = settings.shutdown_grace_s + STOP_OVERRUN_S
    done, _ = await asyncio.wait([stopping], timeout=bound_s)
    if not done:
        # Every acknowledged event is in the database already: a stop that hangs only delays
        # a restart, so it ends here, with where each task waits, for the next look.
        for task in asyncio.all_tasks():
            log.warning(
                "stop hung %gs; %s: %s", bound_s, task.get_name(), " -> ".join(await_chain(task))
            )
        logging.shutdown()
        os._exit(0)
    stopping.result()


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a task waits, through every coroutine it awaits (a task's own stack shows only its
    outermost coroutine)."""
    chain: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = next(
            (
                getattr(awaited, a)
                for a in ("cr_frame", "ag_frame", "gi_frame")
                if hasattr(awaited, a)
            ),
            None,
        )
        if frame is None:
            chain.append(repr(awaited)[:120])
            break
        code = frame.f_code
        chain.append(f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})")
        awaited = next(
            (
                getattr(awaited, a)
                for a in ("cr_await", "ag_await", "gi_yieldfrom")
                if hasattr(awaited, a)
            ),
            None,
        )
    return chain
