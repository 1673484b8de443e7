"""Reads by `_id` (one id, or an `$in` of many) are index searches on the dev database as on
MongoDB: the ledger's reads of stored events (export, verify) rely on it.

On FerretDB this checks our patch (tools/patches/ferretdb-sqlite-id-index.patch): v1.24.2 scans
the collection for an `$in`, even of `_id`s.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import USING_FERRETDB


def plan_text(explained: dict[str, Any]) -> str:
    return repr(explained.get("queryPlanner", explained))


def uses_id_index(explained: dict[str, Any]) -> bool:
    text = plan_text(explained)
    if USING_FERRETDB:  # SQLite's plan: "SEARCH <table> USING INDEX <table>__id_ (<expr>=?)"
        return "USING INDEX" in text and "SCAN" not in text.replace("SEARCH", "")
    return "COLLSCAN" not in text


@pytest_asyncio.fixture
async def collection(db: Any) -> Any:
    events = db["id_lookups"]
    await events.insert_many([{"_id": f"doc-{n:04d}", "n": n} for n in range(2000)])
    return events


@pytest.mark.asyncio
async def test_an_id_and_an_in_of_ids_are_index_searches(collection: Any) -> None:
    one = await collection.find({"_id": "doc-0007"}).explain()
    assert uses_id_index(one), plan_text(one)
    ids = [f"doc-{n:04d}" for n in range(0, 2000, 2)]
    many = await collection.find({"_id": {"$in": ids}}).explain()
    assert uses_id_index(many), plan_text(many)


@pytest.mark.asyncio
async def test_an_in_of_ids_returns_exactly_the_stored_ones(collection: Any) -> None:
    wanted = [f"doc-{n:04d}" for n in range(1999, -1, -3)] + ["doc-9999", "missing"]
    found = sorted([doc["_id"] async for doc in collection.find({"_id": {"$in": wanted}})])
    assert found == sorted(w for w in wanted if w.startswith("doc-") and w != "doc-9999")
    # Values the index search does not take (a number) still give the right answer.
    mixed = [doc["n"] async for doc in collection.find({"_id": {"$in": ["doc-0003", 3]}})]
    assert mixed == [3]
