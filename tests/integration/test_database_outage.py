"""Database outages: health follows the database, RPCs get UNAVAILABLE, recovery needs no restart.

Each test runs its own FerretDB (a data folder in tmp_path, a free port), stops it and starts it
again on the same port and data to make an outage. A foreign MONGODB_URI server cannot be
stopped, so these tests are skipped when one is configured.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from pymongo import AsyncMongoClient

from auditlog.v1 import audit_event_pb2, enums_pb2, service_pb2, service_pb2_grpc
from auditlog_service.devdb import FerretDB, free_port
from auditlog_service.server import RunningServer, start_server
from tests.conftest import EVENTS, authed_channel, settings_for_test, unledgered
from tests.event_samples import valid_event_of_each_type

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")),
    reason="MONGODB_URI points at a server these tests cannot stop; they run on their own FerretDB",
)

TENANT = "acme"
SERVICE = "auditlog.v1.AuditLogService"
# mongodb_timeout_ms is 1500 in settings_for_test: an RPC against a dead database fails within a
# few seconds; this only bounds a hang.
RPC_TIMEOUT_S = 20.0
HEALTH_DEADLINE_S = 30.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Event = audit_event_pb2.AuditEvent


@pytest.fixture
def ferretdb(tmp_path: Path) -> Iterator[FerretDB]:
    """A FerretDB of this test only, not started yet."""
    db = FerretDB(tmp_path / "ferretdb", free_port())
    try:
        yield db
    finally:
        db.stop()


@pytest_asyncio.fixture
async def running(ferretdb: FerretDB, database_name: str) -> AsyncIterator[RunningServer]:
    """The service pointed at the test's FerretDB, started whether or not the database is up."""
    server = await start_server(settings_for_test(ferretdb.uri, database_name))
    try:
        yield server
    finally:
        await server.stop(grace_s=0.5)


@pytest_asyncio.fixture
async def channel(running: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with authed_channel(f"127.0.0.1:{running.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> service_pb2_grpc.AuditLogServiceStub:
    # A raw stub: no client-side retries, so each failure is seen as the server sent it.
    return service_pb2_grpc.AuditLogServiceStub(channel)


async def start_db(db: FerretDB) -> None:
    # In a thread: start() blocks until the port accepts, and the server shares this loop.
    await asyncio.to_thread(db.start)


async def stop_db(db: FerretDB) -> None:
    await asyncio.to_thread(db.stop)


async def health_statuses(channel: grpc.aio.Channel) -> list[int]:
    health = health_pb2_grpc.HealthStub(channel)
    statuses = []
    for service in ("", SERVICE):
        response = await health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S
        )
        statuses.append(response.status)
    return statuses


async def wait_for_health(channel: grpc.aio.Channel, wanted: int) -> None:
    """Poll health (both names) until it reports `wanted`, failing after HEALTH_DEADLINE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEALTH_DEADLINE_S
    while (statuses := await health_statuses(channel)) != [wanted, wanted]:
        if loop.time() > deadline:
            names = health_pb2.HealthCheckResponse.ServingStatus.Name
            raise AssertionError(
                f"health is {[names(s) for s in statuses]} after {HEALTH_DEADLINE_S}s, "
                f"wanted {names(wanted)}"  # type: ignore[arg-type]
            )
        await asyncio.sleep(0.05)  # polling a condition with a deadline, not a delay


def assert_unavailable(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailing metadata"
    reasons = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reasons.append((info.domain, info.reason))
    assert reasons == [("auditlog.v1", "ERROR_REASON_DATABASE_UNAVAILABLE")]


async def log_event(stub: service_pb2_grpc.AuditLogServiceStub, event: Event) -> Any:
    return await stub.LogEvent(service_pb2.LogEventRequest(event=event), timeout=RPC_TIMEOUT_S)


async def get_event(stub: service_pb2_grpc.AuditLogServiceStub, event_id: str) -> Event:
    response = await stub.GetEvent(
        service_pb2.GetEventRequest(tenant_id=TENANT, id=event_id), timeout=RPC_TIMEOUT_S
    )
    return response.event


async def assert_rpcs_unavailable(stub: service_pb2_grpc.AuditLogServiceStub, event: Event) -> None:
    """Every RPC that needs the database fails with UNAVAILABLE, never INTERNAL or UNKNOWN."""
    # Concurrently: each one waits out the database timeout on its own.
    unary = await asyncio.gather(
        log_event(stub, event),
        get_event(stub, event.id),
        stub.ListEvents(service_pb2.ListEventsRequest(tenant_id=TENANT), timeout=RPC_TIMEOUT_S),
        return_exceptions=True,
    )
    for name, outcome in zip(("LogEvent", "GetEvent", "ListEvents"), unary, strict=True):
        assert isinstance(outcome, grpc.aio.AioRpcError), (name, outcome)
        assert_unavailable(outcome)
    # A batch reports the outage per event, like any other per-event failure.
    response = await stub.LogEvents(
        service_pb2.LogEventsRequest(events=[event]), timeout=RPC_TIMEOUT_S
    )
    (result,) = response.results
    assert result.WhichOneof("result") == "error"
    assert result.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert result.error.reason == enums_pb2.ERROR_REASON_DATABASE_UNAVAILABLE


async def count(database_name: str, db: FerretDB, query: dict[str, Any]) -> int:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db.uri, tz_aware=True)
    try:
        return await mongo.get_database(database_name).events.count_documents(query)
    finally:
        await mongo.close()


@pytest.mark.asyncio
async def test_database_down_at_start_then_up(
    ferretdb: FerretDB,
    running: RunningServer,
    channel: grpc.aio.Channel,
    stub: service_pb2_grpc.AuditLogServiceStub,
    database_name: str,
) -> None:
    samples = valid_event_of_each_type(TENANT)
    general, cobrowse = samples["start_call"], samples["click"]

    assert await health_statuses(channel) == [NOT_SERVING, NOT_SERVING]
    await assert_rpcs_unavailable(stub, general)
    await assert_rpcs_unavailable(stub, cobrowse)
    # The health checker has tried the database meanwhile, and still says so.
    assert await health_statuses(channel) == [NOT_SERVING, NOT_SERVING]
    assert not running.serving.is_set()

    await start_db(ferretdb)
    await wait_for_health(channel, SERVING)

    # The same server, never restarted, now stores and serves events.
    stored = (await log_event(stub, general)).event
    assert stored.id == general.id
    assert unledgered(await get_event(stub, general.id)) == stored
    stored_click = (await log_event(stub, cobrowse)).event
    assert stored_click.sequence == 1
    assert unledgered(await get_event(stub, cobrowse.id)) == stored_click
    listed = await stub.ListEvents(
        service_pb2.ListEventsRequest(tenant_id=TENANT), timeout=RPC_TIMEOUT_S
    )
    assert {e.id for e in listed.events} == {general.id, cobrowse.id}
    again = await log_event(stub, general)
    assert again.already_stored
    assert await count(database_name, ferretdb, EVENTS) == 2


@pytest.mark.asyncio
async def test_database_dies_mid_run_and_returns(
    ferretdb: FerretDB,
    database_name: str,
) -> None:
    await start_db(ferretdb)
    server = await start_server(settings_for_test(ferretdb.uri, database_name))
    try:
        await asyncio.wait_for(server.ready(), HEALTH_DEADLINE_S)
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            await _mid_run_outage(ferretdb, database_name, channel)
    finally:
        await server.stop(grace_s=0.5)


async def _mid_run_outage(
    ferretdb: FerretDB, database_name: str, channel: grpc.aio.Channel
) -> None:
    stub = service_pb2_grpc.AuditLogServiceStub(channel)
    samples = valid_event_of_each_type(TENANT)
    await wait_for_health(channel, SERVING)

    before = {}
    for kind in ("start_call", "logged_in", "click", "scroll"):
        before[kind] = (await log_event(stub, samples[kind])).event
    assert [before["click"].sequence, before["scroll"].sequence] == [1, 2]

    await stop_db(ferretdb)
    await wait_for_health(channel, NOT_SERVING)
    failed_general, failed_cobrowse = samples["messenger_send"], samples["form"]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await log_event(stub, failed_general)
    assert_unavailable(failure.value)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await log_event(stub, failed_cobrowse)
    assert_unavailable(failure.value)
    await assert_rpcs_unavailable(stub, samples["status_change"])

    await start_db(ferretdb)  # same port, same data folder
    await wait_for_health(channel, SERVING)

    # What was stored before the outage is still there, unchanged.
    for kind, stored in before.items():
        assert unledgered(await get_event(stub, stored.id)) == stored, kind
    # New events are stored.
    assert (await log_event(stub, samples["role_change"])).event.id == samples["role_change"].id
    # Retries of the events that failed with UNAVAILABLE (same ids) store each exactly once.
    for event in (failed_general, failed_cobrowse):
        first = await log_event(stub, event)
        assert not first.already_stored
        again = await log_event(stub, event)
        assert again.already_stored
        assert again.event == first.event
        assert await count(database_name, ferretdb, {"key": f"{TENANT}/{event.id}"}) == 1
    # The co-browsing session goes on without a hole: the failed write took no slot.
    assert (await get_event(stub, failed_cobrowse.id)).sequence == 3
    assert await count(database_name, ferretdb, EVENTS) == len(before) + 3


# A database that stops answering for seconds without going away (a long pause of its process,
# a machine busy elsewhere): shorter than the operations' socket timeout (10 s here), longer
# than the 1.5 s database timeout of settings_for_test.
STALL_S = 8.0


@pytest.mark.asyncio
async def test_a_database_that_stalls_for_seconds_delays_writes_and_fails_none(
    ferretdb: FerretDB, database_name: str
) -> None:
    await start_db(ferretdb)
    assert ferretdb.process is not None
    server = await start_server(settings_for_test(ferretdb.uri, database_name))
    try:
        await asyncio.wait_for(server.ready(), HEALTH_DEADLINE_S)
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.AuditLogServiceStub(channel)
            writing = asyncio.Event()
            stalled = asyncio.Event()
            resumed = asyncio.Event()
            acked: list[str] = []
            spanning = 0  # calls sent before the stall and answered after it

            async def writer() -> None:
                nonlocal spanning
                while not resumed.is_set():
                    events = list(valid_event_of_each_type(TENANT).values())
                    sent_stalled = stalled.is_set()
                    response = await stub.LogEvents(
                        service_pb2.LogEventsRequest(
                            events=events, result_view=enums_pb2.RESULT_VIEW_ACK
                        ),
                        timeout=RPC_TIMEOUT_S,
                    )
                    spanning += not sent_stalled and resumed.is_set()
                    # A pause of the database is no outage: every event is acknowledged (a
                    # monitor's timed-out heartbeat interrupted the writes in flight when the
                    # connect timeout was the 1.5 s database timeout).
                    assert [r.WhichOneof("result") for r in response.results] == ["ack"] * len(
                        events
                    ), [r.error for r in response.results if r.WhichOneof("result") == "error"]
                    acked.extend(r.ack.id for r in response.results)
                    writing.set()

            async def stall() -> None:
                await writing.wait()  # the writers are under way before the pause
                os.kill(ferretdb.process.pid, signal.SIGSTOP)
                stalled.set()
                try:
                    await asyncio.sleep(STALL_S)  # the pause under test, not a synchronisation
                finally:
                    os.kill(ferretdb.process.pid, signal.SIGCONT)
                    resumed.set()

            await asyncio.wait_for(
                asyncio.gather(stall(), *(writer() for _ in range(4))), RPC_TIMEOUT_S * 3
            )
            assert spanning >= 1, "no write was in flight through the pause"
            for event_id in acked[-60:] + acked[:20]:
                assert (await get_event(stub, event_id)).id == event_id
            assert await count(database_name, ferretdb, EVENTS) == len(acked)
    finally:
        await server.stop(grace_s=0.5)
