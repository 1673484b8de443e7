"""Live tails across real service processes: failover on SIGTERM, racing writers, streaming ingest.

Each service here is a separate `auditlog serve` process on the test's own database, started and
stopped (SIGTERM) the way an orchestrator would. The tails that lose their process resume on the
other one from their cursor; the writers that lose theirs retry with the same event ids.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from auditlog import AuditLogClient, AuditLogError
from auditlog.client import SessionTail
from auditlog.ledger import verify_ledger
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.devdb import free_port
from auditlog_service.server import start_server
from tests.conftest import (
    EVENTS,
    USING_FERRETDB,
    authed_channel,
    sdk,
    server_env,
    settings_for_test,
)

AUDITLOG = str(Path(sys.executable).with_name("auditlog"))
TENANT = "acme"
CURSOR_TRAILER = "auditlog-cursor"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# Bound of every wait on a condition (a tail reaching an event, writers finishing, ...).
DEADLINE_S = 120.0
# Attempts of one writer batch (an RPC failure or per-event errors) before the test gives up.
MAX_BATCH_ATTEMPTS = 30
# A bound on a stream of 10,000 events and on its retry, generous for a loaded 2-core machine.
STREAM_TIMEOUT_S = 270.0
# Failures of a call to a process that is shutting down or gone.
LOST_SERVER_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}

Event = audit_event_pb2.AuditEvent


def click(session: str, event_id: str, number: int) -> Event:
    return Event(
        id=event_id,
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(
            session_id=session, actor=enums_pb2.ACTOR_CUSTOMER
        ),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"el-{number}")),
    )


def failover_target(*ports: int) -> str:
    """One channel over several processes: gRPC's pick_first uses the first one that answers."""
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)


def failover_sdk(*ports: int) -> AuditLogClient:
    """An SDK client over several processes, on the first that answers. pick_first tries the
    next address beside one that has not answered within a delay (Happy Eyeballs, 250 ms by
    default): 2 s here, gRPC's most, so that a busy machine does not start it on the second."""
    return sdk(
        failover_target(*ports),
        options=[("grpc.happy_eyeballs_connection_attempt_delay_ms", 2000)],
    )


# ---- service processes ---------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """One `auditlog serve` process on its own port, logging to a file."""

    port: int
    process: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        self.log_file.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def wait_until_serving(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Polls grpc.health.v1 Check until it says SERVING (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        request = health_pb2.HealthCheckRequest(service="")
        async with authed_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process.returncode is None, (
                    f"service exited with {self.process.returncode}:\n{self.log_tail()}"
                )
                try:
                    reply = await health.Check(request, timeout=1.0, wait_for_ready=True)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass  # not listening yet
                assert loop.time() < deadline, (  # bound-ok: a deadline on a wait, not a speed goal
                    f"not SERVING within {timeout_s}s:\n{self.log_tail()}"
                )
                await asyncio.sleep(0.05)  # poll interval of a bounded wait on the health status

    def terminate(self) -> None:
        """Sends SIGTERM (a graceful shutdown); `wait_for_exit` then waits for it."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait_for_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(
                f"service ignored SIGTERM for {timeout_s}s:\n{self.log_tail()}"
            ) from None
        finally:
            if self.process.returncode is not None:
                self.log_file.close()
        return code

    async def stop(self) -> int:
        self.terminate()
        return await self.wait_for_exit()


# Extra arguments of `auditlog serve` go after the database's.
StartService = Callable[..., Awaitable[ServiceProcess]]


@pytest_asyncio.fixture
async def start_service(
    mongodb_uri: str, database_name: str, tmp_path: Path
) -> AsyncIterator[StartService]:
    """Starts `auditlog serve` processes on the test's database; SIGTERMs the survivors after."""
    started: list[ServiceProcess] = []
    env = dict(os.environ)
    if USING_FERRETDB:
        env["AUDITLOG_WRITE_CONCERN"] = "1"
    env.update(server_env())
    env.setdefault("AUDITLOG_HEALTH_CHECK_INTERVAL_S", "0.2")
    env.setdefault("AUDITLOG_MONGODB_TIMEOUT_MS", "1500")

    async def start(*extra: str) -> ServiceProcess:
        port = free_port()
        log_path = tmp_path / f"service-{len(started) + 1}-{port}.log"
        log_file = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            AUDITLOG,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--mongodb-uri",
            mongodb_uri,
            "--database",
            database_name,
            *extra,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        service = ServiceProcess(port, process, log_path, log_file)
        started.append(service)
        await service.wait_until_serving()
        return service

    try:
        yield start
    finally:
        for service in started:
            service.terminate()
        for service in started:
            if service.process.returncode is None or not service.log_file.closed:
                await service.wait_for_exit()


# ---- writers and tails -----------------------------------------------------------------------


@dataclass
class Writer:
    """Logs batches through its first client; after an RPC failure it moves on to the next one
    and retries the batch with the same event ids (so nothing may be stored twice)."""

    clients: Sequence[AuditLogClient]
    current: int = 0
    acks: dict[str, int] = field(default_factory=dict)  # event id -> sequence
    conflicts: list[tuple[str, int, int]] = field(default_factory=list)
    rpc_failures: list[grpc.StatusCode] = field(default_factory=list)
    event_errors: list[str] = field(default_factory=list)
    already_stored: int = 0

    async def write(self, events: Sequence[Event]) -> None:
        pending = list(events)
        for _ in range(MAX_BATCH_ATTEMPTS):
            try:
                response = await self.clients[self.current].log_events(pending)
            except AuditLogError as error:
                self.rpc_failures.append(error.code)
                self.current = min(self.current + 1, len(self.clients) - 1)
                continue
            retry = []
            for event, result in zip(pending, response.results, strict=True):
                if result.WhichOneof("result") != "event":
                    self.event_errors.append(enums_pb2.ErrorReason.Name(result.error.reason))
                    retry.append(event)
                    continue
                assert result.event.id == event.id
                sequence = result.event.sequence
                known = self.acks.setdefault(event.id, sequence)
                if known != sequence:
                    self.conflicts.append((event.id, known, sequence))
                self.already_stored += result.already_stored
            if not retry:
                return
            pending = retry
        raise AssertionError(
            f"batch not stored after {MAX_BATCH_ATTEMPTS} attempts: "
            f"{self.rpc_failures[-5:]} {self.event_errors[-5:]}"
        )


@dataclass
class TailRecord:
    """What one SDK tail yielded: (sequence, id) in order."""

    tail: SessionTail
    events: list[tuple[int, str]] = field(default_factory=list)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sequences(self) -> list[int]:
        return [sequence for sequence, _ in self.events]

    async def follow_until(self, last: int) -> None:
        async for event in self.tail:
            self.events.append((event.sequence, event.id))
            self.progress.set()
            if event.sequence >= last:
                return

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Waits (bounded) until `condition` holds; re-checked after every yielded event."""
        async with asyncio.timeout(DEADLINE_S):
            while not condition():
                self.progress.clear()
                await self.progress.wait()
        assert condition(), what


async def bounded(awaitable: Awaitable[Any], what: str) -> Any:
    try:
        return await asyncio.wait_for(awaitable, DEADLINE_S)
    except TimeoutError:
        raise AssertionError(f"{what} did not finish within {DEADLINE_S}s") from None


async def wait_caught_up(tails: Sequence[SessionTail]) -> None:
    await bounded(asyncio.gather(*(tail.caught_up.wait() for tail in tails)), "catching up")


async def read_to_end(stream: Any, into: list[int]) -> None:
    """Reads a raw tail until it ends, collecting event sequences; its error propagates."""
    while (response := await stream.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
        into.extend(e.sequence for e in response.events.events)


def shutdown_details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the auditlog-cursor trailers of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    reason = ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = info.reason
    # grpc-stubs types metadata entries as an opaque class; at run time they are (key, value).
    entries: Any = error.trailing_metadata() or ()
    cursors = [str(value) for key, value in entries if key == CURSOR_TRAILER]
    return reason, cursors


# ---- 1. two processes, two racing writers, three tails, one cut ----------------------------


@pytest.mark.asyncio
async def test_two_processes_two_writers_three_tails_one_cut_and_resumed(
    start_service: StartService, db: Any
) -> None:
    session, per_writer, batch = "cob-race", 2000, 50
    total = 2 * per_writer
    p1 = await start_service()
    p2 = await start_service()
    async with (
        sdk(p1.address) as on_p1,
        sdk(p2.address) as on_p2,
        failover_sdk(p1.port, p2.port) as p1_then_p2,
    ):
        # T2 first, caught up before anything is written: its range "from now" is 1..total.
        t2 = TailRecord(p1_then_p2.tail_session(TENANT, session, from_now=True))
        t2_task = asyncio.create_task(t2.follow_until(total))
        await wait_caught_up([t2.tail])
        t1 = TailRecord(on_p2.tail_session(TENANT, session))
        t3 = TailRecord(p1_then_p2.tail_session(TENANT, session))
        tail_tasks = [t2_task] + [asyncio.create_task(t.follow_until(total)) for t in (t1, t3)]

        writer1 = Writer([on_p1, on_p2])
        writer2 = Writer([on_p2])
        p1_signalled = asyncio.Event()

        async def write(writer: Writer, name: str, hold_at: int | None) -> None:
            for start in range(0, per_writer, batch):
                if start == hold_at:
                    # Worst case only: keeps events for this writer to finish after the cut.
                    await p1_signalled.wait()
                await writer.write(
                    [click(session, f"{name}-{n}", n) for n in range(start, start + batch)]
                )

        writers = [
            asyncio.create_task(write(writer1, "w1", hold_at=per_writer * 3 // 4)),
            asyncio.create_task(write(writer2, "w2", hold_at=None)),
        ]
        # Cut T3's process mid-way, after it has received some hundreds of events.
        await t3.wait_for(lambda: len(t3.events) >= 300, "T3 received 300 events")
        received_before_cut = len(t3.events)
        p1.terminate()
        p1_signalled.set()
        assert await p1.wait_for_exit() == 0, p1.log_tail()
        await bounded(asyncio.gather(*writers), "the writers")
        await bounded(asyncio.gather(*tail_tasks), "the tails")

    # The writers: every id stored once, one sequence each, together exactly 1..total.
    assert writer1.conflicts == []
    assert writer2.conflicts == []
    acks = {**writer1.acks, **writer2.acks}
    assert len(writer1.acks) == len(writer2.acks) == per_writer
    assert sorted(acks.values()) == list(range(1, total + 1))
    assert writer1.rpc_failures, "the P1 writer never lost its server"
    assert set(writer1.rpc_failures) <= LOST_SERVER_CODES, writer1.rpc_failures
    assert writer2.rpc_failures == []

    # The tails: every event of their range once, in sequence order, matching what was stored.
    by_sequence = {sequence: event_id for event_id, sequence in acks.items()}
    for name, record in (("T1", t1), ("T2", t2), ("T3", t3)):
        assert record.sequences == list(range(1, total + 1)), name
        assert all(by_sequence[sequence] == eid for sequence, eid in record.events), name
    assert 300 <= received_before_cut < total
    assert t3.tail.resumes >= 1
    assert t2.tail.resumes >= 1
    assert t1.tail.resumes == 0
    union = set(t1.sequences) | set(t2.sequences) | set(t3.sequences)
    assert union == set(range(1, total + 1))

    # The database: exactly the logged events, each once.
    ids = [str(doc["id"]) async for doc in db.events.find(EVENTS, {"id": 1})]
    assert len(ids) == total
    assert sorted(ids) == sorted(acks)


# ---- 2. SIGTERM during 20 live tails ---------------------------------------------------------


@pytest.mark.asyncio
async def test_sigterm_during_20_live_tails_they_resume_on_the_other_process(
    start_service: StartService,
) -> None:
    sessions = [f"cob-{n}" for n in range(4)]
    before, total_live, batch = 20, 1000, 50
    last = before + total_live // len(sessions)  # the final sequence of every session
    p1 = await start_service()
    p2 = await start_service()
    async with (
        sdk(p2.address) as on_p2,
        failover_sdk(p1.port, p2.port) as p1_then_p2,
        authed_channel(p1.address) as p1_channel,
        authed_channel(p2.address) as p2_channel,
    ):
        writer = Writer([on_p2])
        for session in sessions:
            await writer.write([click(session, f"{session}-pre-{n}", n) for n in range(before)])

        tails = [
            TailRecord(p1_then_p2.tail_session(TENANT, sessions[n % len(sessions)]))
            for n in range(20)
        ]
        tail_tasks = [asyncio.create_task(t.follow_until(last)) for t in tails]
        await wait_caught_up([t.tail for t in tails])

        # A raw stream on P1, to see exactly how a tail ends when its process is stopped.
        raw: Any = service_pb2_grpc.AuditLogServiceStub(p1_channel).TailSession(
            service_pb2.TailSessionRequest(
                tenant_id=TENANT, session_id=sessions[0], from_beginning=True
            )
        )
        raw_sequences: list[int] = []
        while not (response := await raw.read()).HasField("caught_up"):
            raw_sequences.extend(e.sequence for e in response.events.events)
        assert raw_sequences == list(range(1, before + 1))

        half_written, p1_signalled, p1_gone = asyncio.Event(), asyncio.Event(), asyncio.Event()
        last_round = total_live - batch * len(sessions)  # each session's last batch from here

        async def write_live() -> None:
            for number, start in enumerate(range(0, total_live, batch)):
                if start == total_live // 2:
                    half_written.set()
                    await p1_signalled.wait()  # the second half is written during the shutdown
                if start == last_round:
                    # Each session's last batch only once P1 has exited: a tail that P1 was slow
                    # to end could otherwise have had all of its events from P1 (seen on a busy
                    # machine: one of the 20 never needed to resume).
                    await p1_gone.wait()
                session = sessions[number % len(sessions)]
                await writer.write(
                    [click(session, f"{session}-live-{n}", n) for n in range(start, start + batch)]
                )

        writing = asyncio.create_task(write_live())
        await bounded(half_written.wait(), "the first half of the writes")
        p1.terminate()
        p1_signalled.set()

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await read_to_end(raw, raw_sequences)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        reason, cursors = shutdown_details(failure.value)
        assert reason == "ERROR_REASON_SHUTTING_DOWN"
        assert len(cursors) == 1
        assert cursors[0]
        assert await p1.wait_for_exit() == 0, p1.log_tail()
        p1_gone.set()

        # The trailer's cursor continues on P2 right after the last event the stream delivered.
        resumed = service_pb2_grpc.AuditLogServiceStub(p2_channel).TailSession(
            service_pb2.TailSessionRequest(
                tenant_id=TENANT, session_id=sessions[0], cursor=cursors[0]
            ),
            timeout=DEADLINE_S,
        )
        async for response in resumed:
            raw_sequences.extend(e.sequence for e in response.events.events)
            if raw_sequences[-1] >= last:
                break
        resumed.cancel()

        await bounded(writing, "the writer")
        await bounded(asyncio.gather(*tail_tasks), "the tails")

    assert raw_sequences == list(range(1, last + 1))
    assert writer.rpc_failures == []
    assert writer.conflicts == []
    assert len(writer.acks) == len(sessions) * before + total_live
    for n, record in enumerate(tails):
        assert record.sequences == list(range(1, last + 1)), n
        assert record.tail.resumes >= 1, n
    ids_by_session = {
        session: {eid for eid in writer.acks if eid.startswith(f"{session}-")}
        for session in sessions
    }
    for n, record in enumerate(tails):
        assert {eid for _, eid in record.events} == ids_by_session[sessions[n % len(sessions)]]


@pytest.mark.asyncio
async def test_tails_that_start_together_on_one_session_all_get_the_next_event(
    client: AuditLogClient, mongodb_uri: str, database_name: str
) -> None:
    """Tails that start at once on a server that has not seen the session: a write through that
    server must reach every one of them (no failover involved)."""
    session = "cob-together"
    for start in range(0, 1000, 500):  # written through another server: B's head cache is cold
        await client.log_events([click(session, f"pre-{n}", n) for n in range(start, start + 500)])
    other = await start_server(settings_for_test(mongodb_uri, database_name))
    try:
        await other.ready()
        async with sdk(f"127.0.0.1:{other.port}") as on_other:
            request = service_pb2.TailSessionRequest(
                tenant_id=TENANT, session_id=session, from_now=True
            )
            streams = [on_other.stub.TailSession(request, timeout=DEADLINE_S) for _ in range(10)]

            async def until_caught_up(stream: Any) -> None:
                while not (await stream.read()).HasField("caught_up"):
                    pass

            async def next_event(stream: Any) -> int:
                while True:
                    response = await stream.read()
                    assert response is not grpc.aio.EOF  # type: ignore[attr-defined]
                    if response.HasField("events"):
                        return int(response.events.events[0].sequence)

            await bounded(asyncio.gather(*(until_caught_up(s) for s in streams)), "catching up")
            logged = await on_other.log_events([click(session, "next", 1000)])
            assert logged.results[0].event.sequence == 1001
            # A write through the same server wakes its tails at once; the bound is generous.
            got = await asyncio.wait_for(asyncio.gather(*(next_event(s) for s in streams)), 45.0)
            assert got == [1001] * len(streams)
            for stream in streams:
                stream.cancel()
    finally:
        await other.stop(grace_s=0.5)


# ---- 3. streaming ingest of 10,000 events over one stream ----------------------------------


async def stream_all(
    client: AuditLogClient, events: Sequence[Event]
) -> list[service_pb2.StreamEventsResponse]:
    async def requests() -> AsyncIterator[service_pb2.StreamEventsRequest]:
        for event in events:
            yield service_pb2.StreamEventsRequest(event=event)

    call = client.stub.StreamEvents(requests(), timeout=STREAM_TIMEOUT_S)
    responses = [response async for response in call]
    assert await call.code() == grpc.StatusCode.OK
    return responses


@pytest.mark.asyncio
@pytest.mark.timeout(600)
async def test_streaming_ingest_of_10000_events_with_a_bad_one_in_the_middle(
    client: AuditLogClient, db: Any
) -> None:
    session, count, bad_index = "cob-stream", 10_001, 5_000
    events = [click(session, f"ev-{n}", n) for n in range(count)]
    events[bad_index].cobrowse.session_id = ""
    bad_path = f"requests[{bad_index}].event.cobrowse.session_id"

    def check(responses: list[service_pb2.StreamEventsResponse], retried: bool) -> list[int]:
        assert [r.request_index for r in responses] == list(range(count))
        sequences = []
        for index, (event, response) in enumerate(zip(events, responses, strict=True)):
            if index == bad_index:
                assert response.WhichOneof("result") == "error"
                assert response.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
                assert [v.field for v in response.error.field_violations] == [bad_path]
                continue
            assert response.WhichOneof("result") == "ack", (index, response)
            assert response.ack.id == event.id
            assert response.ack.already_stored == retried, index
            sequences.append(response.ack.sequence)
        return sequences

    first = check(await stream_all(client, events), retried=False)
    assert first == list(range(1, count))  # in request order; the bad one took no slot
    assert await db.events.count_documents(EVENTS) == count - 1

    again = check(await stream_all(client, events), retried=True)
    assert again == first
    assert await db.events.count_documents(EVENTS) == count - 1
    assert await db.events.count_documents({"id": events[bad_index].id}) == 0


# ---- 5. the tenant tail (TailEvents) across a SIGTERM, writers on both processes --------------


def login(event_id: str, number: int) -> Event:
    return Event(
        id=event_id,
        tenant_id=TENANT,
        tenant_user_id=f"agent-{number % 5}",
        logged_in=payloads_pb2.LoggedInAttributes(),
    )


@pytest.mark.asyncio
async def test_a_tenant_tail_resumes_across_sigterm_and_sees_each_ledger_entry_once(
    start_service: StartService,
) -> None:
    batches, batch = 24, 25
    p1 = await start_service()
    p2 = await start_service()
    async with (
        sdk(p1.address) as on_p1,
        sdk(p2.address) as on_p2,
        failover_sdk(p1.port, p2.port) as p1_then_p2,
    ):
        # One writer through each process (P1's moves to P2 when P1 goes), general events and
        # co-browsing ones in the same tenant.
        writers = [Writer([on_p1, on_p2]), Writer([on_p2])]
        seen: list[tuple[int, str]] = []
        progress = asyncio.Event()
        tail = p1_then_p2.tail_events(TENANT)

        async def follow() -> None:
            async for event in tail:
                seen.append((event.ledger_sequence, event.id))
                progress.set()

        following = asyncio.create_task(follow())
        halfway, p1_signalled = asyncio.Event(), asyncio.Event()

        async def write(writer: Writer, name: str) -> None:
            for b in range(batches):
                if b == batches // 2:
                    halfway.set()
                    await p1_signalled.wait()  # the second half during and after the shutdown
                events = [
                    login(f"{name}-{b}-{n}", n)
                    if n % 2
                    else click(f"cob-{name}", f"{name}-{b}-{n}", n)
                    for n in range(batch)
                ]
                await writer.write(events)

        writing = asyncio.gather(write(writers[0], "w1"), write(writers[1], "w2"))
        await bounded(halfway.wait(), "the first half of the writes")
        await bounded(tail.caught_up.wait(), "the tenant tail catching up")
        p1.terminate()
        p1_signalled.set()
        await bounded(writing, "the writers")
        assert await p1.wait_for_exit() == 0, p1.log_tail()
        total = sum(len(w.acks) for w in writers)
        assert total == 2 * batches * batch
        async with asyncio.timeout(DEADLINE_S):
            while len(seen) < total:
                progress.clear()
                await progress.wait()
        following.cancel()

    assert [sequence for sequence, _ in seen] == list(range(1, total + 1))
    assert {event_id for _, event_id in seen} == {e for w in writers for e in w.acks}
    assert tail.resumes >= 1


# ---- 6. one tenant's ledger, written through both processes --------------------------------


@pytest.mark.asyncio
async def test_four_writers_through_two_processes_fill_one_ledger_with_each_event_once(
    start_service: StartService,
) -> None:
    """Batches and streams of general and co-browsing events, through two processes into one
    tenant: its ledger is 1..N without a gap, verifies, and holds each acknowledged event once."""
    p1 = await start_service()
    p2 = await start_service()

    def mixed(name: str, b: int) -> list[Event]:
        return [
            login(f"{name}-{b}-{n}", n) if n % 2 else click(f"cob-{name}", f"{name}-{b}-{n}", n)
            for n in range(20)
        ]

    async def by_batches(client: AuditLogClient, name: str) -> set[str]:
        acked = set()
        for b in range(6):
            response = await client.log_events(mixed(name, b))
            assert all(r.WhichOneof("result") == "event" for r in response.results)
            acked |= {r.event.id for r in response.results}
        return acked

    async def by_stream(client: AuditLogClient, name: str) -> set[str]:
        responses = await stream_all(client, [e for b in range(6) for e in mixed(name, b)])
        assert all(r.WhichOneof("result") == "ack" for r in responses)
        return {r.ack.id for r in responses}

    async with sdk(p1.address) as on_p1, sdk(p2.address) as on_p2:
        written = await bounded(
            asyncio.gather(
                by_batches(on_p1, "b1"),
                by_batches(on_p2, "b2"),
                by_stream(on_p1, "s1"),
                by_stream(on_p2, "s2"),
            ),
            "the four writers",
        )
        acked = set().union(*written)
        assert len(acked) == 4 * 6 * 20
        # The ledger, read through the other process than most of the writes went: GetCheckpoint
        # sequences what was acknowledged before it on either process (read your writes).
        head = await on_p2.stub.GetCheckpoint(service_pb2.GetCheckpointRequest(tenant_id=TENANT))
        assert head.head_sequence == len(acked)
        ids, sequences = [], []
        async for item in on_p1.stub.ExportEvents(
            service_pb2.ExportEventsRequest(tenant_id=TENANT)
        ):
            if item.WhichOneof("item") == "event":
                ids.append(item.event.entry.event_id)
                sequences.append(item.event.entry.ledger_sequence)
        report = await verify_ledger(on_p2, TENANT)
    assert sequences == list(range(1, len(acked) + 1))
    assert len(ids) == len(set(ids))
    assert set(ids) == acked
    assert report.ok, report.findings
