"""EventRepository: the events in MongoDB, over PyMongo's asyncio API, within the portable subset.

Collections:
- `events`: one document per event (see convert.py). A general event's `_id` is
  "<tenant>/<id>"; a co-browsing event's `_id` is its session slot "<tenant>/<session>/<seq>".
  A unique index on `key` ("<tenant>/<id>") makes every event id unique within its tenant.
- `event_keys`: for co-browsing events, "<tenant>/<id>" -> slot, written before the slot, so that
  GetEvent and duplicate detection stay `_id` point lookups (the only lookups FerretDB serves
  without a scan), and an absent pointer proves that an id was never stored.
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
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)
from pymongo.write_concern import WriteConcern

from . import convert
from .convert import Document
from .errors import AuditLogError, DatabaseUnavailable, IdConflict, SequenceContention

DUPLICATE_KEY = 11000
# Sequence allocation gives up after this many lost races in one call (then ABORTED: retry).
MAX_SLOT_RACES = 64
# Heads remembered per process; an evicted session is re-probed (O(log n) lookups) when it returns.
HEAD_CACHE_SIZE = 100_000

# The filters of ListEvents; each has an index that starts with tenant_id and ends with the sort.
FILTER_FIELDS = ("type", "tenant_user_id", "customer_id", "call_id", "session_id", "cobrowse.actor")


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
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WriteConcernError):
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
        self.keys: AsyncCollection[Document] = db.get_collection(
            "event_keys", write_concern=concern
        )
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
        await self._guard(self.events.create_index("key", unique=True, name="key_unique"))
        base = [("occur_time", DESCENDING), ("_id", DESCENDING)]
        await self._guard(self.events.create_index([("tenant_id", ASCENDING), *base]))
        for name in FILTER_FIELDS:
            await self._guard(
                self.events.create_index([("tenant_id", ASCENDING), (name, ASCENDING), *base])
            )

    # ---- reads -------------------------------------------------------------------------------

    async def find_by_key(self, key: str) -> Document | None:
        """The event stored under a tenant-scoped id, through `_id` lookups only (normally)."""
        doc: Document | None = await self._guard(self.events.find_one({"_id": key}))
        if doc is not None:
            return doc
        pointer = await self._guard(self.keys.find_one({"_id": key}))
        if pointer is None:
            return None  # pointers are written before slots: this id was never stored
        doc = await self._guard(self.events.find_one({"_id": pointer["slot"]}))
        if doc is not None and doc["key"] == key:
            return doc
        # The pointer's slot hint is stale (a writer died between losing a slot race and
        # correcting it). Rare; the key index serves it on MongoDB, FerretDB scans.
        doc = await self._guard(self.events.find_one({"key": key}))
        return doc

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

    async def _resolve_duplicate(self, doc: Document, existing: Document | None) -> Outcome:
        if existing is None:
            existing = await self.find_by_key(doc["key"])
        if existing is None:
            # The clash vanished (cannot happen unless events are deleted concurrently).
            return DatabaseUnavailable("duplicate key without a stored event; retry")
        if existing["fingerprint"] == doc["fingerprint"]:
            return Stored(existing, already_stored=True)
        return IdConflict(doc["tenant_id"], doc["id"])

    async def insert_general(self, docs: list[Document]) -> list[Outcome]:
        """Insert general events (unordered: one bad event does not stop the others)."""
        outcomes: list[Outcome] = [Stored(doc) for doc in docs]
        try:
            await self.events.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                return [DatabaseUnavailable("write concern not satisfied")] * len(docs)
            for error in exc.details.get("writeErrors", []):
                index = error["index"]
                if error.get("code") == DUPLICATE_KEY:
                    outcomes[index] = await self._resolve_duplicate(docs[index], None)
                else:
                    outcomes[index] = DatabaseUnavailable(f"write error {error.get('code')}")
        except PyMongoError as exc:
            mapped = database_errors(exc)
            if mapped is None:
                raise
            return [mapped] * len(docs)
        return outcomes

    async def insert_session_events(
        self, tenant_id: str, session_id: str, docs: list[Document]
    ) -> list[Outcome]:
        """Append co-browsing events to a session at head+1..head+k, in order, without holes.

        The slot `_id` is the sequence allocator: a racing writer's insert fails on it, re-reads
        the head and retries. The unique `key` index rejects an event id stored before, which is
        then answered with the stored event (same content) or ALREADY_EXISTS.
        """
        try:
            return await self._insert_session_events(tenant_id, session_id, docs)
        except PyMongoError as exc:
            mapped = database_errors(exc)
            if mapped is None:
                raise
            return [mapped] * len(docs)

    async def _insert_session_events(
        self, tenant_id: str, session_id: str, docs: list[Document]
    ) -> list[Outcome]:
        name = convert.session_prefix(tenant_id, session_id)
        outcomes: list[Outcome | None] = [None] * len(docs)
        head = await self.cached_head(tenant_id, session_id)
        todo, hints = await self._claim_keys(head, docs, outcomes)
        races = 0
        stored: list[Document] = []
        while todo:
            for offset, index in enumerate(todo):
                convert.assign_slot(docs[index], head + 1 + offset)
            batch = [docs[index] for index in todo]
            error: dict[str, Any] | None = None
            try:
                await self.events.insert_many(batch, ordered=True)
                inserted = len(batch)
            except BulkWriteError as exc:
                if exc.details.get("writeConcernErrors"):
                    raise WriteConcernError("write concern not satisfied") from exc
                inserted = exc.details.get("nInserted", 0)
                error = exc.details["writeErrors"][0]
            for index in todo[:inserted]:
                outcomes[index] = Stored(docs[index])
                stored.append(docs[index])
            head += inserted
            if error is None:
                break
            failed = todo[inserted]
            if error.get("code") != DUPLICATE_KEY:
                for index in todo[inserted:]:
                    outcomes[index] = DatabaseUnavailable(f"write error {error.get('code')}")
                break
            occupant = await self.read_slot(tenant_id, session_id, head + 1)
            if occupant is not None and occupant["key"] != docs[failed]["key"]:
                # Lost the slot to another writer: find the new head and go on from there.
                races += 1
                if races > MAX_SLOT_RACES:
                    for index in todo[inserted:]:
                        outcomes[index] = SequenceContention(
                            "too many concurrent writers on this session; retry"
                        )
                    break
                head = await self.session_head(tenant_id, session_id, head + 1)
                todo = todo[inserted:]
            else:
                outcomes[failed] = await self._resolve_duplicate(docs[failed], occupant)
                todo = todo[inserted + 1 :]
        self._remember_head(name, head)
        await self._correct_pointers([doc for doc in stored if hints.get(doc["key"]) != doc["_id"]])
        if stored and self.on_session_advanced is not None:
            self.on_session_advanced(tenant_id, session_id, head)
        return [o if o is not None else DatabaseUnavailable("not written") for o in outcomes]

    async def _claim_keys(
        self, head: int, docs: list[Document], outcomes: list[Outcome | None]
    ) -> tuple[list[int], dict[str, str]]:
        """Write the id pointers (with the intended slot as a hint) before any slot.

        Returns the indexes still to be written, and the slot hint written for each key; ids
        already stored get their outcome here.
        """
        pointers = [
            {
                "_id": doc["key"],
                "slot": convert.slot_id(
                    doc["tenant_id"], doc["cobrowse"]["session_id"], head + 1 + i
                ),
            }
            for i, doc in enumerate(docs)
        ]
        hints = {pointer["_id"]: pointer["slot"] for pointer in pointers}
        taken: set[int] = set()
        try:
            await self.keys.insert_many(pointers, ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise WriteConcernError("write concern not satisfied") from exc
            for error in exc.details.get("writeErrors", []):
                if error.get("code") != DUPLICATE_KEY:
                    raise
                taken.add(error["index"])
                hints.pop(pointers[error["index"]]["_id"], None)  # someone else's hint
        todo = []
        for index, doc in enumerate(docs):
            if index in taken:
                existing = await self.find_by_key(doc["key"])
                if existing is not None:
                    outcomes[index] = await self._resolve_duplicate(doc, existing)
                    continue
                # A pointer without its event: an earlier attempt died before its slot write.
            todo.append(index)
        return todo, hints

    async def _correct_pointers(self, stored: list[Document]) -> None:
        """Point ids at the slots they finally got, where a lost race moved them off the hint."""
        updates = []
        for doc in stored:
            updates.append(UpdateOne({"_id": doc["key"]}, {"$set": {"slot": doc["_id"]}}))
        if updates:
            await self.keys.bulk_write(updates, ordered=False)
