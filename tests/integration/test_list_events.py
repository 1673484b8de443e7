"""ListEvents, from the indexes and from the ledger: paging visits each event once, in order;
each filter returns its events."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import audit_event_pb2, enums_pb2, service_pb2
from auditlog_service.server import RunningServer, start_server
from tests.conftest import settings_for_test, stop_or_explain
from tests.event_samples import valid_event_of_each_type

TENANT = "acme"
BASE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
USERS = ["agent-1", "agent-2", "agent-3"]
CUSTOMERS = ["cust-a", "cust-b", "cust-c", "cust-d"]

Event = audit_event_pb2.AuditEvent


def build_events(count: int) -> list[Event]:
    """Varied events; several share an occur time, so the id tie-break is exercised."""
    rng = random.Random(7)
    events: list[Event] = []
    sessions = [valid_event_of_each_type(TENANT) for _ in range(3)]
    while len(events) < count:
        samples = sessions[len(events) % 3]
        for event in samples.values():
            copy = Event()
            copy.CopyFrom(event)
            copy.id = f"ev-{len(events):05d}"
            copy.occur_time.FromDatetime(BASE + dt.timedelta(seconds=len(events) // 3))
            if not copy.HasField("cobrowse"):
                copy.tenant_user_id = rng.choice(USERS)
            for field in ("start_call", "messenger_send", "status_change", "conference_agent"):
                if copy.HasField(field):
                    getattr(copy, field).customer_id = rng.choice(CUSTOMERS)
            if copy.HasField("cobrowse"):
                copy.cobrowse.actor = rng.choice([enums_pb2.ACTOR_AGENT, enums_pb2.ACTOR_CUSTOMER])
            events.append(copy)
            if len(events) == count:
                break
    return events


@pytest_asyncio.fixture(params=["index", "ledger"])
async def server(
    request: pytest.FixtureRequest, mongodb_uri: str, database_name: str
) -> AsyncIterator[RunningServer]:
    """Each test runs against both ways of listing: the indexes (MongoDB's default) and the
    ledger (the embedded database's default, where range reads of an index scan)."""
    settings = settings_for_test(mongodb_uri, database_name, list_from=request.param)
    running = await start_server(settings)
    await running.ready()
    try:
        yield running
    finally:
        await stop_or_explain(running)


@pytest_asyncio.fixture
async def stored(server: RunningServer, client: AuditLogClient) -> list[Event]:
    events = build_events(2500)
    result: list[Event] = []
    for start in range(0, len(events), 1000):
        response = await client.log_events(events[start : start + 1000])
        result.extend(r.event for r in response.results)
    assert all(e.id for e in result)
    return result


def sort_key(event: Event) -> tuple[int, str]:
    """The server's order: occur time, then the storage id (slot or tenant/id)."""
    millis = event.occur_time.seconds * 1000 + event.occur_time.nanos // 1_000_000
    if event.HasField("cobrowse"):
        storage_id = f"{event.tenant_id}/{event.cobrowse.session_id}/{event.sequence:012d}"
    else:
        storage_id = f"{event.tenant_id}/{event.id}"
    return millis, storage_id


async def page_through(
    client: AuditLogClient, request: service_pb2.ListEventsRequest
) -> list[Event]:
    seen: list[Event] = []
    while True:
        page = await client.list_page(request)
        assert len(page.events) <= (request.page_size or 50)
        seen.extend(page.events)
        if not page.next_page_token:
            return seen
        request.page_token = page.next_page_token


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "order", [enums_pb2.SORT_ORDER_NEWEST_FIRST, enums_pb2.SORT_ORDER_OLDEST_FIRST]
)
async def test_paging_yields_each_event_once_in_order(
    server: RunningServer, client: AuditLogClient, stored: list[Event], order: int
) -> None:
    request = service_pb2.ListEventsRequest(tenant_id=TENANT, page_size=97, order=order)  # type: ignore[arg-type]
    seen = await page_through(client, request)
    newest_first = order == enums_pb2.SORT_ORDER_NEWEST_FIRST
    assert_listed(server, seen, stored, newest_first=newest_first)
    assert len({e.id for e in seen}) == 2500


def assert_listed(
    server: RunningServer, got: list[Event], expected: list[Event], *, newest_first: bool
) -> None:
    """From the indexes: occur time order, then storage id. From the ledger: ledger order (the
    order events were recorded), every event once."""
    if server.settings.list_from == "index":
        ordered = sorted(expected, key=sort_key, reverse=newest_first)
        assert [e.id for e in got] == [e.id for e in ordered]
        return
    sequences = [e.ledger_sequence for e in got]
    assert sequences == sorted(sequences, reverse=newest_first)
    assert len(set(sequences)) == len(sequences)
    assert 0 not in sequences
    assert sorted(e.id for e in got) == sorted(e.id for e in expected)


def customer_of(event: Event) -> str:
    payload = event.WhichOneof("payload")
    return getattr(getattr(event, payload), "customer_id", "") if payload else ""


def call_of(event: Event) -> str:
    payload = event.WhichOneof("payload")
    return getattr(getattr(event, payload), "call_id", "") if payload else ""


def session_of(event: Event) -> str:
    if event.HasField("cobrowse"):
        return event.cobrowse.session_id
    return event.live_view.cobrowse_session_id if event.HasField("live_view") else ""


def in_window(start: dt.datetime, end: dt.datetime) -> Callable[[Event], bool]:
    return lambda e: start <= e.occur_time.ToDatetime(dt.UTC) < end


@pytest.mark.asyncio
async def test_each_filter_returns_exactly_the_matching_events(
    server: RunningServer, client: AuditLogClient, stored: list[Event]
) -> None:
    a_call = next(call_of(e) for e in stored if call_of(e))
    a_session = next(session_of(e) for e in stored if session_of(e))
    start, end = BASE + dt.timedelta(seconds=100), BASE + dt.timedelta(seconds=250)
    window = service_pb2.EventFilter()
    window.start_time.FromDatetime(start)
    window.end_time.FromDatetime(end)
    cases: list[tuple[service_pb2.EventFilter, Callable[[Event], bool]]] = [
        (window, in_window(start, end)),
        (
            service_pb2.EventFilter(event_types=[enums_pb2.EVENT_TYPE_START_CALL]),
            lambda e: e.event_type == enums_pb2.EVENT_TYPE_START_CALL,
        ),
        (
            service_pb2.EventFilter(
                event_types=[enums_pb2.EVENT_TYPE_CLICK, enums_pb2.EVENT_TYPE_LOGGED_IN]
            ),
            lambda e: e.event_type in (enums_pb2.EVENT_TYPE_CLICK, enums_pb2.EVENT_TYPE_LOGGED_IN),
        ),
        (
            service_pb2.EventFilter(tenant_user_id="agent-2"),
            lambda e: e.tenant_user_id == "agent-2",
        ),
        (service_pb2.EventFilter(customer_id="cust-c"), lambda e: customer_of(e) == "cust-c"),
        (service_pb2.EventFilter(call_id=a_call), lambda e: call_of(e) == a_call),
        (
            service_pb2.EventFilter(cobrowse_session_id=a_session),
            lambda e: session_of(e) == a_session,
        ),
        (
            service_pb2.EventFilter(actor=enums_pb2.ACTOR_AGENT),
            lambda e: e.HasField("cobrowse") and e.cobrowse.actor == enums_pb2.ACTOR_AGENT,
        ),
        (
            service_pb2.EventFilter(
                tenant_user_id="agent-1", event_types=[enums_pb2.EVENT_TYPE_MESSENGER_SEND]
            ),
            lambda e: (
                e.tenant_user_id == "agent-1"
                and e.event_type == enums_pb2.EVENT_TYPE_MESSENGER_SEND
            ),
        ),
    ]
    for filt, matches in cases:
        request = service_pb2.ListEventsRequest(tenant_id=TENANT, filter=filt, page_size=1000)
        got = await page_through(client, request)
        expected = [e for e in stored if matches(e)]
        assert expected, f"the data set has events for {filt}"
        assert_listed(server, got, expected, newest_first=True)


@pytest.mark.asyncio
async def test_other_tenants_events_are_invisible(
    client: AuditLogClient, stored: list[Event]
) -> None:
    page = await client.list_page(service_pb2.ListEventsRequest(tenant_id="other-tenant"))
    assert list(page.events) == []
    assert page.next_page_token == ""


@pytest.mark.asyncio
async def test_tampered_or_foreign_page_tokens_are_invalid(
    client: AuditLogClient, stored: list[Event]
) -> None:
    first = await client.list_page(service_pb2.ListEventsRequest(tenant_id=TENANT, page_size=10))
    token = first.next_page_token
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    other_filter = service_pb2.ListEventsRequest(
        tenant_id=TENANT,
        page_token=token,
        filter=service_pb2.EventFilter(tenant_user_id="agent-1"),
    )
    for request in (
        service_pb2.ListEventsRequest(tenant_id=TENANT, page_token=flipped),
        service_pb2.ListEventsRequest(tenant_id=TENANT, page_token="not a token!"),
        service_pb2.ListEventsRequest(tenant_id="other-tenant", page_token=token),
        other_filter,
    ):
        with pytest.raises(AuditLogError) as failure:
            await client.list_page(request)
        assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.value.reason == "ERROR_REASON_INVALID_PAGE_TOKEN"
        assert [f for f, _ in failure.value.field_violations] == ["page_token"]


@pytest.mark.asyncio
async def test_page_size_is_capped_and_defaulted(
    client: AuditLogClient, stored: list[Event]
) -> None:
    default = await client.list_page(service_pb2.ListEventsRequest(tenant_id=TENANT))
    assert len(default.events) == 50
    capped = await client.list_page(service_pb2.ListEventsRequest(tenant_id=TENANT, page_size=5000))
    assert len(capped.events) == 1000
