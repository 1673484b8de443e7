"""Two tenants with the same event ids and session ids: each token sees exactly its own."""

from __future__ import annotations

import grpc
import pytest

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2
from auditlog_service.server import RunningServer
from tests.conftest import sdk

TENANTS = ("acme", "globex")
SESSION = "cob-shared"
IDS = [f"shared-{n}" for n in range(6)]


def events_of(tenant: str) -> list[audit_event_pb2.AuditEvent]:
    """The same ids and session in both tenants, with tenant-specific content."""
    events = []
    for number, event_id in enumerate(IDS):
        event = audit_event_pb2.AuditEvent(id=event_id, tenant_id=tenant)
        if number % 2:
            event.cobrowse.session_id = SESSION
            event.cobrowse.actor = enums_pb2.ACTOR_CUSTOMER
            event.input.text = f"{tenant} typed {number}"
            event.input.element.id = "field"
        else:
            event.tenant_user_id = f"{tenant}-agent"
            event.start_call.call_id = "call-1"
            event.start_call.customer_id = "cust-1"
        events.append(event)
    return events


async def seed(server: RunningServer) -> None:
    for tenant in TENANTS:
        async with sdk(f"127.0.0.1:{server.port}", tenant=tenant) as client:
            response = await client.log_events(events_of(tenant))
            assert all(r.WhichOneof("result") == "event" for r in response.results)


FILTERS: list[dict[str, object]] = [
    {},
    {"event_types": ["START_CALL"]},
    {"event_types": ["INPUT"]},
    {"tenant_user_id": "acme-agent"},
    {"tenant_user_id": "globex-agent"},
    {"customer_id": "cust-1"},
    {"call_id": "call-1"},
    {"cobrowse_session_id": SESSION},
    {"actor": "customer"},
]


@pytest.mark.asyncio
@pytest.mark.parametrize("tenant", TENANTS)
async def test_each_token_sees_exactly_its_own_tenant(server: RunningServer, tenant: str) -> None:
    await seed(server)
    other = next(t for t in TENANTS if t != tenant)
    async with sdk(f"127.0.0.1:{server.port}", tenant=tenant) as client:
        for event_id in IDS:
            event = await client.get_event(tenant, event_id)
            assert event.tenant_id == tenant
            assert other not in str(event)
        for filters in FILTERS:
            listed = [e async for e in client.list_events(tenant, page_size=2, **filters)]  # type: ignore[arg-type]
            assert all(e.tenant_id == tenant for e in listed), filters
            assert all(other not in str(e) for e in listed), filters
        assert len([e async for e in client.list_events(tenant)]) == len(IDS)
        tail = client.tail_session(tenant, SESSION)
        seen = []
        async for event in tail:
            seen.append(event)
            if len(seen) == 3:
                break
        assert [e.input.text for e in seen] == [f"{tenant} typed {n}" for n in (1, 3, 5)]
        for call in (
            client.get_event(other, IDS[0]),
            _first(client.list_events(other)),
            _first(client.tail_session(other, SESSION)),
        ):
            with pytest.raises(AuditLogError) as refused:
                await call
            assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.reason == "ERROR_REASON_TENANT_NOT_ALLOWED"


async def _first(iterator: object) -> object:
    async for item in iterator:  # type: ignore[attr-defined]
        return item
    return None


@pytest.mark.asyncio
async def test_page_tokens_and_cursors_of_one_tenant_are_refused_for_the_other(
    server: RunningServer, client: AuditLogClient
) -> None:
    await seed(server)
    first = await client.list_page(service_pb2.ListEventsRequest(tenant_id="acme", page_size=1))
    with pytest.raises(AuditLogError) as refused:
        await client.list_page(
            service_pb2.ListEventsRequest(
                tenant_id="globex", page_size=1, page_token=first.next_page_token
            )
        )
    assert refused.value.reason == "ERROR_REASON_INVALID_PAGE_TOKEN"
    request = service_pb2.TailSessionRequest(tenant_id="acme", session_id=SESSION)
    request.from_beginning = True
    stream = client.stub.TailSession(request)
    async for response in stream:
        if response.WhichOneof("kind") == "caught_up":
            cursor = response.cursor
            break
    stream.cancel()
    other = client.stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id="globex", session_id=SESSION, cursor=cursor)
    )
    with pytest.raises(grpc.aio.AioRpcError) as cursor_refused:
        async for _ in other:
            pass
    assert cursor_refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_a_platform_token_writes_for_any_tenant_but_a_tenant_token_only_for_its_own(
    server: RunningServer, db: object
) -> None:
    async with sdk(f"127.0.0.1:{server.port}", tenant="acme") as acme:
        event = audit_event_pb2.AuditEvent(
            tenant_id="globex",
            tenant_user_id="u",
            logged_in=payloads_pb2.LoggedInAttributes(),
        )
        with pytest.raises(AuditLogError) as refused:
            await acme.log_event(event)
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
        mixed = await acme.log_events(
            [
                audit_event_pb2.AuditEvent(
                    tenant_id=t, tenant_user_id="u", logged_in=payloads_pb2.LoggedInAttributes()
                )
                for t in ("acme", "globex", "acme", "globex")
            ]
        )
        # Each event of the other tenant is refused, not only its first.
        assert [r.WhichOneof("result") for r in mixed.results] == ["event", "error"] * 2
        for refused_event in (mixed.results[1], mixed.results[3]):
            assert refused_event.error.reason == enums_pb2.ERROR_REASON_TENANT_NOT_ALLOWED
        # A batch of the other tenant alone: every event refused, none stored.
        other_only = await acme.log_events(
            [
                audit_event_pb2.AuditEvent(
                    tenant_id="globex",
                    tenant_user_id="u",
                    logged_in=payloads_pb2.LoggedInAttributes(),
                )
                for _ in range(3)
            ]
        )
        assert [r.error.reason for r in other_only.results] == [
            enums_pb2.ERROR_REASON_TENANT_NOT_ALLOWED
        ] * 3
    async with sdk(f"127.0.0.1:{server.port}", tenant="*") as platform:
        stored = await platform.log_event(event)
        assert stored.event.tenant_id == "globex"
    count = await db.events.count_documents({"tenant_id": "globex"})  # type: ignore[attr-defined]
    assert count == 1
