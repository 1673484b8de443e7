"""Ingest responses serialized from what the write path has at hand: no response message is built.

LogEvent, LogEvents and StreamEvents answer every event with the event as stored or an ack. The
event's bytes are its recorded form (convert.recorded_event) and an ack's fields are in its
document, so a response is put together as protobuf would serialize it, in field-number order.
In process, a general event: building a LogEvents response of whole events as messages, sizing
it (the 4 MiB bound) and serializing it cost 1.5-3.0 us against 0.7-1.4 put together; acks (a
StreamEvents batch's, or LogEvents' with RESULT_VIEW_ACK) 1.07-1.14 against 0.73-0.79; since a
response frames the acks of new events once per id length (AckWriter.result), 0.93-1.03 against
0.51-0.65 (100 general events, two runs each). Transports send a SerializedResponse's bytes as
they are (response_bytes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from auditlog.v1 import service_pb2

from . import _native, convert
from .error_details import to_event_error
from .errors import AuditLogError
from .ingest import stored_event_bytes
from .storage import EventWrite, Outcome, Stored


@dataclass(frozen=True, slots=True)
class SerializedResponse:
    """A response that is already serialized: transports send `data` as it is."""

    message_class: type[Message]
    data: bytes

    def message(self) -> Message:
        return self.message_class.FromString(self.data)


def response_bytes(response: Message | SerializedResponse) -> bytes:
    """A response of an RPC serialized, for a transport."""
    if isinstance(response, SerializedResponse):
        return response.data
    return response.SerializeToString()


def response_message(response: Message | SerializedResponse) -> Message:
    """A response of an RPC as a message, for a transport that encodes it otherwise (JSON)."""
    return response.message() if isinstance(response, SerializedResponse) else response


_varint = convert.varint


def _tags(message_class: type[Message], *names: str) -> tuple[bytes, ...]:
    """The tags of a message's fields named in the order the layouts below write them, which
    must be field-number order (as protobuf serializes): checked here, once."""
    convert.require_field_order(message_class, *names)
    return tuple(convert.field_tag(message_class, name) for name in names)


_TRUE = b"\x01"  # a bool field set
_EVENT_TAG, _ALREADY_STORED_TAG = _tags(service_pb2.LogEventResponse, "event", "already_stored")
(_RESULTS_TAG,) = _tags(service_pb2.LogEventsResponse, "results")
_RESULT_EVENT_TAG, _RESULT_ERROR_TAG, _RESULT_ALREADY_STORED_TAG, _RESULT_ACK_TAG = _tags(
    service_pb2.LogEventResult, "event", "error", "already_stored", "ack"
)
_ACK_ID_TAG, _ACK_SEQUENCE_TAG, _ACK_RECEIVE_TIME_TAG, _ACK_ALREADY_STORED_TAG = _tags(
    service_pb2.EventAck, "id", "sequence", "receive_time", "already_stored"
)
_STREAM_INDEX_TAG, _STREAM_ACK_TAG, _STREAM_ERROR_TAG, _STREAM_RESULTS_TAG = _tags(
    service_pb2.StreamEventsResponse, "request_index", "ack", "error", "results"
)
_STREAM_RESULT_ACK_TAG, _STREAM_RESULT_ERROR_TAG = _tags(
    service_pb2.StreamEventResult, "ack", "error"
)
_ALREADY_STORED = _ALREADY_STORED_TAG + _TRUE
_RESULT_ALREADY_STORED = _RESULT_ALREADY_STORED_TAG + _TRUE
_ACK_ALREADY_STORED = _ACK_ALREADY_STORED_TAG + _TRUE


class AckWriter:
    """Serialized EventAcks, one writer per response. The events of a batch share one receive
    time, whose field is made once. A response's results that hold acks (`result_tag`, each
    holding its ack as `ack_tag`, after `already_stored_field` for an event stored before)
    differ, for events stored by this call outside a session, only in the id: the framing
    before it depends on the id's length alone, and is made once per length (result)."""

    __slots__ = (
        "_ack_tag",
        "_already_stored_field",
        "_heads",
        "_received",
        "_received_field",
        "_result_tag",
    )

    def __init__(
        self, result_tag: bytes = b"", ack_tag: bytes = b"", already_stored_field: bytes = b""
    ) -> None:
        self._received: convert.StoredTime | dt.datetime | None = None
        self._received_field = b""
        self._result_tag = result_tag
        self._ack_tag = ack_tag
        self._already_stored_field = already_stored_field
        self._heads: dict[int, bytes] = {}  # by the id's length, for _received_field

    def _receive_time_field(self, received: convert.StoredTime | dt.datetime) -> bytes:
        if received is not self._received:
            timestamp = timestamp_pb2.Timestamp()
            convert.receive_time_into(received, timestamp)
            self._received = received
            self._received_field = convert.message_field(
                _ACK_RECEIVE_TIME_TAG, timestamp.SerializeToString()
            )
            self._heads = {}  # their lengths count the field's
        return self._received_field

    def results(self, outcomes: list[Any], *, paired: bool = False) -> bytes | None:
        """The result fields of the acks of `outcomes` (or of (write, outcome) pairs), one
        after another, natively; None unless this call stored every one of them with the first
        one's receive time (a batch's), when the caller asks for each result in turn."""
        if not outcomes:
            return b""
        first = outcomes[0][1] if paired else outcomes[0]
        if type(first) is not Stored or first.already_stored:
            return None
        received = first.doc["receive_time"]
        return _native.stored_acks(
            outcomes,
            paired,
            (self._result_tag, self._ack_tag, _ACK_ID_TAG, _ACK_SEQUENCE_TAG),
            received,
            self._receive_time_field(received),
        )

    def result(self, outcome: Stored) -> bytes:
        """The result field holding the event's ack."""
        doc = outcome.doc
        if outcome.already_stored or doc.get("sequence"):
            ack = self.ack_field(self._ack_tag, outcome)
            if outcome.already_stored:
                ack = self._already_stored_field + ack
            return convert.message_field(self._result_tag, ack)
        # Stored by this call outside a session: a head made once per id length.
        received_field = self._receive_time_field(doc["receive_time"])
        event_id: bytes = doc["id"].encode()
        size = len(event_id)
        head = self._heads.get(size)
        if head is None:
            rest = size + len(received_field)  # what follows the head
            ack_head = _ACK_ID_TAG + _varint(size)
            result_head = self._ack_tag + _varint(len(ack_head) + rest) + ack_head
            head = self._result_tag + _varint(len(result_head) + rest) + result_head
            self._heads[size] = head
        return head + event_id + received_field

    def ack_field(self, tag: bytes, outcome: Stored) -> bytes:
        """The event's ack as the field `tag` of the message that holds it."""
        doc = outcome.doc
        received_field = self._receive_time_field(doc["receive_time"])
        event_id = doc["id"].encode()
        sequence = doc.get("sequence")
        ack = b"".join(
            (
                _ACK_ID_TAG,
                _varint(len(event_id)),
                event_id,
                _ACK_SEQUENCE_TAG + _varint(sequence) if sequence else b"",
                received_field,
                _ACK_ALREADY_STORED if outcome.already_stored else b"",
            )
        )
        return tag + _varint(len(ack)) + ack


def _error_field(tag: bytes, error: service_pb2.EventError) -> bytes:
    return convert.message_field(tag, error.SerializeToString())


def log_event_response(write: EventWrite, outcome: Outcome) -> SerializedResponse:
    """LogEvent's answer: the event as stored (raises the outcome when it is an error)."""
    data = convert.message_field(_EVENT_TAG, stored_event_bytes(write, outcome))
    if isinstance(outcome, Stored) and outcome.already_stored:
        data += _ALREADY_STORED
    return SerializedResponse(service_pb2.LogEventResponse, data)


def log_events_response(
    count: int,
    refused: dict[int, service_pb2.EventError],
    written: list[tuple[EventWrite, Outcome]],
    *,
    whole_events: bool,
) -> tuple[SerializedResponse, int]:
    """LogEvents' answer to `count` events: results[i] the error `refused` holds for event i,
    else the next of `written` as stored (`whole_events`) or acknowledged; and how many of the
    events are stored."""
    acks = AckWriter(_RESULTS_TAG, _RESULT_ACK_TAG, _RESULT_ALREADY_STORED)
    if not refused and len(written) == count:
        # Every event of the batch written: natively, unless one was stored before or failed.
        data = (
            _native.stored_results(written, _RESULTS_TAG, _RESULT_EVENT_TAG, convert.SEQUENCE_TAG)
            if whole_events
            else acks.results(written, paired=True)
        )
        if data is not None:
            return SerializedResponse(service_pb2.LogEventsResponse, data), count
    # Each event's bytes are copied once, into the joined response: framing each result and
    # then the response around it copied them three times (0.61 against 0.47 of the time that
    # building the response as messages took, in runs minutes apart).
    parts: list[bytes] = []
    append = parts.append
    varint = _varint
    answers = iter(written)
    stored = 0
    for index in range(count):
        error = refused.get(index)
        if error is None:
            write, outcome = next(answers)
            if isinstance(outcome, AuditLogError):
                error = to_event_error(outcome)
            else:
                stored += 1
                if whole_events:
                    event = stored_event_bytes(write, outcome)
                    size = len(event)
                    head = _RESULT_EVENT_TAG + varint(size)
                    tail = _RESULT_ALREADY_STORED if outcome.already_stored else b""
                    append(_RESULTS_TAG + varint(len(head) + size + len(tail)) + head)
                    append(event)
                    append(tail)
                else:
                    append(acks.result(outcome))
                continue
        append(convert.message_field(_RESULTS_TAG, _error_field(_RESULT_ERROR_TAG, error)))
    return SerializedResponse(service_pb2.LogEventsResponse, b"".join(parts)), stored


def _index_field(index: int) -> bytes:
    return _STREAM_INDEX_TAG + _varint(index) if index else b""  # proto3 omits a zero


def stream_event_response(
    index: int, outcome: Outcome | service_pb2.EventError
) -> SerializedResponse:
    """The StreamEventsResponse to request `index` of one event: its ack or its error."""
    if isinstance(outcome, AuditLogError):
        outcome = to_event_error(outcome)
    if isinstance(outcome, service_pb2.EventError):
        answer = _error_field(_STREAM_ERROR_TAG, outcome)
    else:
        answer = AckWriter().ack_field(_STREAM_ACK_TAG, outcome)
    return SerializedResponse(service_pb2.StreamEventsResponse, _index_field(index) + answer)


def stream_batch_response(
    index: int, answers: list[service_pb2.EventError | int], outcomes: list[Outcome]
) -> tuple[SerializedResponse, int]:
    """The StreamEventsResponse to request `index` of a batch: per event its error, or the
    outcome of its place in `outcomes`, as an ack or an error; and how many are stored."""
    acks = AckWriter(_STREAM_RESULTS_TAG, _STREAM_RESULT_ACK_TAG)
    if len(answers) == len(outcomes):  # every event taken: an answer is its outcome's place
        data = acks.results(outcomes)
        if data is not None:
            return (
                SerializedResponse(service_pb2.StreamEventsResponse, _index_field(index) + data),
                len(outcomes),
            )
    parts = [_index_field(index)]
    append = parts.append
    stored = 0
    for answer in answers:
        if isinstance(answer, service_pb2.EventError):
            result = _error_field(_STREAM_RESULT_ERROR_TAG, answer)
        else:
            outcome = outcomes[answer]
            if isinstance(outcome, AuditLogError):
                result = _error_field(_STREAM_RESULT_ERROR_TAG, to_event_error(outcome))
            else:
                stored += 1
                append(acks.result(outcome))
                continue
        append(convert.message_field(_STREAM_RESULTS_TAG, result))
    return SerializedResponse(service_pb2.StreamEventsResponse, b"".join(parts)), stored
