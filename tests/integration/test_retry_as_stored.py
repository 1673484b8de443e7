"""Idempotency is judged on what is stored: a retry of the stored event is a retry, not a clash."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import audit_event_pb2, service_pb2, service_pb2_grpc
from tests.conftest import unledgered
from tests.event_samples import valid_event_of_each_type

TENANT = "acme"
AuditEvent = audit_event_pb2.AuditEvent
Stub = service_pb2_grpc.AuditLogServiceStub


def odd_event(kind: str) -> AuditEvent:
    """A valid event with every value the server normalises set to an unnormalised one."""
    event = valid_event_of_each_type(TENANT)[kind]
    event.occur_time.nanos = 123_456_789
    if kind == "scroll":
        event.scroll.position.top = -0.0
        event.scroll.position.left = -0.0
    if kind == "meeting_change":
        event.meeting_change.conference.start_time.nanos = 999_999
        event.meeting_change.conference.end_time.nanos = 5_000_001
    if kind == "custom_event":
        event.custom_event.value.Clear()
    return event


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", list(valid_event_of_each_type(TENANT)))
async def test_sending_back_the_event_as_stored_is_an_idempotent_retry(
    stub: Stub, kind: str
) -> None:
    event = odd_event(kind)
    first = await stub.LogEvent(service_pb2.LogEventRequest(event=event))
    assert not first.already_stored
    # What LogEvent answered is what a read returns (with the ledger's place, once sequenced)...
    read = await stub.GetEvent(service_pb2.GetEventRequest(tenant_id=TENANT, id=event.id))
    assert unledgered(read.event) == first.event
    # ...and sending exactly that back is the same event, not another one with the same id.
    again = await stub.LogEvent(service_pb2.LogEventRequest(event=first.event))
    assert again.already_stored
    assert again.event == first.event


@pytest.mark.asyncio
async def test_a_retry_may_leave_out_or_repeat_the_occur_time_the_server_filled_in(
    client: AuditLogClient,
) -> None:
    event = valid_event_of_each_type(TENANT)["click"]
    event.ClearField("occur_time")
    first = (await client.log_event(event)).event
    assert first.occur_time == first.receive_time
    retry_without = await client.log_event(event)
    retry_with = audit_event_pb2.AuditEvent()
    retry_with.CopyFrom(event)
    retry_with.occur_time.CopyFrom(first.occur_time)
    assert retry_without.already_stored
    assert (await client.log_event(retry_with)).already_stored
    other_time = audit_event_pb2.AuditEvent()
    other_time.CopyFrom(retry_with)
    other_time.occur_time.seconds -= 1
    with pytest.raises(AuditLogError) as clash:
        await client.log_event(other_time)
    assert clash.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert clash.value.reason == "ERROR_REASON_ID_CONFLICT"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["start_call", "page_change"])
async def test_fields_unknown_to_the_server_are_not_part_of_the_content(
    stub: Stub, db: Any, kind: str
) -> None:
    event = valid_event_of_each_type(TENANT)[kind]
    # Field 999 (varint 1) of a newer contract version.
    newer = AuditEvent.FromString(event.SerializeToString() + b"\xb8\x3e\x01")
    first = await stub.LogEvent(service_pb2.LogEventRequest(event=newer))
    again = await stub.LogEvent(service_pb2.LogEventRequest(event=event))
    assert not first.already_stored
    assert again.already_stored
    assert again.event == first.event
    assert await db.events.count_documents({"id": event.id, "type": {"$exists": True}}) == 1


@pytest.mark.asyncio
async def test_two_different_secrets_under_one_id_conflict_and_none_is_stored(
    client: AuditLogClient, db: Any
) -> None:
    event = valid_event_of_each_type(TENANT)["input"]
    event.input.sensitive = True
    event.input.text = "hunter2"
    first = await client.log_event(event)
    assert first.event.input.masked
    assert (await client.log_event(event)).already_stored
    other = audit_event_pb2.AuditEvent()
    other.CopyFrom(event)
    other.input.text = "hunter3"
    with pytest.raises(AuditLogError) as clash:
        await client.log_event(other)
    assert clash.value.code == grpc.StatusCode.ALREADY_EXISTS
    async for doc in db.events.find({}):
        assert "hunter" not in repr(doc)


@pytest.mark.asyncio
async def test_minus_zero_and_a_kindless_value_read_back_as_answered(
    client: AuditLogClient,
) -> None:
    scroll = odd_event("scroll")
    stored = (await client.log_event(scroll)).event
    assert math.copysign(1.0, stored.scroll.position.top) == 1.0
    assert unledgered(await client.get_event(TENANT, scroll.id)) == stored
    custom = odd_event("custom_event")
    stored = (await client.log_event(custom)).event
    assert stored.custom_event.value.WhichOneof("kind") == "null_value"
    assert unledgered(await client.get_event(TENANT, custom.id)) == stored
