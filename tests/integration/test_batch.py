"""LogEvents: per-event results; bad events are rejected without sinking the good ones."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import audit_event_pb2, enums_pb2
from tests.conftest import EVENTS
from tests.event_samples import valid_event_of_each_type

TENANT = "acme"


def mixed_batch(count: int) -> list[audit_event_pb2.AuditEvent]:
    """`count` valid events cycling through all 21 types (several co-browsing sessions)."""
    events: list[audit_event_pb2.AuditEvent] = []
    while len(events) < count:
        events.extend(valid_event_of_each_type(TENANT).values())
    return events[:count]


@pytest.mark.asyncio
async def test_batch_of_1000_with_3_bad_events_stores_997(client: AuditLogClient, db: Any) -> None:
    events = mixed_batch(1000)
    events[3].ClearField("tenant_user_id")  # a general event without its acting user
    events[500].cobrowse.session_id = ""
    events[998].tenant_id = "bad/tenant"
    bad = {
        3: "events[3].tenant_user_id",
        500: "events[500].cobrowse.session_id",
        998: "events[998].tenant_id",
    }
    response = await client.log_events(events)
    assert len(response.results) == 1000
    for index, result in enumerate(response.results):
        if index in bad:
            assert result.WhichOneof("result") == "error"
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert [v.field for v in result.error.field_violations] == [bad[index]]
        else:
            assert result.WhichOneof("result") == "event", index
            assert result.event.id == events[index].id
    assert await db.events.count_documents(EVENTS) == 997
    for index in bad:
        assert await db.events.count_documents({"id": events[index].id}) == 0


@pytest.mark.asyncio
async def test_sequences_in_a_batch_follow_request_order(client: AuditLogClient) -> None:
    samples = valid_event_of_each_type(TENANT)
    clicks = []
    for _ in range(50):
        click = audit_event_pb2.AuditEvent()
        click.CopyFrom(samples["click"])
        click.id = ""
        clicks.append(click)
    response = await client.log_events(clicks)
    assert [r.event.sequence for r in response.results] == list(range(1, 51))


@pytest.mark.asyncio
async def test_oversize_batch_is_rejected_whole(client: AuditLogClient, db: Any) -> None:
    with pytest.raises(AuditLogError) as failure:
        await client.log_events(mixed_batch(1001))
    assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.reason == "ERROR_REASON_BATCH_TOO_LARGE"
    assert [f for f, _ in failure.value.field_violations] == ["events"]
    assert await db.events.count_documents(EVENTS) == 0


@pytest.mark.asyncio
async def test_retried_batch_reports_already_stored(client: AuditLogClient, db: Any) -> None:
    events = mixed_batch(42)
    first = await client.log_events(events)
    second = await client.log_events(events)
    assert [r.already_stored for r in second.results] == [True] * 42
    assert [r.event for r in second.results] == [r.event for r in first.results]
    assert await db.events.count_documents(EVENTS) == 42


def general_events(count: int) -> list[audit_event_pb2.AuditEvent]:
    events: list[audit_event_pb2.AuditEvent] = []
    while len(events) < count:
        events.extend(
            e for e in valid_event_of_each_type(TENANT).values() if not e.cobrowse.ListFields()
        )
    return events[:count]


@pytest.mark.asyncio
async def test_a_replayed_batch_of_general_events_with_new_and_clashing_ones(
    client: AuditLogClient, db: Any
) -> None:
    """Large groups write general events in one unordered insert: each duplicate in it is
    told apart (a retry of the same event, or another event under a taken id), and the rest
    is stored."""
    first = general_events(300)
    stored = await client.log_events(first)
    assert all(r.WhichOneof("result") == "event" for r in stored.results)
    clash = audit_event_pb2.AuditEvent()
    clash.CopyFrom(first[7])
    clash.tenant_user_id = "someone-else"
    fresh = general_events(50)
    replay = first[:150] + fresh[:25] + [clash] + first[150:] + fresh[25:]
    response = await client.log_events(replay)
    outcomes = [
        "error" if r.WhichOneof("result") == "error" else ("again" if r.already_stored else "new")
        for r in response.results
    ]
    assert outcomes == ["again"] * 150 + ["new"] * 25 + ["error"] + ["again"] * 150 + ["new"] * 25
    assert response.results[175].error.reason == enums_pb2.ERROR_REASON_ID_CONFLICT
    assert await db.events.count_documents(EVENTS) == 350
    stored_first = {r.event.id: r.event for r in stored.results}
    for event, result in zip(replay, response.results, strict=True):
        if result.already_stored:
            assert result.event == stored_first[event.id]
