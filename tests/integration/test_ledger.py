"""The tenant ledger: gap-free sequences, a chain that verifies, and tampering named exactly."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import os
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import pytest_asyncio
from bson.binary import Binary
from google.protobuf import json_format
from pymongo import AsyncMongoClient

from auditlog import AuditLogClient, AuditLogError
from auditlog.ids import new_event_id
from auditlog.ledger import (
    VerificationKeys,
    event_digest,
    verify_export_file,
    verify_ledger,
)
from auditlog.v1 import audit_event_pb2, enums_pb2, ledger_pb2, payloads_pb2, service_pb2
from auditlog_service import changefeed, convert, ledger, ledger_reads
from auditlog_service.changefeed import TickWriter
from auditlog_service.ingest import EventWriter
from auditlog_service.ledger import ZIPPED_ENTRIES, entries_of, pack_entries, zipped_entries
from auditlog_service.server import RunningServer
from auditlog_service.storage import EventRepository
from tests.conftest import sdk, serving, settings_for_test, token, unledgered

TENANT = "acme"
AUDITLOG = str(Path(sys.executable).with_name("auditlog"))
Event = audit_event_pb2.AuditEvent


def general(number: int) -> Event:
    return Event(
        id=new_event_id(),
        tenant_id=TENANT,
        tenant_user_id=f"agent-{number % 3}",
        start_call=payloads_pb2.StartCallAttributes(call_id=f"call-{number}", customer_id="c-1"),
    )


def click(number: int, session: str = "cob-1") -> Event:
    return Event(
        id=new_event_id(),
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(session_id=session, actor=enums_pb2.ACTOR_AGENT),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"el-{number}")),
    )


async def seed(client: AuditLogClient, count: int) -> list[Event]:
    events = [general(n) if n % 2 else click(n) for n in range(count)]
    for start in range(0, count, 100):
        response = await client.log_events(events[start : start + 100])
        assert all(r.WhichOneof("result") == "event" for r in response.results)
    return events


async def head_of(client: AuditLogClient) -> int:
    answer = await client.stub.GetCheckpoint(service_pb2.GetCheckpointRequest(tenant_id=TENANT))
    return answer.head_sequence


async def verify(client: AuditLogClient) -> Any:
    return await verify_ledger(client, TENANT)


@pytest.mark.asyncio
async def test_every_event_gets_one_place_in_a_gap_free_chain_that_verifies(
    client: AuditLogClient,
) -> None:
    events = await seed(client, 250)
    # GetCheckpoint sequences what was acknowledged before it: read your writes.
    assert await head_of(client) == 250
    places = []
    for event in events:
        stored = await client.get_event(TENANT, event.id)
        assert len(stored.ledger_hash) == 32
        places.append(stored.ledger_sequence)
    assert sorted(places) == list(range(1, 251))
    report = await verify(client)
    assert report.ok, report.findings
    assert (report.first_sequence, report.last_sequence, report.events) == (1, 250, 250)
    assert report.checkpoints >= 1


@pytest.mark.asyncio
async def test_get_checkpoint_covers_every_acknowledged_event_after_concurrent_bursts(
    mongodb_uri: str, database_name: str
) -> None:
    """Groups of one process commit concurrently, so their commits may land out of order (small
    groups, several in flight, make that frequent): the head GetCheckpoint sequences to must
    still hold every event acknowledged before it."""
    settings = settings_for_test(
        mongodb_uri, database_name, group_commit_max_events=3, group_commit_in_flight=4
    )
    acknowledged = 0
    async with serving(settings) as server, sdk(f"127.0.0.1:{server.port}") as client:
        for burst in range(12):
            batches = [[general(n) for n in range(2 + (burst + writer) % 5)] for writer in range(8)]
            responses = await asyncio.gather(*(client.log_events(batch) for batch in batches))
            for response in responses:
                assert all(r.WhichOneof("result") == "event" for r in response.results)
            acknowledged += sum(len(batch) for batch in batches)
            assert await head_of(client) == acknowledged, f"burst {burst}"


@pytest.mark.asyncio
async def test_a_group_in_one_insert_commits_in_it_and_one_that_stops_early_commits_after(
    server: RunningServer, client: AuditLogClient, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_store = server.repository.ledger
    assert ledger_store is not None
    inserted_after: list[ledger.Commit] = []
    insert_commit = ledger_store.insert_commit

    async def counted(commit: ledger.Commit) -> None:
        inserted_after.append(commit)
        await insert_commit(commit)

    monkeypatch.setattr(ledger_store, "insert_commit", counted)
    first = [general(n) for n in range(3)] + [click(n) for n in range(3)]
    response = await client.log_events(first)
    assert all(r.WhichOneof("result") == "event" for r in response.results)
    assert inserted_after == []  # the commit was the insert's last document
    commits = [c async for c in db.events.find({"_id": {"$regex": f"^{TENANT}/c/"}})]
    assert len(commits) == 1
    assert sorted(e["k"] for e in entries_of(commits[0])) == sorted(
        f"{TENANT}/{e.id}" for e in first
    )
    # A retry of an event stored before stops the ordered insert at it: what the group then
    # stored is committed after the insert, without the event stored before.
    again = [first[0], general(10), general(11)]
    response = await client.log_events(again)
    assert [r.event.id for r in response.results] == [e.id for e in again]
    assert [sorted(e["k"] for e in entries_of(c.doc())) for c in inserted_after] == [
        sorted(f"{TENANT}/{e.id}" for e in again[1:])
    ]
    assert await head_of(client) == 8
    report = await verify(client)
    assert report.ok, report.findings
    assert report.events == 8


@pytest.mark.asyncio
async def test_commits_written_before_they_moved_beside_the_events_still_read(
    server: RunningServer, client: AuditLogClient, db: Any
) -> None:
    """Commits were written to the ledger collection, uncompressed, until 2026-12-04: a ledger
    whose blocks name such commits still lists, exports and verifies."""
    events = await seed(client, 30)
    assert await head_of(client) == 30
    moved = 0
    async for commit in db.events.find({"_id": {"$regex": f"^{TENANT}/c/"}}):
        older = {"_id": commit["_id"], "at": commit["at"], "entries": pack_entries(
            [{k: e[k] for k in ("k", "r", "x", "e", "q", "d")} for e in entries_of(commit)]
        )}  # fmt: skip
        await db.ledger.insert_one(older)
        await db.events.delete_one({"_id": commit["_id"]})
        moved += 1
    assert moved >= 1
    server.rpcs._ledger()[1]._recent.clear()  # blocks read before, with their entries
    server.repository.ledger._own_commits.clear()  # type: ignore[union-attr]
    listed = [e.id async for e in client.list_events(TENANT)]
    assert sorted(listed) == sorted(e.id for e in events)
    report = await verify(client)
    assert report.ok, report.findings
    assert report.events == 30
    stored = await client.get_event(TENANT, events[7].id)
    assert stored.ledger_sequence > 0


@pytest.mark.asyncio
async def test_the_chain_is_what_the_contract_says_it_is(client: AuditLogClient) -> None:
    """Recomputed here from the contract's words, not with the SDK's helpers."""
    events = await seed(client, 6)
    await head_of(client)
    stored = [await client.get_event(TENANT, e.id) for e in events]
    chain = hashlib.sha256(b"auditlog.v1 ledger\n" + TENANT.encode()).digest()
    for event in sorted(stored, key=lambda e: e.ledger_sequence):
        bare = Event()
        bare.CopyFrom(event)
        for position in ("sequence", "ledger_sequence", "ledger_hash"):
            bare.ClearField(position)
        digest = hashlib.sha256(bare.SerializeToString(deterministic=True)).digest()
        assert event_digest(event) == digest
        chain = hashlib.sha256(
            chain + struct.pack(">QQ", event.ledger_sequence, event.sequence) + digest
        ).digest()
        assert event.ledger_hash == chain


async def ledger_blocks(db: Any) -> list[dict[str, Any]]:
    return [doc async for doc in db.ledger.find({"_id": {"$regex": f"^{TENANT}/b/"}})]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "tampering",
    ["edit", "delete", "insert", "swap", "truncate", "forge checkpoint"],
)
async def test_verify_names_each_kind_of_tampering(
    server: RunningServer, client: AuditLogClient, db: Any, tampering: str
) -> None:
    server.sequencer.checkpoint_every = 1  # a signed checkpoint for each block
    events = await seed(client, 40)
    await head_of(client)
    assert (await verify(client)).ok
    stored = {e.id: await client.get_event(TENANT, e.id) for e in events}
    by_place = sorted(stored.values(), key=lambda e: e.ledger_sequence)
    victim = by_place[10]
    key = f"{TENANT}/{victim.id}"
    expected: set[tuple[str, int]]
    if tampering == "edit":
        doc_id = key if not victim.sequence else f"{TENANT}/cob-1/{victim.sequence:012d}"
        field = "start_call.call_id" if victim.HasField("start_call") else "click.element"
        mongo_field = "start_call.call_id" if victim.HasField("start_call") else "click.element.id"
        await db.events.update_one({"_id": doc_id}, {"$set": {mongo_field: "forged"}})
        expected = {("EVENT_CHANGED", victim.ledger_sequence)}
    elif tampering == "delete":
        doc_id = key if not victim.sequence else f"{TENANT}/cob-1/{victim.sequence:012d}"
        await db.events.delete_one({"_id": doc_id})
        expected = {("EVENT_REMOVED", victim.ledger_sequence)}
    elif tampering == "insert":
        # A forged entry spliced into the ledger after the victim, hashes recomputed after it,
        # as someone with write access but without the signing key could.
        (block,) = [
            b for b in await ledger_blocks(db) if b["first"] <= victim.ledger_sequence <= b["last"]
        ]
        index = victim.ledger_sequence - block["first"]
        # The entry goes into the commit the block names, and the block counts it.
        offset = 0
        for part in block["parts"]:
            if index < offset + part["c"]:
                break
            offset += part["c"]
        commit = await db.events.find_one({"_id": f"{TENANT}/c/{part['w']}/{part['n']:012d}"})
        entries = entries_of(commit)
        forged = dict(entries[index - offset])
        forged["k"] = f"{TENANT}/forged"
        entries.insert(index - offset + 1, forged)
        await db.events.update_one(
            {"_id": commit["_id"]}, {"$set": {ZIPPED_ENTRIES: zipped_entries(entries)}}
        )
        part["c"] += 1
        hashes = bytes(block["hashes"])
        victim_hash = hashes[32 * index : 32 * index + 32]
        block["hashes"] = hashes[: 32 * (index + 1)] + victim_hash + hashes[32 * (index + 1) :]
        block["last"] += 1
        await db.ledger.replace_one({"_id": block["_id"]}, block)
        expected = {("EVENT_INSERTED", victim.ledger_sequence + 1)}
    elif tampering == "swap":
        other = by_place[12]
        assert bool(other.sequence) == bool(victim.sequence)
        ids = [
            key if not e.sequence else f"{TENANT}/cob-1/{e.sequence:012d}" for e in (victim, other)
        ]
        docs = [await db.events.find_one({"_id": i}) for i in ids]
        for doc, target in zip(docs, reversed(ids), strict=True):
            replacement = {k: v for k, v in doc.items() if k != "_id"}
            await db.events.replace_one({"_id": target}, replacement)
        expected = {("EVENTS_REORDERED", victim.ledger_sequence)}
    elif tampering == "truncate":
        # The ledger's end cut with everything that could rebuild it: its block, the commits
        # and outboxes it merged, and its events. Only a signed checkpoint past the cut shows it.
        blocks = sorted(await ledger_blocks(db), key=lambda b: b["first"])
        last = blocks[-1]
        before = blocks[-2]["consumed"] if len(blocks) > 1 else {}
        event_ids = []
        for part in last["parts"]:
            commit = await db.events.find_one({"_id": f"{TENANT}/c/{part['w']}/{part['n']:012d}"})
            event_ids += [e["e"] for e in entries_of(commit)]
        for writer, n in last["consumed"].items():
            for k in range(before.get(writer, 0) + 1, n + 1):
                await db.events.delete_one({"_id": f"{TENANT}/c/{writer}/{k:012d}"})
                await db.events.delete_one({"_id": f"{TENANT}/~o/{writer}/{k:012d}"})
        await db.events.delete_many({"_id": {"$in": event_ids}})
        await db.ledger.delete_one({"_id": last["_id"]})
        server.sequencer.heads.clear()
        expected = {("LEDGER_TRUNCATED", last["first"])}
    else:
        checkpoint = await db.ledger.find_one({"_id": {"$regex": f"^{TENANT}/cp/"}})
        signature = bytearray(checkpoint["sig"])
        signature[0] ^= 0xFF
        await db.ledger.update_one(
            {"_id": checkpoint["_id"]}, {"$set": {"sig": Binary(bytes(signature))}}
        )
        expected = {("CHECKPOINT_FORGED", checkpoint["seq"])}
    report = await verify(client)
    found = {(f.kind_name, f.ledger_sequence) for f in report.findings}
    assert expected <= found, report.findings
    if tampering == "edit":
        (finding,) = [f for f in report.findings if f.kind_name == "EVENT_CHANGED"]
        assert finding.fields == (field,)
        assert finding.event_id == victim.id


@pytest.mark.asyncio
async def test_a_stored_event_no_ledger_entry_names_is_found_by_the_server(
    client: AuditLogClient, db: Any
) -> None:
    await seed(client, 3)
    await head_of(client)
    forged = {
        "_id": f"{TENANT}/forged-1", "key": f"{TENANT}/forged-1", "id": "forged-1",
        "tenant_id": TENANT, "type": "LOGGED_IN", "tenant_user_id": "mallory",
        "occur_time": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "receive_time": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "fingerprint": "x", "logged_in": {},
    }  # fmt: skip
    await db.events.insert_one(forged)
    request = service_pb2.VerifyLedgerRequest(tenant_id=TENANT)
    answers = [r async for r in client.stub.VerifyLedger(request)]
    findings = [a.finding for a in answers if a.WhichOneof("kind") == "finding"]
    assert [(f.kind, f.event_id) for f in findings] == [
        (ledger_pb2.LEDGER_FINDING_KIND_EVENT_INSERTED, "forged-1")
    ]
    assert answers[-1].summary.events == 3


async def run_cli(server: RunningServer, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        AUDITLOG, *args, "--addr", f"127.0.0.1:{server.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AUDITLOG_TOKEN": token()},
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_an_export_resumes_from_a_cursor_equals_the_list_and_verifies_offline(
    server: RunningServer, client: AuditLogClient, tmp_path: Path
) -> None:
    events = await seed(client, 300)
    code, jsonl, err = await run_cli(server, "export", "--tenant", TENANT)
    assert code == 0, err
    lines = [json.loads(line) for line in jsonl.splitlines()]
    exported = [line["event"]["event"]["id"] for line in lines if "event" in line]
    assert sorted(exported) == sorted(e.id for e in events)
    # Resumed halfway, the rest is exactly the second half.
    half = [line for line in lines if "event" in line][149]["cursor"]
    code, rest, err = await run_cli(server, "export", "--tenant", TENANT, "--cursor", half)
    assert code == 0, err
    resumed = [json.loads(x)["event"]["event"]["id"] for x in rest.splitlines() if '"event"' in x]
    assert resumed == exported[150:]
    listed = {e.id: unledgered(e) async for e in client.list_events(TENANT)}
    for line in lines:
        if "event" in line:
            item = service_pb2.ExportEventsResponse()
            json_format.ParseDict(line, item)
            assert unledgered(item.event.event) == listed[item.event.event.id]
    keys_file = tmp_path / "keys.json"
    code, keys_json, err = await run_cli(server, "keys")
    assert code == 0, err
    keys_file.write_text(keys_json)
    export_file = tmp_path / "export.jsonl"
    export_file.write_text(jsonl)
    report = verify_export_file(
        str(export_file), TENANT, VerificationKeys.from_file(str(keys_file))
    )
    assert report.ok, report.findings
    assert report.events == 300
    code, out, err = await run_cli(
        server, "verify", "--tenant", TENANT, "--file", str(export_file), "--keys", str(keys_file)
    )
    assert code == 0, out + err
    assert "OK: the ledger verifies" in out
    # A checkpoint kept outside the service is a witness the ledger must still agree with.
    code, witness_json, err = await run_cli(server, "checkpoint", "--tenant", TENANT)
    assert code == 0, err
    witness = json_format.Parse(witness_json, ledger_pb2.Checkpoint())
    assert 1 <= witness.ledger_sequence <= 300
    witness_file = tmp_path / "witness.json"
    witness_file.write_text(witness_json)
    code, out, err = await run_cli(
        server, "verify", "--tenant", TENANT, "--witness", str(witness_file)
    )
    assert code == 0, out + err
    witness.ledger_hash = bytes(32)
    witness_file.write_text(json_format.MessageToJson(witness))
    code, out, err = await run_cli(
        server, "verify", "--tenant", TENANT, "--witness", str(witness_file)
    )
    assert code == 2
    assert f"CHECKPOINT_FORGED at {witness.ledger_sequence}" in out
    code, csv_text, err = await run_cli(server, "export", "--tenant", TENANT, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert sorted(r["id"] for r in rows) == sorted(e.id for e in events)
    assert {r["display_name"] for r in rows} == {"[Call] Start", "Clicked on element"}
    code, csv_text, err = await run_cli(
        server, "export", "--tenant", TENANT, "--format", "csv", "--type", "CLICK"
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert sorted(r["id"] for r in rows) == sorted(e.id for e in events if e.HasField("click"))


def export_items(responses: list[service_pb2.ExportEventsResponse]) -> list[tuple[str, int]]:
    """What an export carried, in order: ("event", ledger sequence) and ("checkpoint", sequence),
    a batch's events one by one."""
    items: list[tuple[str, int]] = []
    for response in responses:
        kind = response.WhichOneof("item")
        if kind == "batch":
            items += [("event", e.entry.ledger_sequence) for e in response.batch.events]
        elif kind == "event":
            items.append(("event", response.event.entry.ledger_sequence))
        elif kind == "checkpoint":
            items.append(("checkpoint", response.checkpoint.ledger_sequence))
    return items


@pytest.mark.asyncio
async def test_a_batched_export_carries_what_a_single_one_does_and_resumes_inside_a_batch(
    server: RunningServer, client: AuditLogClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.sequencer.checkpoint_every = 1  # a signed checkpoint for each block
    # Small fetches: many of them, several under way at once (ledger_reads.FETCHES_AHEAD).
    monkeypatch.setattr(ledger_reads, "FETCH_BATCH", 11)
    await seed(client, 300)
    assert await head_of(client) == 300

    async def export(**fields: Any) -> list[service_pb2.ExportEventsResponse]:
        request = service_pb2.ExportEventsRequest(tenant_id=TENANT, **fields)
        return [item async for item in client.stub.ExportEvents(request)]

    single = await export()
    batched = await export(events_per_message=7)
    assert {r.WhichOneof("item") for r in single} == {"event", "checkpoint"}
    assert {r.WhichOneof("item") for r in batched} == {"batch", "checkpoint"}
    assert export_items(batched) == export_items(single)
    assert [i for i in export_items(single) if i[0] == "event"] == [
        ("event", n) for n in range(1, 301)
    ]
    batches = [r for r in batched if r.WhichOneof("item") == "batch"]
    assert max(len(b.batch.events) for b in batches) == 7
    for response in batches:
        assert response.cursor == response.batch.events[-1].cursor
    for single_item, event in zip(
        (r for r in single if r.WhichOneof("item") == "event"),
        (e for b in batches for e in b.batch.events),
        strict=True,
    ):
        assert event.event == single_item.event.event
        assert event.entry == single_item.event.entry
    # Resumed after the third event of a batch: exactly what followed it.
    middle = batches[len(batches) // 2].batch.events[2]
    rest = await export(cursor=middle.cursor, events_per_message=7)
    after = [i for i in export_items(rest) if i[0] == "event"]
    assert after == [("event", n) for n in range(middle.entry.ledger_sequence + 1, 301)]
    assert (await verify(client)).ok


@pytest.mark.asyncio
async def test_a_filtered_export_holds_what_list_events_finds_in_ledger_order(
    client: AuditLogClient,
) -> None:
    events = await seed(client, 120)
    events.append(general(999))
    events[-1].start_call.customer_id = "c-rare"
    await client.log_events(events[-1:])
    assert await head_of(client) == 121
    filters = {
        "clicks": service_pb2.EventFilter(event_types=[enums_pb2.EVENT_TYPE_CLICK]),
        "one customer": service_pb2.EventFilter(customer_id="c-rare"),
        "an agent's calls": service_pb2.EventFilter(
            tenant_user_id="agent-1", event_types=[enums_pb2.EVENT_TYPE_START_CALL]
        ),
    }
    expected = {
        "clicks": {e.id for e in events if e.HasField("click")},
        "one customer": {events[-1].id},
        "an agent's calls": {
            e.id for e in events if e.HasField("start_call") and e.tenant_user_id == "agent-1"
        },
    }
    for name, filt in filters.items():
        exported = [
            (item.event.entry.ledger_sequence, item.event.event.id)
            async for item in client.export_events(TENANT, filter=filt)
            if item.WhichOneof("item") == "event"
        ]
        listed = {event.id async for event in client.list_events(TENANT, filter=filt)}
        assert listed == expected[name], name
        assert {event_id for _, event_id in exported} == listed, name
        sequences = [sequence for sequence, _ in exported]
        assert sequences == sorted(sequences), name


@pytest.mark.asyncio
async def test_the_sdk_export_yields_single_items_that_resume_and_needs_the_export_scope(
    server: RunningServer, client: AuditLogClient
) -> None:
    server.sequencer.checkpoint_every = 1
    await seed(client, 120)
    assert await head_of(client) == 120
    single = [
        item
        async for item in client.stub.ExportEvents(
            service_pb2.ExportEventsRequest(tenant_id=TENANT)
        )
    ]
    items = [item async for item in client.export_events(TENANT)]
    assert [i.WhichOneof("item") for i in items] == [i.WhichOneof("item") for i in single]
    assert export_items(items) == export_items(single)
    events = [i for i in items if i.WhichOneof("item") == "event"]
    assert all(i.cursor and not i.event.cursor for i in events)
    assert [i.event.event for i in events] == [
        i.event.event for i in single if i.WhichOneof("item") == "event"
    ]
    rest = [item async for item in client.export_events(TENANT, cursor=events[99].cursor)]
    assert [i[1] for i in export_items(rest) if i[0] == "event"] == list(range(101, 121))
    reader = AuditLogClient(f"127.0.0.1:{server.port}", token=token(TENANT, ["events:read"]))
    async with reader:
        with pytest.raises(AuditLogError) as denied:
            async for _ in reader.export_events(TENANT):
                pass
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.asyncio
async def test_tail_events_follows_the_whole_tenant_and_resumes_from_its_cursor(
    client: AuditLogClient,
) -> None:
    await seed(client, 20)
    tail = client.tail_events(TENANT)
    seen: list[int] = []
    async for event in tail:
        seen.append(event.ledger_sequence)
        if event.ledger_sequence == 20:
            break
    assert seen == list(range(1, 21))
    await seed(client, 5)
    resumed = client.tail_events(TENANT, cursor=tail.cursor)
    more = []
    async for event in resumed:
        more.append(event.ledger_sequence)
        if len(more) == 5:
            break
    assert more == list(range(21, 26))


@pytest.mark.asyncio
async def test_checkpoints_are_found_at_any_sequence_and_in_any_range(
    server: RunningServer, client: AuditLogClient
) -> None:
    server.sequencer.checkpoint_every = 1  # a signed checkpoint for each block
    for _ in range(9):
        await seed(client, 7)
        await head_of(client)  # one block per batch of 7
    store = server.sequencer.store
    every = await store.checkpoints_between(TENANT, 1, 63)
    signed = [c.ledger_sequence for c in every]
    assert signed == sorted(signed)
    assert signed[-1] == 63
    assert len(signed) >= 9
    for at in [1, 6, 7, 8, 20, 62, 63, 64]:
        answer = await client.stub.GetCheckpoint(
            service_pb2.GetCheckpointRequest(tenant_id=TENANT, at_sequence=at)
        )
        expected = max((s for s in signed if s <= at), default=0)
        assert answer.checkpoint.ledger_sequence == expected, at
    for first, last in [(1, 63), (8, 8), (8, 20), (21, 27), (60, 100), (64, 80)]:
        between = await store.checkpoints_between(TENANT, first, last)
        assert [c.ledger_sequence for c in between] == [s for s in signed if first <= s <= last]


@pytest_asyncio.fixture
async def sequencer(server: RunningServer) -> ledger.Sequencer:
    """The server's sequencer with its background worker stopped: only the test's calls
    sequence."""
    await server.ledger_worker.close()
    return server.sequencer


@pytest.mark.asyncio
async def test_a_sweep_that_writes_many_blocks_looks_once_and_signs_as_it_goes(
    sequencer: ledger.Sequencer, client: AuditLogClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(6):
        await seed(client, 10)  # six commits waiting
    # One commit per block and one block per insert: six rounds in one call, as a call under
    # sustained load makes.
    monkeypatch.setattr(ledger, "MAX_BLOCK_ENTRIES", 10)
    monkeypatch.setattr(ledger, "BLOCKS_PER_INSERT", 1)
    sequencer.checkpoint_every = 20
    store = sequencer.store
    list_reads = 0
    read_writers = store._read_writers

    async def counted(tenant_id: str) -> list[str]:
        nonlocal list_reads
        list_reads += 1
        return await read_writers(tenant_id)

    monkeypatch.setattr(store, "_read_writers", counted)
    head = await sequencer.sequence(TENANT, probe_holes=True, defer=True)
    assert head.sequence == 60
    assert head.block == 6
    assert list_reads == 1, "the writer list is read once per call, not once per round"
    signed = [c.ledger_sequence for c in await store.checkpoints_between(TENANT, 1, 60)]
    # The first head this process sees is signed at once, then every 20 events, as the blocks
    # are written (a call under sustained load may not end for a long time).
    assert signed == [10, 30, 50]
    assert (await verify(client)).ok


@pytest.mark.asyncio
@pytest.mark.parametrize("defer", [True, False])
async def test_a_background_pass_leaves_commits_made_during_its_insert_to_the_next_pass(
    sequencer: ledger.Sequencer,
    client: AuditLogClient,
    monkeypatch: pytest.MonkeyPatch,
    defer: bool,
) -> None:
    await seed(client, 3)  # one commit waiting
    write_blocks = sequencer._write_blocks
    inserts = 0

    async def with_a_commit_meanwhile(blocks: list[Any]) -> int:
        nonlocal inserts
        inserts += 1
        if inserts == 1:
            await seed(client, 2)  # a group commits while the pass's insert is on its way
        return await write_blocks(blocks)

    monkeypatch.setattr(sequencer, "_write_blocks", with_a_commit_meanwhile)
    head = await sequencer.sequence(TENANT, defer=defer)
    if defer:
        # The background worker: no backlog, so one insert; the worker's next pass (a gather
        # later) takes the new commit together with those that follow it.
        assert (head.sequence, inserts) == (3, 1)
        head = await sequencer.sequence(TENANT, defer=True)
    # A call that does not defer (an RPC's) sequences everything ready before it returns.
    assert (head.sequence, head.block, inserts) == (5, 2, 2)
    assert (await verify(client)).ok


OtherProcess = Callable[
    [str], contextlib.AbstractAsyncContextManager[tuple[EventWriter, ledger.LedgerStore]]
]


@pytest.fixture
def another_process(mongodb_uri: str, database_name: str) -> OtherProcess:
    """Opens the writer and ledger store of another process of the service on the test's
    database, as the writer id it is given."""

    @contextlib.asynccontextmanager
    async def opened(writer_id: str) -> AsyncIterator[tuple[EventWriter, ledger.LedgerStore]]:
        client: AsyncMongoClient[convert.Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
        try:
            repository = EventRepository(client, database_name, 1)
            await repository.detect_backend()
            store = ledger.LedgerStore(client[database_name]["ledger"], repository.events)
            repository.attach_ledger(store, writer_id)
            preparer = convert.EventPreparer("other")
            yield EventWriter(repository, preparer, max_group=100, max_delay_s=0), store
        finally:
            await client.close()

    return opened


@pytest.fixture
def store_reads(sequencer: ledger.Sequencer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The `_id`s the sequencer's store reads (commits, blocks, lists), in order, as they come."""
    reads: list[str] = []
    read, read_commit = sequencer.store.get, sequencer.store.get_commit

    async def recorded(_id: str) -> convert.Document | None:
        reads.append(_id)
        return await read(_id)

    async def recorded_commit(cid: str, *, older_too: bool = True) -> convert.Document | None:
        reads.append(cid)
        return await read_commit(cid, older_too=older_too)

    monkeypatch.setattr(sequencer.store, "get", recorded)
    monkeypatch.setattr(sequencer.store, "get_commit", recorded_commit)
    return reads


@pytest.mark.asyncio
async def test_quiet_writers_are_looked_at_by_sweeps_only_and_what_they_write_later_lands(
    sequencer: ledger.Sequencer,
    client: AuditLogClient,
    another_process: OtherProcess,
    store_reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = sequencer.store
    # Another process's writer, which writes an event and then nothing for a while.
    async with another_process("other-writer") as (writer, _):
        await writer.write(general(1))
        # Writers of processes that stopped: every start adds one to each tenant it writes.
        for k in range(5):
            await store.register_writer(TENANT, f"stopped-{k}")
        await seed(client, 10)  # this process's own writer
        assert (await sequencer.sequence(TENANT, defer=True)).sequence == 11
        monkeypatch.setattr(ledger, "QUIET_WRITER_S", 0.0)  # every other writer is quiet now
        await writer.write(general(2))
        await seed(client, 4)
        reads = store_reads
        reads.clear()
        between_sweeps = await sequencer.sequence(TENANT, defer=True)
        assert between_sweeps.sequence == 15, "this process's own commits, at hand"
        assert not [r for r in reads if "/stopped-" in r or "/other-writer/" in r], reads
        swept = await sequencer.sequence(TENANT, probe_holes=True, defer=True)
        assert swept.sequence == 16, "a sweep finds the quiet writer's new commit"
        assert any("/stopped-" in r for r in reads)
    assert (await verify(client)).ok


@pytest.mark.asyncio
async def test_sweeps_read_dead_writers_until_nothing_is_left_and_leave_live_ones_to_them(
    sequencer: ledger.Sequencer,
    client: AuditLogClient,
    another_process: OtherProcess,
    store_reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = sequencer.store
    live = {"live-writer"}  # the processes that beat, as this process's tick reader sees them
    monkeypatch.setattr(sequencer, "_process_live", live.__contains__)

    def writers_read() -> set[str]:
        """The writers whose commits were read since the last call."""
        found = {r.split("/")[2] for r in store_reads if r.startswith(f"{TENANT}/c/")}
        store_reads.clear()
        return found

    async with (
        another_process("live-writer") as (live_writer, _),
        another_process("dead-writer") as (dead_writer, _),
    ):
        await live_writer.write(general(1))
        await dead_writer.write(general(2))
        for k in range(3):
            await store.register_writer(TENANT, f"stopped-{k}")
        await seed(client, 4)
        own = next(w for w in await store.writers(TENANT) if store.writes_as(TENANT, w))
        first = await sequencer.sequence(TENANT, probe_holes=True, defer=True)
        assert first.sequence == 6
        looked = {"live-writer", "dead-writer", "stopped-0", "stopped-1", "stopped-2"}
        assert writers_read() >= looked, "a first sweep looks at every writer"
        # The stopped writers had nothing left; the dead one had a commit, so the next sweep
        # looks once more and finds nothing left of it either.
        assert (await sequencer.sequence(TENANT, probe_holes=True, defer=True)).sequence == 6
        assert writers_read() == {"dead-writer"}
        # After that, a sweep reads no commit: the live writer is its own process's business,
        # and this process knows it numbered no outbox past the head.
        assert (await sequencer.sequence(TENANT, probe_holes=True, defer=True)).sequence == 6
        assert writers_read() == set()
        # A finished writer whose process is seen to beat (or stop) again is looked at again.
        sequencer.liveness_changed("stopped-1")
        assert (await sequencer.sequence(TENANT, probe_holes=True, defer=True)).sequence == 6
        assert writers_read() == {"stopped-1"}
        await live_writer.write(general(3))
        assert (await sequencer.sequence(TENANT, probe_holes=True, defer=True)).sequence == 6
        assert writers_read() == set(), "a sweep leaves a live writer to its own process"
        # An RPC's call (GetCheckpoint, verify) takes everything acknowledged: live writers'
        # commits too, but not the finished writers'.
        assert (await sequencer.sequence(TENANT)).sequence == 7
        assert writers_read() == {"live-writer"}
        # A writer taken for dead that beats again is read again ...
        live.add("dead-writer")
        await dead_writer.write(general(4))
        assert (await sequencer.sequence(TENANT)).sequence == 8
        assert "dead-writer" in writers_read()
        # ... and every writer is looked at by a sweep now and then, whatever it seemed.
        live.discard("dead-writer")
        await dead_writer.write(general(5))
        await seed(client, 1)
        monkeypatch.setattr(ledger, "LOOK_ANYWAY_S", 0.0)
        assert (await sequencer.sequence(TENANT, probe_holes=True, defer=True)).sequence == 10
        assert writers_read() >= looked | {own}
    assert (await verify(client)).ok


@pytest.mark.asyncio
async def test_blocks_name_recent_writers_and_archives_the_quiet_ones_without_losing_a_place(
    sequencer: ledger.Sequencer,
    client: AuditLogClient,
    another_process: OtherProcess,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger, "ARCHIVE_AFTER_WRITERS", 4)
    monkeypatch.setattr(ledger, "QUIET_WRITER_S", 0.0)  # every writer is quiet at once
    names = [f"gone-{k}" for k in range(12)]
    async with contextlib.AsyncExitStack() as stack:
        writers = [(await stack.enter_async_context(another_process(n)))[0] for n in names]
        # Two rounds of six writers: two archives, the second naming the first.
        for round_ in (0, 1):
            for k in range(6):
                await writers[6 * round_ + k].write(general(100 * round_ + k))
            head = await sequencer.sequence(TENANT)
            assert head.sequence == 6 * (round_ + 1)
        blocks = sorted(await ledger_blocks(db), key=lambda b: b["first"])
        assert [len(b["consumed"]) for b in blocks] == [0, 0], "every writer went to an archive"
        first, second = [await db.ledger.find_one({"_id": b["arch"]}) for b in blocks]
        assert second["prev"] == first["_id"]
        assert set(first["consumed"]) == set(names[:6])
        assert set(second["consumed"]) == set(names[6:])
        # A process that starts now reads the whole chain: every writer where it was.
        async with another_process("fresh") as (_, store):
            fresh = ledger.Sequencer(store, sequencer.signer)
            head = await fresh.current(TENANT)
            assert dict(head.consumed) == dict.fromkeys(names, 1)
            # An archived writer that writes again is taken from where it was, once.
            await writers[2].write(general(500))
            await writers[9].write(general(501))
            assert (await fresh.sequence(TENANT)).sequence == 14
            assert (await sequencer.sequence(TENANT)).sequence == 14
            assert (await fresh.current(TENANT)).consumed["gone-2"] == 2
    await seed(client, 3)
    assert (await sequencer.sequence(TENANT)).sequence == 17
    report = await verify(client)
    assert report.ok
    assert (report.events, report.last_sequence) == (17, 17)


@pytest.mark.asyncio
async def test_the_tick_reader_tells_live_processes_from_stopped_ones(
    server: RunningServer, db: Any
) -> None:
    reader = server.tick_reader
    changes: list[str] = []
    reader.on_liveness_change = changes.append
    await reader._refresh_processes()
    other = TickWriter(db)
    try:
        await other.fresh_beat()
        await reader._refresh_processes()
        assert reader.is_live(other.process_id)
        assert changes.count(other.process_id) == 1  # (other tests' servers may come and go)
    finally:
        await other.close()  # a graceful stop says goodbye
    await reader._refresh_processes()
    assert not reader.is_live(other.process_id)
    assert changes.count(other.process_id) == 2
    assert reader.is_live(server.tick_writer.process_id), "its own process"


@pytest.mark.asyncio
async def test_a_process_beats_before_it_commits_unless_it_beat_a_moment_ago(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = TickWriter(db)
    processes = db["tail_processes"]
    try:
        await writer.fresh_beat()
        assert (await processes.find_one({"_id": writer.process_id}))["beat"] == 1
        await writer.fresh_beat()
        assert (await processes.find_one({"_id": writer.process_id}))["beat"] == 1
        monkeypatch.setattr(changefeed, "FRESH_BEAT_S", 0.0)  # that beat is old now
        await writer.fresh_beat()
        assert (await processes.find_one({"_id": writer.process_id}))["beat"] == 2
    finally:
        await writer.close()


@pytest.mark.asyncio
async def test_a_sequencer_that_defers_takes_over_when_the_other_passes_its_commits_over(
    sequencer: ledger.Sequencer,
    client: AuditLogClient,
    another_process: OtherProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await seed(client, 4)
    assert (await sequencer.sequence(TENANT, defer=True)).sequence == 4
    async with another_process("rival-writer") as (writer, store):
        rival = ledger.Sequencer(store, sequencer.signer)
        await writer.write(general(1))
        assert (await rival.sequence(TENANT, defer=True)).block == 2
        # This process, unaware of block 2, loses the race for it: it defers to the rival.
        await seed(client, 4)
        lost = await sequencer.sequence(TENANT, defer=True)
        assert lost.block == 2
        assert lost.sequence == 5
        # The rival now takes this process's writer for quiet and writes on without it.
        monkeypatch.setattr(ledger, "QUIET_WRITER_S", 0.0)
        await writer.write(general(2))
        assert (await rival.sequence(TENANT, defer=True)).sequence == 6
        monkeypatch.setattr(ledger, "OWN_COMMIT_PATIENCE_S", 0.0)  # waited long enough
        taken = await sequencer.sequence(TENANT, defer=True)
        assert taken.sequence == 10, "this process sequenced its passed-over commits itself"
    assert (await verify(client)).ok


@pytest.mark.asyncio
async def test_a_writer_another_sequencer_is_seen_sequencing_is_read_by_this_ones_passes(
    sequencer: ledger.Sequencer,
    client: AuditLogClient,
    another_process: OtherProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two replicas writing one tenant: each sequencer's passes read the other's writer while
    the ledger shows it writing, even when its own process sequenced what it wrote."""
    clock = [time.monotonic()]
    monkeypatch.setattr(ledger, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    await seed(client, 4)
    assert (await sequencer.sequence(TENANT, defer=True)).sequence == 4
    async with another_process("rival-writer") as (writer, store):
        rival = ledger.Sequencer(store, sequencer.signer)
        await writer.write(general(1))
        assert (await sequencer.sequence(TENANT)).sequence == 5  # heard from, now
        clock[0] += 2 * ledger.QUIET_WRITER_S  # ... and long ago
        # The rival's own process sequences what it writes: this one sees its blocks only.
        await writer.write(general(2))
        assert (await rival.sequence(TENANT, defer=True)).sequence == 6
        await writer.write(general(3))
        assert (await sequencer.current(TENANT)).sequence == 6
        await seed(client, 2)
        passed = await sequencer.sequence(TENANT, defer=True)  # a pass between sweeps
        assert passed.sequence == 9, "the rival's waiting commit went in with this one's"
    assert (await verify(client)).ok


@pytest.mark.asyncio
async def test_tails_of_a_tenant_take_a_block_read_lately_without_reading_it_again(
    server: RunningServer, client: AuditLogClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.log_events([general(n) for n in range(400)])  # one block, two tail batches
    assert await head_of(client) == 400
    store = server.sequencer.store
    reads: list[int] = []
    read_block = store.block

    async def counted(tenant_id: str, b: int) -> Any:
        reads.append(b)
        return await read_block(tenant_id, b)

    monkeypatch.setattr(store, "block", counted)
    for _ in range(2):  # one tail after the other
        seen = []
        async for event in client.tail_events(TENANT):
            seen.append(event.ledger_sequence)
            if event.ledger_sequence == 400:
                break
        assert seen == list(range(1, 401))
    assert reads.count(1) == 1, reads


@pytest.mark.asyncio
async def test_a_head_read_while_a_block_lands_does_not_move_the_cached_head_back(
    server: RunningServer, client: AuditLogClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(client, 10)
    assert await head_of(client) == 10
    sequencer = server.sequencer
    real_head = sequencer.store.head

    async def head_then_a_block_lands(tenant_id: str, known: Any = None) -> Any:
        found = await real_head(tenant_id, known)  # the head before the block
        monkeypatch.setattr(sequencer.store, "head", real_head)
        await seed(client, 6)
        await sequencer.sequence(TENANT)  # the block lands while the read is out
        return found

    monkeypatch.setattr(sequencer.store, "head", head_then_a_block_lands)
    head = await sequencer.current(TENANT)
    assert head.sequence == 16
    assert sequencer.heads[TENANT].sequence == 16


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_tenant_tail_reads_on_when_its_process_cached_an_older_head(
    server: RunningServer, client: AuditLogClient
) -> None:
    """A tail that heard of a block while the process's cached head is older (a head read that
    raced the block) reads the head again: before the fix it asked the stale cache in a loop
    that never yielded, and the whole process stopped answering."""
    await seed(client, 10)
    assert await head_of(client) == 10
    sequencer = server.sequencer
    stale = sequencer.heads[TENANT]
    tell_the_tails = sequencer.on_block

    def block_then_an_older_head_cached(tenant_id: str, head: Any) -> None:
        tell_the_tails(tenant_id, head)
        sequencer.heads[tenant_id] = stale

    sequencer.on_block = block_then_an_older_head_cached
    tail = client.tail_events(TENANT)
    seen: list[int] = []
    async for event in tail:
        seen.append(event.ledger_sequence)
        if event.ledger_sequence == 10:
            await seed(client, 5)
            await head_of(client)  # sequences the 5: the tail hears of their block
        if event.ledger_sequence == 15:
            break
    assert seen == list(range(1, 16))


@pytest.mark.asyncio
async def test_retention_cuts_old_events_behind_a_signed_anchor_and_the_rest_verifies(
    server: RunningServer, client: AuditLogClient, db: Any
) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    aged = [general(n) for n in range(10)] + [click(n, session="cob-old") for n in range(5)]
    for event in aged:
        event.occur_time.FromDatetime(old)
    await client.log_events(aged)
    # Sequenced before the fresh events come: blocks of aged events only, which retention
    # removes whole, with their commits (a block holding both kinds stays).
    assert await head_of(client) == 15
    fresh = await seed(client, 10)
    await head_of(client)
    request = service_pb2.SetRetentionRequest(tenant_id=TENANT)
    request.retention.FromTimedelta(dt.timedelta(days=7))
    await client.stub.SetRetention(request)
    # Two replicas' jobs at once: one anchor, every event removed once.
    removed = await asyncio.gather(server.retention.run_once(), server.retention.run_once())
    assert sum(r.get(TENANT, 0) for r in removed) > 0
    anchors = [a async for a in db.ledger.find({"_id": {"$regex": f"^{TENANT}/a/"}})]
    assert len(anchors) == 1
    assert anchors[0]["first"] == 16
    for event in aged:
        assert await db.events.count_documents({"id": event.id, "type": {"$exists": True}}) == 0
    # Nor do the commits keep their recorded forms: a block's commits go with it.
    committed = set()
    async for commit in db.events.find({"_id": {"$regex": f"^{TENANT}/c/"}}):
        committed |= {e["k"].partition("/")[2] for e in entries_of(commit)}
    assert committed == {e.id for e in fresh}
    # ... and their placements and outboxes went with them: one of each per commit kept.
    kept = {c["_id"] async for c in db.events.find({"_id": {"$regex": f"^{TENANT}/c/"}})}
    placed = {p["_id"] async for p in db.ledger.find({"_id": {"$regex": f"^{TENANT}/p/"}})}
    boxes = {o["_id"] async for o in db.events.find({"_id": {"$regex": f"^{TENANT}/~o/"}})}
    assert {i.replace("/p/", "/c/") for i in placed} == kept
    assert {i.replace("/~o/", "/c/") for i in boxes} == kept
    listed = {e.id async for e in client.list_events(TENANT)}
    assert listed == {e.id for e in fresh}
    report = await verify(client)
    assert report.ok, report.findings
    assert report.first_sequence == 16
    assert "retention anchor at sequence 16" in report.start
    # The old session's later events still tail from its new start.
    await client.log_event(click(99, session="cob-old"))
    async for event in client.tail_session(TENANT, "cob-old"):
        assert event.sequence == 6
        break
