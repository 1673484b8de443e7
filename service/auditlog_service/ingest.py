"""EventWriter: turns validated events into documents and writes them through group commit.

All events, of every tenant, kind and session, share one group committer: concurrent LogEvent
calls, batches and ingest streams become one ordered insert per group, i.e. one database round
trip (and one transaction on FerretDB, whose SQLite backend serialises writers) for many events.
Within a group, a session's events keep their arrival order and take consecutive sequences.
"""

from __future__ import annotations

import asyncio

from auditlog.ids import new_event_id
from auditlog.v1 import audit_event_pb2

from . import convert
from .group_commit import GroupCommitter
from .storage import EventRepository, Outcome


class EventWriter:
    """Writes events; every result comes back only after the database acknowledged it."""

    def __init__(self, repository: EventRepository, *, max_group: int, max_delay_s: float) -> None:
        self._committer: GroupCommitter[convert.Document, Outcome] = GroupCommitter(
            repository.insert_events, max_items=max_group, max_delay_s=max_delay_s
        )

    @staticmethod
    def _document(event: audit_event_pb2.AuditEvent) -> convert.Document:
        prepared = convert.prepare_incoming(event)
        return convert.to_document(
            prepared,
            event_id=prepared.id or new_event_id(),
            receive_time=convert.now_millis(),
            content_hash=convert.fingerprint(prepared),
        )

    def submit(self, event: audit_event_pb2.AuditEvent) -> asyncio.Future[Outcome]:
        """Queue one validated event; the future resolves with its Outcome."""
        return self._committer.submit_nowait(self._document(event))

    async def write(self, event: audit_event_pb2.AuditEvent) -> Outcome:
        return await asyncio.shield(self.submit(event))

    async def write_many(self, events: list[audit_event_pb2.AuditEvent]) -> list[Outcome]:
        futures = [self.submit(event) for event in events]
        return list(await asyncio.shield(asyncio.gather(*futures)))

    async def drain(self) -> None:
        await self._committer.drain()
