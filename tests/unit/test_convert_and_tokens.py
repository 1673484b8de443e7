"""Pure conversions: proto <-> document, slot ids, and signed tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import math

import pytest
from bson.datetime_ms import DatetimeMS

from auditlog.ledger import recorded_form
from auditlog.v1 import audit_event_pb2
from auditlog.v1.audit_event_pb2 import AuditEvent
from auditlog_service import convert
from auditlog_service.event_types import REGISTRY
from auditlog_service.tokens import TokenError, TokenSigner
from tests.event_samples import valid_event_of_each_type

PREPARER = convert.EventPreparer("test secret")
RECEIVED = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)


def _store_and_read(event: audit_event_pb2.AuditEvent) -> tuple[convert.Document, AuditEvent]:
    """The document of an event, and the event a later read of that document returns."""
    prepared = PREPARER.prepare(event)
    doc = convert.to_document(prepared, event_id=event.id or "x", receive_time=RECEIVED)
    if "cobrowse" in doc:
        convert.assign_slot(doc, 42)
    return doc, convert.from_document(doc)


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_document_round_trip_keeps_every_field(field: str) -> None:
    event = valid_event_of_each_type("t")[field]
    doc, back = _store_and_read(event)
    expected = audit_event_pb2.AuditEvent()
    expected.CopyFrom(PREPARER.prepare(event).event)
    expected.receive_time.FromDatetime(RECEIVED)
    expected.event_type = back.event_type
    expected.sequence = 42 if "cobrowse" in doc else 0
    assert back == expected
    assert doc[field] is not None
    assert doc["type"] == field.upper().replace("PAGE_CHANGE", "PAGECHANGE")


def test_a_document_of_a_newer_contract_reads_without_what_this_one_lacks() -> None:
    doc, back = _store_and_read(valid_event_of_each_type("t")["meeting_change"])
    assert back.meeting_change.action != 0
    newer = {**doc, "meeting_change": {**doc["meeting_change"], "action": "MEETING_ACTION_NEW"}}
    newer["meeting_change"]["added_later"] = {"x": 1}
    newer["meeting_change"]["conference"] = {**doc["meeting_change"]["conference"], "y": [2]}
    read = convert.from_document(newer)
    assert read.meeting_change.action == 0  # unknown here: left unset
    read.meeting_change.action = back.meeting_change.action
    assert read == back


def _odd_event(field: str) -> AuditEvent:
    """A sample event with everything normalisation touches set to an unnormalised value."""
    event = valid_event_of_each_type("t")[field]
    event.occur_time.nanos = 123_456_789
    if field == "scroll":
        event.scroll.position.top = -0.0
    if field == "meeting_change":
        event.meeting_change.conference.start_time.nanos = 999_999
        event.meeting_change.conference.end_time.nanos = 5_000_001
    if field == "custom_event":
        event.custom_event.value.Clear()  # a Value without a kind
    if field == "plugin_change":
        event.plugin_change.configuration.fields["empty"].Clear()
    return event


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_preparing_in_place_gives_what_preparing_a_copy_gives(field: str) -> None:
    incoming = _odd_event(field)
    incoming.id = "client-chosen"
    untouched = AuditEvent()
    untouched.CopyFrom(incoming)
    copied = PREPARER.prepare(incoming)
    assert incoming == untouched  # not owned: left as it came
    owned = PREPARER.prepare(incoming, owned=True)
    assert owned.event is incoming
    assert owned.event == copied.event  # id and occur_time back after the fingerprint
    assert (owned.fingerprint, owned.occur_time_given) == (copied.fingerprint, True)
    without_time = AuditEvent()
    without_time.CopyFrom(untouched)
    without_time.ClearField("occur_time")
    prepared = PREPARER.prepare(without_time, owned=True)
    assert not prepared.occur_time_given
    assert not without_time.HasField("occur_time")
    assert prepared.fingerprint == copied.fingerprint  # occur_time is not part of it


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_the_event_built_from_what_is_at_hand_equals_a_later_read(field: str) -> None:
    event = _odd_event(field)
    prepared = PREPARER.prepare(event)
    doc, back = _store_and_read(event)
    built = convert.stored_event(
        prepared, event_id=doc["id"], receive_time=RECEIVED, sequence=doc.get("sequence", 0)
    )
    assert built == back
    assert built.SerializeToString(deterministic=True) == back.SerializeToString(deterministic=True)


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_sending_back_the_stored_event_has_the_same_fingerprint(field: str) -> None:
    event = _odd_event(field)
    _, back = _store_and_read(event)
    assert PREPARER.prepare(back).fingerprint == PREPARER.prepare(event).fingerprint


def test_fingerprint_ignores_output_fields_and_occur_time_but_not_content() -> None:
    event = valid_event_of_each_type("t")["start_call"]
    other = audit_event_pb2.AuditEvent()
    other.CopyFrom(event)
    other.sequence = 5
    other.receive_time.GetCurrentTime()
    other.ClearField("occur_time")
    assert PREPARER.prepare(event).fingerprint == PREPARER.prepare(other).fingerprint
    other.start_call.call_id = "another"
    assert PREPARER.prepare(event).fingerprint != PREPARER.prepare(other).fingerprint


def test_payloads_that_can_hold_a_map_are_those_with_free_form_data() -> None:
    # A Struct is a map; these four carry a Struct or a Value (payloads.proto).
    holding = {"plugin_change", "settings_change", "meeting_change", "custom_event"}
    map_free = {spec.payload_field for spec in REGISTRY.all() if spec.map_free}
    assert set(valid_event_of_each_type("t")) - map_free == holding


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_fingerprint_and_recorded_form_are_of_the_deterministic_serialization(field: str) -> None:
    """What idempotency and the ledger stored before stays what they compute: map-free events
    are serialized without asking for determinism, which must not change a byte."""
    event = _odd_event(field)  # the sample input is not sensitive: no keyed hash is added
    prepared = PREPARER.prepare(event)
    bare = AuditEvent()
    bare.CopyFrom(prepared.event)
    bare.ClearField("id")
    bare.ClearField("occur_time")
    expected = hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()
    assert prepared.fingerprint == expected
    stored = convert.stored_event(prepared, event_id="x", receive_time=RECEIVED)
    assert recorded_form(stored, map_free=prepared.spec.map_free) == recorded_form(stored)
    assert recorded_form(stored) == stored.SerializeToString(deterministic=True)


def test_fields_unknown_to_the_server_do_not_count() -> None:
    event = valid_event_of_each_type("t")["start_call"]
    # Field 999 of a newer contract version: kept by protobuf as unknown bytes.
    with_unknown = AuditEvent.FromString(event.SerializeToString() + b"\xb8\x3e\x01")
    assert with_unknown.SerializeToString() != event.SerializeToString()
    assert PREPARER.prepare(with_unknown).fingerprint == PREPARER.prepare(event).fingerprint
    assert PREPARER.prepare(with_unknown).event.SerializeToString() == (
        PREPARER.prepare(event).event.SerializeToString()
    )


def test_sensitive_input_is_masked_and_marked() -> None:
    event = valid_event_of_each_type("t")["input"]
    event.input.text = "4111 1111 1111 1111"
    event.input.sensitive = True
    prepared = PREPARER.prepare(event)
    assert prepared.event.input.text == convert.INPUT_MASK
    assert prepared.event.input.masked
    doc, _ = _store_and_read(event)
    # The whole secret, spaced or not (a four-digit piece could turn up in a random hex id).
    assert "4111 1111 1111 1111" not in repr(doc)
    assert "4111111111111111" not in repr(doc)


def test_two_sensitive_secrets_differ_but_nothing_stored_reveals_them() -> None:
    first = valid_event_of_each_type("t")["input"]
    first.input.sensitive = True
    first.input.text = "hunter2"
    second = audit_event_pb2.AuditEvent()
    second.CopyFrom(first)
    second.input.text = "hunter3"
    assert PREPARER.prepare(first).fingerprint != PREPARER.prepare(second).fingerprint
    assert PREPARER.prepare(first).fingerprint == PREPARER.prepare(first).fingerprint
    # The same secret under another server key gives another fingerprint: without the key, the
    # stored fingerprint cannot be tested against guesses.
    other_server = convert.EventPreparer("another secret")
    assert other_server.prepare(first).fingerprint != PREPARER.prepare(first).fingerprint
    # Without the secret, a non-sensitive event has the same fingerprint on every server.
    plain = valid_event_of_each_type("t")["start_call"]
    assert other_server.prepare(plain).fingerprint == PREPARER.prepare(plain).fingerprint


def test_a_value_without_a_kind_is_stored_as_null() -> None:
    event = _odd_event("custom_event")
    _, back = _store_and_read(event)
    assert back.custom_event.value.WhichOneof("kind") == "null_value"


def test_minus_zero_is_stored_as_zero() -> None:
    event = _odd_event("scroll")
    prepared = PREPARER.prepare(event)
    assert math.copysign(1.0, prepared.event.scroll.position.top) == 1.0


def test_slot_ids_sort_in_sequence_order() -> None:
    slots = [convert.slot_id("t", "s", n) for n in (1, 2, 10, 99, 100, 123456)]
    assert slots == sorted(slots)


def test_tokens_round_trip_and_reject_tampering_and_other_purposes() -> None:
    signer = TokenSigner("secret")
    token = signer.encode("page", {"q": "abc", "t": 5})
    assert signer.decode("page", token) == {"q": "abc", "t": 5}
    with pytest.raises(TokenError):
        signer.decode("cursor", token)
    with pytest.raises(TokenError):
        TokenSigner("another secret").decode("page", token)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(TokenError):
        signer.decode("page", tampered)
    with pytest.raises(TokenError):
        signer.decode("page", "%%%")


@pytest.mark.parametrize("tenant", ["t", "tenant-ä", 'quo"te', "-4711000000000000000"])
def test_a_token_encoder_of_an_integer_signs_what_encode_signs(tenant: str) -> None:
    signer = TokenSigner("secret")
    cursor_of = signer.encoder_of("export-cursor", {"t": tenant}, "s")
    for sequence in (0, 1, 99, 10**12):
        token = cursor_of(sequence)
        assert token == signer.encode("export-cursor", {"t": tenant, "s": sequence})
        assert signer.decode("export-cursor", token) == {"t": tenant, "s": sequence}


def test_dates_convert_to_the_same_milliseconds_in_every_form() -> None:
    utc_plus_2 = dt.timezone(dt.timedelta(hours=2))
    for millis in (0, 1, -1, 999, 1_764_000_000_123, -62_135_596_800_000, 253_402_300_799_999):
        aware = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis)
        assert convert.datetime_to_millis(aware) == millis
        if abs(millis) < 10**14:  # (year 1 and 9999 have no other offset to move to)
            assert convert.datetime_to_millis(aware.astimezone(utc_plus_2)) == millis
        assert convert.datetime_to_millis(aware.replace(tzinfo=None)) == millis
        assert convert.datetime_to_millis(DatetimeMS(millis)) == millis
    # Below a millisecond: floored, as before the whole-millisecond shortcut.
    odd = dt.datetime(2026, 12, 3, 1, 2, 3, 456_789, tzinfo=dt.UTC)
    assert convert.datetime_to_millis(odd) % 1000 == 456


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_the_ids_list_filters_on_are_at_the_top_of_a_document_whose_payload_has_them(
    field: str,
) -> None:
    event = valid_event_of_each_type("t")[field]
    payload = getattr(event, field)
    doc, _ = _store_and_read(event)
    for name in ("customer_id", "call_id"):
        has = name in payload.DESCRIPTOR.fields_by_name and getattr(payload, name) != ""
        assert (name in doc) == has, name
        if has:
            assert doc[name] == getattr(payload, name)


def test_a_receive_time_converts_alike_the_first_time_again_and_after_another() -> None:
    """receive_time_into keeps its last conversion: each new value must still be converted."""
    times = [
        RECEIVED,
        RECEIVED,
        RECEIVED + dt.timedelta(milliseconds=1),
        RECEIVED.replace(tzinfo=None) - dt.timedelta(days=400),
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        RECEIVED,
    ]
    for value in times:
        quick, plain = AuditEvent().receive_time, AuditEvent().receive_time
        convert.receive_time_into(value, quick)
        convert.datetime_to_timestamp(value, plain)
        assert (quick.seconds, quick.nanos) == (plain.seconds, plain.nanos), value
        assert convert.recent_millis(value) == convert.datetime_to_millis(value), value
