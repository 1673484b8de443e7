"""An ordered insert stops at its first failure on the dev database as on MongoDB: a session's
slots must not get holes, and the service sends a group's ordered insert whole when the database
keeps to this (on FerretDB: our patch, tools/patches/ferretdb-ordered-insert-stops.patch;
v1.24.2 went on with the batches of 100 documents after the failed one)."""

from __future__ import annotations

from typing import Any

import bson
import pytest
import pytest_asyncio
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from auditlog_service.convert import SentDocument
from auditlog_service.storage import DUPLICATE_KEY, FERRETDB_ORDERED_CHUNK, EventRepository
from tests.conftest import USING_FERRETDB


@pytest.mark.asyncio
async def test_nothing_after_the_first_failure_of_an_ordered_insert_is_stored(db: Any) -> None:
    docs = [{"_id": f"doc-{n:04d}", "n": n} for n in range(3 * FERRETDB_ORDERED_CHUNK + 50)]
    failing = FERRETDB_ORDERED_CHUNK + 20  # in the second of the database's batches
    docs[failing]["_id"] = docs[10]["_id"]
    with pytest.raises(BulkWriteError) as raised:
        await db["ordered"].insert_many(docs, ordered=True)
    assert raised.value.details["nInserted"] == failing
    assert [e["index"] for e in raised.value.details["writeErrors"]] == [failing]
    stored = sorted([doc["n"] async for doc in db["ordered"].find({})])
    assert stored == list(range(failing))


@pytest.mark.asyncio
async def test_the_service_sends_ordered_inserts_whole_where_they_stop_at_a_failure(
    mongodb_uri: str, database_name: str
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        repository = EventRepository(client, database_name, 1)
        await repository.detect_backend()
        # Our FerretDB build says so in its version; MongoDB always did.
        assert repository.ordered_inserts_stop == USING_FERRETDB
        assert repository.range_reads != USING_FERRETDB
    finally:
        await client.close()


def _docs(count: int, duplicate_at: dict[int, int]) -> list[dict[str, Any]]:
    docs = [{"_id": f"doc-{n:04d}", "n": n, "pad": "x" * 200} for n in range(count)]
    for at, of in duplicate_at.items():
        docs[at]["_id"] = docs[of]["_id"]
    return docs


@pytest_asyncio.fixture(params=["command", "insert_many"])
async def repository(request: Any, mongodb_uri: str, database_name: str) -> Any:
    """A repository inserting by its own insert commands, split into several by a small message
    limit, or by PyMongo's insert_many (as where PyMongo retries writes)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    repository = EventRepository(client, database_name, 1)
    await repository.detect_backend()
    if USING_FERRETDB:
        assert not repository.retryable_inserts  # PyMongo retries no writes to FerretDB
    repository.retryable_inserts = request.param == "insert_many"
    repository.max_message_bytes = 20_000  # a few kilobytes of documents an insert command
    try:
        yield repository
    finally:
        await client.close()


async def _stored(repository: EventRepository) -> list[int]:
    return sorted([doc["n"] async for doc in repository.events.find({})])


@pytest.mark.asyncio
async def test_an_ordered_insert_reports_its_first_failure_by_index_and_stores_only_before(
    repository: EventRepository,
) -> None:
    # Failing well past the first insert command of the split (about 60 documents each).
    docs = _docs(300, {170: 3, 250: 4})
    errors = await repository._insert(docs, ordered=True)
    assert [(e["index"], e["code"]) for e in errors] == [(170, DUPLICATE_KEY)]
    assert await _stored(repository) == list(range(170))


@pytest.mark.asyncio
async def test_an_unordered_insert_reports_every_failure_by_index_and_stores_the_rest(
    repository: EventRepository,
) -> None:
    docs = _docs(300, {5: 0, 170: 3, 299: 4})
    docs[120] = RawBSONDocument(bson.encode(docs[120]))  # raw and dict documents mixed
    docs[121] = SentDocument(bson.encode(docs[121]))  # as the preparer's events are sent
    errors = await repository._insert(docs, ordered=False)
    assert sorted((e["index"], e["code"]) for e in errors) == [
        (5, DUPLICATE_KEY),
        (170, DUPLICATE_KEY),
        (299, DUPLICATE_KEY),
    ]
    assert await _stored(repository) == sorted(set(range(300)) - {5, 170, 299})
