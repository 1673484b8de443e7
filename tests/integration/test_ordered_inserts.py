"""An ordered insert stops at its first failure on the dev database as on MongoDB: a session's
slots must not get holes, and the service sends a group's ordered insert whole when the database
keeps to this (on FerretDB: our patch, tools/patches/ferretdb-ordered-insert-stops.patch;
v1.24.2 went on with the batches of 100 documents after the failed one)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from auditlog_service.storage import FERRETDB_ORDERED_CHUNK, EventRepository
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
