"""LogEvents answers with bytes it puts together itself: they must be what protobuf serializes."""

from __future__ import annotations

from typing import Any

from auditlog.v1 import service_pb2
from auditlog_service import convert
from auditlog_service.error_details import to_event_error
from auditlog_service.errors import AuditLogError, DatabaseUnavailable, InvalidArgument
from auditlog_service.ingest import EventWriter, PreparedWrite
from auditlog_service.rpcs import SerializedResponse, _event_results, response_bytes
from auditlog_service.storage import Outcome, Stored
from auditlog_service.validation import FieldViolation
from tests.event_samples import valid_event_of_each_type


class _NoDatabase:
    async def insert_events(self, writes: Any) -> Any:
        raise NotImplementedError  # nothing here is written


def _writer() -> EventWriter:
    preparer = convert.EventPreparer("test secret")
    return EventWriter(_NoDatabase(), preparer, max_group=1000, max_delay_s=0.0)  # type: ignore[arg-type]


def _batch() -> tuple[dict[int, service_pb2.EventError], list[tuple[PreparedWrite, Outcome]]]:
    """Every event type, stored afresh (co-browsing ones in a session slot), already stored (as
    read back), failed in the database, or refused before it."""
    writer = _writer()
    refused = {
        0: to_event_error(InvalidArgument([FieldViolation("events[0].tenant_id", "required")])),
    }
    written: list[tuple[PreparedWrite, Outcome]] = []
    for n, event in enumerate(valid_event_of_each_type("t").values()):
        write = writer.prepare(event)
        doc = write.write.doc
        if "cobrowse" in doc:
            convert.assign_slot(doc, 127 + n)
        outcome: Outcome = Stored(doc)
        if n % 5 == 1:
            outcome = Stored(doc, already_stored=True)
        elif n % 5 == 2:
            outcome = DatabaseUnavailable("the database did not answer")
        written.append((write, outcome))
    return refused, written


def _as_messages(
    refused: dict[int, service_pb2.EventError], written: list[tuple[PreparedWrite, Outcome]]
) -> service_pb2.LogEventsResponse:
    """The same response built as messages: the stored event parsed from its recorded form."""
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
        if outcome.already_stored:
            result.event.CopyFrom(convert.from_document(outcome.doc))
        else:
            result.event.MergeFromString(write.write.recorded)
            result.event.sequence = outcome.doc.get("sequence", 0)
    return response


def test_a_whole_event_response_is_the_serialization_of_the_same_message() -> None:
    refused, written = _batch()
    data, stored = _event_results(len(refused) + len(written), refused, written)
    expected = _as_messages(refused, written)
    assert data == expected.SerializeToString(deterministic=True)
    assert stored == sum(1 for _, outcome in written if isinstance(outcome, Stored))
    kinds = [result.WhichOneof("result") for result in expected.results]
    assert kinds.count("error") == 1 + sum(
        1 for _, outcome in written if isinstance(outcome, AuditLogError)
    )
    assert any(result.already_stored for result in expected.results)
    assert any(result.event.sequence >= 128 for result in expected.results)


def test_a_serialized_response_is_sent_as_it_is_and_reads_as_its_message() -> None:
    refused, written = _batch()
    data, _ = _event_results(len(refused) + len(written), refused, written)
    response = SerializedResponse(service_pb2.LogEventsResponse, data)
    assert response_bytes(response) is data
    assert response.message() == _as_messages(refused, written)
    message = service_pb2.LogEventsResponse()
    assert response_bytes(message) == b""
