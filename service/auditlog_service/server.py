"""The one place that wires the service: settings, database, servicers, health, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from auditlog.v1 import service_pb2

from .api import AuditLogServicer, service_handler
from .changefeed import TickReader, TickWriter
from .config import Settings
from .convert import Document, EventPreparer
from .errors import AuditLogError, DatabaseUnavailable
from .ingest import EventWriter
from .storage import EventRepository
from .tail import TailHub, TailSettings
from .tokens import TokenSigner

log = logging.getLogger(__name__)

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
    health_client: AsyncMongoClient[Document]
    _watchdog: asyncio.Task[None]
    _stopping: bool = False

    async def ready(self) -> None:
        """Wait until the database answered and the indexes exist."""
        await self.serving.wait()

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING first, let calls finish, then close the database."""
        if self._stopping:
            return
        self._stopping = True
        self._watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watchdog
        await self.health.enter_graceful_shutdown()
        # Tails never finish by themselves: end them first, each with UNAVAILABLE and a cursor.
        await self.hub.close()
        await self.server.stop(self.settings.shutdown_grace_s if grace_s is None else grace_s)
        await self.writer.drain()
        await self.tick_reader.close()
        await self.tick_writer.close()
        await self.client.close()
        await self.health_client.close()

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


async def start_server(settings: Settings) -> RunningServer:
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongodb_uri,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
        connectTimeoutMS=settings.mongodb_timeout_ms,
        socketTimeoutMS=max(10_000, settings.mongodb_timeout_ms * 4),
        retryWrites=True,
    )
    repository = EventRepository(client, settings.database, settings.write_concern_w)
    writer = EventWriter(
        repository,
        EventPreparer(settings.token_secret),
        max_group=settings.group_commit_max_events,
        max_delay_s=settings.group_commit_max_delay_ms / 1000,
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    signer = TokenSigner(settings.token_secret)
    hub = TailHub(
        repository,
        signer,
        TailSettings(
            max_tails=settings.max_tails,
            heartbeat_interval_s=settings.tail_heartbeat_interval_s,
            slow_consumer_timeout_s=settings.tail_slow_consumer_timeout_s,
            safety_probe_interval_s=settings.tail_safety_probe_interval_s,
        ),
    )
    database = client.get_database(settings.database)
    tick_writer = TickWriter(database)
    tick_reader = TickReader(database, hub.advanced)

    def session_advanced(tenant_id: str, session_id: str, head: int) -> None:
        hub.advanced(tenant_id, session_id, head)
        tick_writer.note(tenant_id, session_id, head)

    repository.on_session_advanced = session_advanced
    servicer = AuditLogServicer(
        repository, writer, settings.limits, signer, hub, max_read_time_s=settings.max_read_time_s
    )
    server.add_generic_rpc_handlers((service_handler(servicer),))
    health_servicer = HealthServicer()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, (SERVICE_NAME, health.SERVICE_NAME))
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    await server.start()
    hub.start()
    tick_writer.start()
    tick_reader.start()
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
        health_client,
        watchdog,
    )


async def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    running = await start_server(settings)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    await stop_requested.wait()
    log.info("shutting down")
    await running.stop()
