"""SDK pure logic: UUIDv7 ids, payload -> oneof field mapping, event builders, filter keywords."""

from __future__ import annotations

import datetime as dt
import gc
import os
import time
import uuid
import weakref

import pytest

from auditlog import cobrowse_event, event_filter, general_event, new_event_id, payload_spec
from auditlog.events import PAYLOADS, to_actor, to_event_type, to_timestamp
from auditlog.ids import UUID7Generator
from auditlog.v1 import audit_event_pb2, enums_pb2, options_pb2, payloads_pb2, service_pb2
from tests.event_samples import valid_event_of_each_type


def _millis(value: uuid.UUID) -> int:
    return value.int >> 80


def test_uuid7_layout_and_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(new_event_id())
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= _millis(value) <= after


def test_uuid7_sorts_in_creation_order_when_the_clock_stands_still_or_steps_back() -> None:
    now = [1_800_000_000_000 * 1_000_000]
    generator = UUID7Generator(clock_ns=lambda: now[0])
    ids = [generator() for _ in range(5000)]  # more than the 12-bit counter holds in one ms
    now[0] -= 5_000_000_000  # the clock steps back five seconds
    ids += [generator() for _ in range(10)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    # The counter ran out in the first millisecond, so the timestamp moved on by itself.
    assert _millis(ids[0]) == 1_800_000_000_000
    assert _millis(ids[-1]) > _millis(ids[0])


def test_a_forked_child_does_not_reuse_its_parents_random_bits() -> None:
    generator = UUID7Generator()
    generator()  # the parent has random bytes left over for later ids
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running the parent's cleanup
        os.write(write_end, generator().bytes)
        os._exit(0)
    os.close(write_end)
    child = uuid.UUID(bytes=os.read(read_end, 16))
    os.waitpid(pid, 0)
    os.close(read_end)
    parent = generator()
    rand_b = (1 << 62) - 1
    assert child.int & rand_b != parent.int & rand_b


def test_a_generator_no_longer_used_is_freed() -> None:
    generator = UUID7Generator()
    generator()
    gone = weakref.ref(generator)
    del generator
    gc.collect()
    assert gone() is None  # nothing (a fork hook, say) keeps it alive


def test_new_event_id_is_the_canonical_text_of_a_uuid7() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_every_payload_maps_to_its_oneof_field_and_category() -> None:
    oneof = audit_event_pb2.AuditEvent.DESCRIPTOR.oneofs_by_name["payload"]
    assert len(PAYLOADS) == len(oneof.fields) == 21
    for field in oneof.fields:
        assert field.message_type is not None
        spec = PAYLOADS[field.message_type.full_name]
        assert spec.field == field.name
        value = enums_pb2.EventType.DESCRIPTOR.values_by_number[spec.event_type]
        info = value.GetOptions().Extensions[options_pb2.event_type_info]
        assert spec.type_string == info.type_string
        assert spec.cobrowse == (info.category == options_pb2.EVENT_CATEGORY_COBROWSE)
    assert sum(spec.cobrowse for spec in PAYLOADS.values()) == 7


def test_builders_put_each_sample_payload_into_its_field() -> None:
    for field, sample in valid_event_of_each_type("acme").items():
        payload = getattr(sample, field)
        if payload_spec(payload).cobrowse:
            built = cobrowse_event(
                "acme",
                sample.cobrowse.session_id,
                sample.cobrowse.actor,
                payload,
                tenant_user_id=sample.tenant_user_id,
                occur_time=sample.occur_time,
                id=sample.id,
            )
        else:
            built = general_event(
                "acme", sample.tenant_user_id, payload, occur_time=sample.occur_time, id=sample.id
            )
        assert built == sample, field


def test_an_empty_payload_still_selects_its_field() -> None:
    event = general_event("acme", "agent-7", payloads_pb2.LoggedInAttributes())
    assert event.WhichOneof("payload") == "logged_in"
    assert event.id == ""  # ids are filled in when the event is sent
    assert not event.HasField("occur_time")


def test_builders_refuse_the_other_family_and_non_payloads() -> None:
    with pytest.raises(TypeError, match="co-browsing"):
        general_event("acme", "agent-7", payloads_pb2.ClickAttributes())
    with pytest.raises(TypeError, match="general"):
        cobrowse_event("acme", "cob-1", "agent", payloads_pb2.LoggedInAttributes())
    with pytest.raises(TypeError, match="not an AuditEvent payload"):
        general_event("acme", "agent-7", payloads_pb2.Element())


def test_actor_and_event_type_spellings() -> None:
    assert to_actor("agent") == enums_pb2.ACTOR_AGENT
    assert to_actor("Customer") == enums_pb2.ACTOR_CUSTOMER
    assert to_actor("ACTOR_AGENT") == enums_pb2.ACTOR_AGENT
    assert to_actor(enums_pb2.ACTOR_CUSTOMER) == enums_pb2.ACTOR_CUSTOMER
    for bad in ("robot", enums_pb2.ACTOR_UNSPECIFIED):
        with pytest.raises(ValueError, match="actor"):
            to_actor(bad)
    assert to_event_type("PAGECHANGE") == enums_pb2.EVENT_TYPE_PAGECHANGE
    assert to_event_type("EVENT_TYPE_START_CALL") == enums_pb2.EVENT_TYPE_START_CALL
    assert to_event_type(enums_pb2.EVENT_TYPE_CLICK) == enums_pb2.EVENT_TYPE_CLICK
    with pytest.raises(ValueError, match="unknown event type"):
        to_event_type("START")


def test_times_must_be_aware() -> None:
    aware = dt.datetime(2026, 3, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert to_timestamp(aware).ToDatetime(tzinfo=dt.UTC) == dt.datetime(
        2026, 3, 1, 12, tzinfo=dt.UTC
    )
    with pytest.raises(ValueError, match="naive"):
        to_timestamp(dt.datetime(2026, 3, 1, 12, 0))


def test_filter_keywords_add_to_a_base_filter() -> None:
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    base = service_pb2.EventFilter(customer_id="cust-a")
    built = event_filter(
        base,
        event_types=["START_CALL", enums_pb2.EVENT_TYPE_CLICK],
        tenant_user_id="agent-1",
        call_id="call-1",
        cobrowse_session_id="cob-1",
        actor="customer",
        start_time=start,
        end_time=start + dt.timedelta(days=1),
    )
    assert built.customer_id == "cust-a"
    assert list(built.event_types) == [enums_pb2.EVENT_TYPE_START_CALL, enums_pb2.EVENT_TYPE_CLICK]
    assert (built.tenant_user_id, built.call_id, built.cobrowse_session_id) == (
        "agent-1",
        "call-1",
        "cob-1",
    )
    assert built.actor == enums_pb2.ACTOR_CUSTOMER
    assert built.start_time.ToDatetime(tzinfo=dt.UTC) == start
    assert built.end_time.ToDatetime(tzinfo=dt.UTC) == start + dt.timedelta(days=1)
    assert base == service_pb2.EventFilter(customer_id="cust-a")  # the base is not changed
    assert event_filter() == service_pb2.EventFilter()


def test_filter_keyword_conflicting_with_the_base_is_an_error() -> None:
    base = service_pb2.EventFilter(customer_id="cust-a", event_types=[enums_pb2.EVENT_TYPE_CLICK])
    base.start_time.FromDatetime(dt.datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="customer_id"):
        event_filter(base, customer_id="cust-b")
    with pytest.raises(ValueError, match="event_types"):
        event_filter(base, event_types=["SCROLL"])
    with pytest.raises(ValueError, match="start_time"):
        event_filter(base, start_time=dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
