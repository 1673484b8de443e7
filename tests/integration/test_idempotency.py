"""Idempotency on (tenant, id): a retry stores once; an id reused for other content fails."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from auditlog import AuditLogClient, AuditLogError
from tests.conftest import EVENTS, unledgered
from tests.event_samples import valid_event_of_each_type

TENANT = "acme"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["start_call", "click"])
async def test_retry_returns_the_stored_event_and_stores_one_document(
    client: AuditLogClient, db: Any, kind: str
) -> None:
    event = valid_event_of_each_type(TENANT)[kind]
    first = await client.log_event(event)
    again = await client.log_event(event)
    assert not first.already_stored
    assert again.already_stored
    assert again.event == first.event
    assert await db.events.count_documents({"key": f"{TENANT}/{event.id}"}) == 1


@pytest.mark.asyncio
async def test_concurrent_retries_of_a_cobrowse_event_take_one_slot(
    client: AuditLogClient, db: Any
) -> None:
    samples = valid_event_of_each_type(TENANT)
    event = samples["scroll"]
    responses = await asyncio.gather(*(client.log_event(event) for _ in range(8)))
    assert {r.event.sequence for r in responses} == {1}
    assert sum(not r.already_stored for r in responses) == 1
    follower = (await client.log_event(samples["click"])).event
    assert follower.sequence == 2, "the retried event did not take a second slot"
    assert await db.events.count_documents({"session_id": event.cobrowse.session_id}) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("start_call", "start_call"),
        ("click", "click"),
        ("start_call", "click"),
        ("click", "start_call"),
    ],
)
async def test_reusing_an_id_with_other_content_fails(
    client: AuditLogClient, db: Any, first: str, second: str
) -> None:
    samples = valid_event_of_each_type(TENANT)
    original = samples[first]
    await client.log_event(original)
    clash = valid_event_of_each_type(TENANT)[second]
    clash.id = original.id
    with pytest.raises(AuditLogError) as failure:
        await client.log_event(clash)
    assert failure.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert failure.value.reason == "ERROR_REASON_ID_CONFLICT"
    assert await db.events.count_documents({"key": f"{TENANT}/{original.id}"}) == 1
    assert (
        unledgered(await client.get_event(TENANT, original.id))
        == (await client.log_event(original)).event
    )


@pytest.mark.asyncio
async def test_same_id_in_two_tenants_are_two_events(client: AuditLogClient) -> None:
    one = valid_event_of_each_type("tenant-one")["logged_in"]
    two = valid_event_of_each_type("tenant-two")["logged_in"]
    two.id = one.id
    assert not (await client.log_event(one)).already_stored
    assert not (await client.log_event(two)).already_stored
    assert (await client.get_event("tenant-two", one.id)).tenant_id == "tenant-two"


@pytest.mark.asyncio
async def test_get_of_an_unknown_id_is_not_found(client: AuditLogClient) -> None:
    with pytest.raises(AuditLogError) as failure:
        await client.get_event(TENANT, "no-such-event")
    assert failure.value.code == grpc.StatusCode.NOT_FOUND
    assert failure.value.reason == "ERROR_REASON_EVENT_NOT_FOUND"


@pytest.mark.asyncio
async def test_many_concurrent_log_event_calls_are_each_stored_once(
    client: AuditLogClient, db: Any
) -> None:
    events = [valid_event_of_each_type(TENANT)["messenger_send"] for _ in range(300)]
    responses = await asyncio.gather(*(client.log_event(e) for e in events))
    assert [r.event.id for r in responses] == [e.id for e in events]
    assert await db.events.count_documents(EVENTS) == 300
