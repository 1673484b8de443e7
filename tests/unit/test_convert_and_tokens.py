"""Pure conversions: proto <-> document, slot ids, and signed tokens."""

from __future__ import annotations

import datetime as dt

import pytest

from auditlog.v1 import audit_event_pb2
from auditlog_service import convert
from auditlog_service.tokens import TokenError, TokenSigner
from tests.event_samples import valid_event_of_each_type


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_document_round_trip_keeps_every_field(field: str) -> None:
    event = convert.prepare_incoming(valid_event_of_each_type("t")[field])
    received = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    doc = convert.to_document(
        event, event_id=event.id, receive_time=received, content_hash=convert.fingerprint(event)
    )
    if "cobrowse" in doc:
        convert.assign_slot(doc, 42)
    back = convert.from_document(doc)
    expected = audit_event_pb2.AuditEvent()
    expected.CopyFrom(event)
    expected.receive_time.FromDatetime(received)
    expected.event_type = back.event_type
    expected.sequence = 42 if "cobrowse" in doc else 0
    assert back == expected
    assert doc[field] is not None
    assert doc["type"] == field.upper().replace("PAGE_CHANGE", "PAGECHANGE")


def test_slot_ids_sort_in_sequence_order() -> None:
    slots = [convert.slot_id("t", "s", n) for n in (1, 2, 10, 99, 100, 123456)]
    assert slots == sorted(slots)


def test_fingerprint_ignores_output_fields_but_not_content() -> None:
    event = valid_event_of_each_type("t")["start_call"]
    other = audit_event_pb2.AuditEvent()
    other.CopyFrom(event)
    other.sequence = 5
    other.receive_time.GetCurrentTime()
    assert convert.fingerprint(event) == convert.fingerprint(other)
    other.start_call.call_id = "another"
    assert convert.fingerprint(event) != convert.fingerprint(other)


def test_sensitive_input_is_masked_and_marked() -> None:
    event = valid_event_of_each_type("t")["input"]
    event.input.text = "4111 1111 1111 1111"
    event.input.sensitive = True
    prepared = convert.prepare_incoming(event)
    assert prepared.input.text == convert.INPUT_MASK
    assert prepared.input.masked


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
