"""Co-browsing ids after a writer died mid-write: retries finish, lookups never scan.

Each test builds in the database the state a writer leaves when it is killed at one point of
its write (see storage._GroupWrite), then retries and looks the event up through the service.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from auditlog import AuditLogClient
from auditlog.ids import new_event_id
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2
from auditlog_service import convert
from auditlog_service.server import RunningServer
from auditlog_service.storage import EventRepository
from tests.conftest import sdk, unledgered

TENANT = "acme"
SESSION = "cob-crash"
PREPARER = convert.EventPreparer("auditlog-dev-token-secret")


def click(number: int) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        id=new_event_id(),
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(session_id=SESSION, actor=enums_pb2.ACTOR_AGENT),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"el-{number}")),
    )


def document(event: audit_event_pb2.AuditEvent, sequence: int) -> convert.Document:
    doc = convert.to_document(
        PREPARER.prepare(event), event_id=event.id, receive_time=convert.now_millis()
    )
    convert.assign_slot(doc, sequence)
    return doc


class FindRecorder(monitoring.CommandListener):
    """Every find filter a client sends."""

    def __init__(self) -> None:
        self.filters: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.filters.append(dict(event.command.get("filter", {})))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def locate_with_point_lookups_only(
    mongodb_uri: str, database_name: str, key: str
) -> convert.Document | None:
    recorder = FindRecorder()
    client: AsyncMongoClient[convert.Document] = AsyncMongoClient(
        mongodb_uri, tz_aware=True, event_listeners=[recorder]
    )
    try:
        repository = EventRepository(client, database_name, 1)
        await repository.detect_backend()
        found = await repository.find_by_key(key)
    finally:
        await client.close()
    assert recorder.filters, "no lookup at all"
    assert all(set(f) == {"_id"} and isinstance(f["_id"], str) for f in recorder.filters), (
        recorder.filters
    )
    return found


async def other_events(client: AuditLogClient, count: int) -> None:
    await client.log_events([click(100 + n) for n in range(count)])


@pytest.mark.asyncio
async def test_a_claim_whose_slot_another_event_took_is_retried_to_the_next_slot(
    server: RunningServer, client: AuditLogClient, db: Any, mongodb_uri: str, database_name: str
) -> None:
    # Killed after its claim (aiming at slot 1) was written, before its event; slot 1 then
    # went to another writer's event.
    event = click(1)
    await db.events.insert_one(convert.id_claim(document(event, 1)))
    await other_events(client, 3)
    retry = await client.log_event(event)
    assert not retry.already_stored
    assert retry.event.sequence == 4
    assert unledgered(await client.get_event(TENANT, event.id)) == retry.event
    found = await locate_with_point_lookups_only(mongodb_uri, database_name, f"{TENANT}/{event.id}")
    assert found is not None
    assert found["sequence"] == 4
    # One copy, one sequence; the session has no hole.
    assert await db.events.count_documents({"key": f"{TENANT}/{event.id}", "type": "CLICK"}) == 1
    again = await client.log_event(event)
    assert again.already_stored
    assert again.event.sequence == 4


@pytest.mark.asyncio
async def test_an_event_whose_writer_died_after_losing_a_race_is_found_by_id_lookups(
    server: RunningServer, client: AuditLogClient, db: Any, mongodb_uri: str, database_name: str
) -> None:
    # Claim aimed at slot 1 (taken by another writer); the writer then wrote record #1 and the
    # event at slot 3, and was killed before it pointed the claim there.
    await other_events(client, 2)
    event = click(1)
    first = document(event, 1)
    moved = document(event, 3)
    moved["run_end"] = 3
    await db.events.insert_many(
        [convert.id_claim(first), convert.placement_record(moved, 1), moved], ordered=True
    )
    await other_events(client, 2)
    found = await locate_with_point_lookups_only(mongodb_uri, database_name, f"{TENANT}/{event.id}")
    assert found is not None
    assert found["sequence"] == 3
    stored = await client.get_event(TENANT, event.id)
    assert stored.sequence == 3
    # The lookup repaired the claim: it now names the event's slot.
    claim = await db.events.find_one({"_id": f"{TENANT}/{event.id}"})
    assert claim["slot"] == moved["_id"]
    retry = await client.log_event(event)
    assert retry.already_stored
    assert retry.event.sequence == 3


@pytest.mark.asyncio
async def test_a_record_whose_slot_is_still_free_gets_the_event_exactly_there(
    server: RunningServer, client: AuditLogClient, db: Any
) -> None:
    # Killed after record #1 (aiming at slot 3, the next free one) and before the event.
    await other_events(client, 2)
    event = click(1)
    await db.events.insert_many(
        [convert.id_claim(document(event, 1)), convert.placement_record(document(event, 3), 1)]
    )
    retry = await client.log_event(event)
    assert retry.event.sequence == 3
    assert not retry.already_stored
    # Stored whole, as any event: the document written to the adopted slot is not the
    # writer's dict (which leaves out what only its BSON holds, such as the payload).
    stored = await client.get_event(TENANT, event.id)
    assert unledgered(stored) == retry.event
    assert stored.click.element.id == "el-1"
    follower = (await client.log_event(click(2))).event
    assert follower.sequence == 4


@pytest.mark.asyncio
async def test_concurrent_retries_of_an_orphaned_event_store_it_once(
    server: RunningServer, client: AuditLogClient, db: Any
) -> None:
    event = click(1)
    await db.events.insert_one(convert.id_claim(document(event, 1)))
    await other_events(client, 1)
    async with sdk(f"127.0.0.1:{server.port}") as second:
        answers = await asyncio.gather(
            *(c.log_event(event) for c in (client, second, client, second))
        )
    assert {a.event.sequence for a in answers} == {2}
    assert sum(not a.already_stored for a in answers) == 1
    assert await db.events.count_documents({"key": f"{TENANT}/{event.id}", "type": "CLICK"}) == 1


@pytest.mark.asyncio
async def test_an_event_that_lost_its_slot_after_its_claim_went_in_moves_on_in_one_round(
    server: RunningServer, client: AuditLogClient, db: Any
) -> None:
    # The server knows the session's head (1); another writer then takes slot 2 behind its
    # back. The next event's claim (aiming at slot 2) goes in and the event stops the insert:
    # the group knows the claim is written and writes record #1 for slot 3 next, one round
    # later, rather than trying the claim again first.
    await other_events(client, 1)
    elsewhere = document(click(50), 2)
    await db.events.insert_many([convert.id_claim(elsewhere), elsewhere], ordered=True)
    event = click(1)
    stats = server.repository.stats
    rounds_before = stats["rounds"]
    stored = await client.log_event(event)
    assert stored.event.sequence == 3
    assert stats["rounds"] - rounds_before == 2
    assert await db.events.find_one({"_id": f"{TENANT}/{event.id}#1"}) is not None
    # The claim names the slot its event got (one point lookup for GetEvent).
    claim = await db.events.find_one({"_id": f"{TENANT}/{event.id}"})
    assert (claim["slot"], claim["gen"]) == (document(event, 3)["_id"], 1)
