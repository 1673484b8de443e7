"""A read slower than its deadline is DEADLINE_EXCEEDED, not an outage, and health stays up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import audit_event_pb2, payloads_pb2
from auditlog_service import convert
from auditlog_service.server import RunningServer, start_server
from tests.conftest import USING_FERRETDB, authed_channel, sdk, settings_for_test, stop_or_explain

TENANT = "acme"
SCANNED_EVENTS = 20_000

pytestmark = pytest.mark.skipif(
    not USING_FERRETDB,
    reason="relies on FerretDB answering a filtered find by scanning the collection (slowly)",
)


@pytest_asyncio.fixture
async def impatient_server(mongodb_uri: str, database_name: str) -> AsyncIterator[RunningServer]:
    """A server that gives a read at most 20 ms, far less than scanning 20,000 events takes;
    it lists from the indexes (from the ledger, a list reads a bounded number of entries)."""
    running = await start_server(
        settings_for_test(mongodb_uri, database_name, max_read_time_s=0.02, list_from="index")
    )
    await running.ready()
    try:
        yield running
    finally:
        await stop_or_explain(running)


async def preload(server: RunningServer) -> None:
    preparer = convert.EventPreparer("test")
    now = convert.now_millis()
    docs = []
    for index in range(SCANNED_EVENTS):
        event = audit_event_pb2.AuditEvent(
            id=f"e-{index}",
            tenant_id=TENANT,
            tenant_user_id="agent-1",
            start_call=payloads_pb2.StartCallAttributes(call_id=f"c-{index}", customer_id="x"),
        )
        docs.append(
            convert.to_document(preparer.prepare(event), event_id=event.id, receive_time=now)
        )
    await server.repository.events.insert_many(docs, ordered=False)


@pytest.mark.asyncio
async def test_a_query_past_its_deadline_is_deadline_exceeded_and_health_stays_serving(
    impatient_server: RunningServer, db: Any
) -> None:
    await preload(impatient_server)
    address = f"127.0.0.1:{impatient_server.port}"
    async with sdk(address) as client:
        failures = await asyncio.gather(
            *(
                _list_failure(client, customer_id=f"nobody-{n}")  # matches nothing: a full scan
                for n in range(8)
            )
        )
    for failure in failures:
        assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert failure.reason == "ERROR_REASON_QUERY_TIMEOUT"
        assert "event ids" not in failure.message
    async with authed_channel(address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def _list_failure(client: AuditLogClient, **filters: str) -> AuditLogError:
    with pytest.raises(AuditLogError) as failure:
        async for _ in client.list_events(TENANT, **filters):  # type: ignore[arg-type]
            pass
    return failure.value
