"""AuditLogClient helpers against the real server: one-call logging per family, keyword filters,
per-call deadlines, client-generated UUIDv7 ids."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2
from auditlog_service.server import RunningServer
from tests.conftest import unledgered

TENANT = "acme"
BASE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
FROM, UNTIL = BASE + dt.timedelta(minutes=5), BASE + dt.timedelta(minutes=11)
Event = audit_event_pb2.AuditEvent


@pytest.mark.asyncio
async def test_log_general_and_log_cobrowse_store_each_family(client: AuditLogClient) -> None:
    call = await client.log_general(
        TENANT,
        "agent-1",
        payloads_pb2.StartCallAttributes(call_id="call-1", customer_id="cust-a"),
        occur_time=BASE,
    )
    assert call.event_type == enums_pb2.EVENT_TYPE_START_CALL
    assert call.start_call.call_id == "call-1"
    assert call.tenant_user_id == "agent-1"
    assert call.occur_time.ToDatetime(tzinfo=dt.UTC) == BASE
    assert uuid.UUID(call.id).version == 7  # filled in by the client
    assert unledgered(await client.get_event(TENANT, call.id)) == call

    login = await client.log_general(
        TENANT, "agent-1", payloads_pb2.LoggedInAttributes(), id="login-1", occur_time=BASE
    )
    assert (login.id, login.event_type) == ("login-1", enums_pb2.EVENT_TYPE_LOGGED_IN)
    # The same id and content again is an idempotent retry: the stored event comes back.
    again = await client.log_general(
        TENANT, "agent-1", payloads_pb2.LoggedInAttributes(), id="login-1", occur_time=BASE
    )
    assert again == login

    clicks = [
        await client.log_cobrowse(
            TENANT,
            "cob-1",
            actor,
            payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"button-{n}")),
            tenant_user_id="agent-1" if actor == "agent" else "",
        )
        for n, actor in enumerate(["customer", "agent", "customer"])
    ]
    assert [c.sequence for c in clicks] == [1, 2, 3]
    assert [c.cobrowse.actor for c in clicks] == [
        enums_pb2.ACTOR_CUSTOMER,
        enums_pb2.ACTOR_AGENT,
        enums_pb2.ACTOR_CUSTOMER,
    ]
    assert [c.tenant_user_id for c in clicks] == ["", "agent-1", ""]
    assert all(c.event_type == enums_pb2.EVENT_TYPE_CLICK for c in clicks)
    for stored in clicks:
        assert unledgered(await client.get_event(TENANT, stored.id)) == stored

    with pytest.raises(TypeError):
        await client.log_general(TENANT, "agent-1", payloads_pb2.ClickAttributes())


@pytest.mark.asyncio
async def test_helper_validation_errors_come_back_as_audit_log_errors(
    client: AuditLogClient,
) -> None:
    with pytest.raises(AuditLogError) as failure:
        await client.log_general(TENANT, "", payloads_pb2.LoggedInAttributes())
    assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.reason == "ERROR_REASON_INVALID_ARGUMENT"
    assert [field for field, _ in failure.value.field_violations] == ["event.tenant_user_id"]


@pytest.mark.asyncio
async def test_a_per_call_deadline_overrides_the_default(client: AuditLogClient) -> None:
    with pytest.raises(AuditLogError) as failure:
        await client.log_general(
            TENANT, "agent-1", payloads_pb2.LoggedInAttributes(), timeout_s=1e-6
        )
    assert failure.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


# ---- keyword filters -------------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    """An event as logged, with the fields the filters look at."""

    id: str
    type: str
    occur_time: dt.datetime
    user: str = ""
    customer: str = ""
    call: str = ""
    session: str = ""
    actor: str = ""


@pytest_asyncio.fixture
async def logged(server: RunningServer, client: AuditLogClient) -> list[Logged]:
    """24 events of 6 types, minute by minute from BASE, logged with the helpers."""
    out: list[Logged] = []
    for n in range(24):
        at = BASE + dt.timedelta(minutes=n)
        user = f"agent-{n % 2 + 1}"
        customer = "cust-a" if n % 3 else "cust-b"
        session = f"cob-{n % 2 + 1}"
        kind = n % 6
        if kind == 0:
            call = f"call-{n}"
            stored = await client.log_general(
                TENANT,
                user,
                payloads_pb2.StartCallAttributes(call_id=call, customer_id=customer),
                occur_time=at,
            )
            out.append(Logged(stored.id, "START_CALL", at, user, customer, call))
        elif kind == 1:
            stored = await client.log_general(
                TENANT,
                user,
                payloads_pb2.MessengerSendAttributes(customer_id=customer),
                occur_time=at,
            )
            out.append(Logged(stored.id, "MESSENGER_SEND", at, user, customer))
        elif kind == 2:
            call = f"call-{n - 2}"  # joins the call started two minutes earlier
            stored = await client.log_general(
                TENANT,
                user,
                payloads_pb2.ConferenceAgentAttributes(call_id=call, customer_id=customer),
                occur_time=at,
            )
            out.append(Logged(stored.id, "CONFERENCE_AGENT", at, user, customer, call))
        elif kind == 3:
            stored = await client.log_general(
                TENANT,
                user,
                payloads_pb2.LiveViewAttributes(cobrowse_session_id=session),
                occur_time=at,
            )
            out.append(Logged(stored.id, "LIVE_VIEW", at, user, session=session))
        else:
            actor = "agent" if kind == 4 else "customer"
            stored = await client.log_cobrowse(
                TENANT,
                session,
                actor,
                payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"e-{n}")),
                tenant_user_id=user if actor == "agent" else "",
                occur_time=at,
            )
            out.append(
                Logged(
                    stored.id,
                    "CLICK",
                    at,
                    user if actor == "agent" else "",
                    session=session,
                    actor=actor,
                )
            )
    return out


async def listed(client: AuditLogClient, **filters: Any) -> list[str]:
    return [event.id async for event in client.list_events(TENANT, page_size=5, **filters)]


def newest_first(events: list[Logged], keep: Callable[[Logged], bool]) -> list[str]:
    return [e.id for e in sorted(events, key=lambda e: e.occur_time, reverse=True) if keep(e)]


@pytest.mark.asyncio
async def test_each_keyword_filter_returns_exactly_its_events(
    client: AuditLogClient, logged: list[Logged]
) -> None:
    cases: list[tuple[dict[str, object], Callable[[Logged], bool]]] = [
        ({}, lambda e: True),
        (
            {"event_types": ["START_CALL", enums_pb2.EVENT_TYPE_CONFERENCE_AGENT]},
            lambda e: e.type in ("START_CALL", "CONFERENCE_AGENT"),
        ),
        ({"event_types": ["CLICK"]}, lambda e: e.type == "CLICK"),
        ({"tenant_user_id": "agent-2"}, lambda e: e.user == "agent-2"),
        ({"customer_id": "cust-b"}, lambda e: e.customer == "cust-b"),
        ({"call_id": "call-6"}, lambda e: e.call == "call-6"),
        ({"cobrowse_session_id": "cob-1"}, lambda e: e.session == "cob-1"),
        ({"actor": "agent"}, lambda e: e.actor == "agent"),
        ({"actor": enums_pb2.ACTOR_CUSTOMER}, lambda e: e.actor == "customer"),
        (
            {
                "start_time": BASE + dt.timedelta(minutes=5),
                "end_time": BASE + dt.timedelta(minutes=11),
            },
            lambda e: (
                BASE + dt.timedelta(minutes=5) <= e.occur_time < BASE + dt.timedelta(minutes=11)
            ),
        ),
        (
            {"event_types": ["MESSENGER_SEND", "START_CALL"], "customer_id": "cust-a"},
            lambda e: e.type in ("MESSENGER_SEND", "START_CALL") and e.customer == "cust-a",
        ),
    ]
    for filters, keep in cases:
        expected = newest_first(logged, keep)
        assert expected, filters  # every case selects something
        assert await listed(client, **filters) == expected, filters


@pytest.mark.asyncio
async def test_keywords_combine_with_a_filter_message(
    client: AuditLogClient, logged: list[Logged]
) -> None:
    base = service_pb2.EventFilter(tenant_user_id="agent-1")
    got = await listed(client, filter=base, event_types=["CLICK"])
    assert got == newest_first(logged, lambda e: e.user == "agent-1" and e.type == "CLICK")
    with pytest.raises(ValueError, match="tenant_user_id"):
        await listed(client, filter=base, tenant_user_id="agent-2")


@pytest.mark.asyncio
async def test_oldest_first_and_limit(client: AuditLogClient, logged: list[Logged]) -> None:
    oldest = [e.id async for e in client.list_events(TENANT, oldest_first=True, limit=7)]
    assert oldest == [e.id for e in sorted(logged, key=lambda e: e.occur_time)][:7]
