"""TailSession: replay then live without gap or duplicate, heartbeats, cursors, and every ending."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auditlog import AuditLogClient
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.server import RunningServer, start_server
from auditlog_service.tokens import TokenSigner
from tests.conftest import authed_channel, sdk, settings_for_test, stop_or_explain

TENANT = "acme"
SESSION = "cob-1"
Event = audit_event_pb2.AuditEvent


def click(number: int, session: str = SESSION, text_bytes: int = 0) -> Event:
    event = Event(
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(session_id=session, actor=enums_pb2.ACTOR_AGENT),
    )
    if text_bytes:
        event.input.CopyFrom(
            payloads_pb2.InputAttributes(
                text="x" * text_bytes, element=payloads_pb2.Element(id=f"in-{number}")
            )
        )
    else:
        event.click.CopyFrom(
            payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"el-{number}"))
        )
    return event


async def log_clicks(client: AuditLogClient, count: int, **kwargs: int | str) -> None:
    for start in range(0, count, 1000):
        response = await client.log_events(
            [click(n, **kwargs) for n in range(start, min(count, start + 1000))]  # type: ignore[arg-type]
        )
        assert all(r.WhichOneof("result") == "event" for r in response.results)


@pytest_asyncio.fixture
async def fast_server(mongodb_uri: str, database_name: str) -> AsyncIterator[RunningServer]:
    """A server with short tail timers, so endings happen within a test's time."""
    running = await start_server(
        settings_for_test(
            mongodb_uri,
            database_name,
            tail_heartbeat_interval_s=0.2,
            tail_slow_consumer_timeout_s=0.5,
            max_tails=5,
        )
    )
    await running.ready()
    try:
        yield running
    finally:
        await stop_or_explain(running)


@pytest_asyncio.fixture
async def fast_client(fast_server: RunningServer) -> AsyncIterator[AuditLogClient]:
    async with sdk(f"127.0.0.1:{fast_server.port}") as client:
        yield client


async def read_to_end(stream: object, into: list[int] | None = None) -> None:
    """Reads a tail until it ends, collecting event sequences; its error propagates."""
    while (response := await stream.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
        if into is not None:
            into.extend(e.sequence for e in response.events.events)


def cursor_trailer(error: grpc.aio.AioRpcError) -> str:
    values = [v for k, v in (error.trailing_metadata() or ()) if k == "auditlog-cursor"]
    assert len(values) == 1, error.trailing_metadata()
    return str(values[0])


def error_details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reason, fields = "", []
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            fields = [v.field for v in bad.field_violations]
    return reason, fields


@pytest.mark.asyncio
async def test_replay_of_10000_then_live_has_no_gap_no_duplicate_and_one_caught_up(
    client: AuditLogClient,
) -> None:
    await log_clicks(client, 10_000)
    stream = client.stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id=TENANT, session_id=SESSION, from_beginning=True)
    )
    sequences: list[int] = []
    markers: list[tuple[int, int]] = []  # (events seen before it, head it reports)
    live_logged = False
    async for response in stream:
        kind = response.WhichOneof("kind")
        if kind == "events":
            sequences.extend(e.sequence for e in response.events.events)
        elif kind == "caught_up":
            markers.append((len(sequences), response.caught_up.head_sequence))
            if not live_logged:
                live_logged = True
                await log_clicks(client, 150)
        if len(sequences) >= 10_150:
            break
    stream.cancel()
    assert sequences == list(range(1, 10_151))
    assert markers == [(10_000, 10_000)]


@pytest.mark.asyncio
async def test_events_logged_during_replay_arrive_once_in_order(client: AuditLogClient) -> None:
    await log_clicks(client, 2000)
    tail = client.tail_session(TENANT, SESSION)
    writer = asyncio.ensure_future(log_clicks(client, 2000))
    seen = []
    async for event in tail:
        seen.append(event.sequence)
        if len(seen) == 4000:
            break
    await writer
    assert seen == list(range(1, 4001))


@pytest.mark.asyncio
async def test_idle_tail_gets_heartbeats_with_cursor_and_head(fast_client: AuditLogClient) -> None:
    await log_clicks(fast_client, 3)
    stream = fast_client.stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id=TENANT, session_id=SESSION, from_now=True)
    )
    kinds, heartbeats = [], []
    async for response in stream:
        kinds.append(response.WhichOneof("kind"))
        assert response.cursor
        if response.HasField("heartbeat"):
            heartbeats.append(response)
        if len(heartbeats) == 3:
            break
    stream.cancel()
    assert kinds[0] == "caught_up"
    assert kinds[1:] == ["heartbeat"] * 3
    assert {h.heartbeat.head_sequence for h in heartbeats} == {3}
    assert len({h.cursor for h in heartbeats}) == 1  # the cursor stays put while nothing happens
    resumed = fast_client.tail_session(TENANT, SESSION, cursor=heartbeats[0].cursor)
    await log_clicks(fast_client, 1)
    async for event in resumed:
        assert event.sequence == 4
        break


@pytest.mark.asyncio
async def test_a_cursor_resumes_exactly_after_the_last_event(client: AuditLogClient) -> None:
    await log_clicks(client, 300)
    first = client.tail_session(TENANT, SESSION)
    async for event in first:
        if event.sequence == 120:
            break
    cursor = first.cursor
    await log_clicks(client, 50)
    second = client.tail_session(TENANT, SESSION, cursor=cursor)
    sequences = []
    async for event in second:
        sequences.append(event.sequence)
        if event.sequence == 350:
            break
    # The cursor came with the batch that held 120, so the next tail starts after that batch.
    assert sequences == list(range(sequences[0], 351))
    assert sequences[0] <= 121


@pytest.mark.asyncio
async def test_start_time_is_where_the_tail_starts_not_a_filter(client: AuditLogClient) -> None:
    t = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    # Event 3 comes from a producer whose clock is behind: it occurred "before" t, yet it was
    # stored after event 2, which is where the tail starts.
    offsets = [-60, 10, -5, 20]
    events = []
    for number, offset in enumerate(offsets):
        event = click(number, session="cob-late")
        event.occur_time.FromDatetime(t + dt.timedelta(seconds=offset))
        events.append(event)
    await client.log_events(events)
    request = service_pb2.TailSessionRequest(tenant_id=TENANT, session_id="cob-late")
    request.start_time.FromDatetime(t)
    stream = client.stub.TailSession(request)
    sequences: list[int] = []
    async for response in stream:
        sequences.extend(e.sequence for e in response.events.events)
        if response.WhichOneof("kind") == "caught_up":
            cursor = response.cursor
            break
    stream.cancel()
    assert sequences == [2, 3, 4]
    # Live events after the start follow whatever their occur time.
    late = click(9, session="cob-late")
    late.occur_time.FromDatetime(t - dt.timedelta(hours=1))
    await client.log_event(late)
    resumed = client.stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id=TENANT, session_id="cob-late", cursor=cursor)
    )
    async for response in resumed:
        if response.WhichOneof("kind") == "events":
            assert [e.sequence for e in response.events.events] == [5]
            break
    resumed.cancel()


@pytest.mark.asyncio
async def test_start_time_after_every_event_waits_for_the_first_one_at_or_after_it(
    client: AuditLogClient,
) -> None:
    t = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    before = click(1, session="cob-wait")
    before.occur_time.FromDatetime(t - dt.timedelta(seconds=1))
    await client.log_event(before)
    request = service_pb2.TailSessionRequest(tenant_id=TENANT, session_id="cob-wait")
    request.start_time.FromDatetime(t)
    stream = client.stub.TailSession(request)
    seen: list[int] = []
    async for response in stream:
        kind = response.WhichOneof("kind")
        if kind == "caught_up":
            for offset in (-2, 3, -4):  # 2 is before t, 3 is the start, 4 follows it
                event = click(offset, session="cob-wait")
                event.occur_time.FromDatetime(t + dt.timedelta(seconds=offset))
                await client.log_event(event)
        seen.extend(e.sequence for e in response.events.events)
        if len(seen) >= 2:
            break
    stream.cancel()
    assert seen == [3, 4]


@pytest.mark.asyncio
async def test_type_filter_delivers_only_those_types(client: AuditLogClient) -> None:
    await log_clicks(client, 10)
    await client.log_events([click(n, text_bytes=10) for n in range(5)])
    tail = client.tail_session(TENANT, SESSION, event_types=[enums_pb2.EVENT_TYPE_INPUT])
    got = []
    async for event in tail:
        got.append((event.sequence, event.event_type))
        if len(got) == 5:
            break
    assert got == [(n, enums_pb2.EVENT_TYPE_INPUT) for n in range(11, 16)]


@pytest.mark.asyncio
async def test_bad_cursors_are_rejected_with_the_cursor_field(
    fast_server: RunningServer, fast_client: AuditLogClient
) -> None:
    await log_clicks(fast_client, 5)
    signer = TokenSigner(fast_server.settings.token_secret)
    other_session = signer.encode("cursor", {"t": TENANT, "s": "another", "q": 1})
    beyond = signer.encode("cursor", {"t": TENANT, "s": SESSION, "q": 99})
    cases = [
        ("garbage!", grpc.StatusCode.INVALID_ARGUMENT, "ERROR_REASON_INVALID_CURSOR"),
        (other_session, grpc.StatusCode.INVALID_ARGUMENT, "ERROR_REASON_INVALID_CURSOR"),
        (beyond, grpc.StatusCode.OUT_OF_RANGE, "ERROR_REASON_CURSOR_OUT_OF_RANGE"),
    ]
    for cursor, code, reason in cases:
        stream = fast_client.stub.TailSession(
            service_pb2.TailSessionRequest(tenant_id=TENANT, session_id=SESSION, cursor=cursor)
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async for _ in stream:
                pass
        assert failure.value.code() == code
        assert error_details(failure.value) == (reason, ["cursor"])


@pytest.mark.asyncio
async def test_more_tails_than_the_cap_are_refused(
    fast_server: RunningServer, fast_client: AuditLogClient
) -> None:
    streams = [
        fast_client.stub.TailSession(
            service_pb2.TailSessionRequest(tenant_id=TENANT, session_id=f"s-{i}", from_now=True)
        )
        for i in range(5)
    ]
    for stream in streams:
        response = await stream.read()
        assert response.HasField("caught_up")
    extra = fast_client.stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id=TENANT, session_id="s-extra", from_now=True)
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await extra.read()
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(failure.value)[0] == "ERROR_REASON_TOO_MANY_TAILS"
    for stream in streams:
        stream.cancel()


@pytest.mark.asyncio
async def test_a_client_that_stops_reading_is_ended_and_resumes_without_loss(
    fast_server: RunningServer, fast_client: AuditLogClient
) -> None:
    # Big events, so the unread stream fills the HTTP/2 windows quickly.
    stream = fast_client.stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id=TENANT, session_id=SESSION, from_beginning=True)
    )
    assert (await stream.read()).HasField("caught_up")
    # Log big events until the server gives up on the reader that does not read: how much the
    # HTTP/2 windows and buffers swallow first is up to gRPC, so the bound is generous.
    total = 0
    while fast_server.hub.active_tails > 0:
        assert total < 4000, "the server never ended the tail of a client that does not read"
        await fast_client.log_events(
            [click(n, text_bytes=60_000) for n in range(total, total + 50)]
        )
        total += 50
    received: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await read_to_end(stream, received)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(failure.value)[0] == "ERROR_REASON_SLOW_CONSUMER"
    assert len(received) < total, "the server stopped before sending everything"
    # The write that timed out may still have reached the client, so the cursor in the trailers
    # is that of the last write known to be complete: a resumed tail may repeat a few events,
    # which clients drop by sequence (the SDK's tail does), and loses none.
    resumed = fast_client.tail_session(TENANT, SESSION, cursor=cursor_trailer(failure.value))
    after: list[int] = []
    async for event in resumed:
        after.append(event.sequence)
        if event.sequence == total:
            break
    assert after == list(range(after[0], total + 1))
    assert after[0] <= max(received, default=0) + 1
    assert set(received) | set(after) == set(range(1, total + 1))


@pytest.mark.asyncio
async def test_shutdown_ends_every_tail_with_unavailable_and_a_cursor(
    mongodb_uri: str, database_name: str
) -> None:
    going = await start_server(settings_for_test(mongodb_uri, database_name))
    await going.ready()
    channel = authed_channel(f"127.0.0.1:{going.port}")
    stub = service_pb2_grpc.AuditLogServiceStub(channel)
    async with sdk(f"127.0.0.1:{going.port}") as writer:
        await log_clicks(writer, 10)
    streams = [
        stub.TailSession(
            service_pb2.TailSessionRequest(
                tenant_id=TENANT, session_id=SESSION, from_beginning=True
            )
        )
        for _ in range(20)
    ]
    for stream in streams:
        while not (await stream.read()).HasField("caught_up"):
            pass
    await going.stop(grace_s=2.0)
    for stream in streams:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await read_to_end(stream)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(failure.value)[0] == "ERROR_REASON_SHUTTING_DOWN"
        assert cursor_trailer(failure.value)
    await channel.close()


@pytest.mark.asyncio
async def test_a_tail_on_one_server_sees_writes_through_another_by_ticks_alone(
    mongodb_uri: str, database_name: str
) -> None:
    # The safety probe is pushed out of reach: only the other server's tick stream can wake B.
    settings = settings_for_test(mongodb_uri, database_name, tail_safety_probe_interval_s=3600.0)
    server_a, server_b = await start_server(settings), await start_server(settings)
    try:
        await server_a.ready()
        await server_b.ready()
        async with (
            sdk(f"127.0.0.1:{server_a.port}") as writer,
            sdk(f"127.0.0.1:{server_b.port}") as reader,
        ):
            tail = reader.tail_session(TENANT, SESSION, from_now=True)
            seen: list[int] = []

            async def follow() -> None:
                async for event in tail:
                    seen.append(event.sequence)
                    if len(seen) == 30:
                        return

            follower = asyncio.ensure_future(follow())
            await asyncio.wait_for(tail.caught_up.wait(), 30)
            for _ in range(3):
                await log_clicks(writer, 10)
            await asyncio.wait_for(follower, 60)
            assert seen == list(range(1, 31))
    finally:
        await server_a.stop(grace_s=0.5)
        await server_b.stop(grace_s=0.5)
