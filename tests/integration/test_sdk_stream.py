"""AuditLogClient.stream_events against the real server: batches on one StreamEvents call, one
result per event in order, bad events answered alone, batches split below the server's limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from auditlog import AuditLogClient, cobrowse_event, general_event
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2
from auditlog_service.server import RunningServer
from auditlog_service.validation import Limits
from tests.conftest import sdk, serving, settings_for_test

TENANT = "acme"
Event = audit_event_pb2.AuditEvent


def call_start(n: int) -> Event:
    return general_event(
        TENANT, "agent-1", payloads_pb2.StartCallAttributes(call_id=f"call-{n}", customer_id="c")
    )


def click(session: str, n: int) -> Event:
    return cobrowse_event(
        TENANT,
        session,
        "customer",
        payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"b{n}")),
    )


class RecordingCall:
    """The real StreamEvents call, keeping the size of every request the SDK wrote."""

    def __init__(self, call: Any, sizes: list[int]) -> None:
        self._call = call
        self._sizes = sizes

    async def write(self, request: service_pb2.StreamEventsRequest) -> None:
        self._sizes.append(
            len(request.events) if request.events else int(request.HasField("event"))
        )
        await self._call.write(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def record_requests(client: AuditLogClient) -> list[int]:
    """Makes the client's StreamEvents calls record their request sizes (events per request)."""
    sizes: list[int] = []
    stream_events = client.stub.StreamEvents
    client.stub.StreamEvents = lambda **kw: RecordingCall(stream_events(**kw), sizes)  # type: ignore[method-assign]
    return sizes


async def results_of(
    client: AuditLogClient, events: Any, **options: Any
) -> list[service_pb2.StreamEventResult]:
    return [result async for result in client.stream_events(events, **options)]


@pytest.mark.asyncio
async def test_ready_events_go_in_batches_with_one_result_each_in_order(
    client: AuditLogClient,
) -> None:
    sizes = record_requests(client)
    events = [click("cob-1", n) if n % 3 == 0 else call_start(n) for n in range(120)]
    results = await results_of(client, events, max_batch=50)

    assert [r.WhichOneof("result") for r in results] == ["ack"] * 120
    assert [r.ack.id for r in results] == [e.id for e in events]  # ids filled in, in order
    # The clicks of one session take sequences in the order they were given.
    assert [r.ack.sequence for r in results if r.ack.sequence] == list(range(1, 41))
    assert sum(sizes) == 120
    assert max(sizes) == 50
    assert len(sizes) < 120
    stored = [e.id async for e in client.list_events(TENANT, oldest_first=True)]
    assert sorted(stored) == sorted(e.id for e in events)


@pytest.mark.asyncio
async def test_a_bad_event_gets_its_error_and_the_others_are_stored(client: AuditLogClient) -> None:
    events = [call_start(n) for n in range(10)]
    events[4].start_call.call_id = "call\x07"  # a control character
    events[7].tenant_user_id = ""  # a general event needs its acting user
    results = await results_of(client, events)

    kinds = [r.WhichOneof("result") for r in results]
    assert kinds == ["ack"] * 4 + ["error"] + ["ack"] * 2 + ["error"] + ["ack"] * 2
    for n in (4, 7):
        assert results[n].error.code == 3  # INVALID_ARGUMENT
        assert results[n].error.reason == enums_pb2.ERROR_REASON_INVALID_ARGUMENT
    assert results[4].error.field_violations[0].field.endswith("start_call.call_id")
    stored = {e.id async for e in client.list_events(TENANT)}
    assert stored == {e.id for n, e in enumerate(events) if n not in (4, 7)}


@pytest.mark.asyncio
async def test_one_event_per_message_still_works(client: AuditLogClient) -> None:
    sizes = record_requests(client)
    events = [click("cob-2", n) for n in range(5)]
    events[2].cobrowse.session_id = ""  # a co-browsing event needs its session
    results = await results_of(client, events, max_batch=1)

    assert sizes == [1] * 5
    assert [r.WhichOneof("result") for r in results] == ["ack", "ack", "error", "ack", "ack"]
    assert [r.ack.sequence for r in results if r.HasField("ack")] == [1, 2, 3, 4]


@pytest.mark.asyncio
async def test_a_lone_event_is_answered_before_the_next_one_exists(client: AuditLogClient) -> None:
    # The source waits for each answer before it makes the next event: a helper that held a
    # lone event back to fill a batch would never answer, and the test would hang.
    answers: asyncio.Queue[service_pb2.StreamEventResult] = asyncio.Queue()

    async def one_at_a_time() -> AsyncIterator[Event]:
        for n in range(3):
            yield call_start(n)
            await answers.get()

    acked = 0
    async for result in client.stream_events(one_at_a_time()):
        assert result.HasField("ack")
        acked += 1
        answers.put_nowait(result)
    assert acked == 3


@pytest.mark.asyncio
async def test_batches_beyond_the_contract_limit_are_split(client: AuditLogClient) -> None:
    sizes = record_requests(client)
    events = [call_start(n) for n in range(2500)]
    results = await results_of(client, events, max_batch=2500)

    assert [r.ack.id for r in results] == [e.id for e in events]
    assert max(sizes) == 1000  # the contract's limit, so the server never refuses one
    assert sum(sizes) == 2500


@pytest.mark.asyncio
async def test_a_server_with_a_lower_limit_gets_smaller_batches(
    mongodb_uri: str, database_name: str
) -> None:
    settings = settings_for_test(mongodb_uri, database_name, limits=Limits(max_batch_events=10))
    running: RunningServer
    async with serving(settings) as running, sdk(f"127.0.0.1:{running.port}") as client:
        sizes = record_requests(client)
        events = [click("cob-3", n) for n in range(45)]
        results = await results_of(client, events, max_batch=100)

        # Every event is acked exactly once, in order: BATCH_TOO_LARGE never reaches the caller.
        assert [r.WhichOneof("result") for r in results] == ["ack"] * 45
        assert [r.ack.id for r in results] == [e.id for e in events]
        assert sorted(r.ack.sequence for r in results) == list(range(1, 46))
        assert sizes[0] == 45  # refused whole, then resent in smaller requests
        assert sizes[-1] <= 10


@pytest.mark.asyncio
async def test_a_failing_source_ends_the_stream_with_its_error(client: AuditLogClient) -> None:
    async def broken() -> AsyncIterator[Event]:
        yield call_start(0)
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        await results_of(client, broken())


@pytest.mark.asyncio
async def test_events_in_flight_stay_within_the_window(client: AuditLogClient) -> None:
    sizes = record_requests(client)
    events = [call_start(n) for n in range(60)]
    taken = 0
    async for result in client.stream_events(events, max_batch=8, max_in_flight=10):
        assert result.HasField("ack")
        # Sent but not yet taken by this loop: never more than the window.
        assert sum(sizes) - taken <= 10
        taken += 1
    assert taken == 60
    assert max(sizes) <= 8


@pytest.mark.asyncio
async def test_leaving_the_loop_early_ends_the_call(client: AuditLogClient) -> None:
    async def endless() -> AsyncIterator[Event]:
        n = 0
        while True:
            yield call_start(n)
            n += 1

    async with contextlib.aclosing(client.stream_events(endless())) as results:
        async for result in results:
            assert result.HasField("ack")
            break
    # The client still works after the abandoned stream.
    assert (await client.log_event(call_start(-1))).event.start_call.call_id == "call--1"
