"""Reading a tenant's events in ledger order: walking blocks by `_id`, fetching events by `_id`.

What ListEvents (on FerretDB), ExportEvents, TailEvents and VerifyLedger read. Every read is an
`_id` lookup, which every backend serves from its index: a block gives hundreds of entries, with
the fields ListEvents filters on, and only the events that match are fetched.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from auditlog.v1 import audit_event_pb2, ledger_pb2, service_pb2

from . import convert
from .convert import Document
from .event_types import REGISTRY
from .ledger import BlockEntries, LedgerHead, LedgerStore, commit_id, entries_of, placement_id
from .storage import EventRepository

# Events fetched at once (an `_id` lookup each on FerretDB, one `$in` query on MongoDB).
FETCH_BATCH = 1000  # ids per `$in` (the most our FerretDB patch pushes down)
# Fetches under way at once: FerretDB decodes one query's documents on one goroutine, so
# several keep both cores busy (verify of 20,000 events, 7 alternating rounds: median 4,779
# events/s with one ahead, 5,212 with three). With three, a verify of 100,000 events still
# waited 1.4 s of its 6 s for a fetch to finish; with six, 0.03-0.16 s.
FETCHES_AHEAD = 6
# Blocks tails read lately, kept with their entries: a tail takes a block in batches (of up to
# 256 events), and every tail of a tenant in this process reads the same new blocks; each read
# is two lookups (the block, its commits) and a decoding of the commits' entries.
RECENT_BLOCKS = 16


@dataclass(frozen=True)
class EntryFilter:
    """An EventFilter, evaluated on the fields a ledger entry keeps."""

    types: frozenset[str] = frozenset()
    tenant_user_id: str = ""
    customer_id: str = ""
    call_id: str = ""
    session_id: str = ""
    actor: str = ""
    start_ms: int | None = None
    end_ms: int | None = None

    @classmethod
    def of(cls, filt: service_pb2.EventFilter) -> EntryFilter:
        return cls(
            types=frozenset(REGISTRY.by_event_type(t).type_string for t in filt.event_types),
            tenant_user_id=filt.tenant_user_id,
            customer_id=filt.customer_id,
            call_id=filt.call_id,
            session_id=filt.cobrowse_session_id,
            actor=convert.ACTOR_NAMES.get(filt.actor, ""),
            start_ms=(
                convert.datetime_to_millis(convert.timestamp_to_datetime(filt.start_time))
                if filt.HasField("start_time")
                else None
            ),
            end_ms=(
                convert.datetime_to_millis(convert.timestamp_to_datetime(filt.end_time))
                if filt.HasField("end_time")
                else None
            ),
        )

    @property
    def everything(self) -> bool:
        return self == EntryFilter()

    def matches(self, fields: Document) -> bool:
        if self.types and fields["t"] not in self.types:
            return False
        for wanted, key in (
            (self.tenant_user_id, "u"),
            (self.customer_id, "c"),
            (self.call_id, "l"),
            (self.session_id, "s"),
            (self.actor, "a"),
        ):
            if wanted and fields.get(key) != wanted:
                return False
        occurred = fields["o"]
        if self.start_ms is not None and occurred < self.start_ms:
            return False
        return self.end_ms is None or occurred < self.end_ms


# Not frozen, with slots: export and verify make one per event (0.5 us for a frozen one).
@dataclass(slots=True)
class Placed:
    """A ledger entry with its place."""

    sequence: int
    block: int
    index: int
    entry: Document


def ledger_entry_into(placed: Placed, out: ledger_pb2.LedgerEntry) -> None:
    """What the ledger recorded of an entry, into an empty message (in place: export and verify
    build thousands a second, and a copy of each into its response cost a third as much again)."""
    entry = placed.entry
    out.ledger_sequence = placed.sequence
    out.ledger_hash = entry["h"]
    out.event_id = entry["k"].partition("/")[2]
    out.session_sequence = entry["q"]
    out.event_digest = entry["d"]
    recorded = entry.get("r")
    if recorded:
        out.recorded_event = recorded
    digests = entry.get("f")
    if digests:
        for path, value in digests.items():
            out.field_digests[path.replace(":", ".")] = value


def stored_event_into(doc: Document, placed: Placed, out: audit_event_pb2.AuditEvent) -> None:
    """The event stored at an entry's place, with the entry's ledger fields, into an empty
    message."""
    convert.document_into(doc, out)
    out.ledger_sequence = placed.sequence
    out.ledger_hash = placed.entry["h"]


def with_ledger_fields(doc: Document, placed: Placed) -> audit_event_pb2.AuditEvent:
    event = audit_event_pb2.AuditEvent()
    stored_event_into(doc, placed, event)
    return event


def exported_event_into(
    placed: Placed, doc: Document | None, out: service_pb2.ExportedEvent
) -> None:
    """An entry with the event stored at its place, as export and verify compare them, into an
    empty message (such as one added to a response)."""
    ledger_entry_into(placed, out.entry)
    if doc is not None:
        stored_event_into(doc, placed, out.event)


def recorded_event(placed: Placed) -> audit_event_pb2.AuditEvent | None:
    """The event as the ledger recorded it, with its positions (None for entries of older
    ledgers, which recorded field digests only)."""
    recorded = placed.entry.get("r")
    if recorded is None:
        return None
    event = audit_event_pb2.AuditEvent.FromString(recorded)
    event.sequence = placed.entry["q"]
    event.ledger_sequence = placed.sequence
    event.ledger_hash = bytes(placed.entry["h"])
    return event


class LedgerReader:
    """Walks a tenant's ledger blocks and fetches the events they name."""

    def __init__(self, store: LedgerStore, repository: EventRepository) -> None:
        self.store = store
        self.repository = repository
        self._recent: collections.OrderedDict[tuple[str, int], tuple[Document, BlockEntries]] = (
            collections.OrderedDict()
        )
        # Dates as naive datetimes (UTC), not timezone-aware ones, which made PyMongo's decoding
        # of an event document three times as slow (6.8 against 2.6 ms per 1,000), nor
        # DatetimeMS, a Python class: each date an object made by Python code and tracked by
        # the collector (decoding and converting 1,000 events, the least of 30 alternations:
        # 6.7 against 5.9 ms naive). The documents fetched here only become messages
        # (convert.from_document takes any of them).
        events = repository.events
        self._bulk_events = events.with_options(
            codec_options=events.codec_options.with_options(tz_aware=False, tzinfo=None)
        )

    async def _block(
        self, tenant_id: str, b: int, recent: bool
    ) -> tuple[Document, BlockEntries] | None:
        """Block b with its entries; `recent`: from those read lately if it is one."""
        key = (tenant_id, b)
        if recent:
            known = self._recent.get(key)
            if known is not None:
                self._recent.move_to_end(key)
                return known
        block = await self.store.block(tenant_id, b)
        if block is None:
            return None
        read = block, await self.store.block_entries(block)
        if recent:
            self._recent[key] = read
            if len(self._recent) > RECENT_BLOCKS:
                self._recent.popitem(last=False)
        return read

    async def forward(
        self, tenant_id: str, first: int, last: int, head: LedgerHead, *, recent: bool = False
    ) -> AsyncIterator[Placed]:
        """Entries with first <= sequence <= last, in ledger order. `recent` (tails): blocks
        read lately are taken as read (a block never changes once written), not read again."""
        if head.block == 0 or first > last:
            return
        b = await self.store.block_of(tenant_id, max(first, 1), head)
        while b <= head.block:
            read = await self._block(tenant_id, b, recent)
            if read is not None:
                block, entries = read
                start = max(first - block["first"], 0)
                end = min(last - block["first"] + 1, len(entries))
                # Decoded whole when the walk takes it whole (export, verify, tails).
                taken = entries.whole() if start == 0 and end == len(entries) else None
                for index in range(start, end):
                    entry = taken[index] if taken is not None else entries[index]
                    if entry is not None:  # None: its commit is gone (verify names the hole)
                        yield Placed(block["first"] + index, b, index, entry)
                if end < len(entries):
                    return
            b += 1

    async def backward(
        self, tenant_id: str, block: int, index: int | None
    ) -> AsyncIterator[Placed]:
        """Entries from (block, index) down to the ledger's start, newest first."""
        b = block
        while b >= 1:
            doc = await self.store.block(tenant_id, b)
            if doc is None:
                return  # removed by retention: nothing older is kept
            entries = await self.store.block_entries(doc)  # a page often needs the last few
            start = len(entries) - 1 if index is None else min(index, len(entries) - 1)
            for i in range(start, -1, -1):
                entry = entries[i]
                if entry is not None:
                    yield Placed(doc["first"] + i, b, i, entry)
            b, index = b - 1, None

    async def fetch(
        self, placed: Iterable[Placed], *, as_stored: bool = False
    ) -> list[tuple[Placed, Document | None]]:
        """The stored event of each entry (None when it is no longer stored), in order.

        `as_stored` yields whatever is stored at an entry's place even when it is another event
        (export and verify, where the verifier names the swap); otherwise such a slot is None.
        """
        items = list(placed)
        # One `$in` per 1,000 entries: an index search on MongoDB, and on the dev database too
        # (our FerretDB patch pushes it down; one find_one per event was 6x slower there).
        ids = [p.entry["e"] for p in items]
        by_id: dict[str, Document] = {}
        for start in range(0, len(ids), FETCH_BATCH):
            cursor = self._bulk_events.find({"_id": {"$in": ids[start : start + FETCH_BATCH]}})
            async for doc in cursor:
                by_id[doc["_id"]] = doc
        found = [by_id.get(p.entry["e"]) for p in items]
        if as_stored:
            return list(zip(items, found, strict=True))
        return [
            (p, doc if doc is not None and doc.get("key") == p.entry["k"] else None)
            for p, doc in zip(items, found, strict=True)
        ]

    async def fetched(
        self, placed: AsyncIterator[Placed], *, as_stored: bool = False
    ) -> AsyncIterator[list[tuple[Placed, Document | None]]]:
        """The entries with their stored events, FETCH_BATCH at a time, the next batches'
        reads under way while the caller works on (or waits to send) this one: the database,
        not this process, bounds export and verify."""
        batch: list[Placed] = []
        ahead: collections.deque[asyncio.Task[list[tuple[Placed, Document | None]]]] = (
            collections.deque()
        )
        try:
            async for item in placed:
                batch.append(item)
                if len(batch) >= FETCH_BATCH:
                    ahead.append(asyncio.create_task(self.fetch(batch, as_stored=as_stored)))
                    batch = []
                    if len(ahead) > FETCHES_AHEAD:
                        yield await ahead.popleft()
            while ahead:
                yield await ahead.popleft()
            if batch:
                yield await self.fetch(batch, as_stored=as_stored)
        finally:
            for task in ahead:
                task.cancel()
            for task in ahead:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def events(
        self, placed: list[Placed]
    ) -> list[tuple[Placed, audit_event_pb2.AuditEvent | None]]:
        """Each entry's event as the ledger recorded it, without reading the events; entries of
        older ledgers (no recorded form) are fetched. None: no longer stored."""
        listed = [(p, recorded_event(p)) for p in placed]
        missing = [p for p, event in listed if event is None]
        if not missing:
            return listed
        stored = {p.sequence: doc for p, doc in await self.fetch(missing)}
        events: list[tuple[Placed, audit_event_pb2.AuditEvent | None]] = []
        for p, event in listed:
            doc = stored.get(p.sequence) if event is None else None
            events.append((p, with_ledger_fields(doc, p) if doc is not None else event))
        return events

    async def ledger_fields(self, doc: Document) -> tuple[int, bytes]:
        """An event's ledger sequence and hash, from the commit of its group (0 and b"" until it
        is sequenced)."""
        box = doc.get("ob")
        if not box:
            return 0, b""
        tenant_id, _, writer, n = box.split("/")
        commit, placement = await asyncio.gather(
            self.store.get_commit(commit_id(tenant_id, writer, int(n))),
            self.store.get(placement_id(tenant_id, writer, int(n))),
        )
        if commit is None or placement is None:
            return 0, b""
        for index, entry in enumerate(entries_of(commit)):
            if entry["k"] == doc["key"]:
                hashes = bytes(placement["h"])
                return placement["first"] + index, hashes[32 * index : 32 * index + 32]
        return 0, b""
