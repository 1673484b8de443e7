"""Replicas that crash and race: cursors resume anywhere, a dead writer's events still reach
tails, shutdown ends ingest streams cleanly, and racing writers all get through.

Every service here is a separate `auditlog serve` process on the test's own database.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from auditlog.ids import new_event_id
from auditlog.v1 import enums_pb2, service_pb2, service_pb2_grpc
from auditlog_service import convert
from tests.conftest import authed_channel, sdk
from tests.integration.test_tail_processes import (
    DEADLINE_S,
    TENANT,
    ServiceProcess,
    StartService,
    bounded,
    click,
    start_service,
)

__all__ = ["start_service"]  # the fixture, used by name


async def tail_until(address: str, session: str, last: int, **start: Any) -> tuple[list[int], str]:
    """Tails a session through one server until `last`: (sequences, the last cursor)."""
    async with authed_channel(address) as channel:
        stub = service_pb2_grpc.AuditLogServiceStub(channel)
        request = service_pb2.TailSessionRequest(tenant_id=TENANT, session_id=session, **start)
        if not start:
            request.from_beginning = True
        seen: list[int] = []
        call = stub.TailSession(request)
        async for response in call:
            seen.extend(e.sequence for e in response.events.events)
            if seen and seen[-1] >= last:
                call.cancel()
                return seen, response.cursor
    raise AssertionError(f"the tail ended at {seen[-1:]} before {last}")


@pytest.mark.asyncio
async def test_a_cursor_from_one_replica_resumes_on_another_that_did_not_see_the_writes(
    start_service: StartService,
) -> None:
    a, b = await start_service(), await start_service()
    session = "cob-failover"
    async with sdk(b.address) as through_b, sdk(a.address) as through_a:
        await through_b.log_events([click(session, new_event_id(), n) for n in range(10)])
        await through_a.log_events([click(session, new_event_id(), n) for n in range(10, 20)])
    seen, cursor = await bounded(tail_until(a.address, session, 20), "the tail on A")
    assert seen == list(range(1, 21))
    # B wrote 1-10 itself and may remember 10 as the head; the cursor says 20.
    async with sdk(b.address) as through_b:
        tail = through_b.tail_session(TENANT, session, cursor=cursor)
        async with sdk(a.address) as through_a:
            await through_a.log_event(click(session, new_event_id(), 20))
        async for event in tail:
            assert event.sequence == 21
            break


@pytest.mark.asyncio
async def test_events_of_a_writer_killed_before_its_tick_reach_tails_on_other_replicas(
    start_service: StartService, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the death-triggered probe only the periodic safety probe would find these events;
    # it is pushed out of reach, so the tail sees them only because the writer's beat stopped.
    monkeypatch.setenv("AUDITLOG_TAIL_SAFETY_PROBE_INTERVAL_S", "3600")
    tail_server, writer = await start_service(), await start_service()
    session = "cob-orphan-tick"
    async with sdk(tail_server.address) as client:
        await client.log_event(click(session, new_event_id(), 0))
        tail = client.tail_session(TENANT, session)
        seen: list[int] = []

        async def follow() -> None:
            async for event in tail:
                seen.append(event.sequence)
                if event.sequence == 4:
                    return

        following = asyncio.create_task(follow())
        await bounded(tail.caught_up.wait(), "catching up")
        # What the writer stored just before SIGKILL, without a tick: written here directly.
        preparer = convert.EventPreparer("auditlog-dev-token-secret")
        docs = []
        for sequence in (2, 3, 4):
            event = click(session, new_event_id(), sequence)
            doc = convert.to_document(
                preparer.prepare(event), event_id=event.id, receive_time=convert.now_millis()
            )
            convert.assign_slot(doc, sequence)
            docs += [convert.id_claim(doc), doc]
        await db.events.insert_many(docs, ordered=True)
        writer.process.send_signal(signal.SIGKILL)
        await writer.process.wait()
        writer.log_file.close()
        await bounded(following, "the tail reaching the dead writer's events")
    assert seen == [1, 2, 3, 4]


async def _stream_until_shutdown(
    service: ServiceProcess, session: str
) -> tuple[set[str], set[str], Any]:
    """Streams events into one server, as a producer should: it stops sending once the server
    says it is shutting down. (acked ids, ids answered SHUTTING_DOWN, the ending)."""
    sent: dict[int, str] = {}
    acked: set[str] = set()
    turned_away: set[str] = set()
    stop_sending = asyncio.Event()

    async def requests() -> AsyncIterator[service_pb2.StreamEventsRequest]:
        number = 0
        while not stop_sending.is_set():
            event = click(session, new_event_id(), number)
            sent[number] = event.id
            number += 1
            yield service_pb2.StreamEventsRequest(event=event)
            if number % 50 == 0:
                await asyncio.sleep(0)  # let acks in

    async with authed_channel(service.address) as channel:
        stub = service_pb2_grpc.AuditLogServiceStub(channel)
        call = stub.StreamEvents(requests())
        try:
            async for response in call:
                if response.WhichOneof("result") == "ack":
                    acked.add(sent[response.request_index])
                    if len(acked) == 200:
                        service.terminate()
                elif response.error.reason == enums_pb2.ERROR_REASON_SHUTTING_DOWN:
                    turned_away.add(sent[response.request_index])
                    stop_sending.set()
        except grpc.aio.AioRpcError as error:
            return acked, turned_away, error
    return acked, turned_away, None


@pytest.mark.asyncio
@pytest.mark.parametrize("attempt", range(3))
async def test_sigterm_during_streaming_ingest_ends_it_unavailable_with_every_ack_stored(
    start_service: StartService, db: Any, attempt: int
) -> None:
    service = await start_service()
    session = f"cob-stream-{attempt}"
    acked, turned_away, ending = await bounded(
        _stream_until_shutdown(service, session), "the stream"
    )
    assert await service.wait_for_exit() == 0
    assert ending is not None, "the stream ended without a status"
    assert ending.code() == grpc.StatusCode.UNAVAILABLE, (ending.code(), ending.details())
    stored = {doc["id"] async for doc in db.events.find({"session_id": session}, {"id": 1})}
    assert acked <= stored
    assert not turned_away & stored, "an event answered SHUTTING_DOWN was stored"
    sequences = sorted([doc["sequence"] async for doc in db.events.find({"session_id": session})])
    assert sequences == list(range(1, len(sequences) + 1))


@pytest.mark.asyncio
async def test_two_replicas_writing_the_same_sessions_store_everything_without_aborting(
    start_service: StartService, db: Any
) -> None:
    a, b = await start_service(), await start_service()
    sessions = [f"cob-race-{n}" for n in range(5)]
    rng = random.Random(3)
    ids: list[str] = []
    async with sdk(a.address) as through_a, sdk(b.address) as through_b:
        clients = [through_a, through_b]

        async def writer(number: int) -> list[str]:
            mine = []
            for n in range(60):
                event = click(sessions[rng.randrange(5)], new_event_id(), n)
                mine.append(event.id)
                stored = await clients[rng.randrange(2)].log_event(event)
                assert stored.event.sequence > 0
            return mine

        async with asyncio.timeout(DEADLINE_S):
            for mine in await asyncio.gather(*(writer(w) for w in range(16))):
                ids += mine
    docs = [doc async for doc in db.events.find({"session_id": {"$in": sessions}})]
    assert sorted(doc["id"] for doc in docs) == sorted(ids)
    for session in sessions:
        sequences = sorted(d["sequence"] for d in docs if d["session_id"] == session)
        assert sequences == list(range(1, len(sequences) + 1)), session
