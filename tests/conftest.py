"""Shared fixtures: one real database per test session, a real server per test on port 0.

The database is FerretDB (started here, in a temporary folder) unless MONGODB_URI points at a
MongoDB server. Each test gets its own database name, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from auditlog import AuditLogClient
from auditlog.v1 import service_pb2_grpc
from auditlog_service.config import Settings
from auditlog_service.devdb import FerretDB, free_port
from auditlog_service.server import RunningServer, start_server

USING_FERRETDB = not os.environ.get("MONGODB_URI")


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    db = FerretDB(Path(tmp_path_factory.mktemp("ferretdb")), free_port())
    db.start()
    try:
        yield db.uri
    finally:
        db.stop()


@pytest.fixture
def database_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


def settings_for_test(mongodb_uri: str, database_name: str, **changes: object) -> Settings:
    base = Settings(
        listen="127.0.0.1:0",
        mongodb_uri=mongodb_uri,
        database=database_name,
        write_concern="majority" if not USING_FERRETDB else "1",
        mongodb_timeout_ms=1500,
        health_check_interval_s=0.2,
        shutdown_grace_s=1.0,
    )
    return Settings(**{**base.__dict__, **changes})  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def server(mongodb_uri: str, database_name: str) -> AsyncIterator[RunningServer]:
    running = await start_server(settings_for_test(mongodb_uri, database_name))
    await running.ready()
    try:
        yield running
    finally:
        await running.stop(grace_s=0.5)


@pytest_asyncio.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> service_pb2_grpc.AuditLogServiceStub:
    return service_pb2_grpc.AuditLogServiceStub(channel)


@pytest_asyncio.fixture
async def client(server: RunningServer) -> AsyncIterator[AuditLogClient]:
    async with AuditLogClient(f"127.0.0.1:{server.port}") as sdk:
        yield sdk


@pytest_asyncio.fixture
async def db(mongodb_uri: str, database_name: str) -> AsyncIterator[object]:
    """Direct access to the test's database, to check what was (not) stored."""
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        yield mongo.get_database(database_name)
    finally:
        await mongo.close()


# Event documents only: the events collection also holds the id claims of co-browsing events.
EVENTS = {"type": {"$exists": True}}
ID_CLAIMS = {"slot": {"$exists": True}}
