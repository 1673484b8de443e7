"""Calls that clients cancel midway: the service process survives them and keeps what it acked.

The service runs as a separate `auditlog serve` process, so a crash in it (grpcio's aio server
segfaulted when a cancelled StreamEvents call's peer was read after the cancel) fails one test
with its exit code instead of taking the test run down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from auditlog.ids import new_event_id
from auditlog.v1 import service_pb2, service_pb2_grpc
from tests.conftest import authed_channel
from tests.integration.test_tail_processes import (
    TENANT,
    ServiceProcess,
    StartService,
    bounded,
    click,
    start_service,
)

__all__ = ["start_service"]  # the fixture, used by name

# Cancel points (responses read before the cancel): at once, early, and after many acks.
CANCEL_AFTER = (0, 1, 7, 40)


async def assert_serving(service: ServiceProcess) -> None:
    """The process is alive and answers a read."""
    assert service.process.returncode is None, (
        f"service exited with {service.process.returncode}:\n{service.log_tail()}"
    )
    async with authed_channel(service.address) as channel:
        stub = service_pb2_grpc.AuditLogServiceStub(channel)
        await stub.ListEvents(service_pb2.ListEventsRequest(tenant_id=TENANT, page_size=1))


async def endless_clicks(session: str, sent: list[str]) -> AsyncIterator[object]:
    """Stream requests of one click each, for as long as the call reads them."""
    number = 0
    while True:
        event = click(session, new_event_id(), number)
        sent.append(event.id)
        yield service_pb2.StreamEventsRequest(event=event)
        number += 1
        await asyncio.sleep(0)  # let the call's reader run between requests


@pytest.mark.asyncio
@pytest.mark.parametrize("cancel_after", CANCEL_AFTER)
async def test_a_stream_cancelled_mid_ingest_leaves_the_server_up_and_every_ack_stored(
    start_service: StartService, cancel_after: int
) -> None:
    service = await start_service()
    session = f"cob-cancel-{cancel_after}"
    acked: list[str] = []
    for attempt in range(3):  # repeated: the crash did not hit every cancel
        async with authed_channel(service.address) as channel:
            stub = service_pb2_grpc.AuditLogServiceStub(channel)
            sent: list[str] = []
            call = stub.StreamEvents(endless_clicks(f"{session}-{attempt}", sent))
            if cancel_after:
                async for response in call:
                    assert response.WhichOneof("result") == "ack", response
                    acked.append(response.ack.id)
                    if len(acked) >= cancel_after * (attempt + 1):
                        break
            call.cancel()
            assert await call.code() == grpc.StatusCode.CANCELLED
        await bounded(assert_serving(service), "a read after the cancel")
    async with authed_channel(service.address) as channel:
        stub = service_pb2_grpc.AuditLogServiceStub(channel)
        for event_id in acked:
            stored = await stub.GetEvent(service_pb2.GetEventRequest(tenant_id=TENANT, id=event_id))
            assert stored.event.id == event_id


@pytest.mark.asyncio
async def test_tails_and_lists_cancelled_midway_leave_the_server_up(
    start_service: StartService,
) -> None:
    service = await start_service()
    session = "cob-cancel-reads"
    async with authed_channel(service.address) as channel:
        stub = service_pb2_grpc.AuditLogServiceStub(channel)
        await stub.LogEvents(
            service_pb2.LogEventsRequest(
                events=[click(session, new_event_id(), n) for n in range(50)]
            )
        )
        for read_before_cancel in (0, 1, 2):
            tail = stub.TailSession(
                service_pb2.TailSessionRequest(
                    tenant_id=TENANT, session_id=session, from_beginning=True
                )
            )
            for _ in range(read_before_cancel):
                await tail.read()
            tail.cancel()
            tenant_tail = stub.TailEvents(
                service_pb2.TailEventsRequest(tenant_id=TENANT, from_beginning=True)
            )
            for _ in range(read_before_cancel):
                await tenant_tail.read()
            tenant_tail.cancel()
            listing = stub.ListEvents(service_pb2.ListEventsRequest(tenant_id=TENANT, page_size=10))
            listing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await listing
            await bounded(assert_serving(service), "a read after the cancels")
    assert service.process.returncode is None
