"""The native checker against validation.py's rules: it vouches only for events they pass."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from auditlog.v1.audit_event_pb2 import AuditEvent
from auditlog_service import validation
from tests.event_samples import valid_event_of_each_type

LIMITS = validation.Limits(max_id_length=40, max_text_length=60, max_list_items=3)
FREE_FORM = {"plugin_change", "settings_change", "meeting_change", "custom_event"}
_FD = FieldDescriptor

# Values that each break, or keep, a rule of some string field.
TEXTS = [
    "",
    "ok-1",
    "a/b",
    " lead",
    "x" * 41,
    "y" * 61,
    "é" * 40,
    "ü" * 41,
    "tab\there",
    "line\nbreak",
    "bell\x07",
    "del\x7f",
    "c1\x85",
    "nbsp\u00a0",
    "soft\u00adhyphen",
    "zw\u200bspace",
    "rtl\u202eoverride",
    "line\u2028sep",
    "bom\ufeff",
    "privat\ue000",
    "emoji\U0001f600",
    "tag\U000e0041",
    "Done – résolu ✅",
    "中文",
]


def _natively_valid(event: AuditEvent) -> bool:
    """The native checker's answer under LIMITS (small, so that the texts above cross them)."""
    return validation._native_validator(LIMITS).valid(event.SerializeToString())


def _by_rules(event: AuditEvent) -> list[validation.FieldViolation]:
    return validation.event_violations(event, "", LIMITS)


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_the_native_checker_passes_what_the_rules_pass(field: str) -> None:
    event = valid_event_of_each_type("t")[field]
    limits = validation.Limits()
    assert validation.event_violations(event, "", limits) == []
    vouched = validation._native_validator(limits).valid(event.SerializeToString())
    assert vouched is (field not in FREE_FORM)


def _messages(message: Message) -> Iterator[Message]:
    """The message and the contract's messages in it (not Timestamps or free-form data)."""
    yield message
    for field, value in message.ListFields():
        if field.type != _FD.TYPE_MESSAGE or not field.message_type.full_name.startswith("audit"):
            continue
        if not field.is_repeated:
            yield from _messages(value)
        else:
            for item in value:
                yield from _messages(item)


def _broken(event: AuditEvent, rng: random.Random) -> AuditEvent:
    """The event with one field of it, at any depth, given a value that may break a rule."""
    broken = AuditEvent()
    broken.CopyFrom(event)
    messages = list(_messages(broken))
    message = rng.choice(messages)
    fields = [f for f in message.DESCRIPTOR.fields if f.full_name.startswith("auditlog.")]
    if not fields:
        return broken
    field = rng.choice(fields)
    if field.type == _FD.TYPE_STRING and field.is_repeated:
        items = getattr(message, field.name)
        items.extend(rng.sample(TEXTS, rng.randrange(3)))
    elif field.type == _FD.TYPE_STRING:
        setattr(message, field.name, rng.choice(TEXTS))
    elif field.type == _FD.TYPE_ENUM:
        setattr(message, field.name, rng.choice([0, 1, 2, 3, 77, -1]))
    elif field.type == _FD.TYPE_DOUBLE:
        setattr(message, field.name, rng.choice([0.0, -0.0, 1.5, float("inf"), float("nan")]))
    elif field.type == _FD.TYPE_INT64:
        setattr(message, field.name, rng.choice([0, 5, -1]))
    elif field.type == _FD.TYPE_MESSAGE and field.message_type.name == "Timestamp":
        target = getattr(message, field.name)
        target.seconds = rng.choice([0, 1, -1, 1_900_000_000, 253_402_300_800])
        target.nanos = rng.choice([0, 5, 999_999_999, -1])
    elif field.type == _FD.TYPE_MESSAGE and not field.is_repeated:
        if message.HasField(field.name) and rng.random() < 0.7:
            message.ClearField(field.name)
        else:
            getattr(message, field.name).SetInParent()
    return broken


@pytest.mark.parametrize("seed", range(4))
def test_the_native_checker_vouches_only_for_what_the_rules_pass(seed: int) -> None:
    """Events with fields broken at random, alone and in pairs: wherever the native checker
    says valid, the rules find nothing; and it vouches for most of what they pass."""
    rng = random.Random(seed)
    samples = list(valid_event_of_each_type("t").values())
    agreed = vouched = 0
    for _ in range(1500):
        event = _broken(rng.choice(samples), rng)
        if rng.random() < 0.5:
            event = _broken(event, rng)
        violations = _by_rules(event)
        if _natively_valid(event):
            assert violations == [], event
            vouched += 1
        agreed += not violations
    assert vouched > agreed * 0.4  # free-form payloads and rarer characters go to the rules


def test_any_bytes_the_native_checker_vouches_for_pass_the_rules() -> None:
    rng = random.Random(7)
    samples = [e.SerializeToString() for e in valid_event_of_each_type("t").values()]
    vouched = 0
    for _ in range(6000):
        data = bytearray(rng.choice(samples))
        at = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[at] = rng.randrange(256)
        else:
            data.insert(at, rng.randrange(256))
        if not validation._native_validator(LIMITS).valid(bytes(data)):
            continue
        vouched += 1
        try:
            event = AuditEvent.FromString(bytes(data))
        except DecodeError:
            pytest.fail(f"vouched for bytes that do not parse: {bytes(data)!r}")
        assert _by_rules(event) == [], bytes(data)
    assert vouched > 100


def test_a_batch_is_vouched_for_event_by_event() -> None:
    # The batch's answer is each event's own, in order; and asked again with equal limits of
    # another object, the same.
    rng = random.Random(11)
    samples = [e.SerializeToString() for e in valid_event_of_each_type("t").values()]
    batch = [s[: rng.randrange(len(s) + 1)] if rng.random() < 0.3 else s for s in samples * 3]
    each = [validation._native_validator(LIMITS).valid(data) for data in batch]
    assert validation.vouched_events(batch, LIMITS) == each
    assert True in each
    assert False in each
    same = validation.Limits(max_id_length=40, max_text_length=60, max_list_items=3)
    assert validation.vouched_events(batch, same) == each
    assert validation.vouched_events([], LIMITS) == []


def test_a_batchs_violations_are_each_events_own_by_index() -> None:
    # Events of every type (twice), some made invalid: each event's violations, under the
    # indexes of those that have any, as validate_event finds them alone.
    samples = list(valid_event_of_each_type("t").values())
    events = [AuditEvent.FromString(e.SerializeToString()) for e in samples * 2]
    events[3].tenant_id = ""
    events[7].id = "not an id!"
    events[20].tenant_user_id = "x" * 41
    serialized = [e.SerializeToString() for e in events]
    found = validation.batch_violations(events, serialized, LIMITS)
    expected = {
        index: violations
        for index, event in enumerate(events)
        if (violations := validation.validate_event(event, "", LIMITS))
    }
    assert found == expected
    assert {3, 7, 20} <= set(found)
    assert len(found) < len(events) // 2
    assert validation.batch_violations([], [], LIMITS) == {}


def test_an_oversize_event_is_left_to_the_rules() -> None:
    event = valid_event_of_each_type("t")["page_change"]
    event.page_change.url = "u" * 50
    limits = validation.Limits(max_event_bytes=event.ByteSize() - 1)
    assert not validation._native_validator(limits).valid(event.SerializeToString())
    assert validation.validate_event(event, "", limits)[-1].field == ""
