"""EventWriter: turns validated events into documents and writes them through group commit.

All events, of every tenant, kind and session, share one group committer: concurrent LogEvent
calls, batches and ingest streams become one ordered insert per group, i.e. one database round
trip (and one transaction on FerretDB, whose SQLite backend serialises writers) for many events.
Within a group, a session's events keep their arrival order and take consecutive sequences.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import operator
from dataclasses import dataclass
from typing import cast

from auditlog.ids import new_event_id
from auditlog.v1 import audit_event_pb2

from . import convert, metrics
from .errors import AuditLogError
from .group_commit import GroupCommitter
from .storage import EventRepository, EventWrite, Outcome


def stored_event_bytes(write: EventWrite, outcome: Outcome) -> bytes:
    """The event as stored, serialized: from what is at hand, or as read back for an earlier
    attempt."""
    if isinstance(outcome, AuditLogError):
        raise outcome
    if outcome.already_stored:
        return convert.from_document(outcome.doc).SerializeToString(deterministic=True)
    sequence = outcome.doc.get("sequence", 0)
    return convert.stored_event_bytes(write.recorded, write.sequence_at, sequence)


@dataclass(slots=True)
class PendingEvent:
    """An event on its way to the database; `outcome` resolves once the database answered."""

    write: EventWrite
    outcome: asyncio.Future[Outcome]


@dataclass(slots=True)
class PendingBatch:
    """Events on their way to the database together; `outcomes` resolves (one outcome per
    event, in order) once the database answered for the last of them."""

    events: list[EventWrite]
    outcomes: asyncio.Future[list[Outcome]]


class EventWriter:
    """Writes events; every result comes back only after the database acknowledged it."""

    def __init__(
        self,
        repository: EventRepository,
        preparer: convert.EventPreparer,
        *,
        max_group: int,
        max_delay_s: float,
        max_in_flight: int = 1,
        parallel_min_items: int = 0,
        longest_delay_s: float = 0.0,
    ) -> None:
        self._preparer = preparer
        self._native = preparer.native()
        self._committer: GroupCommitter[EventWrite, Outcome] = GroupCommitter(
            metrics.observed_group_write(
                repository.insert_events, lambda: self._committer.chosen_delay_s
            ),
            max_items=max_group,
            max_delay_s=max_delay_s,
            max_in_flight=max_in_flight,
            parallel_min_items=parallel_min_items,
            # A session's events stay in submission order across groups in flight.
            key=operator.attrgetter("session"),
            longest_delay_s=longest_delay_s,
        )

    def prepare(
        self,
        event: audit_event_pb2.AuditEvent,
        receive_time: convert.StoredTime | dt.datetime | None = None,
        serialized: bytes | None = None,
    ) -> EventWrite:
        """One validated event (received now, or with the batch it came in) made ready for the
        database; `serialized` is its serialization when the caller has it (validation made
        it). The writer takes the message over: it may be normalised in place, not copied."""
        data = event.SerializeToString() if serialized is None else serialized
        return self.prepare_batch([event], [data], receive_time)[0]

    def _by_rules(
        self, event: audit_event_pb2.AuditEvent, receive_time: convert.StoredTime | dt.datetime
    ) -> EventWrite:
        """prepare by the rules in convert, for an event the native preparer declines."""
        event_id = event.id or new_event_id()
        prepared = self._preparer.prepare(event, owned=True)
        doc = convert.to_document(prepared, event_id=event_id, receive_time=receive_time)
        # The event as stored, without the session slot it will get (the ledger records that
        # in its chain beside the recorded form's digest), serialized.
        recorded = convert.recorded_event(prepared, event_id=event_id, receive_time=receive_time)
        return EventWrite(
            doc,
            prepared.occur_time_given,
            recorded,
            session=convert.session_key(doc),
            sequence_at=convert.sequence_position(prepared, recorded),
        )

    def submit(
        self, event: audit_event_pb2.AuditEvent, serialized: bytes | None = None
    ) -> PendingEvent:
        """Queue one validated event; see prepare."""
        ready = self.prepare(event, serialized=serialized)
        return PendingEvent(ready, self._committer.submit_nowait(ready))

    async def write(
        self, event: audit_event_pb2.AuditEvent, serialized: bytes | None = None
    ) -> tuple[PendingEvent, Outcome]:
        pending = self.submit(event, serialized)
        # Not shielded, as GroupCommitter.submit: a shield cost 3-5 µs more a call to wake (in
        # process: 5.4-8.2 against 2.7-3.4).
        return pending, await pending.outcome

    def prepare_batch(
        self,
        events: list[audit_event_pb2.AuditEvent],
        serialized: list[bytes] | None = None,
        receive_time: convert.StoredTime | dt.datetime | None = None,
        *,
        slim: bool = True,
    ) -> list[EventWrite]:
        """prepare of each event of a batch (one receive time for all, now unless given);
        without `slim`, the native preparer's documents hold every field (the payload too)."""
        received = receive_time or convert.stored_time_now()
        if serialized is None:
            serialized = convert.serialized_events(events)
        # Most events are stored as they come: the native preparer makes their document,
        # recorded form and write objects from the serializations, the batch in one call
        # (convert.native_preparer); it declines the others, which the rules prepare. Their
        # documents leave out the payload, the user, the co-browsing context, the session id
        # and the ids lifted for ListEvents (slim): they are sent as the BSON the preparer made
        # (convert.raw_documents), and nothing on the write path reads them from the dict
        # (a session is the write's `session`, not its document's context).
        made, declined = self._native.prepare_batch(
            serialized,
            received,
            convert.datetime_to_millis(received),
            new_event_id,
            slim=slim,
        )
        for index in declined:
            made[index] = self._by_rules(events[index], received)
        return cast(list[EventWrite], made)

    def submit_batch(
        self,
        events: list[audit_event_pb2.AuditEvent],
        serialized: list[bytes] | None = None,
    ) -> PendingBatch:
        """Queue validated events that are answered together; see prepare."""
        ready = self.prepare_batch(events, serialized)
        return PendingBatch(ready, self._committer.submit_batch(ready))

    async def write_many(
        self,
        events: list[audit_event_pb2.AuditEvent],
        serialized: list[bytes] | None = None,
    ) -> list[tuple[EventWrite, Outcome]]:
        batch = self.submit_batch(events, serialized)
        outcomes = await batch.outcomes  # this call's own future, as in write
        return list(zip(batch.events, outcomes, strict=True))

    async def drain(self) -> None:
        await self._committer.drain()
