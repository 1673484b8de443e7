"""Unit tests of request validation: valid events pass, every bad input names its exact field."""

import dataclasses
import math
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from auditlog.v1 import audit_event_pb2, enums_pb2, options_pb2, service_pb2
from auditlog_service import validation
from auditlog_service.validation import (
    FieldViolation,
    Limits,
    is_cobrowse_payload,
    validate_event,
    validate_get_request,
    validate_list_request,
    validate_log_events_size,
    validate_tail_request,
)
from tests.event_samples import valid_event_of_each_type

AuditEvent = audit_event_pb2.AuditEvent
Mutator = Callable[[AuditEvent], None]

TENANT = "acme-corp"
DEFAULT = Limits()
PAYLOAD_FIELDS = [f.name for f in AuditEvent.DESCRIPTOR.oneofs_by_name["payload"].fields]
COBROWSE_FIELDS = {"click", "scroll", "form", "input", "page_change", "selection", "custom_event"}
MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


def sample(kind: str) -> AuditEvent:
    """A fresh valid event of one type, safe to mutate."""
    return valid_event_of_each_type(TENANT)[kind]


def fields(violations: list[FieldViolation]) -> list[str]:
    return [v.field for v in violations]


def _resolve(root: Message, dotted: str) -> tuple[Any, str]:
    *parents, name = dotted.split(".")
    obj: Any = root
    for part in parents:
        obj = getattr(obj, part)
    return obj, name


def put(dotted: str, value: object) -> Mutator:
    """Sets a (nested) field; a list replaces a repeated field's items."""

    def mutate(event: AuditEvent) -> None:
        obj, name = _resolve(event, dotted)
        if isinstance(value, list):
            items = getattr(obj, name)
            del items[:]
            items.extend(value)
        else:
            setattr(obj, name, value)

    return mutate


def clear(dotted: str) -> Mutator:
    """Unsets a message field (or a payload)."""

    def mutate(event: AuditEvent) -> None:
        obj, name = _resolve(event, dotted)
        obj.ClearField(name)

    return mutate


def empty(dotted: str) -> Mutator:
    """Sets a message field to an empty message (present, every field default)."""

    def mutate(event: AuditEvent) -> None:
        obj, name = _resolve(event, dotted)
        obj.ClearField(name)
        getattr(obj, name).SetInParent()

    return mutate


def both(*mutators: Mutator) -> Mutator:
    def mutate(event: AuditEvent) -> None:
        for m in mutators:
            m(event)

    return mutate


def deep_infinity(event: AuditEvent) -> None:
    config = event.plugin_change.configuration
    lead = config.fields["mapping"].struct_value.fields["lead"].struct_value
    lead.fields["priority"].number_value = math.inf


def nan_in_list(event: AuditEvent) -> None:
    position = event.settings_change.configuration.fields["position"].struct_value
    position.fields["offset"].list_value.values[1].number_value = math.nan


def nan_value(event: AuditEvent) -> None:
    event.custom_event.value.number_value = math.nan


def end_at_start(delta_nanos: int) -> Mutator:
    """Moves the conference end to its start plus `delta_nanos` (at most one second back)."""

    def mutate(event: AuditEvent) -> None:
        conference = event.meeting_change.conference
        seconds, nanos = conference.start_time.seconds, conference.start_time.nanos + delta_nanos
        if nanos < 0:
            seconds, nanos = seconds - 1, nanos + 1_000_000_000
        conference.end_time.seconds, conference.end_time.nanos = seconds, nanos

    return mutate


def many(n: int, item: str = "x") -> list[str]:
    return [f"{item}{i}" for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Valid events


def test_samples_cover_every_payload_type_once() -> None:
    samples = valid_event_of_each_type(TENANT)
    assert list(samples) == PAYLOAD_FIELDS
    assert len(samples) == 21
    for kind, event in samples.items():
        assert event.WhichOneof("payload") == kind


@pytest.mark.parametrize("kind", PAYLOAD_FIELDS)
def test_valid_sample_has_no_violation(kind: str) -> None:
    assert validate_event(sample(kind), "event", DEFAULT) == []


@pytest.mark.parametrize("kind", PAYLOAD_FIELDS)
def test_sample_sets_every_input_field(kind: str) -> None:
    event = sample(kind)
    envelope = {f.name for f, _ in event.ListFields()}
    expected = {"id", "tenant_id", "tenant_user_id", "occur_time", kind}
    if kind in COBROWSE_FIELDS:
        expected.add("cobrowse")
    assert envelope == expected
    payload: Message = getattr(event, kind)
    # masked is output only; sensitive=true would make the server mask the text.
    wanted = {f.name for f in payload.DESCRIPTOR.fields} - {"masked", "sensitive"}
    assert {f.name for f, _ in payload.ListFields()} == wanted


def test_sample_timestamps_have_whole_milliseconds() -> None:
    samples = valid_event_of_each_type(TENANT)
    stamps = [e.occur_time for e in samples.values()]
    conference = samples["meeting_change"].meeting_change.conference
    stamps += [conference.start_time, conference.end_time]
    assert all(ts.nanos % 1_000_000 == 0 for ts in stamps)
    assert any(ts.nanos != 0 for ts in stamps)
    occur = [(ts.seconds, ts.nanos) for ts in stamps[:21]]
    assert occur == sorted(occur)
    assert len(set(occur)) == 21


def test_samples_are_fresh_per_call() -> None:
    first, second = valid_event_of_each_type(TENANT), valid_event_of_each_type(TENANT)
    assert first["start_call"].id != second["start_call"].id
    assert first["click"].cobrowse.session_id != second["click"].cobrowse.session_id
    assert first["live_view"].live_view.cobrowse_session_id == first["click"].cobrowse.session_id


VALID_VARIANTS = [
    pytest.param("start_call", put("id", ""), id="id-empty-server-assigns"),
    pytest.param("start_call", put("id", "Az09._:@-x"), id="id-every-allowed-char"),
    pytest.param("start_call", put("tenant_id", "t" * 128), id="tenant-id-at-limit"),
    pytest.param("start_call", clear("occur_time"), id="occur-time-unset"),
    pytest.param("start_call", put("occur_time.seconds", 0), id="occur-time-epoch"),
    pytest.param(
        "start_call",
        both(put("occur_time.seconds", MAX_SECONDS), put("occur_time.nanos", 999_999_999)),
        id="occur-time-max",
    ),
    pytest.param("click", put("tenant_user_id", ""), id="cobrowse-without-user"),
    pytest.param(
        "start_call", put("start_call.customer_id", "cust/42 eu"), id="plain-id-slash-space"
    ),
    pytest.param("start_call", put("start_call.call_id", "c" * 128), id="plain-id-at-limit"),
    pytest.param(
        "status_change",
        both(put("status_change.previous_status", ""), put("status_change.message_id", "")),
        id="status-optional-fields-empty",
    ),
    pytest.param("status_change", put("status_change.status", "Done\nby bot"), id="text-newline"),
    pytest.param("permission_change", put("permission_change.permissions", []), id="no-perms"),
    pytest.param(
        "permission_change",
        put("permission_change.permissions", many(1000)),
        id="permissions-at-limit",
    ),
    pytest.param("plugin_change", clear("plugin_change.configuration"), id="plugin-no-config"),
    pytest.param("settings_change", empty("settings_change.configuration"), id="empty-config"),
    pytest.param(
        "meeting_change",
        both(
            put("meeting_change.action", enums_pb2.MEETING_ACTION_DELETE),
            clear("meeting_change.conference"),
            put("meeting_change.conference.id", "conf-1"),
        ),
        id="meeting-delete-id-only",
    ),
    pytest.param("meeting_change", end_at_start(0), id="meeting-end-equals-start"),
    pytest.param(
        "conference_recording",
        both(
            put("conference_recording.joined_agent_ids", []),
            put("conference_recording.tags", []),
        ),
        id="recording-empty-lists",
    ),
    pytest.param("scroll", clear("scroll.element"), id="scroll-whole-page"),
    pytest.param("scroll", put("scroll.position.top", -0.0), id="scroll-negative-zero"),
    pytest.param("click", put("click.element.name", ""), id="click-id-only"),
    pytest.param("form", put("form.form.id", ""), id="form-name-only"),
    pytest.param("input", put("input.text", ""), id="input-empty-text"),
    pytest.param("input", put("input.sensitive", True), id="input-sensitive"),
    pytest.param("page_change", put("page_change.url", ""), id="page-without-url"),
    pytest.param("selection", clear("selection.element"), id="selection-text-only"),
    pytest.param("selection", put("selection.selected_text", ""), id="selection-element-only"),
    pytest.param("custom_event", clear("custom_event.value"), id="custom-without-value"),
    pytest.param("custom_event", put("custom_event.value.string_value", "x"), id="custom-str"),
]


@pytest.mark.parametrize(("kind", "mutate"), VALID_VARIANTS)
def test_valid_variant_has_no_violation(kind: str, mutate: Mutator) -> None:
    event = sample(kind)
    mutate(event)
    assert validate_event(event, "event", DEFAULT) == []


def test_output_only_fields_are_ignored() -> None:
    event = sample("input")
    event.receive_time.seconds = -5  # would be invalid as an input time
    event.event_type = 999  # type: ignore[assignment]
    event.sequence = -3
    event.input.masked = True
    assert validate_event(event, "event", DEFAULT) == []


# ---------------------------------------------------------------------------------------------
# Bad events: each case names the exact field paths reported, in order.

SMALL = Limits(
    max_id_length=8,
    max_text_length=10,
    max_struct_bytes=40,
    max_list_items=3,
    max_event_bytes=100,
)

BAD_EVENTS = [
    # envelope
    pytest.param("start_call", put("tenant_id", ""), DEFAULT, ["tenant_id"], id="tenant-missing"),
    pytest.param("click", put("tenant_id", "acme/eu"), DEFAULT, ["tenant_id"], id="tenant-slash"),
    pytest.param(
        "start_call", put("tenant_id", "t" * 129), DEFAULT, ["tenant_id"], id="tenant-too-long"
    ),
    pytest.param(
        "logged_in", put("tenant_id", "acme corp"), DEFAULT, ["tenant_id"], id="tenant-sp"
    ),
    pytest.param("logged_in", put("id", "a/b"), DEFAULT, ["id"], id="id-slash"),
    pytest.param("logged_in", put("id", "-abc"), DEFAULT, ["id"], id="id-leading-dash"),
    pytest.param("logged_in", put("id", "idé"), DEFAULT, ["id"], id="id-non-ascii"),
    pytest.param("logged_in", clear("logged_in"), DEFAULT, ["payload"], id="payload-missing"),
    pytest.param("click", clear("click"), DEFAULT, ["payload"], id="payload-missing-cobrowse"),
    pytest.param(
        "messenger_send",
        put("tenant_user_id", ""),
        DEFAULT,
        ["tenant_user_id"],
        id="general-without-user",
    ),
    pytest.param(
        "online_status_offline",
        put("tenant_user_id", "agent 7"),
        DEFAULT,
        ["tenant_user_id"],
        id="general-user-space",
    ),
    pytest.param(
        "start_call",
        put("cobrowse.session_id", "s1"),
        DEFAULT,
        ["cobrowse"],
        id="general-with-cobrowse",
    ),
    pytest.param("click", clear("cobrowse"), DEFAULT, ["cobrowse"], id="cobrowse-missing"),
    pytest.param(
        "scroll",
        put("cobrowse.session_id", ""),
        DEFAULT,
        ["cobrowse.session_id"],
        id="session-missing",
    ),
    pytest.param(
        "form",
        put("cobrowse.session_id", "tenant/s1"),
        DEFAULT,
        ["cobrowse.session_id"],
        id="session-slash",
    ),
    pytest.param(
        "input", put("cobrowse.actor", 0), DEFAULT, ["cobrowse.actor"], id="actor-unspecified"
    ),
    pytest.param(
        "page_change", put("cobrowse.actor", 42), DEFAULT, ["cobrowse.actor"], id="actor-unknown"
    ),
    pytest.param(
        "selection",
        put("tenant_user_id", "x/y"),
        DEFAULT,
        ["tenant_user_id"],
        id="cobrowse-user-slash",
    ),
    pytest.param(
        "start_call", put("occur_time.seconds", -1), DEFAULT, ["occur_time"], id="before-epoch"
    ),
    pytest.param(
        "start_call",
        put("occur_time.seconds", MAX_SECONDS + 1),
        DEFAULT,
        ["occur_time"],
        id="after-9999",
    ),
    pytest.param(
        "click", put("occur_time.nanos", 1_000_000_000), DEFAULT, ["occur_time"], id="nanos-big"
    ),
    pytest.param("click", put("occur_time.nanos", -1), DEFAULT, ["occur_time"], id="nanos-neg"),
    # general payloads
    pytest.param(
        "start_call",
        put("start_call.call_id", ""),
        DEFAULT,
        ["start_call.call_id"],
        id="start-call-no-call",
    ),
    pytest.param(
        "start_call",
        put("start_call.customer_id", "cust\x07"),
        DEFAULT,
        ["start_call.customer_id"],
        id="start-call-control-char",
    ),
    pytest.param(
        "start_call",
        put("start_call.call_id", "c" * 129),
        DEFAULT,
        ["start_call.call_id"],
        id="start-call-id-too-long",
    ),
    pytest.param(
        "messenger_send",
        put("messenger_send.customer_id", ""),
        DEFAULT,
        ["messenger_send.customer_id"],
        id="messenger-no-customer",
    ),
    pytest.param(
        "live_view",
        put("live_view.cobrowse_session_id", ""),
        DEFAULT,
        ["live_view.cobrowse_session_id"],
        id="live-view-no-session",
    ),
    pytest.param(
        "live_view",
        put("live_view.cobrowse_session_id", "a/b"),
        DEFAULT,
        ["live_view.cobrowse_session_id"],
        id="live-view-session-slash",
    ),
    pytest.param(
        "status_change",
        both(put("status_change.customer_id", ""), put("status_change.status", "")),
        DEFAULT,
        ["status_change.customer_id", "status_change.status"],
        id="status-missing-both",
    ),
    pytest.param(
        "status_change",
        put("status_change.status", "D" * 65537),
        DEFAULT,
        ["status_change.status"],
        id="status-too-long",
    ),
    pytest.param(
        "status_change",
        put("status_change.previous_status", "Unresolved!"),
        SMALL,
        [
            "id",
            "tenant_id",
            "tenant_user_id",
            "status_change.customer_id",
            "status_change.previous_status",
            "status_change.status",
            "status_change.message_id",
            "",
        ],
        id="small-limits-everywhere",
    ),
    pytest.param(
        "status_change",
        put("status_change.message_id", "m\n1"),
        DEFAULT,
        ["status_change.message_id"],
        id="status-message-id-newline",
    ),
    pytest.param(
        "role_change",
        both(put("role_change.role_name", ""), put("role_change.affected_tenant_user_id", "")),
        DEFAULT,
        ["role_change.role_name", "role_change.affected_tenant_user_id"],
        id="role-change-empty",
    ),
    pytest.param(
        "permission_change",
        put("permission_change.role_name", ""),
        DEFAULT,
        ["permission_change.role_name"],
        id="permission-no-role",
    ),
    pytest.param(
        "permission_change",
        put("permission_change.permissions", ["chat:read", "", "x\x00"]),
        DEFAULT,
        ["permission_change.permissions[1]", "permission_change.permissions[2]"],
        id="permission-bad-items",
    ),
    pytest.param(
        "permission_change",
        put("permission_change.permissions", many(1001)),
        DEFAULT,
        ["permission_change.permissions"],
        id="permissions-too-many",
    ),
    pytest.param(
        "plugin_change",
        put("plugin_change.plugin", ""),
        DEFAULT,
        ["plugin_change.plugin"],
        id="plugin-missing",
    ),
    pytest.param(
        "plugin_change",
        deep_infinity,
        DEFAULT,
        ["plugin_change.configuration"],
        id="plugin-config-infinity",
    ),
    pytest.param(
        "settings_change",
        put("settings_change.section", ""),
        DEFAULT,
        ["settings_change.section"],
        id="settings-no-section",
    ),
    pytest.param(
        "settings_change",
        nan_in_list,
        DEFAULT,
        ["settings_change.configuration"],
        id="settings-config-nan",
    ),
    pytest.param(
        "meeting_change",
        put("meeting_change.action", 0),
        DEFAULT,
        ["meeting_change.action"],
        id="meeting-action-unspecified",
    ),
    pytest.param(
        "meeting_change",
        put("meeting_change.action", 7),
        DEFAULT,
        ["meeting_change.action"],
        id="meeting-action-unknown",
    ),
    pytest.param(
        "meeting_change",
        clear("meeting_change.conference"),
        DEFAULT,
        ["meeting_change.conference"],
        id="meeting-no-conference",
    ),
    pytest.param(
        "meeting_change",
        put("meeting_change.conference.id", ""),
        DEFAULT,
        ["meeting_change.conference.id"],
        id="meeting-no-conference-id",
    ),
    pytest.param(
        "meeting_change",
        end_at_start(-1),
        DEFAULT,
        ["meeting_change.conference.end_time"],
        id="meeting-ends-before-start",
    ),
    pytest.param(
        "meeting_change",
        put("meeting_change.conference.start_time.nanos", -5),
        DEFAULT,
        ["meeting_change.conference.start_time"],
        id="meeting-start-bad-nanos",
    ),
    pytest.param(
        "meeting_change",
        put("meeting_change.conference.title", "T" * 65537),
        DEFAULT,
        ["meeting_change.conference.title"],
        id="meeting-title-too-long",
    ),
    pytest.param(
        "conference_agent",
        both(put("conference_agent.call_id", ""), put("conference_agent.customer_id", "")),
        DEFAULT,
        ["conference_agent.call_id", "conference_agent.customer_id"],
        id="conference-agent-empty",
    ),
    pytest.param(
        "conference_recording",
        put("conference_recording.customer_id", ""),
        DEFAULT,
        ["conference_recording.customer_id"],
        id="recording-no-customer",
    ),
    pytest.param(
        "conference_recording",
        both(
            put("conference_recording.joined_agent_ids", ["a1", "a2", ""]),
            put("conference_recording.tags", ["ok", "bad\ttag"]),
        ),
        DEFAULT,
        ["conference_recording.joined_agent_ids[2]", "conference_recording.tags[1]"],
        id="recording-bad-items",
    ),
    pytest.param(
        "conference_recording",
        put("conference_recording.tags", many(1001)),
        DEFAULT,
        ["conference_recording.tags"],
        id="recording-too-many-tags",
    ),
    # co-browsing payloads
    pytest.param(
        "click", clear("click.element"), DEFAULT, ["click.element"], id="click-no-element"
    ),
    pytest.param(
        "click", empty("click.element"), DEFAULT, ["click.element"], id="click-element-empty"
    ),
    pytest.param(
        "click",
        put("click.element.name", "Buy\x1bnow"),
        DEFAULT,
        ["click.element.name"],
        id="click-element-escape",
    ),
    pytest.param(
        "scroll", clear("scroll.position"), DEFAULT, ["scroll.position"], id="scroll-no-position"
    ),
    pytest.param(
        "scroll",
        both(put("scroll.position.top", math.nan), put("scroll.position.left", -math.inf)),
        DEFAULT,
        ["scroll.position.top", "scroll.position.left"],
        id="scroll-not-finite",
    ),
    pytest.param(
        "scroll", empty("scroll.element"), DEFAULT, ["scroll.element"], id="scroll-element-empty"
    ),
    pytest.param("form", clear("form.form"), DEFAULT, ["form.form"], id="form-missing"),
    pytest.param("form", empty("form.form"), DEFAULT, ["form.form"], id="form-empty"),
    pytest.param(
        "input", clear("input.element"), DEFAULT, ["input.element"], id="input-no-element"
    ),
    pytest.param(
        "input", put("input.text", "x" * 65537), DEFAULT, ["input.text"], id="input-too-long"
    ),
    pytest.param(
        "page_change",
        put("page_change.page_name", ""),
        DEFAULT,
        ["page_change.page_name"],
        id="page-no-name",
    ),
    pytest.param(
        "page_change",
        put("page_change.url", "https://x/" + "a" * 65536),
        DEFAULT,
        ["page_change.url"],
        id="page-url-too-long",
    ),
    pytest.param(
        "selection",
        both(put("selection.selected_text", ""), clear("selection.element")),
        DEFAULT,
        ["selection"],
        id="selection-nothing",
    ),
    pytest.param(
        "selection",
        empty("selection.element"),
        DEFAULT,
        ["selection.element"],
        id="selection-element-empty",
    ),
    pytest.param(
        "custom_event",
        put("custom_event.event_type", ""),
        DEFAULT,
        ["custom_event.event_type"],
        id="custom-no-type",
    ),
    pytest.param("custom_event", nan_value, DEFAULT, ["custom_event.value"], id="custom-value-nan"),
    # whole event
    pytest.param("logged_in", put("id", ""), Limits(max_event_bytes=40), [""], id="event-too-big"),
]


@pytest.mark.parametrize(("kind", "mutate", "limits", "expected"), BAD_EVENTS)
def test_bad_event_names_its_fields(
    kind: str, mutate: Mutator, limits: Limits, expected: list[str]
) -> None:
    event = sample(kind)
    mutate(event)
    got = fields(validate_event(event, "events[3]", limits))
    assert got == [f"events[3].{f}" if f else "events[3]" for f in expected]


def test_bad_event_count() -> None:
    assert len(BAD_EVENTS) >= 30


def test_struct_size_limit() -> None:
    event = sample("plugin_change")
    size = event.plugin_change.configuration.ByteSize()
    assert validate_event(event, "event", Limits(max_struct_bytes=size)) == []
    got = validate_event(event, "event", Limits(max_struct_bytes=size - 1))
    assert got == [
        FieldViolation(
            "event.plugin_change.configuration", f"must be at most {size - 1} bytes serialized"
        )
    ]


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("settings_change", "settings_change.configuration"),
        ("meeting_change", "meeting_change.conference.extra"),
        ("custom_event", "custom_event.value"),
    ],
)
def test_every_free_form_field_has_a_size_limit(kind: str, field: str) -> None:
    assert fields(validate_event(sample(kind), "event", Limits(max_struct_bytes=20))) == [
        f"event.{field}"
    ]


def test_event_size_limit_is_inclusive() -> None:
    event = sample("plugin_change")
    size = event.ByteSize()
    assert validate_event(event, "event", Limits(max_event_bytes=size)) == []
    got = validate_event(event, "event", Limits(max_event_bytes=size - 1))
    assert got == [
        FieldViolation("event", f"must be at most {size - 1} bytes serialized (is {size})")
    ]


def test_all_violations_are_reported_in_field_order() -> None:
    event = sample("start_call")
    event.id = "a/b"
    event.tenant_id = ""
    event.tenant_user_id = ""
    event.occur_time.nanos = -1
    event.cobrowse.actor = enums_pb2.ACTOR_AGENT
    event.start_call.call_id = ""
    event.start_call.customer_id = ""
    assert fields(validate_event(event, "event", DEFAULT)) == [
        "event.id",
        "event.tenant_id",
        "event.tenant_user_id",
        "event.occur_time",
        "event.cobrowse",
        "event.start_call.call_id",
        "event.start_call.customer_id",
    ]


def test_cobrowse_context_without_payload_is_still_checked() -> None:
    event = sample("click")
    event.ClearField("click")
    event.cobrowse.session_id = ""
    assert fields(validate_event(event, "event", DEFAULT)) == [
        "event.cobrowse.session_id",
        "event.payload",
    ]


@pytest.mark.parametrize(
    ("mutate", "violation"),
    [
        pytest.param(put("tenant_id", ""), FieldViolation("e.tenant_id", "required"), id="req"),
        pytest.param(
            put("tenant_id", "t" * 129),
            FieldViolation("e.tenant_id", "must be at most 128 characters"),
            id="long",
        ),
        pytest.param(
            put("cobrowse.actor", 42),
            FieldViolation("e.cobrowse.actor", "unknown enum value 42"),
            id="enum",
        ),
        pytest.param(
            put("cobrowse.actor", 0), FieldViolation("e.cobrowse.actor", "required"), id="zero"
        ),
        pytest.param(
            put("input.text", "x" * 65537),
            FieldViolation("e.input.text", "must be at most 65536 characters"),
            id="text",
        ),
        pytest.param(
            empty("input.element"),
            FieldViolation("e.input.element", "name or id required"),
            id="element",
        ),
    ],
)
def test_descriptions(mutate: Mutator, violation: FieldViolation) -> None:
    event = sample("input")
    mutate(event)
    assert validate_event(event, "e", DEFAULT) == [violation]


def test_general_event_with_cobrowse_context_description() -> None:
    event = sample("role_change")
    event.cobrowse.session_id = "s1"
    event.cobrowse.actor = enums_pb2.ACTOR_AGENT
    assert validate_event(event, "event", DEFAULT) == [
        FieldViolation("event.cobrowse", "only co-browsing events carry a co-browsing context")
    ]


def test_identifier_description_mentions_allowed_characters() -> None:
    event = sample("click")
    event.cobrowse.session_id = "acme/s1"
    [violation] = validate_event(event, "event", DEFAULT)
    assert violation.field == "event.cobrowse.session_id"
    assert "letters, digits" in violation.description


def test_violations_placed_under_a_path_are_those_found_with_it() -> None:
    event = sample("meeting_change")
    event.tenant_id = "a/b"
    event.meeting_change.conference.ClearField("id")
    event.meeting_change.conference.end_time.seconds = 1
    found = validate_event(event, "", DEFAULT)
    assert len(found) == 3
    assert validation.placed("events[3]", found) == validate_event(event, "events[3]", DEFAULT)


def test_an_identifier_is_judged_the_same_every_time_it_is_seen() -> None:
    """The rule's answers are remembered; the length limit, which is the server's setting, is
    not part of what is remembered."""
    short = dataclasses.replace(DEFAULT, max_id_length=8)
    for value, well_formed in (("user-12345", True), ("user/12345", False)):
        for _ in range(3):
            event = sample("start_call")
            event.tenant_user_id = value
            assert (validate_event(event, "event", DEFAULT) == []) is well_formed
            assert FieldViolation(
                "event.tenant_user_id", "must be at most 8 characters"
            ) in validate_event(event, "event", short)


def test_what_is_remembered_of_identifiers_is_bounded() -> None:
    event = sample("start_call")
    for n in range(2 * validation._MAX_REMEMBERED + 10):
        event.tenant_user_id = f"user-{n}" if n % 2 else f"user/{n}"
        assert len(validate_event(event, "event", DEFAULT)) == n % 2 ^ 1
        assert len(validation._WELL_FORMED) <= validation._MAX_REMEMBERED


_ID_FORBIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def test_character_checks_answer_as_their_definitions_for_every_code_point() -> None:
    """Ids: no control, format, line or paragraph separator or surrogate; text: no C0 or C1
    control but tab and line breaks. Each character alone and amid ASCII letters."""
    for code in range(0x110000):
        char = chr(code)
        id_bad = unicodedata.category(char) in _ID_FORBIDDEN
        text_bad = (code < 0x20 and char not in "\t\n\r") or 0x7F <= code <= 0x9F
        for value in (char, f"ab{char}cd"):
            assert (validation.id_character_problem(value) is not None) is id_bad, hex(code)
            assert (validation.text_character_problem(value) is not None) is text_bad, hex(code)


# ---------------------------------------------------------------------------------------------
# Co-browsing classification


@pytest.mark.parametrize("kind", PAYLOAD_FIELDS)
def test_is_cobrowse_payload_matches_the_contract(kind: str) -> None:
    field = AuditEvent.DESCRIPTOR.fields_by_name[kind]
    # The contract numbers co-browsing payloads from 50 on.
    assert is_cobrowse_payload(kind) is (field.number >= 50)
    assert is_cobrowse_payload(kind) is (kind in COBROWSE_FIELDS)


def test_cobrowse_payload_count_matches_enum_categories() -> None:
    cobrowse_types = [
        v
        for v in enums_pb2.EventType.DESCRIPTOR.values
        if v.GetOptions().Extensions[options_pb2.event_type_info].category
        == options_pb2.EVENT_CATEGORY_COBROWSE
    ]
    assert len(cobrowse_types) == sum(is_cobrowse_payload(k) for k in PAYLOAD_FIELDS) == 7
    assert not is_cobrowse_payload("payload")
    assert not is_cobrowse_payload("")


# ---------------------------------------------------------------------------------------------
# LogEvents batch size


@pytest.mark.parametrize("count", [0, 1, 1000])
def test_batch_within_limit(count: int) -> None:
    request = service_pb2.LogEventsRequest(events=[AuditEvent() for _ in range(count)])
    assert validate_log_events_size(request, DEFAULT) == []


def test_batch_too_large() -> None:
    request = service_pb2.LogEventsRequest(events=[AuditEvent() for _ in range(1001)])
    assert validate_log_events_size(request, DEFAULT) == [
        FieldViolation("events", "at most 1000 events per call")
    ]


def test_batch_limit_is_configurable() -> None:
    request = service_pb2.LogEventsRequest(events=[AuditEvent() for _ in range(3)])
    assert validate_log_events_size(request, Limits(max_batch_events=2)) == [
        FieldViolation("events", "at most 2 events per call")
    ]


# ---------------------------------------------------------------------------------------------
# GetEvent

GetRequest = service_pb2.GetEventRequest


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        pytest.param(GetRequest(tenant_id="acme", id="e-1"), [], id="valid"),
        pytest.param(GetRequest(tenant_id="", id="e-1"), ["tenant_id"], id="no-tenant"),
        pytest.param(GetRequest(tenant_id="acme", id=""), ["id"], id="no-id"),
        pytest.param(GetRequest(), ["tenant_id", "id"], id="nothing"),
        pytest.param(GetRequest(tenant_id="acme", id="a/b"), ["id"], id="id-slash"),
        pytest.param(GetRequest(tenant_id="a" * 129, id="e-1"), ["tenant_id"], id="tenant-long"),
    ],
)
def test_get_request(request_: service_pb2.GetEventRequest, expected: list[str]) -> None:
    assert fields(validate_get_request(request_, DEFAULT)) == expected


# ---------------------------------------------------------------------------------------------
# ListEvents


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def list_request(**changes: Any) -> service_pb2.ListEventsRequest:
    """A valid request with every field set, then `changes` applied (filter_* go to the filter)."""
    request = service_pb2.ListEventsRequest(
        tenant_id="acme",
        filter=service_pb2.EventFilter(
            start_time=ts(1_700_000_000, 500_000_000),
            end_time=ts(1_800_000_000),
            event_types=[enums_pb2.EVENT_TYPE_START_CALL, enums_pb2.EVENT_TYPE_CLICK],
            tenant_user_id="agent-1",
            customer_id="cust/1",
            call_id="call-1",
            cobrowse_session_id="s-1",
            actor=enums_pb2.ACTOR_CUSTOMER,
        ),
        order=enums_pb2.SORT_ORDER_OLDEST_FIRST,
        page_size=100,
        page_token="opaque-token-not-checked-here",
    )
    for name, value in changes.items():
        target: Any = request
        if name.startswith("filter_"):
            target, name = request.filter, name.removeprefix("filter_")
        if isinstance(value, Message):
            getattr(target, name).CopyFrom(value)
        elif isinstance(value, list):
            target.ClearField(name)
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)
    return request


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, [], id="valid"),
        pytest.param({"page_size": 0}, [], id="page-size-default"),
        pytest.param({"page_size": 5000}, [], id="page-size-capped-not-rejected"),
        pytest.param({"order": 0}, [], id="order-default"),
        pytest.param({"filter_actor": 0}, [], id="any-actor"),
        pytest.param({"filter_event_types": []}, [], id="any-type"),
        pytest.param({"filter_customer_id": "c" * 128}, [], id="filter-id-at-limit"),
        pytest.param({"page_token": "!!garbage"}, [], id="token-not-checked"),
    ],
)
def test_valid_list_request(changes: dict[str, Any], expected: list[str]) -> None:
    assert fields(validate_list_request(list_request(**changes), DEFAULT)) == expected


def test_list_request_without_filter_is_valid() -> None:
    request = service_pb2.ListEventsRequest(tenant_id="acme")
    assert validate_list_request(request, DEFAULT) == []


BAD_LIST_REQUESTS = [
    pytest.param({"tenant_id": ""}, ["tenant_id"], id="no-tenant"),
    pytest.param({"tenant_id": "acme/eu"}, ["tenant_id"], id="tenant-slash"),
    pytest.param({"page_size": -1}, ["page_size"], id="negative-page-size"),
    pytest.param({"order": 9}, ["order"], id="unknown-order"),
    pytest.param({"filter_start_time": ts(1, -1)}, ["filter.start_time"], id="start-bad-nanos"),
    pytest.param({"filter_end_time": ts(-5)}, ["filter.end_time"], id="end-before-epoch"),
    pytest.param(
        {"filter_end_time": ts(1_700_000_000, 500_000_000)},
        ["filter.end_time"],
        id="empty-range",
    ),
    pytest.param({"filter_end_time": ts(1_600_000_000)}, ["filter.end_time"], id="end-before"),
    pytest.param(
        {"filter_event_types": [enums_pb2.EVENT_TYPE_CLICK, 0]},
        ["filter.event_types[1]"],
        id="type-unspecified",
    ),
    pytest.param({"filter_event_types": [99]}, ["filter.event_types[0]"], id="type-unknown"),
    pytest.param(
        {"filter_event_types": [enums_pb2.EVENT_TYPE_CLICK] * 1001},
        ["filter.event_types"],
        id="too-many-types",
    ),
    pytest.param({"filter_actor": 3}, ["filter.actor"], id="unknown-actor"),
    pytest.param(
        {"filter_tenant_user_id": "u" * 129}, ["filter.tenant_user_id"], id="user-too-long"
    ),
    pytest.param({"filter_customer_id": "c" * 129}, ["filter.customer_id"], id="cust-too-long"),
    pytest.param({"filter_call_id": "c" * 129}, ["filter.call_id"], id="call-too-long"),
    pytest.param(
        {"filter_cobrowse_session_id": "s" * 129},
        ["filter.cobrowse_session_id"],
        id="session-too-long",
    ),
    pytest.param(
        {"tenant_id": "", "filter_actor": 7, "order": 5, "page_size": -10},
        ["tenant_id", "filter.actor", "order", "page_size"],
        id="several-in-field-order",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), BAD_LIST_REQUESTS)
def test_bad_list_request(changes: dict[str, Any], expected: list[str]) -> None:
    assert fields(validate_list_request(list_request(**changes), DEFAULT)) == expected


def test_list_event_type_descriptions() -> None:
    request = list_request(filter_event_types=[0, 99])
    assert validate_list_request(request, DEFAULT) == [
        FieldViolation("filter.event_types[0]", "must not be EVENT_TYPE_UNSPECIFIED"),
        FieldViolation("filter.event_types[1]", "unknown enum value 99"),
    ]


# ---------------------------------------------------------------------------------------------
# TailSession

TailRequest = service_pb2.TailSessionRequest


def types(*numbers: int) -> list[enums_pb2.EventType.ValueType]:
    """EventType numbers, known or not (proto3 keeps unknown enum numbers)."""
    return [enums_pb2.EventType.ValueType(n) for n in numbers]


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(TailRequest(tenant_id="acme", session_id="s-1"), id="from-beginning"),
        pytest.param(
            TailRequest(tenant_id="acme", session_id="s-1", cursor="%%not-decoded-here"),
            id="cursor-content-not-checked",
        ),
        pytest.param(
            TailRequest(tenant_id="acme", session_id="s-1", start_time=ts(1_700_000_000, 1)),
            id="start-time",
        ),
        pytest.param(TailRequest(tenant_id="acme", session_id="s-1", from_now=True), id="from-now"),
        pytest.param(
            TailRequest(
                tenant_id="acme",
                session_id="s-1",
                event_types=[enums_pb2.EVENT_TYPE_CLICK, enums_pb2.EVENT_TYPE_INPUT],
            ),
            id="types",
        ),
    ],
)
def test_valid_tail_request(request_: service_pb2.TailSessionRequest) -> None:
    assert validate_tail_request(request_, DEFAULT) == []


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        pytest.param(TailRequest(session_id="s-1"), ["tenant_id"], id="no-tenant"),
        pytest.param(TailRequest(tenant_id="acme"), ["session_id"], id="no-session"),
        pytest.param(
            TailRequest(tenant_id="acme", session_id="s/1"), ["session_id"], id="session-slash"
        ),
        pytest.param(
            TailRequest(tenant_id="acme", session_id="s-1", start_time=ts(-1)),
            ["start_time"],
            id="start-before-epoch",
        ),
        pytest.param(
            TailRequest(tenant_id="acme", session_id="s-1", event_types=types(0)),
            ["event_types[0]"],
            id="type-unspecified",
        ),
        pytest.param(
            TailRequest(tenant_id="acme", session_id="s-1", event_types=types(1, 500)),
            ["event_types[1]"],
            id="type-unknown",
        ),
        pytest.param(TailRequest(), ["tenant_id", "session_id"], id="nothing"),
    ],
)
def test_bad_tail_request(request_: service_pb2.TailSessionRequest, expected: list[str]) -> None:
    assert fields(validate_tail_request(request_, DEFAULT)) == expected


def test_tail_event_types_list_limit() -> None:
    request = TailRequest(tenant_id="acme", session_id="s-1", event_types=types(101, 102, 103))
    assert fields(validate_tail_request(request, Limits(max_list_items=2))) == ["event_types"]


# ---------------------------------------------------------------------------------------------
# Limits and result types


def test_default_limits() -> None:
    assert Limits() == Limits(
        max_id_length=128,
        max_text_length=65536,
        max_struct_bytes=65536,
        max_list_items=1000,
        max_event_bytes=262144,
        max_batch_events=1000,
        max_page_size=1000,
    )


def test_results_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.max_id_length = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FieldViolation("a", "b").field = "c"  # type: ignore[misc]


# ---- characters that tools will later print -------------------------------------------------


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\u202e", "bidi override"),
        ("\u2066", "bidi isolate"),
        ("\u2028", "line separator"),
        ("\u2029", "paragraph separator"),
        ("\u200b", "zero-width space"),
        ("\ufeff", "byte order mark"),
        ("\x00", "NUL"),
        ("\x1b", "ESC"),
        ("\x85", "C1 next line"),
    ],
)
def test_ids_reject_control_format_and_separator_characters(char: str, name: str) -> None:
    event = sample("start_call")
    event.start_call.customer_id = f"cust{char}42"
    violations = validate_event(event, "event", DEFAULT)
    assert fields(violations) == ["event.start_call.customer_id"], name


def test_ids_accept_letters_of_any_script() -> None:
    event = sample("start_call")
    event.start_call.customer_id = "клиент-42 أحمد 顧客"
    assert validate_event(event, "event", DEFAULT) == []


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x07", "\x7f", "\x9b", "\x0b"])
@pytest.mark.parametrize(
    "where",
    ["status_change.status", "page_change.page_name", "input.text", "selection.selected_text"],
)
def test_free_text_rejects_controls_other_than_tab_and_line_breaks(char: str, where: str) -> None:
    event = sample(where.split(".")[0])
    obj, name = _resolve(event, where)
    setattr(obj, name, f"before{char}after")
    assert fields(validate_event(event, "event", DEFAULT)) == [f"event.{where}"]


def test_free_text_keeps_tabs_line_breaks_and_bidi_text() -> None:
    event = sample("status_change")
    event.status_change.status = "Done\tby bot\r\nשלום \u202bRTL\u202c"
    assert validate_event(event, "event", DEFAULT) == []


@pytest.mark.parametrize("as_key", [False, True])
def test_struct_strings_and_keys_are_free_text(as_key: bool) -> None:
    event = sample("plugin_change")
    nested = event.plugin_change.configuration.fields["outer"].struct_value
    if as_key:
        nested.fields["bad\x00key"].string_value = "ok"
    else:
        nested.fields["key"].list_value.values.add().string_value = "bad\x1b[2J"
    assert fields(validate_event(event, "event", DEFAULT)) == ["event.plugin_change.configuration"]
