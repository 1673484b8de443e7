"""BatchingLogger against the real server and database: volume, outages, an unreachable server.

What is checked, in the logger's own terms (see auditlog/batching.py):
- every event passed to log() ends up either delivered (acknowledged by the service, so stored) or
  reported exactly once to on_undelivered: delivered + undelivered + dropped == logged;
- the database holds every delivered event exactly once, and nothing else except events that
  were reported with `maybe_stored` (a write whose answer was lost, e.g. the database died after
  committing it): every other reported event is absent;
- log() is a plain synchronous call that never raises and never lets the queue grow past its
  bound, also while the database or the whole server is down.

The outage test runs its own FerretDB (as test_database_outage.py does) and is skipped when
MONGODB_URI points at a server it cannot stop.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from auditlog import (
    QUEUE_FULL,
    AuditLogClient,
    BatchingLogger,
    DeliveryFailure,
    cobrowse_event,
    general_event,
)
from auditlog.v1 import audit_event_pb2, payloads_pb2
from auditlog_service.devdb import FerretDB, free_port
from auditlog_service.server import RunningServer, start_server
from tests.conftest import EVENTS, sdk, settings_for_test

TENANT = "acme"
Event = audit_event_pb2.AuditEvent
# Bounds waits that only hang when something is broken (the database restarts in a few seconds).
DEADLINE_S = 60.0


@dataclass
class Ledger:
    """What the test logged, and what the logger said about each event."""

    logged: list[str] = field(default_factory=list)
    delivered: set[str] = field(default_factory=set)
    reported: dict[str, DeliveryFailure] = field(default_factory=dict)
    reported_twice: list[str] = field(default_factory=list)
    first_outage_report: asyncio.Event = field(default_factory=asyncio.Event)

    def on_delivered(self, event: Event) -> None:
        assert event.id not in self.delivered, event.id
        self.delivered.add(event.id)

    def on_undelivered(self, event: Event, failure: DeliveryFailure) -> None:
        if event.id in self.reported:
            self.reported_twice.append(event.id)
        self.reported[event.id] = failure
        if failure.reason != QUEUE_FULL:
            self.first_outage_report.set()

    def logger(self, client: AuditLogClient, **options: Any) -> BatchingLogger:
        return BatchingLogger(
            client, on_delivered=self.on_delivered, on_undelivered=self.on_undelivered, **options
        )


def event_of(task: int, n: int) -> Event:
    """Mostly general events; every fifth a click in the task's own co-browsing session."""
    if n % 5 == 4:
        return cobrowse_event(
            TENANT,
            f"cob-{task}",
            "customer",
            payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"{n:06d}")),
        )
    return general_event(
        TENANT,
        f"agent-{task}",
        payloads_pb2.StartCallAttributes(call_id=f"call-{task}-{n}", customer_id="cust-1"),
    )


def assert_accounted(logger: BatchingLogger, ledger: Ledger) -> None:
    """Every logged event is delivered or reported, once, and the counters agree."""
    assert logger.pending == 0
    assert logger.logged == len(ledger.logged) == len(set(ledger.logged))
    assert ledger.reported_twice == []
    assert ledger.delivered.isdisjoint(ledger.reported)
    assert ledger.delivered | set(ledger.reported) == set(ledger.logged)
    dropped = sum(1 for f in ledger.reported.values() if f.reason == QUEUE_FULL)
    assert logger.delivered == len(ledger.delivered)
    assert logger.dropped_queue_full == dropped
    assert logger.undelivered == len(ledger.reported) - dropped
    assert logger.delivered + logger.undelivered + logger.dropped_queue_full == logger.logged


async def stored_ids(db: Any) -> list[str]:
    return [doc["id"] async for doc in db.events.find(EVENTS, {"id": 1, "_id": 0})]


def assert_database_matches(ids_in_db: list[str], ledger: Ledger) -> None:
    """Nothing acknowledged is lost; nothing is stored twice; nothing else is stored unless the
    logger said it might have been."""
    in_db = set(ids_in_db)
    assert len(ids_in_db) == len(in_db), "an event is stored twice"
    assert ledger.delivered <= in_db, f"{len(ledger.delivered - in_db)} delivered events lost"
    maybe_stored = {i for i, f in ledger.reported.items() if f.maybe_stored}
    unexpected = in_db - ledger.delivered - maybe_stored
    assert not unexpected, f"{len(unexpected)} stored events were reported as not stored"


# ---- volume ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_50000_events_from_10_tasks_arrive_exactly_once(
    client: AuditLogClient, db: Any
) -> None:
    tasks, per_task = 10, 5000
    ledger = Ledger()

    async with ledger.logger(client) as logger:

        async def produce(task: int) -> None:
            for n in range(per_task):
                ledger.logged.append(logger.log(event_of(task, n)))
                assert logger.queued <= logger.max_queue
                if n % 250 == 249:
                    # Paces each producer, so that 10 of them never fill the 10,000-event queue.
                    await logger.flush()

        await asyncio.gather(*(produce(task) for task in range(tasks)))
    # Leaving the block flushed everything.

    assert logger.logged == tasks * per_task
    assert_accounted(logger, ledger)
    assert ledger.reported == {}
    assert logger.delivered == tasks * per_task
    # One read of everything (FerretDB answers any non-_id query with a full scan).
    docs = [
        doc
        async for doc in db.events.find(
            EVENTS,
            {"_id": 0, "id": 1, "sequence": 1, "cobrowse.session_id": 1, "click.element.id": 1},
        )
    ]
    ids_in_db = [doc["id"] for doc in docs]
    assert len(ids_in_db) == tasks * per_task
    assert set(ids_in_db) == set(ledger.logged)
    # Batches go out one at a time in log order: each session's sequence follows its log order.
    sessions: dict[str, list[tuple[int, str]]] = {}
    for doc in docs:
        if "cobrowse" in doc:
            sessions.setdefault(doc["cobrowse"]["session_id"], []).append(
                (doc["sequence"], doc["click"]["element"]["id"])
            )
    assert sorted(sessions) == sorted(f"cob-{task}" for task in range(tasks))
    for clicks in sessions.values():
        clicks.sort()
        assert [seq for seq, _ in clicks] == list(range(1, per_task // 5 + 1))
        assert [element for _, element in clicks] == [f"{n:06d}" for n in range(4, per_task, 5)]


@pytest.mark.asyncio
async def test_batches_larger_than_the_service_takes_are_split(
    client: AuditLogClient, db: Any
) -> None:
    ledger = Ledger()
    # The service takes at most 1,000 events per LogEvents call (its default limit).
    async with ledger.logger(client, max_batch=1500, max_delay_s=3600) as logger:
        for n in range(1500):
            ledger.logged.append(logger.log(event_of(1, n)))
    assert_accounted(logger, ledger)
    assert logger.delivered == 1500
    assert sorted(await stored_ids(db)) == sorted(ledger.logged)


# ---- the idempotent retry the logger relies on -----------------------------------------------


@pytest.mark.asyncio
async def test_a_retried_batch_whose_first_part_was_stored_is_stored_whole(
    client: AuditLogClient, db: Any
) -> None:
    """A batch retried after a lost answer: its first 60 events were stored by the attempt whose
    answer was lost, the rest were not. Every event the retry acknowledges must be stored."""
    batch = [event_of(0, n) for n in range(200)]
    await client.log_events(batch[:60])
    response = await client.log_events(batch)
    acknowledged = {r.event.id for r in response.results if r.WhichOneof("result") == "event"}
    in_db = set(await stored_ids(db))
    lost = acknowledged - in_db
    assert len(lost) == 0, "acknowledged events are not in the database"
    assert acknowledged == in_db == {e.id for e in batch}
    assert all(r.already_stored for r in response.results[:60])


# ---- the database dies mid-run and comes back ------------------------------------------------

needs_own_ferretdb = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")),
    reason="MONGODB_URI points at a server this test cannot stop; it runs on its own FerretDB",
)


@pytest.fixture
def ferretdb(tmp_path: Path) -> Iterator[FerretDB]:
    db = FerretDB(tmp_path / "ferretdb", free_port())
    db.start()
    try:
        yield db
    finally:
        db.stop()


@pytest_asyncio.fixture
async def own_server(ferretdb: FerretDB, database_name: str) -> AsyncIterator[RunningServer]:
    server = await start_server(settings_for_test(ferretdb.uri, database_name))
    try:
        await asyncio.wait_for(server.ready(), DEADLINE_S)
        yield server
    finally:
        await server.stop(grace_s=0.5)


@needs_own_ferretdb
@pytest.mark.asyncio
async def test_database_outage_loses_nothing_acknowledged_and_reports_the_rest(
    ferretdb: FerretDB, own_server: RunningServer, database_name: str
) -> None:
    ledger = Ledger()
    stop_producing = asyncio.Event()
    warmed_up = asyncio.Event()  # enough events delivered before the outage
    recovered = asyncio.Event()  # enough events delivered after the restart
    restarted_at: list[int] = []  # the delivered count when the database came back

    async with sdk(f"127.0.0.1:{own_server.port}", timeout_s=10.0) as client:
        logger = ledger.logger(
            client,
            max_batch=200,
            max_queue=1000,
            retry_budget_s=2.0,
            initial_backoff_s=0.05,
            max_backoff_s=0.5,
        )

        async def produce(task: int) -> None:
            n = 0
            while not stop_producing.is_set():
                for _ in range(50):
                    ledger.logged.append(logger.log(event_of(task, n)))
                    n += 1
                await logger.flush()
                if logger.delivered >= 3000:
                    warmed_up.set()
                if restarted_at and logger.delivered >= restarted_at[0] + 2000:
                    recovered.set()

        producers = [asyncio.create_task(produce(task)) for task in range(4)]
        try:
            async with asyncio.timeout(DEADLINE_S):
                await warmed_up.wait()

            await asyncio.to_thread(ferretdb.stop)
            # The sender is now stuck retrying and the producers wait in flush(). A burst of
            # log() calls must still return at once, keep the queue within its bound, and
            # report each event that does not fit within the very call that drops it.
            burst_dropped = logger.dropped_queue_full
            for n in range(3 * logger.max_queue):
                dropped, reported = logger.dropped_queue_full, len(ledger.reported)
                ledger.logged.append(logger.log(event_of(99, n)))
                assert logger.queued <= logger.max_queue
                assert logger.dropped_queue_full - dropped == len(ledger.reported) - reported
                if n % 100 == 99:
                    await asyncio.sleep(0)  # a yield, not a wait: the sender runs and fails
            assert logger.dropped_queue_full - burst_dropped >= logger.max_queue
            # Keep the database down until a batch has run out of retry budget.
            async with asyncio.timeout(DEADLINE_S):
                await ledger.first_outage_report.wait()

            await asyncio.to_thread(ferretdb.start)  # same port, same data
            restarted_at.append(logger.delivered)
            async with asyncio.timeout(DEADLINE_S):
                await recovered.wait()
        finally:
            stop_producing.set()
            async with asyncio.timeout(DEADLINE_S):
                await asyncio.gather(*producers)
                await logger.close()

    assert_accounted(logger, ledger)
    outage_failures = [f for f in ledger.reported.values() if f.reason != QUEUE_FULL]
    assert outage_failures, "the outage should have exhausted some retry budgets"
    for failure in outage_failures:
        # Only the outage failed anything: no event was rejected for its content.
        assert failure.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert failure.maybe_stored
        assert "retry budget" in failure.message
        assert failure.attempts >= 1

    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.uri, tz_aware=True)
    try:
        ids_in_db = await stored_ids(mongo.get_database(database_name))
    finally:
        await mongo.close()
    assert_database_matches(ids_in_db, ledger)
    assert logger.delivered >= restarted_at[0] + 2000


# ---- the server is not there at all ----------------------------------------------------------


@pytest.mark.asyncio
async def test_with_no_server_log_never_blocks_and_every_event_is_reported() -> None:
    assert not inspect.iscoroutinefunction(BatchingLogger.log)
    ledger = Ledger()
    # A port nothing listens on (taken and released by free_port).
    async with sdk(f"127.0.0.1:{free_port()}", timeout_s=2.0) as client:
        logger = ledger.logger(
            client, max_batch=100, max_queue=200, retry_budget_s=0.5, initial_backoff_s=0.05
        )
        async with logger:
            for n in range(1000):
                result = logger.log(event_of(0, n))
                assert isinstance(result, str)  # an id, not something to await
                ledger.logged.append(result)
                assert logger.queued <= logger.max_queue
                if n % 100 == 99:
                    await asyncio.sleep(0)  # a yield, not a wait: the sender runs and fails
    assert_accounted(logger, ledger)
    assert logger.delivered == 0
    assert logger.dropped_queue_full > 0
    for failure in ledger.reported.values():
        if failure.reason != QUEUE_FULL:
            # Refused connections (or gRPC's own retries of them running out of deadline).
            assert failure.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert failure.maybe_stored  # the logger cannot tell "refused" from "lost"
