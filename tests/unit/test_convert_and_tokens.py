"""Pure conversions: proto <-> document, slot ids, and signed tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.datetime_ms import DatetimeMS
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    timestamp_pb2,
)
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.internal import encoder
from google.protobuf.message import Message

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


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
@pytest.mark.parametrize("occur_given", [True, False])
def test_a_documents_times_are_stored_as_the_dates_a_datetime_makes(
    field: str, occur_given: bool
) -> None:
    """The write path holds an event's times as milliseconds (convert.StoredTime): its BSON is
    byte for byte that of the document with aware datetimes, and reads back as those."""
    event = valid_event_of_each_type("t")[field]
    if not occur_given:
        event.ClearField("occur_time")
    prepared = PREPARER.prepare(event)
    received = convert.stored_time_now()
    doc = convert.to_document(prepared, event_id=event.id or "x", receive_time=received)
    assert isinstance(doc["receive_time"], DatetimeMS)
    assert isinstance(doc["occur_time"], DatetimeMS)
    options = CodecOptions(tz_aware=True, tzinfo=dt.UTC)
    as_datetimes = {
        name: value.as_datetime(options) if isinstance(value, DatetimeMS) else value
        for name, value in doc.items()
    }
    expected_occur = (
        convert.timestamp_to_datetime(prepared.event.occur_time)
        if occur_given
        else received.as_datetime(options)
    )
    assert as_datetimes["occur_time"] == expected_occur
    assert bson.encode(doc) == bson.encode(as_datetimes)
    read = bson.decode(bson.encode(doc), codec_options=options)
    assert read == as_datetimes
    assert convert.from_document(read) == convert.from_document(doc)


def test_the_clocks_stored_time_is_now_in_whole_milliseconds() -> None:
    before = convert.datetime_to_millis(convert.now_millis())
    now = convert.datetime_to_millis(convert.stored_time_now())
    after = convert.datetime_to_millis(convert.now_millis())
    assert before <= now <= after


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


def _stored_bytes(prepared: convert.PreparedEvent, event_id: str, sequence: int = 0) -> bytes:
    """The event as the server answers it when stored, serialized from its recorded form and
    its session sequence (as ingest.stored_event_bytes does)."""
    recorded = convert.recorded_event(prepared, event_id=event_id, receive_time=RECEIVED)
    position = convert.sequence_position(prepared, recorded)
    return convert.stored_event_bytes(recorded, position, sequence)


def _stored(prepared: convert.PreparedEvent, event_id: str, sequence: int = 0) -> AuditEvent:
    return AuditEvent.FromString(_stored_bytes(prepared, event_id, sequence))


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_the_event_built_from_what_is_at_hand_equals_a_later_read(field: str) -> None:
    event = _odd_event(field)
    prepared = PREPARER.prepare(event)
    doc, back = _store_and_read(event)
    built = _stored(prepared, doc["id"], doc.get("sequence", 0))
    assert built == back
    assert built.SerializeToString(deterministic=True) == back.SerializeToString(deterministic=True)


def _variants(event: AuditEvent) -> list[AuditEvent]:
    """The event as it is, without its occur_time, without its tenant_user_id, and with ids
    whose lengths take two bytes to serialize (one of them not ASCII)."""
    variants = []
    for change in ("none", "occur_time", "tenant_user_id", "long ids"):
        variant = AuditEvent()
        variant.CopyFrom(event)
        if change == "long ids":
            variant.tenant_id = "t" * 200
            variant.tenant_user_id = "ä" * 70  # 140 bytes in UTF-8
        elif change != "none":
            variant.ClearField(change)
        variants.append(variant)
    return variants


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_the_recorded_event_is_the_serialization_of_the_event_as_read_later(field: str) -> None:
    """Byte for byte what the ledger's verification computes from the stored event."""
    for variant in _variants(_odd_event(field)):
        prepared = PREPARER.prepare(variant)
        doc, back = _store_and_read(variant)
        back.sequence = 0  # not part of the recorded form
        for event_id in (doc["id"], "i" * 128):
            recorded = convert.recorded_event(prepared, event_id=event_id, receive_time=RECEIVED)
            back.id = event_id
            assert recorded == recorded_form(back)
            assert recorded == recorded_form(back, map_free=prepared.spec.map_free)


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_the_stored_events_bytes_are_its_serialization_as_read_later(field: str) -> None:
    """Byte for byte, session sequences of one to six bytes and cobrowse contexts whose length
    takes two bytes included: what a response carries is what serializing the event gives."""
    variants = _variants(_odd_event(field))
    if variants[0].HasField("cobrowse"):
        variants[-1].cobrowse.session_id = "s" * 128
    for variant in variants:
        prepared = PREPARER.prepare(variant)
        doc, back = _store_and_read(variant)
        sequences = (1, 127, 128, 16_383, 16_384, 2**40) if "cobrowse" in doc else (0,)
        for sequence in sequences:
            back.sequence = sequence
            expected = back.SerializeToString(deterministic=True)
            assert _stored_bytes(prepared, doc["id"], sequence) == expected


def test_a_field_order_that_serializations_do_not_have_is_refused() -> None:
    convert.require_field_order(AuditEvent, "id", "tenant_id", ["cobrowse", "sequence"])
    for groups in (("sequence", "cobrowse"), ("id", ["tenant_id", "event_type"], "occur_time")):
        with pytest.raises(ImportError, match="AuditEvent's fields are not in the order"):
            convert.require_field_order(AuditEvent, *groups)


def test_a_co_browsing_event_without_its_context_has_no_place_for_a_sequence() -> None:
    """Validation refuses such an event; were one to get this far, no sequence goes astray."""
    event = valid_event_of_each_type("t")["click"]
    event.ClearField("cobrowse")
    prepared = PREPARER.prepare(event)
    recorded = convert.recorded_event(prepared, event_id="x", receive_time=RECEIVED)
    with pytest.raises(ValueError, match="cobrowse context"):
        convert.sequence_position(prepared, recorded)


@pytest.mark.parametrize(
    "value", [0, 1, 127, 128, 300, 16_383, 16_384, 2**21 - 1, 2**21, 2**35, 2**63 - 1]
)
def test_varints_are_protobufs_own(value: int) -> None:
    assert convert.varint(value) == encoder._VarintBytes(value)


def test_a_masked_inputs_recorded_event_holds_the_mask() -> None:
    event = valid_event_of_each_type("t")["input"]
    event.input.sensitive = True
    prepared = PREPARER.prepare(event)
    recorded = convert.recorded_event(prepared, event_id="x", receive_time=RECEIVED)
    assert AuditEvent.FromString(recorded).input.text == convert.INPUT_MASK
    assert event.input.text.encode() not in recorded


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
    stored = _stored(prepared, "x")
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


def _enum_type(field: FieldDescriptor) -> EnumDescriptor:
    assert field.enum_type is not None
    return field.enum_type


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None
    return field.message_type


def _listed_fields(message: Message) -> convert.Document:
    """A message's document as the contract defines it: every field ListFields() lists, by
    kind (the generic walk the generated document functions stand in for)."""
    doc: convert.Document = {}
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_ENUM:
            names = {v.number: v.name for v in _enum_type(field).values}
            doc[field.name] = [names[v] for v in value] if field.is_repeated else names[value]
            continue
        make: Any = lambda v: v  # noqa: E731 - a scalar as it is
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            make = {
                "google.protobuf.Timestamp": convert.timestamp_to_datetime,
                "google.protobuf.Struct": convert.free_form_json,
                "google.protobuf.Value": convert.free_form_json,
            }.get(_message_type(field).full_name, _listed_fields)
        doc[field.name] = [make(v) for v in value] if field.is_repeated else make(value)
    return doc


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_a_payloads_document_holds_what_its_message_lists(field: str) -> None:
    payload = getattr(valid_event_of_each_type("t")[field], field)
    made = convert._PAYLOAD_DOCS[field](payload)
    assert made == _listed_fields(payload)
    assert list(made) == list(_listed_fields(payload))  # field-number order
    assert made or not payload.DESCRIPTOR.fields  # every sample sets some field it has
    assert convert._PAYLOAD_DOCS[field](type(payload)()) == {}


def _message_of_every_kind() -> Any:
    """A message type with a field of each kind a document function writes, two of them
    named like Python keywords."""
    file = descriptor_pb2.FileDescriptorProto(
        name="kinds_test.proto",
        package="kinds_test",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/struct.proto"],
    )
    file.enum_type.add(name="Colour").value.extend(
        [
            descriptor_pb2.EnumValueDescriptorProto(name="COLOUR_UNSPECIFIED", number=0),
            descriptor_pb2.EnumValueDescriptorProto(name="RED", number=1),
        ]
    )
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="x", number=1, type=FieldDescriptor.TYPE_DOUBLE)
    outer = file.message_type.add(name="Outer")
    outer.oneof_decl.add(name="choice")
    scalar = FieldDescriptor.LABEL_OPTIONAL
    repeated = FieldDescriptor.LABEL_REPEATED
    for number, (name, kind, label, type_name) in enumerate(
        [
            ("from", FieldDescriptor.TYPE_STRING, scalar, ""),
            ("class", FieldDescriptor.TYPE_DOUBLE, scalar, ""),
            ("count", FieldDescriptor.TYPE_INT64, scalar, ""),
            ("colour", FieldDescriptor.TYPE_ENUM, scalar, ".kinds_test.Colour"),
            ("colours", FieldDescriptor.TYPE_ENUM, repeated, ".kinds_test.Colour"),
            ("tags", FieldDescriptor.TYPE_STRING, repeated, ""),
            ("inner", FieldDescriptor.TYPE_MESSAGE, scalar, ".kinds_test.Inner"),
            ("inners", FieldDescriptor.TYPE_MESSAGE, repeated, ".kinds_test.Inner"),
            ("at", FieldDescriptor.TYPE_MESSAGE, scalar, ".google.protobuf.Timestamp"),
            ("times", FieldDescriptor.TYPE_MESSAGE, repeated, ".google.protobuf.Timestamp"),
            ("data", FieldDescriptor.TYPE_MESSAGE, scalar, ".google.protobuf.Struct"),
            ("flag", FieldDescriptor.TYPE_BOOL, scalar, ""),
            ("text", FieldDescriptor.TYPE_STRING, scalar, ""),
        ],
        start=1,
    ):
        # Declared against their numbers' order: a document follows the numbers.
        added = outer.field.add(name=name, number=20 - number, type=kind, label=label)
        if type_name:
            added.type_name = type_name
    # flag: an optional scalar (its zero is listed when set); text: a member of a oneof.
    outer.field[-2].proto3_optional = True
    outer.oneof_decl.add(name="_flag")
    outer.field[-2].oneof_index = 1
    outer.field[-1].oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("kinds_test.Outer"))


def test_a_document_function_writes_every_kind_of_field_as_listed() -> None:
    outer_type = _message_of_every_kind()
    to_doc = convert._doc_function(outer_type.DESCRIPTOR)
    empty = outer_type()
    assert to_doc(empty) == _listed_fields(empty) == {}
    full = outer_type()
    setattr(full, "from", "here")
    setattr(full, "class", -0.0)  # falsy, yet set: listed, and so in the document
    full.count, full.colour, full.text = 7, 1, ""
    full.colours.extend([1, 0])
    full.tags.extend(["a", "b"])
    full.inner.SetInParent()  # set, though all its fields are zero
    full.inners.add(x=1.5)
    full.at.FromMilliseconds(1_700_000_000_123)
    full.times.add().FromMilliseconds(5)
    full.data.update({"k": [1, "v"]})
    full.flag = False
    made = to_doc(full)
    assert made == _listed_fields(full)
    assert list(made) == list(_listed_fields(full))
    assert math.copysign(1.0, made["class"]) == -1.0
    assert made["inner"] == {}
    assert made["flag"] is False
    assert made["text"] == ""
    assert made["colours"] == ["RED", "COLOUR_UNSPECIFIED"]


def test_a_map_has_no_document_function() -> None:
    with pytest.raises(TypeError, match="map"):
        convert._doc_function(struct_pb2.Struct.DESCRIPTOR)


def test_slot_ids_sort_in_sequence_order() -> None:
    slots = [convert.slot_id("t", "s", n) for n in (1, 2, 10, 99, 100, 123456)]
    assert slots == sorted(slots)


def test_a_sessions_consecutive_slot_ids_are_each_slots_id() -> None:
    for first, count in ((1, 1), (98, 5), (10**11 - 2, 4), (10**12 + 5, 2)):
        expected = [convert.slot_id("t/x", "s é", n) for n in range(first, first + count)]
        assert convert.slot_ids("t/x", "s é", first, count) == expected
    assert convert.slot_ids("t", "s", 7, 0) == []


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
        DatetimeMS(RECEIVED),
        DatetimeMS(0),
        DatetimeMS(RECEIVED),
    ]
    for value in times:
        quick, plain = AuditEvent().receive_time, AuditEvent().receive_time
        convert.receive_time_into(value, quick)
        convert.datetime_to_timestamp(value, plain)
        assert (quick.seconds, quick.nanos) == (plain.seconds, plain.nanos), value
