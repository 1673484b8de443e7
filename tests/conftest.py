"""Shared fixtures: one real database per test session, a real server per test on port 0.

The database is FerretDB (started here, in a temporary folder) unless MONGODB_URI points at a
MongoDB server. Each test gets its own database name, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from auditlog import AuditLogClient, bearer_interceptors
from auditlog.v1 import audit_event_pb2, service_pb2_grpc
from auditlog_service.config import Settings
from auditlog_service.devdb import FerretDB, free_port
from auditlog_service.devkeys import DEV_AUDIENCE, DEV_ISSUER, ensure_dev_keys
from auditlog_service.server import RunningServer, await_chain, start_server

USING_FERRETDB = not os.environ.get("MONGODB_URI")

# The keys of every test server: tokens below are signed with them, servers trust their JWKS.
# One folder per test process, by name: pytest may import this module twice (as a plugin and
# from test modules), and both must sign with the same key.
_KEYS_DIR = Path(tempfile.gettempdir()) / f"auditlog-test-keys-{os.getpid()}"
TEST_KEYS = ensure_dev_keys(_KEYS_DIR)
atexit.register(shutil.rmtree, _KEYS_DIR, ignore_errors=True)
ALL_SCOPES = ["events:write", "events:read", "sessions:tail", "events:export", "tenant:admin"]


def token(tenant: str = "*", scopes: list[str] | None = None, **claims: Any) -> str:
    """A token the test servers accept: a platform token with every scope by default."""
    return TEST_KEYS.mint(tenant, ALL_SCOPES if scopes is None else scopes, **claims)


def sdk(address: str, *, tenant: str = "*", **options: Any) -> AuditLogClient:
    """An SDK client with a test token (a platform token by default)."""
    return AuditLogClient(address, token=token(tenant), **options)


def authed_channel(address: str, *, tenant: str = "*") -> grpc.aio.Channel:
    """A raw channel whose calls carry a test token."""
    return grpc.aio.insecure_channel(address, interceptors=bearer_interceptors(token(tenant)))


def unledgered(event: audit_event_pb2.AuditEvent) -> audit_event_pb2.AuditEvent:
    """The event without its ledger position, which reads gain once the ledger (a second or so
    behind ingest) has sequenced it, and LogEvent's answer never has."""
    copy = audit_event_pb2.AuditEvent()
    copy.CopyFrom(event)
    copy.ClearField("ledger_sequence")
    copy.ClearField("ledger_hash")
    return copy


def server_env() -> dict[str, str]:
    """The environment that makes an `auditlog serve` process trust the test tokens."""
    return {
        "AUDITLOG_TOKEN_SECRET": TEST_KEYS.token_secret,
        "AUDITLOG_JWKS_FILE": str(TEST_KEYS.jwks_file),
        "AUDITLOG_JWT_ISSUER": DEV_ISSUER,
        "AUDITLOG_JWT_AUDIENCE": DEV_AUDIENCE,
        # An HTTP port of its own: the default 8080 may be taken (by `make run`, another server).
        "AUDITLOG_HTTP_LISTEN": "127.0.0.1:0",
        "AUDITLOG_CHECKPOINT_KEY_FILE": str(TEST_KEYS.checkpoint_key_file),
    }


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
        http_listen="127.0.0.1:0",
        mongodb_uri=mongodb_uri,
        database=database_name,
        write_concern="majority" if not USING_FERRETDB else "1",
        mongodb_timeout_ms=1500,
        health_check_interval_s=0.2,
        shutdown_grace_s=1.0,
        token_secret=TEST_KEYS.token_secret,
        jwks_file=str(TEST_KEYS.jwks_file),
        jwt_issuer=DEV_ISSUER,
        jwt_audience=DEV_AUDIENCE,
        checkpoint_key_file=str(TEST_KEYS.checkpoint_key_file),
        reflection="on",
    )
    return Settings(**{**base.__dict__, **changes})  # type: ignore[arg-type]


async def stop_or_explain(running: RunningServer, grace_s: float = 0.5) -> None:
    """Stops a server; a stop that hangs fails with the stack of every task still running."""
    stopping = asyncio.create_task(running.stop(grace_s=grace_s), name="server stop")
    done, _ = await asyncio.wait([stopping], timeout=60)
    if not done:
        # Where everything waits, the stop included, before anything is cancelled.
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            print(f"{task.get_name()}: {' -> '.join(await_chain(task))}", file=stacks)
        stopping.cancel()
        raise AssertionError(f"server stop hung; tasks:\n{stacks.getvalue()}")
    stopping.result()


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[RunningServer]:
    """A started server, ready (the database answered), stopped at the end."""
    running = await start_server(settings)
    await running.ready()
    try:
        yield running
    finally:
        await stop_or_explain(running)


@pytest_asyncio.fixture
async def server(mongodb_uri: str, database_name: str) -> AsyncIterator[RunningServer]:
    async with serving(settings_for_test(mongodb_uri, database_name)) as running:
        yield running


@pytest_asyncio.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with authed_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> service_pb2_grpc.AuditLogServiceStub:
    return service_pb2_grpc.AuditLogServiceStub(channel)


@pytest_asyncio.fixture
async def client(server: RunningServer) -> AsyncIterator[AuditLogClient]:
    async with sdk(f"127.0.0.1:{server.port}") as client:
        yield client


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
