"""A writer's caller that goes away (a cancelled RPC) leaves its group's write to finish."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from auditlog_service import convert
from auditlog_service.ingest import EventWriter
from auditlog_service.storage import EventRepository
from tests.event_samples import valid_event_of_each_type

TENANT = "acme"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["start_call", "click"])
async def test_a_cancelled_write_is_still_stored_and_the_writer_goes_on(
    mongodb_uri: str, database_name: str, kind: str
) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        repository = EventRepository(client, database_name, 1)
        await repository.detect_backend()
        await repository.ensure_indexes()
        preparer = convert.EventPreparer("secret")
        writer = EventWriter(repository, preparer, max_group=1, max_delay_s=0)
        samples = valid_event_of_each_type(TENANT)
        event = samples[kind]
        caller = asyncio.create_task(writer.write(event))
        await asyncio.sleep(0)  # one step: the caller submits and waits for its group
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await writer.drain()
        assert await repository.events.count_documents({"key": f"{TENANT}/{event.id}"}) == 1
        # The writer serves the next caller as before.
        later = samples["start_call" if kind == "click" else "click"]
        _, outcome = await writer.write(later)
        assert not isinstance(outcome, Exception)
        assert await repository.events.count_documents({"key": f"{TENANT}/{later.id}"}) == 1
    finally:
        await client.close()
