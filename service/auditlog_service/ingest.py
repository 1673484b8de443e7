"""EventWriter: turns validated events into documents and writes them through group commit.

General events of all tenants share one group committer. Co-browsing events get one committer per
session, so a session's events are written in arrival order and each group takes consecutive
sequence numbers in one ordered insert.
"""

from __future__ import annotations

import asyncio

from auditlog.v1 import audit_event_pb2

from . import convert, ids
from .errors import AuditLogError
from .event_types import REGISTRY
from .group_commit import GroupCommitter
from .storage import EventRepository, Outcome

SessionKey = tuple[str, str]


class EventWriter:
    """Writes events; every result comes back only after the database acknowledged it."""

    def __init__(self, repository: EventRepository, *, max_group: int, max_delay_s: float) -> None:
        self._repository = repository
        self._max_group = max_group
        self._max_delay_s = max_delay_s
        self._general: GroupCommitter[convert.Document, Outcome] = GroupCommitter(
            repository.insert_general, max_items=max_group, max_delay_s=max_delay_s
        )
        self._sessions: dict[SessionKey, GroupCommitter[convert.Document, Outcome]] = {}

    def _document(self, event: audit_event_pb2.AuditEvent) -> convert.Document:
        prepared = convert.prepare_incoming(event)
        return convert.to_document(
            prepared,
            event_id=prepared.id or ids.new_event_id(),
            receive_time=convert.now_millis(),
            content_hash=convert.fingerprint(prepared),
        )

    def _session_committer(self, key: SessionKey) -> GroupCommitter[convert.Document, Outcome]:
        committer = self._sessions.get(key)
        if committer is None:
            tenant_id, session_id = key

            async def write(docs: list[convert.Document]) -> list[Outcome | AuditLogError]:
                try:
                    return list(
                        await self._repository.insert_session_events(tenant_id, session_id, docs)
                    )
                finally:
                    self._forget_if_idle(key)

            # No linger: the previous group's insert is the natural batching window of a session.
            committer = GroupCommitter(write, max_items=self._max_group, max_delay_s=0)
            self._sessions[key] = committer
        return committer

    def _forget_if_idle(self, key: SessionKey) -> None:
        # Called from inside the committer's last write, before it clears its task: defer a tick.
        def forget() -> None:
            committer = self._sessions.get(key)
            if committer is not None and committer.idle:
                del self._sessions[key]

        asyncio.get_running_loop().call_soon(forget)

    def submit(self, event: audit_event_pb2.AuditEvent) -> asyncio.Future[Outcome]:
        """Queue one validated event; the future resolves with its Outcome."""
        doc = self._document(event)
        spec = REGISTRY.of_event(event)
        if spec is not None and spec.cobrowse:
            key = (event.tenant_id, event.cobrowse.session_id)
            return self._session_committer(key).submit_nowait(doc)
        return self._general.submit_nowait(doc)

    async def write(self, event: audit_event_pb2.AuditEvent) -> Outcome:
        return await asyncio.shield(self.submit(event))

    async def write_many(self, events: list[audit_event_pb2.AuditEvent]) -> list[Outcome]:
        futures = [self.submit(event) for event in events]
        return list(await asyncio.shield(asyncio.gather(*futures)))

    async def drain(self) -> None:
        await self._general.drain()
        for committer in list(self._sessions.values()):
            await committer.drain()
