"""Bad input through the real gRPC server: INVALID_ARGUMENT with details, and nothing stored.

Every case asserts the whole answer a client can act on: the status code, a google.rpc.Status
with an ErrorInfo (domain and stable reason) and a BadRequest naming exactly the offending field,
and that the database holds nothing afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from auditlog.v1 import audit_event_pb2, enums_pb2, service_pb2, service_pb2_grpc
from auditlog_service.server import RunningServer, start_server
from auditlog_service.tokens import TokenSigner
from auditlog_service.validation import Limits
from tests.conftest import EVENTS, ID_CLAIMS, authed_channel, settings_for_test, stop_or_explain
from tests.event_samples import valid_event_of_each_type

TENANT = "acme"
TIMEOUT_S = 15.0
DOMAIN = "auditlog.v1"
INVALID = "ERROR_REASON_INVALID_ARGUMENT"
TOO_LARGE = "ERROR_REASON_BATCH_TOO_LARGE"
BAD_TOKEN = "ERROR_REASON_INVALID_PAGE_TOKEN"
LIMITS = Limits()  # the test server runs with the default limits

AuditEvent = audit_event_pb2.AuditEvent
Stub = service_pb2_grpc.AuditLogServiceStub
Change = Callable[[AuditEvent], object]


# ---- building bad events -------------------------------------------------------------------


def sample(kind: str, *changes: Change) -> AuditEvent:
    """A fresh valid sample event of one type (payload field name), then changed."""
    event = valid_event_of_each_type(TENANT)[kind]
    for change in changes:
        change(event)
    return event


def _parent(event: AuditEvent, path: str) -> tuple[Any, str]:
    *parents, last = path.split(".")
    target: Any = event
    for name in parents:
        target = getattr(target, name)
    return target, last


def setting(path: str, value: object) -> Change:
    """Set a (dotted) scalar field, or copy a message into a message field."""

    def change(event: AuditEvent) -> None:
        target, name = _parent(event, path)
        if isinstance(value, struct_pb2.Struct | struct_pb2.Value | timestamp_pb2.Timestamp):
            getattr(target, name).CopyFrom(value)
        else:
            setattr(target, name, value)

    return change


def clearing(path: str) -> Change:
    def change(event: AuditEvent) -> None:
        target, name = _parent(event, path)
        target.ClearField(name)

    return change


def adding(path: str, *items: str) -> Change:
    def change(event: AuditEvent) -> None:
        target, name = _parent(event, path)
        getattr(target, name).extend(items)

    return change


def emptying_second_permission(event: AuditEvent) -> None:
    event.permission_change.permissions[1] = ""


def unknown_payload(event: AuditEvent) -> None:
    """A payload this server does not know (a newer contract's event type, field number 100)."""
    event.ClearField("payload")
    event.MergeFromString(bytes([0xA2, 0x06, 0x00]))  # field 100, length-delimited, empty


def struct_of(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def timestamp(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@dataclass(frozen=True)
class BadEvent:
    """An event that LogEvent must reject; `field` is the path below the event ("" = itself)."""

    name: str
    build: Callable[[], AuditEvent]
    field: str


OVERSIZE_ID = "a" * (LIMITS.max_id_length + 1)
OVERSIZE_TEXT = "x" * (LIMITS.max_text_length + 1)
# Within every per-field limit (max_text_length characters), but 4 bytes each in UTF-8.
WIDE_TEXT = "\N{GRINNING FACE}" * LIMITS.max_text_length

BAD_EVENTS = [
    BadEvent("missing payload", lambda: sample("logged_in", clearing("payload")), ".payload"),
    BadEvent(
        "payload of an unknown event type", lambda: sample("logged_in", unknown_payload), ".payload"
    ),
    BadEvent("missing tenant", lambda: sample("start_call", clearing("tenant_id")), ".tenant_id"),
    BadEvent(
        "tenant with a slash",
        lambda: sample("start_call", setting("tenant_id", "a/b")),
        ".tenant_id",
    ),
    BadEvent(
        "oversize tenant (129 chars)",
        lambda: sample("start_call", setting("tenant_id", OVERSIZE_ID)),
        ".tenant_id",
    ),
    BadEvent(
        "oversize event id (129 chars)",
        lambda: sample("start_call", setting("id", OVERSIZE_ID)),
        ".id",
    ),
    BadEvent("event id with a slash", lambda: sample("click", setting("id", "x/1")), ".id"),
    BadEvent(
        "general event without tenant_user_id",
        lambda: sample("start_call", clearing("tenant_user_id")),
        ".tenant_user_id",
    ),
    BadEvent(
        "tenant_user_id with a space",
        lambda: sample("logged_in", setting("tenant_user_id", "agent 17")),
        ".tenant_user_id",
    ),
    BadEvent(
        "co-browsing context on a general event",
        lambda: sample(
            "messenger_send",
            setting("cobrowse.session_id", "cb-1"),
            setting("cobrowse.actor", enums_pb2.ACTOR_AGENT),
        ),
        ".cobrowse",
    ),
    BadEvent(
        "co-browsing event without co-browsing context",
        lambda: sample("click", clearing("cobrowse")),
        ".cobrowse",
    ),
    BadEvent(
        "co-browsing event without session id",
        lambda: sample("scroll", clearing("cobrowse.session_id")),
        ".cobrowse.session_id",
    ),
    BadEvent(
        "session id with a slash",
        lambda: sample("form", setting("cobrowse.session_id", "cb/1")),
        ".cobrowse.session_id",
    ),
    BadEvent(
        "unknown actor enum number 99",
        lambda: sample("click", setting("cobrowse.actor", 99)),
        ".cobrowse.actor",
    ),
    BadEvent(
        "unspecified actor",
        lambda: sample("input", setting("cobrowse.actor", enums_pb2.ACTOR_UNSPECIFIED)),
        ".cobrowse.actor",
    ),
    BadEvent(
        "unknown meeting action",
        lambda: sample("meeting_change", setting("meeting_change.action", 7)),
        ".meeting_change.action",
    ),
    BadEvent(
        "unspecified meeting action",
        lambda: sample("meeting_change", clearing("meeting_change.action")),
        ".meeting_change.action",
    ),
    BadEvent(
        "meeting change without conference",
        lambda: sample("meeting_change", clearing("meeting_change.conference")),
        ".meeting_change.conference",
    ),
    BadEvent(
        "missing conference id",
        lambda: sample("meeting_change", clearing("meeting_change.conference.id")),
        ".meeting_change.conference.id",
    ),
    BadEvent(
        "conference ends before it starts",
        lambda: sample(
            "meeting_change", setting("meeting_change.conference.end_time", timestamp(1_000))
        ),
        ".meeting_change.conference.end_time",
    ),
    BadEvent(
        "missing call id",
        lambda: sample("start_call", clearing("start_call.call_id")),
        ".start_call.call_id",
    ),
    BadEvent(
        "oversize call id (129 chars)",
        lambda: sample("conference_agent", setting("conference_agent.call_id", OVERSIZE_ID)),
        ".conference_agent.call_id",
    ),
    BadEvent(
        "NUL in a customer id",
        lambda: sample("start_call", setting("start_call.customer_id", "cust\x00-1")),
        ".start_call.customer_id",
    ),
    BadEvent(
        "C1 control character in a role name",
        lambda: sample("role_change", setting("role_change.role_name", "Lead\x85")),
        ".role_change.role_name",
    ),
    BadEvent(
        "missing affected tenant user",
        lambda: sample("role_change", clearing("role_change.affected_tenant_user_id")),
        ".role_change.affected_tenant_user_id",
    ),
    BadEvent(
        "empty item in a permission list",
        lambda: sample("permission_change", emptying_second_permission),
        ".permission_change.permissions[1]",
    ),
    BadEvent(
        "too many tags",
        lambda: sample(
            "conference_recording",
            adding("conference_recording.tags", *(f"t{i}" for i in range(LIMITS.max_list_items))),
        ),
        ".conference_recording.tags",
    ),
    BadEvent(
        "missing status",
        lambda: sample("status_change", clearing("status_change.status")),
        ".status_change.status",
    ),
    BadEvent(
        "oversize free text (65537 chars)",
        lambda: sample("status_change", setting("status_change.status", OVERSIZE_TEXT)),
        ".status_change.status",
    ),
    BadEvent(
        "oversize input text (65537 chars)",
        lambda: sample("input", setting("input.text", OVERSIZE_TEXT)),
        ".input.text",
    ),
    BadEvent(
        "Struct too large",
        lambda: sample(
            "plugin_change",
            setting(
                "plugin_change.configuration", struct_of({"blob": "b" * LIMITS.max_struct_bytes})
            ),
        ),
        ".plugin_change.configuration",
    ),
    BadEvent(
        "NaN inside a Struct",
        lambda: sample(
            "settings_change",
            setting("settings_change.configuration", struct_of({"deep": {"list": [1, math.nan]}})),
        ),
        ".settings_change.configuration",
    ),
    BadEvent(
        "infinite custom event value",
        lambda: sample(
            "custom_event", setting("custom_event.value", struct_pb2.Value(number_value=math.inf))
        ),
        ".custom_event.value",
    ),
    BadEvent(
        "custom event without event type",
        lambda: sample("custom_event", clearing("custom_event.event_type")),
        ".custom_event.event_type",
    ),
    BadEvent(
        "NaN scroll position",
        lambda: sample("scroll", setting("scroll.position.top", math.nan)),
        ".scroll.position.top",
    ),
    BadEvent(
        "infinite scroll position",
        lambda: sample("scroll", setting("scroll.position.left", -math.inf)),
        ".scroll.position.left",
    ),
    BadEvent(
        "scroll without position",
        lambda: sample("scroll", clearing("scroll.position")),
        ".scroll.position",
    ),
    BadEvent(
        "empty click element",
        lambda: sample("click", setting("click.element.name", ""), setting("click.element.id", "")),
        ".click.element",
    ),
    BadEvent(
        "click without element",
        lambda: sample("click", clearing("click.element")),
        ".click.element",
    ),
    BadEvent(
        "control character in a form name",
        lambda: sample("form", setting("form.form.name", "check\nout")),
        ".form.form.name",
    ),
    BadEvent(
        "selection of nothing",
        lambda: sample(
            "selection", clearing("selection.selected_text"), clearing("selection.element")
        ),
        ".selection",
    ),
    BadEvent(
        "page change without page name",
        lambda: sample("page_change", clearing("page_change.page_name")),
        ".page_change.page_name",
    ),
    BadEvent(
        "live view without session id",
        lambda: sample("live_view", clearing("live_view.cobrowse_session_id")),
        ".live_view.cobrowse_session_id",
    ),
    BadEvent(
        "occur_time nanos above 999999999",
        lambda: sample(
            "start_call", setting("occur_time", timestamp(1_700_000_000, 1_000_000_000))
        ),
        ".occur_time",
    ),
    BadEvent(
        "occur_time with negative nanos",
        lambda: sample("click", setting("occur_time", timestamp(1_700_000_000, -1))),
        ".occur_time",
    ),
    BadEvent(
        "occur_time before 1970",
        lambda: sample("start_call", setting("occur_time", timestamp(-86_400))),
        ".occur_time",
    ),
    BadEvent(
        "occur_time after year 9999",
        lambda: sample("logged_in", setting("occur_time", timestamp(253_402_300_800))),
        ".occur_time",
    ),
    BadEvent(
        "event over max_event_bytes, each field within its limit",
        lambda: sample("status_change", setting("status_change.status", WIDE_TEXT)),
        "",
    ),
]


# ---- whole requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class BadRequest:
    """One bad request: how to send it, the field the BadRequest must name, the reason."""

    name: str
    call: Callable[[Stub], Awaitable[Any]]
    field: str
    reason: str = INVALID


def log_event(build: Callable[[], AuditEvent]) -> Callable[[Stub], Awaitable[Any]]:
    return lambda stub: stub.LogEvent(service_pb2.LogEventRequest(event=build()), timeout=TIMEOUT_S)


def get_event(**fields: Any) -> Callable[[Stub], Awaitable[Any]]:
    return lambda stub: stub.GetEvent(service_pb2.GetEventRequest(**fields), timeout=TIMEOUT_S)


def list_events(**fields: Any) -> Callable[[Stub], Awaitable[Any]]:
    fields.setdefault("tenant_id", TENANT)
    return lambda stub: stub.ListEvents(service_pb2.ListEventsRequest(**fields), timeout=TIMEOUT_S)


def export_events(**fields: Any) -> Callable[[Stub], Awaitable[Any]]:
    fields.setdefault("tenant_id", TENANT)

    async def drain(stub: Stub) -> None:
        async for _ in stub.ExportEvents(
            service_pb2.ExportEventsRequest(**fields), timeout=TIMEOUT_S
        ):
            pass

    return drain


def valid_batch(count: int) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    while len(events) < count:
        events.extend(valid_event_of_each_type(TENANT).values())
    return events[:count]


def a_filter(**fields: Any) -> service_pb2.EventFilter:
    return service_pb2.EventFilter(**fields)


BAD_REQUESTS = [
    *(
        BadRequest(f"LogEvent: {case.name}", log_event(case.build), "event" + case.field)
        for case in BAD_EVENTS
    ),
    BadRequest(
        "LogEvent: request without event",
        lambda stub: stub.LogEvent(service_pb2.LogEventRequest(), timeout=TIMEOUT_S),
        "event",
    ),
    BadRequest(
        "LogEvents: batch of 1001",
        lambda stub: stub.LogEvents(
            service_pb2.LogEventsRequest(events=valid_batch(LIMITS.max_batch_events + 1)),
            timeout=TIMEOUT_S,
        ),
        "events",
        TOO_LARGE,
    ),
    BadRequest("GetEvent: without id", get_event(tenant_id=TENANT), "id"),
    BadRequest("GetEvent: without tenant", get_event(id="ev-1"), "tenant_id"),
    BadRequest("GetEvent: tenant with a slash", get_event(tenant_id="a/b", id="ev-1"), "tenant_id"),
    BadRequest("GetEvent: oversize id", get_event(tenant_id=TENANT, id=OVERSIZE_ID), "id"),
    BadRequest("ListEvents: without tenant", list_events(tenant_id=""), "tenant_id"),
    BadRequest("ListEvents: negative page_size", list_events(page_size=-1), "page_size"),
    BadRequest(
        "ListEvents: unknown event type in filter",
        list_events(filter=a_filter(event_types=[enums_pb2.EVENT_TYPE_START_CALL, 999])),
        "filter.event_types[1]",
    ),
    BadRequest(
        "ListEvents: EVENT_TYPE_UNSPECIFIED in filter",
        list_events(filter=a_filter(event_types=[enums_pb2.EVENT_TYPE_UNSPECIFIED])),
        "filter.event_types[0]",
    ),
    BadRequest(
        "ListEvents: end_time before start_time",
        list_events(
            filter=a_filter(start_time=timestamp(2_000_000_000), end_time=timestamp(1_999_999_999))
        ),
        "filter.end_time",
    ),
    BadRequest(
        "ListEvents: empty time range",
        list_events(
            filter=a_filter(start_time=timestamp(2_000_000_000), end_time=timestamp(2_000_000_000))
        ),
        "filter.end_time",
    ),
    BadRequest(
        "ListEvents: start_time nanos out of range",
        list_events(filter=a_filter(start_time=timestamp(0, 2_000_000_000))),
        "filter.start_time",
    ),
    BadRequest(
        "ListEvents: end_time before 1970",
        list_events(filter=a_filter(end_time=timestamp(-1))),
        "filter.end_time",
    ),
    BadRequest(
        "ListEvents: unknown actor in filter", list_events(filter=a_filter(actor=5)), "filter.actor"
    ),
    BadRequest(
        "ListEvents: oversize customer id in filter",
        list_events(filter=a_filter(customer_id=OVERSIZE_ID)),
        "filter.customer_id",
    ),
    BadRequest("ListEvents: unknown sort order", list_events(order=9), "order"),
    BadRequest(
        "ExportEvents: 1,001 events per message",
        export_events(events_per_message=1001),
        "events_per_message",
    ),
    BadRequest(
        "ExportEvents: negative events per message",
        export_events(events_per_message=-1),
        "events_per_message",
    ),
    BadRequest(
        "ListEvents: malformed page token",
        list_events(page_token="not a token!"),
        "page_token",
        BAD_TOKEN,
    ),
    BadRequest(
        "ListEvents: page token of random bytes",
        list_events(page_token="q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQ"),
        "page_token",
        BAD_TOKEN,
    ),
]


# ---- checks ----------------------------------------------------------------------------------


def assert_invalid_argument(error: grpc.aio.AioRpcError, field: str, reason: str) -> None:
    """INVALID_ARGUMENT with ErrorInfo(domain, reason) and a BadRequest naming exactly `field`."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailing metadata"
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    infos: list[error_details_pb2.ErrorInfo] = []
    bad_requests: list[error_details_pb2.BadRequest] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_requests.append(error_details_pb2.BadRequest())
            detail.Unpack(bad_requests[-1])
    assert [(i.domain, i.reason) for i in infos] == [(DOMAIN, reason)]
    assert len(bad_requests) == 1
    violations = bad_requests[0].field_violations
    assert [v.field for v in violations] == [field], [(v.field, v.description) for v in violations]
    assert all(v.description for v in violations)


async def assert_nothing_stored(db: Any) -> None:
    assert await db.events.count_documents(EVENTS) == 0
    assert await db.events.count_documents(ID_CLAIMS) == 0


def test_the_table_is_large_and_distinct() -> None:
    names = [case.name for case in BAD_REQUESTS]
    assert len(names) == len(set(names))
    assert len(names) >= 30


@pytest.mark.asyncio
@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[case.name for case in BAD_REQUESTS])
async def test_bad_request_is_invalid_argument_and_stores_nothing(
    stub: Stub, db: Any, case: BadRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await case.call(stub)
    assert_invalid_argument(failure.value, case.field, case.reason)
    await assert_nothing_stored(db)


def test_the_oversize_event_case_is_what_it_claims() -> None:
    """The max_event_bytes case really exceeds the limit, and only the limit."""
    event = sample("status_change", setting("status_change.status", WIDE_TEXT))
    assert len(event.status_change.status) <= LIMITS.max_text_length
    assert event.ByteSize() > LIMITS.max_event_bytes


@pytest.mark.asyncio
async def test_batch_of_only_bad_events_gets_an_error_for_each_and_stores_nothing(
    stub: Stub, db: Any
) -> None:
    events = [case.build() for case in BAD_EVENTS]
    response = await stub.LogEvents(service_pb2.LogEventsRequest(events=events), timeout=TIMEOUT_S)
    assert len(response.results) == len(BAD_EVENTS)
    for index, (case, result) in enumerate(zip(BAD_EVENTS, response.results, strict=True)):
        assert result.WhichOneof("result") == "error", case.name
        assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], case.name
        assert result.error.reason == enums_pb2.ERROR_REASON_INVALID_ARGUMENT, case.name
        assert [v.field for v in result.error.field_violations] == [
            f"events[{index}]{case.field}"
        ], case.name
    await assert_nothing_stored(db)


def stream_request(event: AuditEvent | None) -> service_pb2.StreamEventsRequest:
    return service_pb2.StreamEventsRequest(event=event)


@pytest.mark.asyncio
async def test_stream_answers_a_bad_event_with_its_error_and_goes_on(stub: Stub, db: Any) -> None:
    samples = valid_event_of_each_type(TENANT)
    bad = sample("scroll", clearing("cobrowse.session_id"))
    call = stub.StreamEvents(timeout=TIMEOUT_S)
    # One request at a time: each answer arrives before the next request is sent, so the
    # stream is shown to stay usable after the error.
    await call.write(stream_request(samples["click"]))
    first = await call.read()
    await call.write(stream_request(bad))
    second = await call.read()
    await call.write(stream_request(samples["start_call"]))
    third = await call.read()
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK

    assert (first.request_index, first.WhichOneof("result")) == (0, "ack")
    assert first.ack.id == samples["click"].id
    assert first.ack.sequence == 1
    assert (second.request_index, second.WhichOneof("result")) == (1, "error")
    assert second.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert second.error.reason == enums_pb2.ERROR_REASON_INVALID_ARGUMENT
    assert [v.field for v in second.error.field_violations] == [
        "requests[1].event.cobrowse.session_id"
    ]
    assert (third.request_index, third.WhichOneof("result")) == (2, "ack")
    assert third.ack.id == samples["start_call"].id

    assert await db.events.count_documents(EVENTS) == 2
    assert await db.events.count_documents({"id": bad.id}) == 0
    assert await db.events.count_documents({"_id": f"{TENANT}/{bad.id}"}) == 0


@pytest.mark.asyncio
async def test_stream_of_every_bad_event_between_good_ones(stub: Stub, db: Any) -> None:
    """Each bad event gets its error at its index; the good ones around it are acked and stored."""
    requests: list[service_pb2.StreamEventsRequest] = []
    expected: dict[int, str] = {}  # request index -> field path of its error
    good_ids: dict[int, str] = {}
    for case in BAD_EVENTS:
        good = sample("logged_in")
        good_ids[len(requests)] = good.id
        requests.append(stream_request(good))
        expected[len(requests)] = f"requests[{len(requests)}].event{case.field}"
        requests.append(stream_request(case.build()))
    expected[len(requests)] = f"requests[{len(requests)}].event"
    requests.append(stream_request(None))  # a request without an event

    call = stub.StreamEvents(iter(requests), timeout=TIMEOUT_S)
    responses = [response async for response in call]
    assert await call.code() == grpc.StatusCode.OK
    assert [r.request_index for r in responses] == list(range(len(requests)))
    for response in responses:
        index = response.request_index
        if index in good_ids:
            assert response.WhichOneof("result") == "ack", response
            assert response.ack.id == good_ids[index]
        else:
            assert response.WhichOneof("result") == "error", index
            assert response.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert [v.field for v in response.error.field_violations] == [expected[index]]
    assert await db.events.count_documents(EVENTS) == len(good_ids)
    stored_ids = {doc["id"] async for doc in db.events.find(EVENTS, {"id": 1})}
    assert stored_ids == set(good_ids.values())
    assert await db.events.count_documents(ID_CLAIMS) == 0  # only co-browsing events have claims


@pytest.mark.asyncio
async def test_stream_batches_get_one_result_per_event_in_order(stub: Stub, db: Any) -> None:
    """A request may carry a batch: one response with a result per event (a bad one gets its
    own error, named by its place in the batch); single events and batches mix on one stream."""
    samples = valid_event_of_each_type(TENANT)
    batch = list(samples.values())
    bad_at = 4
    batch[bad_at] = sample("scroll", clearing("cobrowse.session_id"))
    single = sample("logged_in")
    both = service_pb2.StreamEventsRequest(event=sample("logged_in"), events=[sample("logged_in")])
    too_many = service_pb2.StreamEventsRequest(events=valid_batch(LIMITS.max_batch_events + 1))
    requests = [
        service_pb2.StreamEventsRequest(events=batch),
        stream_request(single),
        both,
        too_many,
    ]
    call = stub.StreamEvents(iter(requests), timeout=TIMEOUT_S)
    responses = [response async for response in call]
    assert await call.code() == grpc.StatusCode.OK
    assert [r.request_index for r in responses] == [0, 1, 2, 3]

    first = responses[0]
    assert first.WhichOneof("result") is None
    assert len(first.results) == len(batch)
    for index, (event, result) in enumerate(zip(batch, first.results, strict=True)):
        if index == bad_at:
            assert result.WhichOneof("result") == "error"
            assert [v.field for v in result.error.field_violations] == [
                f"requests[0].events[{bad_at}].cobrowse.session_id"
            ]
        else:
            assert result.WhichOneof("result") == "ack", index
            assert result.ack.id == event.id
            assert not result.ack.already_stored
    clicks = [
        r.ack.sequence for e, r in zip(batch, first.results, strict=True) if e.cobrowse.session_id
    ]
    assert clicks == list(range(1, len(clicks) + 1))  # a session's events in batch order
    assert (responses[1].WhichOneof("result"), responses[1].ack.id) == ("ack", single.id)
    assert responses[2].WhichOneof("result") == "error"
    assert [v.field for v in responses[2].error.field_violations] == ["requests[2].event"]
    # More than a batch may hold: none of it is taken.
    assert responses[3].error.reason == enums_pb2.ERROR_REASON_BATCH_TOO_LARGE
    assert [v.field for v in responses[3].error.field_violations] == ["requests[3].events"]
    # A retry of part of the batch, once it was answered: already stored.
    retry = stub.StreamEvents(
        iter([service_pb2.StreamEventsRequest(events=batch[:2])]), timeout=TIMEOUT_S
    )
    (again,) = [response async for response in retry]
    assert [r.ack.already_stored for r in again.results] == [True, True]
    assert await db.events.count_documents(EVENTS) == len(batch) - 1 + 1


@pytest.mark.asyncio
@pytest.mark.parametrize("misuse", ["other tenant", "other filter", "other order", "tampered"])
async def test_page_token_used_for_another_request_is_invalid(
    stub: Stub, db: Any, misuse: str
) -> None:
    events = [sample("logged_in") for _ in range(3)]
    await stub.LogEvents(service_pb2.LogEventsRequest(events=events), timeout=TIMEOUT_S)
    first = await stub.ListEvents(
        service_pb2.ListEventsRequest(tenant_id=TENANT, page_size=1), timeout=TIMEOUT_S
    )
    token = first.next_page_token
    assert token
    request = service_pb2.ListEventsRequest(tenant_id=TENANT, page_size=1, page_token=token)
    if misuse == "other tenant":
        request.tenant_id = "other-tenant"
    elif misuse == "other filter":
        request.filter.event_types.append(enums_pb2.EVENT_TYPE_LOGGED_IN)
    elif misuse == "other order":
        request.order = enums_pb2.SORT_ORDER_OLDEST_FIRST
    else:
        middle = len(token) // 2
        request.page_token = (
            token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
        )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListEvents(request, timeout=TIMEOUT_S)
    assert_invalid_argument(failure.value, "page_token", BAD_TOKEN)
    assert await db.events.count_documents(EVENTS) == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("list_from", "field", "value"),
    [
        # Index pages (MongoDB proper): the time and id to continue after.
        ("index", "t", 10**20),
        ("index", "t", -1),
        ("index", "t", True),
        ("index", "t", 1.5),
        ("index", "i", 12),
        ("index", "i", "other-tenant/x"),
        ("index", "i", "acme/" + "x" * 400),
        # Ledger pages (the dev database): the ledger position to continue from.
        ("ledger", "l", [10**20, 0]),
        ("ledger", "l", [-1, 0]),
        ("ledger", "l", [True, 0]),
        ("ledger", "l", [1.5, 0]),
        ("ledger", "l", [1]),
        ("ledger", "l", "1,0"),
        ("ledger", "q", "another request"),
    ],
)
async def test_a_signed_page_token_with_insane_content_is_invalid(
    mongodb_uri: str, database_name: str, list_from: str, field: str, value: object
) -> None:
    # A valid signature (the server's own key: leaked, or the dev default) says nothing about
    # whether what the token holds is sane.
    settings = settings_for_test(mongodb_uri, database_name, list_from=list_from)
    server = await start_server(settings)
    try:
        await server.ready()
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.AuditLogServiceStub(channel)
            await stub.LogEvents(
                service_pb2.LogEventsRequest(events=[sample("logged_in") for _ in range(2)]),
                timeout=TIMEOUT_S,
            )
            first = await stub.ListEvents(
                service_pb2.ListEventsRequest(tenant_id=TENANT, page_size=1), timeout=TIMEOUT_S
            )
            signer = TokenSigner(settings.token_secret)
            payload = signer.decode("page", first.next_page_token)
            assert field in payload
            payload[field] = value
            request = service_pb2.ListEventsRequest(
                tenant_id=TENANT, page_size=1, page_token=signer.encode("page", payload)
            )
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.ListEvents(request, timeout=TIMEOUT_S)
            assert_invalid_argument(failure.value, "page_token", BAD_TOKEN)
    finally:
        await stop_or_explain(server)


@pytest.mark.asyncio
@pytest.mark.parametrize("sequence", [-5, 10**13, True, 2.0, "3"])
async def test_a_signed_cursor_with_insane_content_is_invalid(
    server: RunningServer, stub: Stub, sequence: object
) -> None:
    signer = TokenSigner(server.settings.token_secret)
    cursor = signer.encode("cursor", {"t": TENANT, "s": "cob-1", "q": sequence})
    call = stub.TailSession(
        service_pb2.TailSessionRequest(tenant_id=TENANT, session_id="cob-1", cursor=cursor),
        timeout=TIMEOUT_S,
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for _ in call:
            pass
    assert_invalid_argument(failure.value, "cursor", "ERROR_REASON_INVALID_CURSOR")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field_number: int, body: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(body)) + body


def too_deeply_nested() -> bytes:
    """A small LogEventRequest whose custom event value nests deeper than the parser allows."""
    value = struct_pb2.Value()
    inner = value
    for _ in range(150):
        inner = inner.list_value.values.add()
    inner.string_value = "deep"
    value_bytes = value.SerializeToString()  # encoding has no depth limit, parsing has
    event = sample("custom_event", clearing("custom_event.value"))
    event_bytes = event.SerializeToString() + _length_delimited(
        audit_event_pb2.AuditEvent.CUSTOM_EVENT_FIELD_NUMBER,
        _length_delimited(2, value_bytes),  # CustomEventAttributes.value; merges into the payload
    )
    return _length_delimited(service_pb2.LogEventRequest.EVENT_FIELD_NUMBER, event_bytes)


def invalid_utf8_tenant() -> bytes:
    """proto3 strings must be UTF-8; this tenant_id is the lone byte 0xff."""
    event = sample("logged_in", clearing("tenant_id"))
    event_bytes = event.SerializeToString() + _length_delimited(
        audit_event_pb2.AuditEvent.TENANT_ID_FIELD_NUMBER, b"\xff"
    )
    return _length_delimited(service_pb2.LogEventRequest.EVENT_FIELD_NUMBER, event_bytes)


def truncated() -> bytes:
    """A length prefix that promises more bytes than follow."""
    return _varint(service_pb2.LogEventRequest.EVENT_FIELD_NUMBER << 3 | 2) + _varint(50) + b"ab"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "encode", [too_deeply_nested, invalid_utf8_tenant, truncated], ids=lambda f: f.__name__
)
async def test_unparsable_request_is_invalid_argument(
    channel: grpc.aio.Channel, db: Any, encode: Callable[[], bytes]
) -> None:
    """Requests the Python protobuf runtime refuses to build, encoded by hand, sent as bytes."""
    request = encode()
    assert len(request) < LIMITS.max_event_bytes
    log_event_raw = channel.unary_unary("/auditlog.v1.AuditLogService/LogEvent")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await log_event_raw(request, timeout=TIMEOUT_S)
    await assert_nothing_stored(db)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        failure.value.code(),
        failure.value.details(),
    )
    status = rpc_status.from_call(failure.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in status.details)
    assert [v.field for v in bad.field_violations] == ["request"]


@pytest.mark.asyncio
async def test_request_over_the_message_limit_is_resource_exhausted(
    server: RunningServer, stub: Stub, db: Any
) -> None:
    """Above max_receive_message_bytes gRPC itself refuses the request, before any validation."""
    limit = server.settings.max_receive_message_bytes
    event = sample("status_change", setting("status_change.status", "z" * 60_000))
    copies = limit // event.ByteSize() + 1
    request = service_pb2.LogEventsRequest(events=[event] * copies)
    assert copies <= LIMITS.max_batch_events
    assert request.ByteSize() > limit
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.LogEvents(request, timeout=TIMEOUT_S)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_nothing_stored(db)
