"""Ingest answers with bytes it puts together itself: they must be what protobuf serializes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.datetime_ms import DatetimeMS

from auditlog.v1 import audit_event_pb2, service_pb2
from auditlog_service import _native, convert, responses
from auditlog_service.error_details import to_event_error
from auditlog_service.errors import AuditLogError, DatabaseUnavailable, InvalidArgument
from auditlog_service.ingest import EventWriter
from auditlog_service.storage import EventWrite, Outcome, Stored
from auditlog_service.validation import FieldViolation
from tests.event_samples import valid_event_of_each_type

_READ = CodecOptions(tz_aware=True, tzinfo=dt.UTC)  # as the server reads


class _NoDatabase:
    async def insert_events(self, writes: Any) -> Any:
        raise NotImplementedError  # nothing here is written


def _written() -> list[tuple[EventWrite, Outcome]]:
    """Every event type, stored afresh (co-browsing ones in session slots, some of whose
    sequences take two bytes), already stored (as read back), or failed in the database; the
    batch's receive time, then another one for the last events (as when a group holds several
    batches). Receive times are the server's own (convert.StoredTime); an event already
    stored has its document as a read returns it, with datetimes. Then general events with ids
    of many lengths."""
    writer = EventWriter(
        _NoDatabase(),  # type: ignore[arg-type]
        convert.EventPreparer("test secret"),
        max_group=1000,
        max_delay_s=0.0,
    )
    first = convert.stored_time_now()
    later = DatetimeMS(int(first) + 1_234)
    written: list[tuple[EventWrite, Outcome]] = []
    events = list(valid_event_of_each_type("t").values())
    for n, event in enumerate(events):
        write = writer.prepare(event, first if n < len(events) - 3 else later)
        doc = write.doc
        if "cobrowse" in doc:
            convert.assign_slot(doc, 120 + n)
        outcome: Outcome = Stored(doc)
        if n % 5 == 1:
            outcome = Stored(bson.decode(bson.encode(doc), _READ), already_stored=True)
        elif n % 5 == 2:
            outcome = DatabaseUnavailable("the database did not answer")
        written.append((write, outcome))
    # New general events whose ids' lengths, alike or not, put an ack's and a result's sizes
    # on either side of one- and two-byte varints, with receive times changing between them (a
    # whole second's field is shorter: it has no nanos).
    whole_second = DatetimeMS((int(first) // 1000 + 5) * 1000)
    template = valid_event_of_each_type("t")["start_call"]
    for n, size in enumerate((1, 36, 36, 116, 117, 127, 128, 200, 36, 128)):
        event = audit_event_pb2.AuditEvent()
        event.CopyFrom(template)
        event.id = f"id{n}-".ljust(size, "x")[:size]
        write = writer.prepare(event, first if n < 6 else whole_second)
        written.append((write, Stored(write.doc)))
    return written


_REFUSED = to_event_error(InvalidArgument([FieldViolation("events[0].tenant_id", "required")]))


def _ack(outcome: Stored) -> service_pb2.EventAck:
    doc = outcome.doc
    ack = service_pb2.EventAck(
        id=doc["id"], sequence=doc.get("sequence", 0), already_stored=outcome.already_stored
    )
    received = doc["receive_time"]
    if isinstance(received, DatetimeMS):
        received = received.as_datetime(_READ)
    ack.receive_time.FromDatetime(received)
    return ack


def _log_events_as_messages(
    refused: dict[int, service_pb2.EventError],
    written: list[tuple[EventWrite, Outcome]],
    whole_events: bool,
) -> service_pb2.LogEventsResponse:
    """The same response built as messages, the stored event parsed from its recorded form."""
    response = service_pb2.LogEventsResponse()
    answers = iter(written)
    for index in range(len(refused) + len(written)):
        result = response.results.add()
        if index in refused:
            result.error.CopyFrom(refused[index])
            continue
        write, outcome = next(answers)
        if isinstance(outcome, AuditLogError):
            result.error.CopyFrom(to_event_error(outcome))
            continue
        result.already_stored = outcome.already_stored
        if not whole_events:
            result.ack.CopyFrom(_ack(outcome))
        elif outcome.already_stored:
            result.event.CopyFrom(convert.from_document(outcome.doc))
        else:
            result.event.MergeFromString(write.recorded)
            result.event.sequence = outcome.doc.get("sequence", 0)
    return response


@pytest.mark.parametrize("whole_events", [True, False])
def test_a_log_events_response_is_the_serialization_of_the_same_message(
    whole_events: bool,
) -> None:
    written = _written()
    refused = {0: _REFUSED, 4: _REFUSED}
    count = len(refused) + len(written)
    response, stored = responses.log_events_response(
        count, refused, written, whole_events=whole_events
    )
    expected = _log_events_as_messages(refused, written, whole_events)
    assert response.data == expected.SerializeToString(deterministic=True)
    assert response.message() == expected
    assert stored == sum(1 for _, outcome in written if isinstance(outcome, Stored))
    kinds = [result.WhichOneof("result") for result in expected.results]
    assert kinds.count("error") == 2 + sum(
        1 for _, outcome in written if isinstance(outcome, AuditLogError)
    )
    assert any(result.already_stored for result in expected.results)
    assert any(result.event.sequence >= 128 for result in expected.results) is whole_events
    assert any(result.ack.sequence >= 128 for result in expected.results) is not whole_events


def _stored_whole() -> list[tuple[EventWrite, Outcome]]:
    """Events this call stored, with one receive time (a batch's): co-browsing ones in slots
    whose sequences take one to six bytes."""
    written = [(w, o) for w, o in _written() if isinstance(o, Stored) and not o.already_stored]
    received = written[0][1].doc["receive_time"]
    written = [(w, o) for w, o in written if o.doc["receive_time"] is received]
    sequences = iter([2**35, 128, 1, 2**14, 127])
    for prepared, outcome in written:
        if prepared.session is not None:
            convert.assign_slot(outcome.doc, next(sequences, 300), prepared.session)
    return written


def _others() -> list[tuple[EventWrite, Outcome]]:
    """Outcomes the native answers leave to the Python: an event stored before, a failure, an
    event of another receive time (a group holding several batches)."""
    others = [(w, o) for w, o in _written() if not isinstance(o, Stored) or o.already_stored]
    return [*others, _written()[-1]]


@pytest.mark.parametrize("whole_events", [True, False])
def test_a_batch_stored_whole_is_answered_natively_with_the_same_bytes(whole_events: bool) -> None:
    # Every event stored by this call: the native results; with one stored before, failed or
    # of another receive time among them: the Python's, alike.
    written = _stored_whole()
    native = (
        (lambda batch: _native.stored_results(batch, *_RESULT_TAGS))
        if whole_events
        else (lambda batch: responses.AckWriter(*_ACK_TAGS).results(batch, paired=True))
    )
    assert native(written) is not None
    response, stored = responses.log_events_response(
        len(written), {}, written, whole_events=whole_events
    )
    expected = _log_events_as_messages({}, written, whole_events)
    assert response.data == expected.SerializeToString(deterministic=True)
    assert stored == len(written)
    sequences = [r.event.sequence if whole_events else r.ack.sequence for r in expected.results]
    assert 2**35 in sequences
    assert 0 in sequences
    for other in _others():
        mixed = [*written[:3], other, *written[3:]]
        # Whole events do not carry the receive time apart: one of another batch is as any.
        fresh = isinstance(other[1], Stored) and not other[1].already_stored
        assert (native(mixed) is not None) is (whole_events and fresh)
        response, _ = responses.log_events_response(
            len(mixed), {}, mixed, whole_events=whole_events
        )
        expected = _log_events_as_messages({}, mixed, whole_events)
        assert response.data == expected.SerializeToString(deterministic=True)


def test_a_stream_batch_taken_whole_is_acknowledged_natively_with_the_same_bytes() -> None:
    outcomes = [outcome for _, outcome in _stored_whole()]
    acks = responses.AckWriter(responses._STREAM_RESULTS_TAG, responses._STREAM_RESULT_ACK_TAG)
    assert acks.results(outcomes) is not None
    for batch in [outcomes, *([*outcomes[:2], o, *outcomes[2:]] for _, o in _others())]:
        if batch is not outcomes:
            assert acks.results(batch) is None
        response, stored = responses.stream_batch_response(7, list(range(len(batch))), batch)
        expected = service_pb2.StreamEventsResponse(request_index=7)
        for outcome in batch:
            result = expected.results.add()
            if isinstance(outcome, Stored):
                result.ack.CopyFrom(_ack(outcome))
            else:
                result.error.CopyFrom(to_event_error(outcome))
        assert response.data == expected.SerializeToString(deterministic=True)
        assert stored == sum(1 for outcome in batch if isinstance(outcome, Stored))


_RESULT_TAGS = (responses._RESULTS_TAG, responses._RESULT_EVENT_TAG, convert.SEQUENCE_TAG)
_ACK_TAGS = (responses._RESULTS_TAG, responses._RESULT_ACK_TAG, responses._RESULT_ALREADY_STORED)


def test_a_log_event_response_is_the_serialization_of_the_same_message() -> None:
    for write, outcome in _written():
        if isinstance(outcome, AuditLogError):
            with pytest.raises(DatabaseUnavailable):
                responses.log_event_response(write, outcome)
            continue
        expected = service_pb2.LogEventResponse(already_stored=outcome.already_stored)
        if outcome.already_stored:
            expected.event.CopyFrom(convert.from_document(outcome.doc))
        else:
            expected.event.MergeFromString(write.recorded)
            expected.event.sequence = outcome.doc.get("sequence", 0)
        data = responses.log_event_response(write, outcome).data
        assert data == expected.SerializeToString(deterministic=True)


@pytest.mark.parametrize("index", [0, 1, 127, 128, 2**40])
def test_stream_responses_are_the_serialization_of_the_same_messages(index: int) -> None:
    written = _written()
    outcomes = [outcome for _, outcome in written]
    answers: list[service_pb2.EventError | int] = [_REFUSED, *range(len(outcomes)), _REFUSED]
    response, stored = responses.stream_batch_response(index, answers, outcomes)
    expected = service_pb2.StreamEventsResponse(request_index=index)
    for answer in answers:
        result = expected.results.add()
        if isinstance(answer, service_pb2.EventError):
            result.error.CopyFrom(answer)
        elif isinstance(outcome := outcomes[answer], AuditLogError):
            result.error.CopyFrom(to_event_error(outcome))
        else:
            result.ack.CopyFrom(_ack(outcome))
    assert response.data == expected.SerializeToString(deterministic=True)
    assert stored == sum(1 for outcome in outcomes if isinstance(outcome, Stored))
    for one in [*outcomes, _REFUSED]:
        single = service_pb2.StreamEventsResponse(request_index=index)
        if isinstance(one, Stored):
            single.ack.CopyFrom(_ack(one))
        elif isinstance(one, AuditLogError):
            single.error.CopyFrom(to_event_error(one))
        else:
            single.error.CopyFrom(one)
        data = responses.stream_event_response(index, one).data
        assert data == single.SerializeToString(deterministic=True)


def test_a_serialized_response_is_sent_as_it_is_and_reads_as_its_message() -> None:
    response, _ = responses.log_events_response(1, {0: _REFUSED}, [], whole_events=True)
    assert responses.response_bytes(response) is response.data
    assert responses.response_message(response) == service_pb2.LogEventsResponse(
        results=[service_pb2.LogEventResult(error=_REFUSED)]
    )
    message = service_pb2.GetEventResponse()
    assert responses.response_message(message) is message
    assert responses.response_bytes(message) == b""
