"""Retention: a tenant's oldest events removed in ledger order, behind a signed anchor.

An application job (MongoDB's TTL indexes are outside the portable subset): for each tenant
with a retention, the prefix of its ledger whose events are older than the retention is cut.
First a signed anchor `(first kept sequence, hash before it)` is appended (the unique `_id`
decides between replicas running the job at once, and the loser adopts the winner's anchor),
then the events, id claims and placement records before it are deleted, each by `_id`, and the
blocks wholly before it with the commits, placements and outboxes they merged. Deleting is
idempotent: a job that dies half-way is finished by the next run.

A co-browsing session keeps no holes: its events are removed only from its first slot on (the
session's start marker `<T>/<S>/~start` says where it begins now), so the cut stops before an
event whose session still has an older one that is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from pymongo.errors import DuplicateKeyError, PyMongoError

from auditlog.v1 import ledger_pb2

from . import convert
from .convert import Document
from .ledger import (
    LedgerHead,
    LedgerSigner,
    LedgerStore,
    Sequencer,
    anchor_doc,
    anchor_of,
    commit_id,
    number,
    outbox_id,
    placement_id,
    retention_id,
)
from .ledger_reads import LedgerReader
from .storage import EventRepository

log = logging.getLogger(__name__)

DELETE_CONCURRENCY = 32


async def retention_seconds(store: LedgerStore, tenant_id: str, default_days: float) -> float:
    """The tenant's retention in seconds (its own, else the server's default); 0: forever."""
    doc = await store.get(retention_id(tenant_id))
    if doc is not None:
        return float(doc["seconds"])
    return default_days * 86_400


class RetentionJob:
    """Cuts every tenant's ledger prefix that is older than its retention."""

    def __init__(
        self,
        sequencer: Sequencer,
        repository: EventRepository,
        signer: LedgerSigner,
        *,
        default_days: float,
        interval_s: float,
    ) -> None:
        self._sequencer = sequencer
        self._store = sequencer.store
        self._repository = repository
        self._reader = LedgerReader(sequencer.store, repository)
        self._signer = signer
        self._default_days = default_days
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 10)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval_s)
            if self._stop.is_set():
                return
            try:
                await self.run_once()
            except PyMongoError as exc:
                log.warning("retention run failed, retrying later: %r", exc)
            except Exception:
                log.exception("retention run failed")

    async def run_once(self, now: dt.datetime | None = None) -> dict[str, int]:
        """One pass over every tenant; {tenant: events removed}."""
        removed: dict[str, int] = {}
        for tenant_id in await self._store.tenants():
            seconds = await retention_seconds(self._store, tenant_id, self._default_days)
            if seconds <= 0:
                continue
            cutoff = (now or convert.now_millis()) - dt.timedelta(seconds=seconds)
            removed[tenant_id] = await self.cut(tenant_id, cutoff, seconds)
        return removed

    async def cut(self, tenant_id: str, cutoff: dt.datetime, seconds: float) -> int:
        """Removes the tenant's events before `cutoff` (by occur time, in ledger order)."""
        head = await self._sequencer.sequence(tenant_id)
        anchor = await self._store.latest_anchor(tenant_id)
        kept_from = anchor.first_sequence if anchor is not None else 1
        new_first, previous = await self._new_start(tenant_id, head, kept_from, cutoff)
        if new_first > kept_from:
            reason = f"retention: events older than {_period(seconds)}"
            signed = self._signer.anchor(
                tenant_id, new_first, previous, convert.now_millis(), reason
            )
            anchor = await self._append_anchor(tenant_id, signed)
        if anchor is None:
            return 0
        cached = self._sequencer.heads.get(tenant_id)
        if cached is not None:
            cached.first = max(cached.first, anchor.first_sequence)
        return await self._delete_before(tenant_id, anchor.first_sequence, head)

    async def _append_anchor(
        self, tenant_id: str, signed: ledger_pb2.RetentionAnchor
    ) -> ledger_pb2.RetentionAnchor:
        """Appends the anchor, unless a racing replica appended one that cuts as far."""
        prefix = f"{tenant_id}/a/"
        while True:
            last = await self._store.last_number(prefix)
            doc = await self._store.get(f"{prefix}{number(last)}") if last else None
            if doc is not None and doc["first"] >= signed.first_sequence:
                return anchor_of(doc)  # a racing replica's cut as far already
            try:
                doc = {"_id": f"{prefix}{number(last + 1)}", **anchor_doc(signed)}
                await self._store.ledger.insert_one(doc)
                return signed
            except DuplicateKeyError:
                continue  # a racing replica appended one first: compare with it

    async def _new_start(
        self, tenant_id: str, head: LedgerHead, kept_from: int, cutoff: dt.datetime
    ) -> tuple[int, bytes]:
        """The first sequence to keep, and the hash before it."""
        cutoff_ms = convert.datetime_to_millis(cutoff)
        first, previous = kept_from, b""
        session_next: dict[str, int] = {}
        async for placed in self._reader.forward(tenant_id, kept_from, head.sequence, head):
            entry = placed.entry
            if entry["x"]["o"] >= cutoff_ms:
                break
            session = entry["x"].get("s") if entry["q"] else None
            if session is not None:
                expected = session_next.get(session)
                if expected is None:
                    expected = await self._repository.session_start(tenant_id, session)
                if entry["q"] != expected:
                    break  # an older event of this session is kept: no hole in the session
                session_next[session] = expected + 1
            first, previous = placed.sequence + 1, bytes(entry["h"])
        return first, previous

    async def _delete_before(self, tenant_id: str, first: int, head: LedgerHead) -> int:
        repository = self._repository
        removed = 0
        ids: list[str] = []
        starts: dict[str, int] = {}
        async for placed in self._reader.forward(tenant_id, 1, first - 1, head):
            entry = placed.entry
            ids.append(entry["e"])
            if entry["q"]:
                key = entry["k"]
                ids.append(key)  # the id claim
                ids.extend(f"{key}#{n}" for n in range(1, 4))  # placement records, if any
                session = entry["x"]["s"]
                starts[session] = max(starts.get(session, 0), entry["q"] + 1)
        for session, start in starts.items():
            # Before the slots go: a session's head is found from its start marker on.
            await repository.set_session_start(tenant_id, session, start)
        for start in range(0, len(ids), DELETE_CONCURRENCY):
            results = await asyncio.gather(
                *(
                    repository.events.delete_one({"_id": i})
                    for i in ids[start : start + DELETE_CONCURRENCY]
                )
            )
            removed += sum(r.deleted_count for r in results)
        # Whole blocks before the anchor, and the commits and outboxes they consumed, go too.
        b = 1
        while True:
            block = await self._store.block(tenant_id, b)
            if block is None:
                if b > head.block:
                    break
                b += 1
                continue
            if block["last"] >= first:
                break
            # The commits first: their entries hold the events' recorded forms (personal data
            # as much as the events). A job that dies between the two finds the block again and
            # its commits gone, which is what it would do next.
            await self._delete_merged(tenant_id, block)
            await self._store.ledger.delete_one({"_id": block["_id"]})
            b += 1
        return removed

    async def _delete_merged(self, tenant_id: str, block: Document) -> None:
        """The commits a block merged, their placements and their outboxes. (Blocks written
        before blocks named their commits do not say which they merged: those stay.) Commits
        are in the events collection, beside their outboxes; those written before 2026-12-04
        in the ledger collection."""
        ledger_ids, events_ids = [], []
        for part in block.get("parts", ()):
            writer, n = part["w"], part["n"]
            ledger_ids += [commit_id(tenant_id, writer, n), placement_id(tenant_id, writer, n)]
            events_ids += [commit_id(tenant_id, writer, n), outbox_id(tenant_id, writer, n)]
        await asyncio.gather(
            *(self._store.ledger.delete_one({"_id": i}) for i in ledger_ids),
            *(self._repository.events.delete_one({"_id": i}) for i in events_ids),
        )


def _period(seconds: float) -> str:
    days = seconds / 86_400
    if days >= 1 and days == int(days):
        return f"{int(days)} days"
    return f"{seconds:g} seconds"
