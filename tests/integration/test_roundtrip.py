"""Every event type survives LogEvent -> GetEvent -> ListEvents unchanged, as typed fields."""

from __future__ import annotations

from typing import Any

import pytest

from auditlog import AuditLogClient, event_type_info
from auditlog.v1 import audit_event_pb2, service_pb2
from auditlog_service.event_types import REGISTRY
from tests.conftest import unledgered
from tests.event_samples import valid_event_of_each_type

TENANT = "acme"


def expected_stored(sent: audit_event_pb2.AuditEvent, stored: audit_event_pb2.AuditEvent) -> Any:
    """What the server must return: the input plus the output-only fields it fills in."""
    expected = audit_event_pb2.AuditEvent()
    expected.CopyFrom(sent)
    expected.receive_time.CopyFrom(stored.receive_time)
    expected.event_type = REGISTRY.of_event(sent).event_type  # type: ignore[union-attr,assignment]
    expected.sequence = stored.sequence
    return expected


@pytest.mark.asyncio
async def test_every_event_type_round_trips(client: AuditLogClient, db: Any) -> None:
    samples = valid_event_of_each_type(TENANT)
    assert len(samples) == 21
    stored_by_id: dict[str, audit_event_pb2.AuditEvent] = {}
    for field, event in samples.items():
        response = await client.log_event(event)
        stored = response.event
        assert stored.event_type == REGISTRY.by_payload_field(field).event_type
        assert stored == expected_stored(event, stored), field
        stored_by_id[stored.id] = stored

        assert unledgered(await client.get_event(TENANT, stored.id)) == stored, field

        doc = await db.events.find_one({"key": f"{TENANT}/{stored.id}"})
        info = event_type_info(stored.event_type)
        assert doc["type"] == info.type_string, field
        assert field in doc, "the payload is stored under its own typed field"

    listed = [e async for e in client.list_events(TENANT, oldest_first=True)]
    assert [e.id for e in listed] == [e.id for e in stored_by_id.values()]
    for event in listed:
        # Listed events carry their ledger place when sequenced (the log response cannot).
        assert unledgered(event) == stored_by_id[event.id]


@pytest.mark.asyncio
async def test_cobrowse_events_get_consecutive_sequences(client: AuditLogClient) -> None:
    samples = valid_event_of_each_type(TENANT)
    sequences = []
    for field, event in samples.items():
        if REGISTRY.by_payload_field(field).cobrowse:
            sequences.append((await client.log_event(event)).event.sequence)
        else:
            assert (await client.log_event(event)).event.sequence == 0
    assert sequences == list(range(1, 8))


@pytest.mark.asyncio
async def test_sensitive_input_is_masked_before_it_is_stored(
    client: AuditLogClient, db: Any
) -> None:
    event = valid_event_of_each_type(TENANT)["input"]
    event.input.text = "hunter2-secret"
    event.input.sensitive = True
    stored = (await client.log_event(event)).event
    assert stored.input.masked
    assert "hunter2" not in stored.input.text
    doc = await db.events.find_one({"key": f"{TENANT}/{stored.id}"})
    assert "hunter2" not in repr(doc)


@pytest.mark.asyncio
async def test_server_assigns_an_id_when_empty_and_defaults_occur_time(
    client: AuditLogClient,
) -> None:
    event = valid_event_of_each_type(TENANT)["logged_in"]
    event.ClearField("occur_time")
    response = await client.stub.LogEvent(service_pb2.LogEventRequest(event=event))
    assert len(response.event.id) == 36
    assert response.event.occur_time == response.event.receive_time
    assert unledgered(await client.get_event(TENANT, response.event.id)) == response.event
