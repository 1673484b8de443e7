"""Every response fits the 4 MiB a default gRPC client accepts, whatever the request stored."""

from __future__ import annotations

from typing import Any

import pytest

from auditlog.ids import new_event_id
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc

TENANT = "acme"
DEFAULT_CLIENT_LIMIT = 4 * 1024 * 1024
Stub = service_pb2_grpc.AuditLogServiceStub


def big_input(number: int, chars: int, session: str = "cob-big") -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        id=new_event_id(),
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(session_id=session, actor=enums_pb2.ACTOR_AGENT),
        # Two bytes per character in UTF-8: 65,536 characters (the text limit) are 131 KB.
        input=payloads_pb2.InputAttributes(
            text="é" * chars, element=payloads_pb2.Element(id=f"field-{number}")
        ),
    )


@pytest.mark.asyncio
async def test_a_large_batch_is_answered_with_acks_a_default_client_can_read(
    stub: Stub, db: Any
) -> None:
    # 1,000 events of about 5 KB: a 5 MB request, under the server's limit; echoing every event
    # would make a 5 MB response, which a default client refuses (RESOURCE_EXHAUSTED).
    events = [big_input(n, 2500) for n in range(1000)]
    request = service_pb2.LogEventsRequest(events=events)
    assert request.ByteSize() > DEFAULT_CLIENT_LIMIT
    response = await stub.LogEvents(request)  # the stub's channel has the default limits
    assert [r.WhichOneof("result") for r in response.results] == ["ack"] * 1000
    assert [r.ack.id for r in response.results] == [e.id for e in events]
    assert [r.ack.sequence for r in response.results] == list(range(1, 1001))
    assert await db.events.count_documents({"session_id": "cob-big"}) == 1000
    again = await stub.LogEvents(request)
    assert all(r.ack.already_stored and r.already_stored for r in again.results)
    assert [r.ack.sequence for r in again.results] == list(range(1, 1001))


@pytest.mark.asyncio
async def test_a_small_batch_carries_whole_events_unless_acks_are_asked_for(stub: Stub) -> None:
    events = [big_input(n, 10, session="cob-small") for n in range(3)]
    whole = await stub.LogEvents(service_pb2.LogEventsRequest(events=events))
    assert [r.WhichOneof("result") for r in whole.results] == ["event"] * 3
    more = [big_input(n, 10, session="cob-small") for n in range(3)]
    acks = await stub.LogEvents(
        service_pb2.LogEventsRequest(events=more, result_view=enums_pb2.RESULT_VIEW_ACK)
    )
    assert [r.WhichOneof("result") for r in acks.results] == ["ack"] * 3
    assert [r.ack.sequence for r in acks.results] == [4, 5, 6]
    assert all(r.ack.receive_time.seconds > 0 for r in acks.results)  # bound-ok: set, not a speed


@pytest.mark.asyncio
async def test_a_page_of_large_events_ends_early_and_paging_finds_them_all(stub: Stub) -> None:
    events = [big_input(n, 65536, session="cob-list") for n in range(40)]
    for start in range(0, 40, 10):
        await stub.LogEvents(
            service_pb2.LogEventsRequest(
                events=events[start : start + 10], result_view=enums_pb2.RESULT_VIEW_ACK
            )
        )
    seen: list[str] = []
    pages = 0
    request = service_pb2.ListEventsRequest(tenant_id=TENANT)  # default page size: 50
    while True:
        page = await stub.ListEvents(request)
        pages += 1
        assert page.ByteSize() <= DEFAULT_CLIENT_LIMIT
        seen.extend(event.id for event in page.events)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert pages > 1
    assert sorted(seen) == sorted(e.id for e in events)
    assert len(seen) == len(set(seen))
