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
import datetime as dt
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from pymongo.write_concern import WriteConcern

from . import convert
from .convert import Document
from .errors import (
    AuditLogError,
    DatabaseTimeout,
    DatabaseUnavailable,
    IdConflict,
    SequenceContention,
)

DUPLICATE_KEY = 11000
# FerretDB v1 keeps ordered-insert semantics only within a chunk of this many documents.
FERRETDB_ORDERED_CHUNK = 100
# Sequence allocation gives up after this many lost races in one call (then ABORTED: retry).
MAX_SLOT_RACES = 64
# Heads remembered per process; an evicted session is re-probed (O(log n) lookups) when it returns.
HEAD_CACHE_SIZE = 100_000

# The filters of ListEvents; each has an index that starts with tenant_id and ends with the sort.
FILTER_FIELDS = ("type", "tenant_user_id", "customer_id", "call_id", "session_id", "cobrowse.actor")


@dataclass(slots=True)
class EventWrite:
    """One event to store: its document, and what tells a retry of it from an id clash."""

    doc: Document
    # A retry that leaves occur_time to the server matches whatever time the first attempt got.
    occur_time_given: bool = True

    def is_retry_of(self, existing: Document) -> bool:
        """Whether `existing`, stored under this event's id, is this very event."""
        if existing.get("fingerprint") != self.doc["fingerprint"]:
            return False
        return not self.occur_time_given or existing["occur_time"] == self.doc["occur_time"]


@dataclass
class Stored:
    """An event that is in the database (now, or already before: an idempotent retry)."""

    doc: Document
    already_stored: bool = False


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
        self.range_reads = False  # set by detect_backend()
        # Called with (tenant_id, session_id, head) after events were added to a session.
        self.on_session_advanced: Callable[[str, str, int], None] | None = None

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

    async def find_by_key(self, key: str) -> Document | None:
        """The event stored under a tenant-scoped id, through `_id` lookups (normally)."""
        doc: Document | None = await self._guard(self.events.find_one({"_id": key}))
        if doc is None or "slot" not in doc:
            return doc  # nothing under this id, or a general event
        event: Document | None = await self._guard(self.events.find_one({"_id": doc["slot"]}))
        if event is not None and event.get("key") == key:
            return event
        # The claim is stale (its writer died between losing a slot race and correcting it),
        # or its event is not written yet. Rare; the key index serves it on MongoDB.
        event = await self._guard(self.events.find_one({"key": key}))
        return event

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
        """Whether the server runs range queries from an index (MongoDB) or scans (FerretDB)."""
        info = await self._guard(self._client.admin.command("buildInfo"))
        self.range_reads = "ferretdbVersion" not in info

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

    async def read_slot(self, tenant_id: str, session_id: str, sequence: int) -> Document | None:
        doc: Document | None = await self._guard(
            self.events.find_one({"_id": convert.slot_id(tenant_id, session_id, sequence)})
        )
        return doc

    async def session_head(self, tenant_id: str, session_id: str, known: int = 0) -> int:
        """The highest sequence of a session, found by probing slots from a known-present one.

        Exponential probe forward, then binary search: O(log n) `_id` lookups, never max().
        Slots are filled without holes, so "slot n exists" is true exactly for n <= head.
        """
        low, step = known, 1
        while await self.slot_exists(tenant_id, session_id, low + step):
            low, step = low + step, step * 2
        high = low + step  # missing
        while high - low > 1:
            mid = (low + high) // 2
            if await self.slot_exists(tenant_id, session_id, mid):
                low = mid
            else:
                high = mid
        return low

    async def cached_head(self, tenant_id: str, session_id: str) -> int:
        name = convert.session_prefix(tenant_id, session_id)
        if name in self._heads:
            self._heads.move_to_end(name)
            return self._heads[name]
        head = await self.session_head(tenant_id, session_id)
        self._remember_head(name, head)
        return head

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
        if write.is_retry_of(existing):
            return Stored(existing, already_stored=True)
        return IdConflict(doc["tenant_id"], doc["id"])

    async def insert_events(self, writes: list[EventWrite]) -> list[Outcome]:
        """Store a group of events of any kinds, tenants and sessions; one outcome per event.

        Co-browsing events take the slots after their session's head, in group order, without
        holes: the group is one ordered insert, so nothing after a failed document is written.
        The failed document is then examined: its id was taken (an idempotent retry or a clash),
        or its slot was taken by another writer (re-read the head, take the next slots). Then the
        rest is written again. Every outcome comes after the database acknowledged the write.
        """
        try:
            return await self._insert_events(writes)
        except PyMongoError as exc:
            mapped = database_errors(exc)
            if mapped is None:
                raise
            return [mapped] * len(writes)

    async def _insert_events(self, writes: list[EventWrite]) -> list[Outcome]:
        docs = [write.doc for write in writes]
        outcomes: list[Outcome | None] = [None] * len(docs)
        claimed: set[int] = set()  # co-browsing events whose id claim is in place
        stale_claims: dict[int, Document] = {}  # claims pointing at a slot the event did not get
        advanced: dict[tuple[str, str], int] = {}
        races = 0
        pending = list(range(len(docs)))
        while pending:
            heads: dict[tuple[str, str], int] = {}
            batch: list[tuple[int, str, Document]] = []  # (event index, role, document)
            for index in pending:
                doc = docs[index]
                if "cobrowse" not in doc:
                    batch.append((index, "event", doc))
                    continue
                session = (doc["tenant_id"], doc["cobrowse"]["session_id"])
                if session not in heads:
                    heads[session] = await self.cached_head(*session)
                heads[session] += 1
                convert.assign_slot(doc, heads[session])
                if index not in claimed:
                    batch.append((index, "claim", convert.id_claim(doc)))
                batch.append((index, "event", doc))
            inserted, error = await self._insert_ordered([item for _, _, item in batch])
            for index, role, item in batch[:inserted]:
                if role == "claim":
                    claimed.add(index)
                    continue
                outcomes[index] = Stored(item)
                if "cobrowse" in item:
                    session = (item["tenant_id"], item["cobrowse"]["session_id"])
                    advanced[session] = item["sequence"]
                    self._remember_head(convert.session_prefix(*session), item["sequence"])
            if error is None:
                break
            index, role, item = batch[inserted]
            if error.get("code") != DUPLICATE_KEY:
                for rest in pending:
                    if outcomes[rest] is None:
                        outcomes[rest] = DatabaseUnavailable(f"write error {error.get('code')}")
                break
            doc = docs[index]
            if role == "claim" or "cobrowse" not in doc:
                # The id is taken: by this very event (a retry) or by another one (a clash).
                # Where one event of a group is a retry, usually all are (a client replaying a
                # batch): look up every remaining id at once, so a replayed group costs a few
                # round trips, not one per event.
                await self._resolve_known_ids(writes, pending, claimed, outcomes, skip=index)
                existing = await self.find_by_key(doc["key"])
                if existing is not None:
                    outcomes[index] = await self._resolve_duplicate(writes[index], existing)
                elif role == "claim":
                    # A claim whose event was never written (its writer died in between):
                    # write the event now and point the claim at where it lands.
                    claimed.add(index)
                    stale_claims[index] = doc
                else:
                    outcomes[index] = DatabaseUnavailable("duplicate id without a stored event")
            else:
                occupant = await self.events.find_one({"_id": doc["_id"]})
                if occupant is not None and occupant.get("key") == doc["key"]:
                    outcomes[index] = await self._resolve_duplicate(writes[index], occupant)
                else:
                    # Another writer took the slot: re-read the head; the claim now points at
                    # the wrong slot until it is corrected below.
                    races += 1
                    stale_claims[index] = doc
                    session = (doc["tenant_id"], doc["cobrowse"]["session_id"])
                    head = await self.session_head(*session, known=doc["sequence"])
                    self._remember_head(convert.session_prefix(*session), head)
                    if races > MAX_SLOT_RACES:
                        for rest in pending:
                            if outcomes[rest] is None:
                                outcomes[rest] = SequenceContention(
                                    "too many concurrent writers on this session; retry"
                                )
                        break
            pending = [i for i in pending if outcomes[i] is None]
        await self._correct_claims(
            [docs[i] for i in stale_claims if isinstance(outcomes[i], Stored)]
        )
        if self.on_session_advanced is not None:
            for (tenant_id, session_id), head in advanced.items():
                self.on_session_advanced(tenant_id, session_id, head)
        return [o if o is not None else DatabaseUnavailable("not written") for o in outcomes]

    async def _insert_ordered(self, items: list[Document]) -> tuple[int, dict[str, Any] | None]:
        """Inserts in order, stopping at the first failure: (how many were inserted, the error).

        FerretDB v1 runs an ordered insert in chunks of 100 documents and, after a failure in
        one chunk, still inserts the later chunks, which would leave holes in a session. So on
        FerretDB we send chunks of at most 100 ourselves and stop at the first failure.
        """
        chunk = len(items) if self.range_reads else FERRETDB_ORDERED_CHUNK
        for start in range(0, len(items), max(chunk, 1)):
            try:
                await self.events.insert_many(items[start : start + chunk], ordered=True)
            except BulkWriteError as exc:
                if exc.details.get("writeConcernErrors"):
                    raise WriteConcernError("write concern not satisfied") from exc
                error: dict[str, Any] = exc.details["writeErrors"][0]
                # The failed document's index, not nInserted: everything before it is written.
                return start + error["index"], error
        return len(items), None

    async def _resolve_known_ids(
        self,
        writes: list[EventWrite],
        pending: list[int],
        claimed: set[int],
        outcomes: list[Outcome | None],
        skip: int,
    ) -> None:
        """Answers every not-yet-written event of the group whose id is already stored."""
        candidates = [i for i in pending if outcomes[i] is None and i not in claimed and i != skip]
        found = await asyncio.gather(*(self.find_by_key(writes[i].doc["key"]) for i in candidates))
        for index, existing in zip(candidates, found, strict=True):
            if existing is not None:
                outcomes[index] = await self._resolve_duplicate(writes[index], existing)

    async def _correct_claims(self, stored: list[Document]) -> None:
        """Point id claims at the slots their events finally got (after a lost slot race)."""
        updates = [UpdateOne({"_id": doc["key"]}, {"$set": {"slot": doc["_id"]}}) for doc in stored]
        if updates:
            await self.events.bulk_write(updates, ordered=False)
