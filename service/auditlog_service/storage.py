"""EventRepository: the events in MongoDB, over PyMongo's asyncio API, within the portable subset.

One collection, `events`, holds two kinds of documents:
- an event (see convert.py): a general event at `_id` "<tenant>/<id>"; a co-browsing event at its
  session slot "<tenant>/<session>/<zero-padded sequence>";
- an id claim of a co-browsing event: `_id` "<tenant>/<id>", pointing at its slot.
So "<tenant>/<id>" is taken exactly once per tenant, whatever the kind: that `_id` makes ids
unique, makes GetEvent and duplicate detection `_id` point lookups (the only lookups FerretDB
serves without a scan), and a co-browsing event's claim and slot go in the same ordered insert as
everything else of its group: one database round trip (one transaction on FerretDB) per group.
Claims carry no tenant_id, so no query of ListEvents ever matches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress, count, repeat
from operator import attrgetter, is_
from typing import Any, get_args

import bson
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from pymongo.write_concern import WriteConcern

from auditlog.ledger import recorded_form

from . import _native, convert
from .convert import Document
from .errors import (
    AuditLogError,
    DatabaseTimeout,
    DatabaseUnavailable,
    IdConflict,
    SequenceContention,
)
from .ledger import (
    Commit,
    LedgerStore,
    commit_entry,
    commit_id,
    entries_of,
    group_entries,
    outbox_doc,
    outbox_id,
    outbox_number,
)

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# FerretDB v1 keeps ordered-insert semantics only within a chunk of this many documents.
FERRETDB_ORDERED_CHUNK = 100
# What the dev database's build (tools/install-ferretdb) adds to its version: it stops an ordered
# insert at the first failure (tools/patches/ferretdb-ordered-insert-stops.patch), so ordered
# inserts go whole, as on MongoDB, instead of in chunks of FERRETDB_ORDERED_CHUNK.
ORDERED_STOP_MARK = "+ordered-stop"
FERRETDB_RACING_CHUNK = 16
# From this many general events in a group on, they are written in one unordered insert (a
# group smaller than an ordered chunk is written in one round trip anyway), except in a group's
# first round where ordered inserts go whole (see _GroupWrite._round).
UNORDERED_MIN_EVENTS = FERRETDB_ORDERED_CHUNK
# MongoDB's limits on one message and on the documents of one insert command, until the server
# says its own; an insert command's own fields and the message's framing stay under the margin.
MAX_MESSAGE_BYTES = 48_000_000
MAX_WRITE_BATCH = 100_000
INSERT_MARGIN_BYTES = 16 * 1024
# A session's events of one group give up after this many lost races (then ABORTED: retry);
# with each race aiming past the winner's run, reaching it takes a writer that is never first.
MAX_SLOT_RACES = 32
# Heads remembered per process; an evicted session is re-probed (O(log n) lookups) when it returns.
HEAD_CACHE_SIZE = 100_000
# How long a session counts as written by other processes after the last sign of it.
CONTENDED_FOR_S = 2.0

# The filters of ListEvents; each has an index that starts with tenant_id and ends with the sort.
FILTER_FIELDS = ("type", "tenant_user_id", "customer_id", "call_id", "session_id", "cobrowse.actor")


# One event to store: its document, what tells a retry of it from an id clash, its recorded
# form and where a session sequence goes in it (the native preparer makes them, one an event).
EventWrite = _native.EventWrite


def is_retry_of(write: EventWrite, existing: Document) -> bool:
    """Whether `existing`, stored under the event's id, is this very event."""
    if existing.get("fingerprint") != write.doc["fingerprint"]:
        return False
    if not write.occur_time_given:
        return True
    # A datetime as read, against the time being stored (convert.StoredTime).
    return convert.datetime_to_millis(existing["occur_time"]) == convert.datetime_to_millis(
        write.doc["occur_time"]
    )


@dataclass(slots=True)
class Located:
    """What is stored under a tenant-scoped id: the claim or general event, and the event."""

    claim: Document | None
    event: Document | None = None
    generation: int = 0  # of the id's latest placement record
    slot: int = 0  # the sequence that record names, when the event is not there
    slot_free: bool = False  # whether that slot is empty (else another event holds it)


# An event that is in the database (now, or already before: an idempotent retry): its `doc`
# and `already_stored`. Native (one is made for each event written).
Stored = _native.Stored


Outcome = Stored | AuditLogError


@dataclass
class ListQuery:
    tenant_id: str
    newest_first: bool = True
    limit: int = 50
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    equals: dict[str, Any] = field(default_factory=dict)  # field -> value, or {"$in": [...]}
    after: tuple[dt.datetime, str] | None = None  # keyset position: (occur_time, _id) of the last


def database_errors(exc: PyMongoError) -> AuditLogError | None:
    """The service error for a database failure a client can retry, or None for other failures."""
    if isinstance(exc, ServerSelectionTimeoutError):
        return DatabaseUnavailable(type(exc).__name__)  # no server answered at all
    if isinstance(exc, NetworkTimeout | ExecutionTimeout) or getattr(exc, "timeout", False):
        return DatabaseTimeout(type(exc).__name__)  # a server took too long to answer
    if isinstance(exc, ConnectionFailure | WriteConcernError):
        return DatabaseUnavailable(type(exc).__name__)
    if isinstance(exc, OperationFailure) and exc.code in (91, 189, 10107, 11600, 11602, 13435):
        # ShutdownInProgress, PrimarySteppedDown, NotWritablePrimary, Interrupted..., NotPrimary...
        return DatabaseUnavailable(f"code {exc.code}")
    return None


_RAW = attrgetter("raw")
# What an insert sends as it is: the events and claims the preparer made (convert.SentDocument),
# and raw documents a caller may pass.
Sent = convert.SentDocument | RawBSONDocument
_SENT_TYPES = frozenset(get_args(Sent))


def insert_spans(sizes: list[int], max_bytes: int, max_count: int) -> list[tuple[int, int]]:
    """Splits documents of these sizes into runs (start, end) that each fit one insert command:
    at most max_count documents and max_bytes less the margin (a larger document goes alone,
    for the server to refuse)."""
    budget = max_bytes - INSERT_MARGIN_BYTES
    if len(sizes) <= max_count and sum(sizes) <= budget:  # the rule: one command for all
        return [(0, len(sizes))] if sizes else []
    spans: list[tuple[int, int]] = []
    start, used = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (used + size > budget or index - start >= max_count):
            spans.append((start, index))
            start, used = index, 0
        used += size
    if start < len(sizes):
        spans.append((start, len(sizes)))
    return spans


class EventRepository:
    """Reads and writes events; every database failure a client can retry is DatabaseUnavailable."""

    def __init__(
        self, client: AsyncMongoClient[Document], database: str, write_concern: int | str
    ) -> None:
        db = client.get_database(database)
        concern = WriteConcern(w=write_concern)
        self._client = client
        self.events: AsyncCollection[Document] = db.get_collection("events", write_concern=concern)
        self._heads: OrderedDict[str, int] = OrderedDict()
        self._contended: dict[str, float] = {}
        # Oldest first: an OrderedDict drops its oldest in constant time.
        self._shared: OrderedDict[str, float] = OrderedDict()
        self.range_reads = False  # set by detect_backend()
        # A FerretDB that stops an ordered insert at its first failure (our build of it).
        self.ordered_inserts_stop = False  # set by detect_backend()
        # Whether PyMongo retries inserts (a replica set or sharded cluster with retryWrites),
        # and the server's limits on one insert command (MongoDB's defaults until detected).
        self.retryable_inserts = False  # set by detect_backend()
        self.max_message_bytes = MAX_MESSAGE_BYTES
        self.max_write_batch = MAX_WRITE_BATCH
        self._write_concern = (
            {} if concern.is_server_default else {"writeConcern": concern.document}
        )
        # Counts of write-path work, for metrics and benchmarks.
        self.stats: dict[str, int] = {"groups": 0, "rounds": 0, "races": 0, "events": 0}
        # Called with (tenant_id, session_id, head) after events were added to a session.
        self.on_session_advanced: Callable[[str, str, int], None] | None = None
        # The ledger's outboxes and commits (see ledger.py), once attach_ledger() was called.
        self.ledger: LedgerStore | None = None
        self.writer_id = ""
        self._outbox_next: dict[str, int] = {}
        # Per tenant, outboxes (with their event keys) whose group failed before its commit.
        self._unsettled: dict[str, list[tuple[str, list[str]]]] = {}
        # Tenants this process wrote, and when: its sequencer looks at these first.
        self.written: dict[str, float] = {}
        self.on_committed: Callable[[str], None] | None = None
        # Awaited before each commit insert: the process's heartbeat, made fresh if it is not
        # (see changefeed.FRESH_BEAT_S: why sequencers elsewhere rely on it).
        self.before_commit: Callable[[], Awaitable[None]] | None = None

    def attach_ledger(self, ledger: LedgerStore, writer_id: str) -> None:
        self.ledger = ledger
        self.writer_id = writer_id

    async def _before_commit(self) -> None:
        if self.before_commit is not None:
            await self.before_commit()

    def next_outbox(self, tenant_id: str) -> str:
        n = self._outbox_next.get(tenant_id, 0) + 1
        self._outbox_next[tenant_id] = n
        if self.ledger is not None:
            self.ledger.numbered(tenant_id, self.writer_id, n)
        return outbox_id(tenant_id, self.writer_id, n)

    def _unsettle(self, group: _GroupWrite) -> None:
        """A group that failed before its commits were written: its outbox numbers are settled
        later (settle), as the sequencer takes each writer's outboxes in order, without holes."""
        keys = group.keys()
        for tenant_id, box in group.outboxes.items():
            self._unsettled.setdefault(tenant_id, []).append((box, keys.get(tenant_id, [])))

    async def settle(self, tenant_id: str) -> None:
        """Writes the commit of each earlier outbox of this tenant whose group failed: what the
        events naming it say was stored (nothing, when the outbox itself was never written).
        The first commit of an `_id` wins (the sequencer may have resolved it meanwhile)."""
        pending = self._unsettled.get(tenant_id)
        ledger = self.ledger
        while pending and ledger is not None:
            box, keys = pending[0]
            entries = await self.resolve_outbox(tenant_id, box, keys)
            await self._before_commit()
            with contextlib.suppress(DuplicateKeyError):
                n, at = outbox_number(box), convert.now_millis()
                await ledger.insert_commit(
                    Commit.of_entries(tenant_id, self.writer_id, n, entries, at, repaired=True)
                )
            pending.pop(0)

    async def commit_group(
        self,
        outboxes: dict[str, str],
        stored: dict[str, list[Document]],
        keys: dict[str, list[str]] | None = None,
        done: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """Files what a group stored under each tenant's outbox, before its callers hear back.

        The first insert of a commit's `_id` wins. If a sequencer resolved this outbox first
        (it waited COMMIT_WAIT_S for this commit: the database was away), whatever it did not
        see is filed again under the next outbox, so that every stored event is in exactly one
        commit. A commit that cannot be written is resolved by the sequencer from the events.
        `done`: the tenants whose commit the group's insert wrote already.
        """
        ledger = self.ledger
        if ledger is None:
            return
        for tenant_id, box in outboxes.items():
            entries = stored.get(tenant_id, [])
            n = outbox_number(box)
            try:
                await self.settle(tenant_id)
            except PyMongoError as exc:
                log.warning("earlier outboxes of %s not settled yet (%r)", tenant_id, exc)
            # A tenant whose commit went in the group's insert has nothing to write here.
            while tenant_id not in done:
                try:
                    await self._before_commit()
                    at = convert.now_millis()
                    commit = Commit.of_entries(tenant_id, self.writer_id, n, entries, at)
                    await ledger.insert_commit(commit)
                    break
                except DuplicateKeyError:
                    taken = await ledger.get_commit(commit_id(tenant_id, self.writer_id, n))
                    seen = {e["k"] for e in entries_of(taken)} if taken else set()
                    entries = [e for e in entries if e["k"] not in seen]
                    if not entries:
                        break
                    # Re-filed under a new outbox of this writer: its events keep naming the old
                    # one, but a commit is what the sequencer reads first.
                    box = self.next_outbox(tenant_id)
                    n = outbox_number(box)
                    await self._guard(
                        self.events.insert_one(
                            outbox_doc(box, [e["k"] for e in entries], convert.now_millis())
                        )
                    )
                except PyMongoError as exc:
                    log.warning("commit of %s not written (%r); settled later", box, exc)
                    self._unsettled.setdefault(tenant_id, []).append(
                        (box, (keys or {}).get(tenant_id, []))
                    )
                    break
            self.written[tenant_id] = time.monotonic()
            if self.on_committed is not None:
                self.on_committed(tenant_id)

    def recently_written(self, within_s: float = 60.0) -> list[str]:
        """Tenants this process wrote in the last `within_s`."""
        now = time.monotonic()
        return [t for t, at in self.written.items() if now - at < within_s]

    async def resolve_outbox(self, tenant_id: str, box: str, keys: list[str]) -> list[Document]:
        """The commit entries of an outbox whose writer never committed it: the events that
        name it (`ob`), read by `_id` (each event is stored under one outbox only)."""
        entries: list[Document] = []
        located = await asyncio.gather(*(self.locate(key) for key in keys))
        for found in located:
            doc = found.event
            if doc is None or doc.get("ob") != box:
                continue  # not stored, or stored by another attempt (with its own outbox)
            entries.append(commit_entry(doc, recorded_form(convert.from_document(doc))))
        return entries

    async def _guard(self, operation: Awaitable[Any]) -> Any:
        try:
            # Shielded: when an RPC is cancelled mid-query, PyMongo drops the connection without
            # closing its socket; letting the (short) operation finish keeps the pool intact.
            return await asyncio.shield(operation)
        except PyMongoError as exc:
            mapped = database_errors(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def ping(self) -> None:
        await self._guard(self._client.admin.command("ping"))

    async def ensure_indexes(self) -> None:
        """The indexes of every ListEvents query, where the server can use them.

        FerretDB v1 uses no secondary index for any query (it scans), yet maintains each on every
        write: with these eight, inserting 10,000 events took 2.4 s instead of 0.8 s. So on
        FerretDB only the automatic `_id` index exists; call detect_backend() first.
        """
        if not self.range_reads:
            return
        # Not unique: `_id` "<tenant>/<id>" makes ids unique; this serves the rare fallback lookup
        # of a co-browsing event whose id claim is stale.
        await self._guard(self.events.create_index("key", name="key"))
        base = [("occur_time", DESCENDING), ("_id", DESCENDING)]
        await self._guard(self.events.create_index([("tenant_id", ASCENDING), *base]))
        for name in FILTER_FIELDS:
            await self._guard(
                self.events.create_index([("tenant_id", ASCENDING), (name, ASCENDING), *base])
            )

    # ---- reads -------------------------------------------------------------------------------

    async def locate(self, key: str) -> Located:
        """Where the event of a tenant-scoped id is, through `_id` lookups only.

        A general event is its own `_id`. A co-browsing event is at the slot of its id's latest
        placement record (the claim, or `<key>#n`, see _GroupWrite); the claim's slot is a hint
        that a later record may have overtaken, and a hint found behind is repaired.
        """
        claim = await self._read(key)
        if claim is None or "slot" not in claim:
            return Located(claim=claim, event=claim)
        generation, slot_key = claim.get("gen", 0), claim["slot"]
        while True:
            event = await self._read(slot_key)
            if event is not None and event.get("key") == key:
                if generation != claim.get("gen", 0) or slot_key != claim["slot"]:
                    await self._guard(
                        self.events.update_one(
                            {"_id": key}, {"$set": {"slot": slot_key, "gen": generation}}
                        )
                    )
                return Located(claim=claim, event=event, generation=generation)
            record = await self._read(convert.placement_record_id(key, generation + 1))
            if record is None:
                break
            generation, slot_key = generation + 1, record["slot"]
        if "gen" not in claim and self.range_reads:
            # A claim of the earlier layout, which moved claims in place and could leave one
            # behind: the key index finds its event (MongoDB only; FerretDB would scan).
            event = await self._guard(self.events.find_one({"key": key, "type": {"$exists": 1}}))
            if event is not None:
                return Located(claim=claim, event=event, generation=generation)
        return Located(
            claim=claim,
            generation=generation,
            slot=int(slot_key.rsplit("/", 1)[1]),
            slot_free=event is None,
        )

    async def find_by_key(self, key: str) -> Document | None:
        """The event stored under a tenant-scoped id, or None."""
        return (await self.locate(key)).event

    @staticmethod
    def find_spec(query: ListQuery) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        """The filter and sort of a ListEvents query (public so tests can explain() it)."""
        filt: dict[str, Any] = {"tenant_id": query.tenant_id, **query.equals}
        time_range: dict[str, Any] = {}
        if query.start_time is not None:
            time_range["$gte"] = query.start_time
        if query.end_time is not None:
            time_range["$lt"] = query.end_time
        if time_range:
            filt["occur_time"] = time_range
        if query.after is not None:
            op = "$lt" if query.newest_first else "$gt"
            last_time, last_id = query.after
            filt["$or"] = [
                {"occur_time": {op: last_time}},
                {"occur_time": last_time, "_id": {op: last_id}},
            ]
        direction = DESCENDING if query.newest_first else ASCENDING
        return filt, [("occur_time", direction), ("_id", direction)]

    async def list_events(self, query: ListQuery) -> list[Document]:
        filt, sort = self.find_spec(query)
        cursor = self.events.find(filt).sort(sort).limit(query.limit)
        docs: list[Document] = await self._guard(cursor.to_list())
        return docs

    async def detect_backend(self) -> None:
        """Whether the server runs range queries from an index (MongoDB) or scans (FerretDB),
        whether PyMongo retries inserts to it, and its limits on one insert command."""
        info = await self._guard(self._client.admin.command("buildInfo"))
        self.range_reads = "ferretdbVersion" not in info
        self.ordered_inserts_stop = ORDERED_STOP_MARK in str(info.get("ferretdbVersion", ""))
        hello = await self._guard(self._client.admin.command("hello"))
        self.max_message_bytes = int(hello.get("maxMessageSizeBytes", MAX_MESSAGE_BYTES))
        self.max_write_batch = int(hello.get("maxWriteBatchSize", MAX_WRITE_BATCH))
        clustered = "setName" in hello or hello.get("msg") == "isdbgrid"
        self.retryable_inserts = clustered and bool(self._client.options.retry_writes)

    @property
    def whole_ordered_inserts(self) -> bool:
        """Whether the database stops an ordered insert at its first failure (MongoDB, our
        FerretDB build), so that one can go whole."""
        return self.range_reads or self.ordered_inserts_stop

    async def read_session_range(
        self, tenant_id: str, session_id: str, first: int, last: int
    ) -> list[Document]:
        """The events first..last of a session, which the caller knows exist, in order.

        MongoDB serves this as one `_id` index range; FerretDB would scan the collection for a
        range, so there it is concurrent `_id` point lookups.
        """
        if self.range_reads:
            cursor = self.events.find(
                {
                    "_id": {
                        "$gte": convert.slot_id(tenant_id, session_id, first),
                        "$lte": convert.slot_id(tenant_id, session_id, last),
                    }
                }
            ).sort("_id", ASCENDING)
            docs: list[Document] = await self._guard(cursor.to_list())
        else:
            found = await asyncio.gather(
                *(self.read_slot(tenant_id, session_id, n) for n in range(first, last + 1))
            )
            docs = [doc for doc in found if doc is not None]
        if len(docs) != last - first + 1:
            raise DatabaseUnavailable(
                f"session {session_id}: slots {first}..{last} incomplete ({len(docs)} read)"
            )
        return docs

    async def slot_exists(self, tenant_id: str, session_id: str, sequence: int) -> bool:
        doc = await self._guard(
            self.events.find_one(
                {"_id": convert.slot_id(tenant_id, session_id, sequence)}, {"_id": 1}
            )
        )
        return doc is not None

    async def _run_end(self, tenant_id: str, session_id: str, sequence: int) -> int | None:
        """None when the slot is empty, else where its writer's run was planned to end."""
        doc = await self._guard(
            self.events.find_one(
                {"_id": convert.slot_id(tenant_id, session_id, sequence)}, {"run_end": 1}
            )
        )
        return None if doc is None else int(doc.get("run_end", sequence))

    async def read_slot(self, tenant_id: str, session_id: str, sequence: int) -> Document | None:
        doc: Document | None = await self._guard(
            self.events.find_one({"_id": convert.slot_id(tenant_id, session_id, sequence)})
        )
        return doc

    async def session_head(
        self, tenant_id: str, session_id: str, known: int = 0, guess: int = 0
    ) -> int:
        """The highest sequence of a session, found by probing slots from a known-present one.

        Forward along the writers' runs, then binary search within a run cut short: a few `_id`
        lookups, never max(). Slots are filled without holes, so "slot n exists" is true exactly
        for n <= head; from 0 on a long session, its first writer's runs are walked one by one.
        `known` must be a slot that exists (or 0); `guess` is only a hint where the head may be
        (say, where another writer's run was planned to end, which it may not have reached).
        """
        if known == 0:
            # Retention may have removed the session's first slots: start where it begins.
            known = await self.session_start(tenant_id, session_id) - 1
        low = known
        high = 0  # the lowest slot known to be missing, once there is one
        if guess > known:
            if await self.slot_exists(tenant_id, session_id, guess):
                low = guess
            else:
                high = guess
        step = 1
        while not high:
            # Exponential probing, O(log n) lookups even from 0 on a long session; each event
            # also records where its writer's run was to end, so a run of another writer is
            # skipped in one jump instead of being probed slot by slot.
            run_end = await self._run_end(tenant_id, session_id, low + step)
            if run_end is None:
                high = low + step
                break
            low += step
            step *= 2
            if run_end > low:
                if await self.slot_exists(tenant_id, session_id, run_end):
                    low = run_end
                else:
                    high = run_end  # that run was cut short: the head is below its end
        while high - low > 1:
            mid = (low + high) // 2
            if await self.slot_exists(tenant_id, session_id, mid):
                low = mid
            else:
                high = mid
        return low

    async def session_start(self, tenant_id: str, session_id: str) -> int:
        """The session's first kept slot: 1, or where retention left it (its start marker)."""
        marker = await self._read(f"{convert.session_prefix(tenant_id, session_id)}~start")
        return 1 if marker is None else int(marker["first"])

    async def set_session_start(self, tenant_id: str, session_id: str, first: int) -> None:
        marker_id = f"{convert.session_prefix(tenant_id, session_id)}~start"
        await self._guard(
            self.events.replace_one(
                {"_id": marker_id}, {"_id": marker_id, "first": first}, upsert=True
            )
        )

    async def cached_head(self, tenant_id: str, session_id: str) -> int:
        name = convert.session_prefix(tenant_id, session_id)
        if name in self._heads:
            self._heads.move_to_end(name)
            return self._heads[name]
        head = await self.session_head(tenant_id, session_id)
        self._remember_head(name, head)
        return head

    async def fresh_head(self, tenant_id: str, session_id: str) -> int:
        """The head as the database has it now, probed from the cached one (one lookup when
        the cache is right)."""
        name = convert.session_prefix(tenant_id, session_id)
        head = await self.session_head(tenant_id, session_id, known=self._heads.get(name, 0))
        self._remember_head(name, head)
        return head

    def remember_head(self, tenant_id: str, session_id: str, head: int) -> None:
        """A head learnt elsewhere (another process's tick): later writes aim past it, and for
        a while the session counts as written by others too (see recently_shared())."""
        name = convert.session_prefix(tenant_id, session_id)
        if self._heads.get(name, -1) < head:
            self._shared[name] = time.monotonic()
            while len(self._shared) > HEAD_CACHE_SIZE:
                self._shared.popitem(last=False)
        self._remember_head(name, head)

    def recently_shared(self, tenant_id: str, session_id: str) -> bool:
        """Whether another process wrote the session lately: a write of this one may then lose
        a race for its next slot."""
        seen = self._shared.get(convert.session_prefix(tenant_id, session_id))
        return seen is not None and time.monotonic() - seen < CONTENDED_FOR_S

    def mark_contended(self, tenant_id: str, session_id: str) -> None:
        self._contended[convert.session_prefix(tenant_id, session_id)] = time.monotonic()

    def contended(self, tenant_id: str, session_id: str) -> bool:
        """Whether this process lost a race for the session's slots lately: then it writes the
        session's events in an insert of their own (see _GroupWrite._round)."""
        name = convert.session_prefix(tenant_id, session_id)
        seen = self._contended.get(name)
        if seen is None:
            return False
        if time.monotonic() - seen > CONTENDED_FOR_S:
            del self._contended[name]
            return False
        return True

    def _remember_head(self, name: str, head: int) -> None:
        if self._heads.get(name, -1) < head:
            self._heads[name] = head
        self._heads.move_to_end(name)
        while len(self._heads) > HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)

    # ---- writes ------------------------------------------------------------------------------

    async def _resolve_duplicate(self, write: EventWrite, existing: Document | None) -> Outcome:
        doc = write.doc
        if existing is None:
            existing = await self.find_by_key(doc["key"])
        if existing is None:
            # The clash vanished (cannot happen unless events are deleted concurrently).
            return DatabaseUnavailable("duplicate key without a stored event; retry")
        if is_retry_of(write, existing):
            return Stored(existing, already_stored=True)
        return IdConflict(doc["tenant_id"], doc["id"])

    async def insert_events(self, writes: list[EventWrite]) -> list[Outcome]:
        """Store a group of events of any kinds, tenants and sessions; one outcome per event.

        Co-browsing events take the slots after their session's head, in group order, without
        holes: the group is one ordered insert, so nothing after a failed document is written.
        The failed document is then examined (see _GroupWrite), and the rest written again.
        Every outcome comes after the database acknowledged the write.
        """
        self.stats["groups"] += 1
        self.stats["events"] += len(writes)
        group = _GroupWrite(self, writes)
        try:
            if self.ledger is not None:
                for tenant_id in group.outboxes:
                    await self.ledger.register_writer(tenant_id, self.writer_id)
            outcomes = await group.run()
        except PyMongoError as exc:
            mapped = database_errors(exc)
            if mapped is None:
                raise
            self._unsettle(group)
            return [mapped] * len(writes)
        if self.ledger is not None:  # the ledger's records of the group: only for the ledger
            await self.commit_group(
                group.outboxes, group.committed(), group.keys(), done=group.committed_inline
            )
        if self.on_session_advanced is not None:
            for (tenant_id, session_id), head in group.advanced.items():
                self.on_session_advanced(tenant_id, session_id, head)
        return outcomes

    async def _insert_ordered(
        self, items: Sequence[Document | Sent], chunk: int = FERRETDB_ORDERED_CHUNK
    ) -> tuple[int, dict[str, Any] | None]:
        """Inserts in order, stopping at the first failure: (how many were inserted, the error).

        FerretDB v1 runs an ordered insert in chunks of 100 documents and, after a failure in
        one chunk, still inserts the later chunks, which would leave holes in a session. So on
        a FerretDB without our patch we send chunks of at most 100 (or `chunk`) ourselves and
        stop at the first failure. Our build stops there itself, as MongoDB does: the insert
        goes whole (1 round trip for a group of 1,000 co-browsing events instead of 20) unless
        the caller asks for smaller chunks (after a lost race, see _GroupWrite._round).
        """
        # MongoDB ignores a smaller `chunk`; our FerretDB build honours it.
        if self.range_reads or (self.ordered_inserts_stop and chunk >= FERRETDB_ORDERED_CHUNK):
            chunk = len(items)
        else:
            chunk = min(chunk, FERRETDB_ORDERED_CHUNK)
        for start in range(0, len(items), max(chunk, 1)):
            errors = await self._insert(items[start : start + chunk], ordered=True)
            if errors:
                # The failed document's index, not nInserted: everything before it is written.
                return start + errors[0]["index"], errors[0]
        return len(items), None

    async def _insert_unordered(
        self, items: Sequence[Document | Sent]
    ) -> dict[int, dict[str, Any]]:
        """Inserts in one unordered insert (every document is tried); the failures by index."""
        return {error["index"]: error for error in await self._insert(items, ordered=False)}

    async def _insert(
        self, items: Sequence[Document | Sent], *, ordered: bool
    ) -> list[dict[str, Any]]:
        """Inserts `items` (an ordered insert stops at its first failure); its write errors,
        each with the index of its document in `items` and the server's code.

        Where PyMongo does not retry writes (a standalone server, FerretDB), this sends the
        `insert` commands insert_many would send, split by the server's size limits, without
        its work per document (a type check, a generator step and a bulk operation record
        each: 0.9 us a document of client CPU in process, 3.0 against 2.1). Where it retries
        them (a replica set or a sharded cluster, retryWrites on), insert_many keeps that.
        """
        if self.retryable_inserts:
            # insert_many looks into every document that is not a RawBSONDocument.
            given = [
                RawBSONDocument(item.raw) if isinstance(item, convert.SentDocument) else item
                for item in items
            ]
            try:
                await self.events.insert_many(given, ordered=ordered)
            except BulkWriteError as exc:
                if exc.details.get("writeConcernErrors"):
                    raise WriteConcernError("write concern not satisfied") from exc
                errors: list[dict[str, Any]] = exc.details["writeErrors"]
                return errors
            return []
        # Most items are raw already (the events and claims the preparer made): checked and
        # measured by C-level iterators, not a comprehension.
        if set(map(type, items)) - _SENT_TYPES:
            items = [item if isinstance(item, Sent) else self.encode(item) for item in items]
        documents: list[Sent] = list(items)  # type: ignore[arg-type]
        sizes = list(map(len, map(_RAW, documents)))
        errors = []
        for start, end in insert_spans(sizes, self.max_message_bytes, self.max_write_batch):
            command = {"insert": self.events.name, "ordered": ordered, **self._write_concern}
            command["documents"] = documents[start:end]  # sent as a document sequence
            reply = await self.events.database.command(command)
            if reply.get("writeConcernError"):
                raise WriteConcernError("write concern not satisfied")
            errors.extend({**e, "index": start + e["index"]} for e in reply.get("writeErrors", ()))
            if ordered and errors:
                break
        return errors

    def encode(self, doc: Document) -> convert.SentDocument:
        """A document as its insert sends it."""
        return convert.SentDocument(bson.encode(doc, codec_options=self.events.codec_options))

    async def _read(self, _id: str) -> Document | None:
        doc: Document | None = await self._guard(self.events.find_one({"_id": _id}))
        return doc


@dataclass(slots=True)
class _Placement:
    """Where a co-browsing event of a group stands on its way to a slot.

    `generation` is the last placement record of its id that is known to be written: -1 none,
    0 the id claim, n >= 1 the record `<key>#n`. `adopted` is a slot an earlier attempt's record
    names and that was seen empty: the event must go exactly there (see _GroupWrite).
    """

    generation: int = -1
    adopted: int = 0


class _GroupWrite:
    """One group's ordered insert, repeated for what is left after each failure.

    A co-browsing event's id is taken by its id claim (`<key>`, generation 0, naming the slot
    its writer aims at), written just before the event in the same ordered insert. A writer that
    loses its slot to another writer writes the next placement record `<key>#1`, `#2`, ...
    (again just before the event, naming the new slot) instead of changing the claim. Records are
    only ever inserted, so the unique `_id` decides every race, and a new record is written only
    after its predecessor's slot was seen taken by another event. Hence an event is at the slot
    of its id's latest record, or nowhere; a retry of an event whose writer died finds that slot
    by `_id` lookups and, when it is empty, writes the event exactly there, where a writer still
    in flight would write it too: the unique slot `_id` keeps it once.
    """

    def __init__(self, repository: EventRepository, writes: list[EventWrite]) -> None:
        self.repository = repository
        self.writes = writes
        self.outcomes: list[Outcome | None] = [None] * len(writes)
        # The co-browsing events' placements, made when first changed (_placement): an event
        # without one has none yet (_NEW).
        self.placements: dict[int, _Placement] = {}
        # No event of the group still to be stored has a placement record written yet (see
        # _place; the claims of events stored with them are not noted).
        self.unplaced = True
        self.advanced: dict[tuple[str, str], int] = {}
        self.moved: list[int] = []  # events stored at a generation >= 1: their claim's hint
        self.races = 0
        self.session_races: dict[tuple[str, str], int] = {}
        # One outbox per tenant of the group, inserted before any of its events (its id in each
        # of their documents); and, for the ledger's outboxes and commits, the group's writes
        # and their keys by tenant.
        self.outboxes: dict[str, str] = {}
        self.by_tenant: dict[str, list[EventWrite]] = {}
        self._keys: dict[str, list[str]] = {}
        if repository.ledger is not None:
            self.outboxes, self.by_tenant, self._keys = _native.mark_outboxes(
                writes, repository.next_outbox
            )
        self._outboxes_written = not self.outboxes
        # Commits written as the last documents of the group's insert (see _inline_commits):
        # by `_id` until written, then the tenants done.
        self._inline: dict[str, Commit] = {}
        self.committed_inline: set[str] = set()

    def committed(self) -> dict[str, list[Document]]:
        """Per tenant whose commit is still to be written, the ledger records of the events
        this group stored (not earlier ones)."""
        stored: dict[str, list[Document]] = {}
        done = self.committed_inline
        if len(done) == len(self.outboxes):  # every tenant's commit went with the events
            return stored
        for write, outcome in zip(self.writes, self.outcomes, strict=True):
            if isinstance(outcome, Stored) and not outcome.already_stored:
                doc = outcome.doc
                if doc["tenant_id"] not in done:
                    stored.setdefault(doc["tenant_id"], []).append(
                        commit_entry(doc, write.recorded, write.filters)
                    )
        return stored

    def _inline_commits(self, pending: list[int]) -> list[tuple[int, str, Document]]:
        """The group's commits, to go last in its one ordered insert, when everything of the
        group is in that insert (its first round; no session written by other processes, no
        unordered insert of general events): if the insert goes through, every event of the
        group is stored as planned and the commit says so, with no round trip of its own
        before the callers are answered; if it stops early, so that the commit is not written,
        commit_group writes it with what was stored. (Measured, batches of 100 events, half
        clicks, 4 callers: the commit's own insert cost the server 9 % of its CPU per event
        and 8-11 % of its throughput.)"""
        ledger = self.repository.ledger
        if ledger is None or len(pending) != len(self.writes):
            return []
        at = convert.now_millis()
        writer = self.repository.writer_id
        docs: list[tuple[int, str, Document]] = []
        for tenant_id, box in self.outboxes.items():
            packed, chain = group_entries(self.by_tenant[tenant_id])
            commit = Commit(tenant_id, writer, outbox_number(box), packed, chain, at)
            self._inline[commit.id] = commit
            docs.append((-1, "commit", commit.doc()))
        return docs

    def _committed_inline(self, doc: Document) -> None:
        commit = self._inline.pop(doc["_id"])
        if self.repository.ledger is not None:
            self.repository.ledger.committed(commit)
        self.committed_inline.add(commit.tenant_id)

    def keys(self) -> dict[str, list[str]]:
        """Per tenant, the keys of the group's events (the outboxes and then the commits ask
        for them)."""
        return self._keys

    def _outbox_docs(self) -> list[tuple[int, str, Document]]:
        keys = self.keys()
        now = convert.now_millis()
        return [
            (-1, "outbox", outbox_doc(box, keys[tenant_id], now))
            for tenant_id, box in self.outboxes.items()
        ]

    def _stored(self, index: int, doc: Document) -> tuple[str, str] | None:
        """Event `index` is stored as `doc`; its session, if any, whose head the caller takes
        note of (_advance: once for a run of the session's events)."""
        self.outcomes[index] = Stored(doc)
        session = self.writes[index].session
        if session is not None and self.placements.get(index, _NEW).generation > 0:
            self.moved.append(index)
        return session

    def _advance(self, session: tuple[str, str], sequence: int) -> None:
        """The session's slots up to `sequence` are taken (by this group, or seen taken)."""
        self.advanced[session] = max(self.advanced.get(session, 0), sequence)
        self.repository._remember_head(convert.session_prefix(*session), sequence)

    def _pending(self) -> list[int]:
        # By C-level iterators: a comprehension cost 0.2 us an event in a profile.
        return list(compress(count(), map(is_, self.outcomes, repeat(None))))

    async def run(self) -> list[Outcome]:
        pending = self._pending()
        while pending:
            if not self.unplaced:  # a slot to adopt is named by a placement record seen
                await self._write_adopted(
                    [i for i in pending if self.placements.get(i, _NEW).adopted]
                )
                pending = self._pending()
                if not pending:
                    break
            if not await self._round(pending):
                break
            pending = self._pending()
        await self._update_hints()
        if None not in self.outcomes:
            return list(self.outcomes)  # type: ignore[arg-type]
        return [o if o is not None else DatabaseUnavailable("not written") for o in self.outcomes]

    async def _round(self, pending: list[int]) -> bool:
        """One round: everything pending, inserted in order; False when the rest cannot be
        written.

        Sessions that other processes write too go in inserts of their own, concurrently with
        the rest: a lost race then stops only that session's run, and on FerretDB, which
        answers a failed insert by inserting the batch again one document at a time, it costs
        a short run instead of the whole group.
        """
        repository = self.repository
        writes = self.writes
        claims_only = self.unplaced
        # The general events as the insert's items, (event index, role, document), and their
        # indexes; each session's events, in order.
        main, general_indexes, sessions = _native.split_pending(writes, pending)
        risky: list[list[tuple[int, str, Document]]] = []
        shared: list[tuple[int, str, Document]] = []
        alone: list[tuple[int, str, Document]] = []
        for session, indexes in sessions.items():
            # The session's events take the slots after its head, in order, each just after
            # its id's placement record. `run_end` tells a writer that loses a race here where
            # this writer's run ends, so it can aim past it at once instead of probing its way.
            first = await repository.cached_head(*session) + 1
            if claims_only:  # every event's record is its id claim: made natively
                run = convert.slot_run(writes, indexes, session, first)
            else:
                run = self._placed_run(indexes, first)
            if repository.contended(*session):
                risky.append(run)
            elif repository.recently_shared(*session):
                shared.extend(run)
            else:
                alone.extend(run)
        # In the one insert of the rest, sessions other processes wrote lately go first: if one
        # of them loses a race, the insert stops early, which is cheap everywhere, and on
        # FerretDB (which inserts a failed batch again one document at a time up to the
        # failure) costs a few documents rather than most of the group.
        # General events need no order among themselves: in a large group they go in one
        # unordered insert of their own (one round trip for all instead of one per chunk of an
        # ordered insert on FerretDB), beside the sessions' ordered inserts.
        # Where ordered inserts go whole (MongoDB, our FerretDB build), a group's first round
        # keeps them in the one ordered insert, with its outboxes before and its commits after
        # them (one round trip instead of three); a round after an early stop (a retried id)
        # writes the rest unordered, so a replayed batch costs a round or two, not one per id.
        general: list[tuple[int, str, Document]] = []
        first_round = len(pending) == len(self.writes)
        if len(main) >= UNORDERED_MIN_EVENTS and not (
            repository.whole_ordered_inserts and first_round
        ):
            general, main = main, []
        main[:0] = shared + alone
        # Each session that other processes write too goes in an insert of its own, beside the
        # rest: a lost race there stops only that session's run, and on FerretDB, which answers
        # a failed insert by inserting the batch again one document at a time up to the failure,
        # it costs a document or two instead of a group.
        if not self._outboxes_written:
            # Every event of the group is covered by its outbox before it can be stored.
            outboxes = self._outbox_docs()
            if risky or general:
                inserted, error = await repository._insert_ordered([d for _, _, d in outboxes])
                if error is not None and error.get("code") != DUPLICATE_KEY:
                    return await self._failed(outboxes[inserted], error, pending)
            else:
                main[:0] = outboxes
                inline = self._inline_commits(pending)
                if inline:
                    # As before any commit: this process's heartbeat fresh (see before_commit).
                    await repository._before_commit()
                    main.extend(inline)
            self._outboxes_written = bool(risky or general)
        batches = [batch for batch in (main, *risky) if batch]
        repository.stats["rounds"] += 1
        # After a lost race in this group, smaller inserts: FerretDB re-inserts a failed one
        # document by document up to the failure, which in a large insert costs more than the
        # extra round trips of small ones.
        chunk = FERRETDB_RACING_CHUNK if self.races else FERRETDB_ORDERED_CHUNK
        # Events go to the database as the BSON the native preparer made with them, completed
        # with what this group added (convert.raw_document): PyMongo's encoding of their dicts
        # cost 2.7-4.2 us each (in process), the document made from its elements 0.9-1.4.
        # (slot_run made its events' BSON with their slots: only the rest's is made here.)
        raw = convert.raw_documents(writes, general_indexes if claims_only else pending)
        encode = repository.encode
        ordered = asyncio.gather(
            *(
                repository._insert_ordered(_native.batch_documents(batch, raw, encode), chunk=chunk)
                for batch in batches
            )
        )
        if general:
            results, failures = await asyncio.gather(
                ordered,
                repository._insert_unordered(_native.batch_documents(general, raw, encode)),
            )
            await self._unordered_outcomes(general, failures)
        else:
            results = await ordered
        placements = self.placements
        for batch, (inserted, _) in zip(batches, results, strict=True):
            # The stored events' outcomes, in one native pass (_stored's twin: the other
            # callers take few events; split_pending in service/native says what the loops in
            # Python cost). A session's events are one run of rising slots in a batch: its last
            # one stored is where its head is now, noted once per session.
            in_sessions, heads_now, others = _native.note_stored(
                batch, inserted, writes, self.outcomes
            )
            for index, role, item in others:
                if role == "record":
                    self._place(index, item["gen"])
                elif role == "outbox":
                    self._outboxes_written = True
                else:
                    self._committed_inline(item)
            if placements:  # a record precedes its event: placed above if in this batch
                self.moved.extend(i for i in in_sessions if placements.get(i, _NEW).generation > 0)
            for session, head in heads_now.items():
                self._advance(session, head)
            # A claim whose event did not go in (the insert stopped there) is that event's
            # placement; the claims of stored events need no note (they name their slots).
            if inserted and batch[inserted - 1][1] == "claim":
                self._place(batch[inserted - 1][0], 0)
        for batch, (inserted, error) in zip(batches, results, strict=True):
            if error is not None and not await self._failed(batch[inserted], error, pending):
                return False
        return True

    def _placed_run(self, indexes: list[int], first: int) -> list[tuple[int, str, Any]]:
        """A session's run from slot `first` (as convert.slot_run), in a round where some
        events of the group have placement records already: each event's next record."""
        run_end = first + len(indexes) - 1
        run: list[tuple[int, str, Any]] = []
        for sequence, index in enumerate(indexes, start=first):
            write = self.writes[index]
            doc = write.doc
            convert.assign_slot(doc, sequence, write.session)
            doc["run_end"] = run_end
            generation = self.placements.get(index, _NEW).generation
            if generation < 0:
                run.append((index, "claim", convert.id_claim(doc)))
            else:
                run.append((index, "record", convert.placement_record(doc, generation + 1)))
            run.append((index, "event", doc))
        return run

    def _place(self, index: int, generation: int) -> None:
        """Event `index`'s id has its placement record `generation` written (0: its claim)."""
        self._placement(index).generation = generation
        self.unplaced = False

    def _placement(self, index: int) -> _Placement:
        placement = self.placements.get(index)
        if placement is None:
            placement = self.placements[index] = _Placement()
        return placement

    async def _unordered_outcomes(
        self,
        general: list[tuple[int, str, Document]],
        failures: dict[int, dict[str, Any]],
    ) -> None:
        """The outcome of each general event of an unordered insert: stored, or what its
        failure means (an id taken: a retry or a clash; else the database's error)."""
        for position, (index, _, doc) in enumerate(general):
            if position not in failures:
                self._stored(index, doc)
        taken = [general[p][0] for p, e in failures.items() if e.get("code") == DUPLICATE_KEY]
        for position, error in failures.items():
            if error.get("code") != DUPLICATE_KEY:
                self.outcomes[general[position][0]] = DatabaseUnavailable(
                    f"write error {error.get('code')}"
                )
        if taken:
            # A replayed batch: every id it holds is looked up at once.
            await asyncio.gather(*(self._resolve_taken_id(index) for index in taken))

    async def _failed(
        self, failed: tuple[int, str, Document], error: dict[str, Any], pending: list[int]
    ) -> bool:
        """What a failed document means; False when the rest cannot be written."""
        repository = self.repository
        index, role, item = failed
        if role == "commit":
            # Every event before it is stored; commit_group writes the commit (a duplicate: an
            # earlier attempt of this very insert wrote it, and commit_group finds it there).
            self._inline.pop(item["_id"], None)
            return True
        if role == "outbox":
            if error.get("code") == DUPLICATE_KEY:
                # Written by an earlier attempt of this very insert (a retried write).
                self._outboxes_written = True
                return True
            for rest in pending:
                if self.outcomes[rest] is None:
                    self.outcomes[rest] = DatabaseUnavailable(f"write error {error.get('code')}")
            return False
        if error.get("code") != DUPLICATE_KEY:
            for rest in pending:
                if self.outcomes[rest] is None:
                    self.outcomes[rest] = DatabaseUnavailable(f"write error {error.get('code')}")
            return False
        write = self.writes[index]
        if role in ("claim", "record"):
            if role == "claim":
                # The id is taken: by this very event (a retry) or by another one (a clash).
                # Where one event of a group is a retry, usually all are (a client replaying a
                # batch): look up every remaining id at once, so a replayed group costs a few
                # round trips, not one per event.
                await self._resolve_known_ids(pending, skip=index)
            await self._resolve_taken_id(index)
        elif write.session is None:
            await self._resolve_taken_id(index)
        else:
            occupant = await repository._read(write.doc["_id"])
            if occupant is not None and occupant.get("key") == write.doc["key"]:
                # A retry of this event, racing this attempt, put it there: one copy.
                self.outcomes[index] = await repository._resolve_duplicate(write, occupant)
            else:
                return await self._lost_race(write, occupant, pending)
        return True

    async def _lost_race(
        self, write: EventWrite, occupant: Document | None, pending: list[int]
    ) -> bool:
        """Another writer took the slot: aim past its run; the event takes a new record."""
        repository = self.repository
        self.races += 1
        repository.stats["races"] += 1
        doc, session = write.doc, write.session
        assert session is not None  # only co-browsing events have slots to lose
        repository.mark_contended(*session)
        known = doc["sequence"]
        if occupant is not None:
            known = max(known, occupant.get("run_end", known))
        head = await repository.session_head(*session, known=doc["sequence"], guess=known)
        repository._remember_head(convert.session_prefix(*session), head)
        self.session_races[session] = self.session_races.get(session, 0) + 1
        if self.session_races[session] > MAX_SLOT_RACES:
            for rest in pending:
                if self.outcomes[rest] is None and self.writes[rest].session == session:
                    self.outcomes[rest] = SequenceContention(
                        "too many concurrent writers on this session; retry"
                    )
        return True

    async def _resolve_taken_id(self, index: int) -> None:
        """The id (or the next placement record) of event `index` exists: whose, and where?"""
        repository = self.repository
        write = self.writes[index]
        key = write.doc["key"]
        located = await repository.locate(key)
        if located.event is not None:
            self.outcomes[index] = await repository._resolve_duplicate(write, located.event)
            return
        if located.claim is None or located.claim.get("fingerprint") != write.doc["fingerprint"]:
            # Nothing stored under the id, or a claim for other content: a clash either way
            # (an id is never reused for other content, even before its event is written).
            self.outcomes[index] = (
                IdConflict(write.doc["tenant_id"], write.doc["id"])
                if located.claim is not None
                else DatabaseUnavailable("duplicate id without a stored event; retry")
            )
            return
        # This event's id is claimed, but the event is not at the slot of its latest record:
        # an earlier attempt died (or is still in flight) before writing it.
        self._place(index, located.generation)
        if located.slot_free:
            self.placements[index].adopted = located.slot
        # else the latest record's slot holds another event: the next round writes a new one.

    async def _write_adopted(self, indexes: list[int]) -> None:
        """Events that must go to a slot an earlier attempt's record names: one by one."""
        repository = self.repository
        for index in indexes:
            write, placement = self.writes[index], self.placements[index]
            convert.assign_slot(write.doc, placement.adopted, write.session)
            write.doc["run_end"] = placement.adopted
            placement.adopted = 0
            # As every event is sent: its BSON as the preparer made it, completed (the dict
            # leaves out what only that BSON holds, such as the payload), or the rules' dict.
            sent = convert.raw_documents(self.writes, [index]).get(index, write.doc)
            _, error = await repository._insert_ordered([sent])
            if error is None:
                session = self._stored(index, write.doc)
                if session is not None:
                    self._advance(session, write.doc["sequence"])
                continue
            if error.get("code") != DUPLICATE_KEY:
                self.outcomes[index] = DatabaseUnavailable(f"write error {error.get('code')}")
                continue
            occupant = await repository._read(write.doc["_id"])
            if occupant is not None and occupant.get("key") == write.doc["key"]:
                self.outcomes[index] = await repository._resolve_duplicate(write, occupant)
            else:
                await self._lost_race(write, occupant, [])

    async def _resolve_known_ids(self, pending: list[int], skip: int) -> None:
        """Answers every not-yet-written event of the group whose id is already stored."""
        repository = self.repository
        candidates = [
            i
            for i in pending
            if self.outcomes[i] is None
            and i != skip
            and self.placements.get(i, _NEW).generation < 0
        ]
        found = await asyncio.gather(
            *(repository.locate(self.writes[i].doc["key"]) for i in candidates)
        )
        for index, located in zip(candidates, found, strict=True):
            if located.event is not None:
                self.outcomes[index] = await repository._resolve_duplicate(
                    self.writes[index], located.event
                )

    async def _update_hints(self) -> None:
        """Point id claims at the slots their events finally got, so GetEvent reads two
        documents. Only a hint: a reader that finds it behind follows the records."""
        updates = [
            UpdateOne(
                {"_id": self.writes[i].doc["key"]},
                {"$set": {"slot": self.writes[i].doc["_id"], "gen": self.placements[i].generation}},
            )
            for i in self.moved
        ]
        if updates:
            await self.repository.events.bulk_write(updates, ordered=False)


_NEW = _Placement()
