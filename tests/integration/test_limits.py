"""Per-tenant limits: a tenant over its budget waits (RetryInfo), the others do not notice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from auditlog import AuditLogError, BatchingLogger
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.server import RunningServer, start_server
from tests.conftest import authed_channel, sdk, settings_for_test, stop_or_explain


@pytest_asyncio.fixture
async def limited(mongodb_uri: str, database_name: str) -> AsyncIterator[RunningServer]:
    running = await start_server(
        settings_for_test(
            mongodb_uri,
            database_name,
            tenant_rpcs_per_s=5,
            tenant_rpc_burst=5,
            tenant_events_per_s=100,
            tenant_event_burst=100,
            tenant_max_tails=2,
        )
    )
    await running.ready()
    try:
        yield running
    finally:
        await stop_or_explain(running)


def logged_in(tenant: str) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        tenant_id=tenant, tenant_user_id="u", logged_in=payloads_pb2.LoggedInAttributes()
    )


@pytest.mark.asyncio
async def test_a_tenant_over_its_rpc_limit_is_told_when_to_retry_while_others_go_on(
    limited: RunningServer,
) -> None:
    address = f"127.0.0.1:{limited.port}"
    async with sdk(address, tenant="acme") as acme, sdk(address, tenant="globex") as globex:
        outcomes: list[AuditLogError | None] = []
        for _ in range(12):
            try:
                await acme.get_event("acme", "nothing")
            except AuditLogError as error:
                outcomes.append(None if error.code == grpc.StatusCode.NOT_FOUND else error)
        refused = [e for e in outcomes if e is not None]
        assert refused, "no call was refused beyond the burst"
        for error in refused:
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.reason == "ERROR_REASON_RATE_LIMITED"
            assert error.retry_delay_s is not None
            assert 0 < error.retry_delay_s <= 1.0
        # The other tenant's budget is its own.
        with pytest.raises(AuditLogError) as other:
            await globex.get_event("globex", "nothing")
        assert other.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.asyncio
async def test_the_batching_logger_waits_out_the_event_limit_and_loses_nothing(
    limited: RunningServer, db: Any
) -> None:
    undelivered: list[object] = []
    async with sdk(f"127.0.0.1:{limited.port}", tenant="acme") as client:
        logger = BatchingLogger(
            client,
            max_batch=50,
            on_undelivered=lambda event, failure: undelivered.append(failure),
        )
        async with logger:
            for _ in range(300):
                logger.log(logged_in("acme"))
            await logger.flush()
        assert logger.delivered == 300
        assert logger.retried_batches > 0, "the limit never pushed back"
    assert undelivered == []
    assert await db.events.count_documents({"tenant_id": "acme"}) == 300


@pytest.mark.asyncio
async def test_stream_batches_over_the_event_limit_are_taken_event_by_event(
    limited: RunningServer, db: Any
) -> None:
    # 100 events a second, 100 saved up: the first batch of 60 is taken whole at once; the
    # next ones exceed what is saved up, so their events are taken one by one, each as the
    # rate allows (after a wait of 10 ms or so). A batch with an event of a tenant the token
    # does not cover: that event is refused, the others are taken; one of that tenant alone:
    # refused whole.
    batches = [[logged_in("acme") for _ in range(60)] for _ in range(3)]
    mixed = [logged_in("acme"), logged_in("globex"), logged_in("acme")]
    other = [logged_in("globex"), logged_in("globex")]
    requests = [service_pb2.StreamEventsRequest(events=batch) for batch in [*batches, mixed, other]]
    async with authed_channel(f"127.0.0.1:{limited.port}", tenant="acme") as channel:
        call = service_pb2_grpc.AuditLogServiceStub(channel).StreamEvents(
            iter(requests), timeout=30
        )
        answers = [response async for response in call]
        assert await call.code() == grpc.StatusCode.OK
    assert [len(answer.results) for answer in answers] == [60, 60, 60, 3, 2]
    for answer in answers[:3]:
        assert {result.WhichOneof("result") for result in answer.results} == {"ack"}
    kinds = [result.WhichOneof("result") for result in answers[3].results]
    assert kinds == ["ack", "error", "ack"]
    assert answers[3].results[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "globex" in answers[3].results[1].error.message
    assert [result.error.code for result in answers[4].results] == [
        grpc.StatusCode.PERMISSION_DENIED.value[0]
    ] * 2
    acked = {result.ack.id for answer in answers for result in answer.results if result.ack.id}
    assert len(acked) == 182
    stored = {doc["id"] async for doc in db.events.find({"tenant_id": "acme"}, {"id": 1})}
    assert stored == acked
    assert await db.events.count_documents({"tenant_id": "globex"}) == 0


@pytest.mark.asyncio
async def test_tails_beyond_a_tenants_cap_are_refused_and_other_tenants_are_not(
    limited: RunningServer,
) -> None:
    address = f"127.0.0.1:{limited.port}"
    async with sdk(address, tenant="*") as client:
        open_tails = []
        for _ in range(2):
            tail = client.tail_session("acme", "cob-1", max_retries=0)
            open_tails.append(asyncio.create_task(_run(tail)))
            await tail.caught_up.wait()
        third = client.tail_session("acme", "cob-2", max_retries=0)
        with pytest.raises(AuditLogError) as refused:
            await _run(third)
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.reason == enums_pb2.ErrorReason.Name(
            enums_pb2.ERROR_REASON_TOO_MANY_TAILS
        )
        other = client.tail_session("globex", "cob-1", max_retries=0)
        running = asyncio.create_task(_run(other))
        await other.caught_up.wait()
        for task in [*open_tails, running]:
            task.cancel()
        await asyncio.gather(*open_tails, running, return_exceptions=True)


async def _run(tail: Any) -> None:
    async for _ in tail:
        pass
