"""The ledger's record of an event: its recorded form, its digest, and naming what changed."""

from __future__ import annotations

import datetime as dt
import hashlib
import zlib

import bson

from auditlog.ledger import (
    Kind,
    LedgerVerifier,
    VerificationKeys,
    chain_hash,
    changed_fields,
    event_digest,
    field_digests,
    genesis_hash,
    recorded_form,
)
from auditlog.v1 import audit_event_pb2, ledger_pb2, service_pb2
from auditlog_service.ledger import (
    CHAIN_INPUT,
    PACKED_ENTRIES,
    ZIPPED_ENTRIES,
    ZIPPED_KEYS,
    ZLIB_ENTRIES,
    ZLIB_KEYS,
    BlockEntries,
    Commit,
    _entry_starts,
    commit_entry,
    commit_id,
    complete_entry,
    entries_of,
    outbox_doc,
    outbox_keys,
    pack_entries,
    zipped_entries,
)
from tests.event_samples import valid_event_of_each_type


def an_event() -> audit_event_pb2.AuditEvent:
    event = valid_event_of_each_type("acme")["start_call"]
    event.id = "ev-1"
    return event


def entry_of(event: audit_event_pb2.AuditEvent) -> ledger_pb2.LedgerEntry:
    recorded = recorded_form(event)
    return ledger_pb2.LedgerEntry(
        event_id=event.id,
        event_digest=hashlib.sha256(recorded).digest(),
        recorded_event=recorded,
    )


def test_the_recorded_form_leaves_out_positions_and_is_what_the_digest_covers() -> None:
    event = an_event()
    placed = audit_event_pb2.AuditEvent()
    placed.CopyFrom(event)
    placed.sequence, placed.ledger_sequence, placed.ledger_hash = 7, 42, b"h" * 32
    assert recorded_form(placed) == recorded_form(event)
    assert event_digest(placed) == hashlib.sha256(recorded_form(event)).digest()
    assert audit_event_pb2.AuditEvent.FromString(recorded_form(placed)) == event
    # The positions are left out of the form, not out of the event.
    assert (placed.sequence, placed.ledger_sequence, placed.ledger_hash) == (7, 42, b"h" * 32)


def test_a_changed_event_is_compared_with_its_recorded_form_field_by_field() -> None:
    event = an_event()
    entry = entry_of(event)
    assert changed_fields(entry, event) == []
    event.start_call.customer_id = "someone-else"
    event.tenant_user_id = "agent-9"
    assert changed_fields(entry, event) == ["start_call.customer_id", "tenant_user_id"]


def test_recorded_bytes_that_do_not_hash_to_the_digest_name_nothing() -> None:
    event = an_event()
    entry = entry_of(event)
    forged = audit_event_pb2.AuditEvent()
    forged.CopyFrom(event)
    forged.tenant_user_id = "agent-9"
    # Whoever edits the stored event and the recorded form alike cannot steer what is named.
    entry.recorded_event = recorded_form(forged)
    event.start_call.customer_id = "someone-else"
    assert changed_fields(entry, event) == []


def test_entries_of_older_ledgers_name_fields_from_their_field_digests() -> None:
    event = an_event()
    entry = ledger_pb2.LedgerEntry(event_id=event.id, event_digest=event_digest(event))
    for path, digest in field_digests(event).items():
        entry.field_digests[path] = digest
    event.start_call.customer_id = "someone-else"
    assert changed_fields(entry, event) == ["start_call.customer_id"]


def test_block_entries_decode_each_entry_as_the_whole_block_would() -> None:
    for count in (0, 1, 3, 1000):
        entries = [
            {"k": f"key-{i}", "e": f"t/e-{i}", "q": i % 7, "d": bytes([i % 256]) * 32, "x": {}}
            for i in range(count)
        ]
        packed = pack_entries(entries)
        starts = _entry_starts(packed)  # found without decoding: the point of BlockEntries
        assert starts is not None
        assert len(starts) == count
        lazily = BlockEntries({"entries": packed})
        assert len(lazily) == count
        # Out of order, as a newest-first walk asks (past DECODED_APART, the rest whole), twice.
        assert [lazily[i] for i in reversed(range(count))] == entries[::-1]
        assert [lazily[i] for i in range(count)] == entries
        few = BlockEntries({"entries": packed})
        newest = range(count - 1, max(count - 60, 0) - 1, -1)
        assert [few[i] for i in newest] == [entries[i] for i in newest]  # one at a time only
        assert len(BlockEntries({"entries": entries})) == count  # an own commit, unpacked


def test_a_block_takes_its_entries_from_the_commits_it_names_with_its_own_hashes() -> None:
    def entries(writer: str, count: int) -> list[dict[str, object]]:
        # As commit_entry writes them: what follows from the rest is left out.
        return [{"k": f"t/{writer}-{i}", "r": f"event {i}".encode()} for i in range(count)]

    a = entries("wa", 3)
    b = [complete_entry(e) for e in entries("wb", 250)]  # as commits held them before packing
    commits = {
        commit_id("t", "wa", 7): {ZIPPED_ENTRIES: zipped_entries(a)},
        commit_id("t", "wb", 1): {"entries": b},  # a list: left as it is
        # wc's commit 4 is gone: its two entries read as None, the others keep their places
    }
    hashes = [bytes([i]) * 32 for i in range(255)]
    block = {
        "t": "t",
        "parts": [
            {"w": "wa", "n": 7, "c": 3},
            {"w": "wb", "n": 1, "c": 250},
            {"w": "wc", "n": 4, "c": 2},
        ],
        "hashes": b"".join(hashes),
    }
    a = [complete_entry(e) for e in a]  # read back, they are completed
    expected = [{**e, "h": h} for e, h in zip(a + b, hashes, strict=False)] + [None, None]
    lazily = BlockEntries(block, commits)
    assert len(lazily) == 255
    assert [lazily[i] for i in reversed(range(255))] == expected[::-1]
    assert BlockEntries(block, commits).whole() == expected
    assert all("h" not in e for e in b)
    assert BlockEntries(block, {}).whole() == [None] * 255
    # wa's commit as this process keeps its own in memory: packed, with its chain input.
    own = Commit.of_entries("t", "wa", 7, entries("wa", 3), None)
    commits[own.id] = {PACKED_ENTRIES: own.packed, CHAIN_INPUT: own.chain}
    assert BlockEntries(block, commits).whole() == expected


def test_a_commit_entry_leaves_out_what_follows_from_the_rest_and_reads_back_whole() -> None:
    when = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    general = {"_id": "t/ev-1", "key": "t/ev-1", "type": "logged_in", "occur_time": when}
    slotted = {
        **general,
        "_id": "t/s-1/000000000007",
        "key": "t/ev-2",
        "sequence": 7,
        "session_id": "s-1",
        "cobrowse": {"session_id": "s-1", "actor": "AGENT"},
    }
    written = [commit_entry(general, b"one"), commit_entry(slotted, b"two")]
    assert [sorted(e) for e in written] == [["k", "r", "x"], ["e", "k", "q", "r", "x"]]
    (first, second) = bson.decode(pack_entries(written))["e"]
    assert complete_entry(first) == {
        **written[0],
        "e": "t/ev-1",
        "q": 0,
        "d": hashlib.sha256(b"one").digest(),
    }
    assert (complete_entry(second)["e"], second["q"]) == ("t/s-1/000000000007", 7)
    older = {"k": "t/ev-3", "e": "t/ev-3", "q": 0, "d": b"d" * 32, "f": {}}
    assert complete_entry(dict(older)) == older  # entries of older ledgers are left as they are


def test_commit_entries_read_back_the_same_compressed_or_as_written_before() -> None:
    written = [{"k": f"t/ev-{i}", "r": b"event %d" % i, "x": {"t": "logged_in"}} for i in range(50)]
    zipped = {ZIPPED_ENTRIES: zipped_entries(written)}
    assert len(zipped[ZIPPED_ENTRIES]) < len(pack_entries(written)) / 3
    expected = [complete_entry(dict(e)) for e in written]
    assert entries_of(zipped) == expected
    zlib_written = {ZLIB_ENTRIES: zlib.compress(pack_entries(written), 1)}  # 2026-12-04 to -05
    assert entries_of(zlib_written) == expected
    assert entries_of({"entries": pack_entries(written)}) == expected  # before compression
    assert entries_of({ZIPPED_ENTRIES: zipped_entries([])}) == []


def test_outbox_keys_read_back_compressed_packed_or_as_an_array() -> None:
    keys = ["t/ev-1", "t/évé 2", "t/ev-3"]
    outbox = outbox_doc("t/~o/w/000000000001", keys, 0)
    assert ZIPPED_KEYS in outbox
    assert "keys" not in outbox
    assert outbox_keys(outbox) == keys
    assert outbox_keys(outbox_doc("t/~o/w/000000000002", [], 0)) == []
    assert outbox_keys({ZLIB_KEYS: zlib.compress("\n".join(keys).encode(), 1)}) == keys
    assert outbox_keys({"keys": "\n".join(keys).encode()}) == keys  # packed, not compressed
    assert outbox_keys({"keys": keys}) == keys  # an outbox written before keys were packed


def test_block_entries_laid_out_otherwise_are_decoded_whole() -> None:
    entries = [{"k": "a", "e": "t/e", "q": 1, "d": b"1"}, {"k": "b", "e": "t/f", "q": 2, "d": b"2"}]
    other = bson.encode({"x": 1, "e": entries})  # "e" not first: no fast path, same entries
    lazily = BlockEntries({"entries": other})
    assert [lazily[i] for i in range(len(lazily))] == entries


def exported_ledger(count: int) -> list[service_pb2.ExportedEvent]:
    """A tenant's untouched ledger of `count` events, as an export sends it."""
    items, previous = [], genesis_hash("acme")
    for n in range(1, count + 1):
        event = an_event()
        event.id = f"ev-{n}"
        digest = event_digest(event)
        previous = chain_hash(previous, n, 0, digest)
        entry = ledger_pb2.LedgerEntry(
            ledger_sequence=n,
            ledger_hash=previous,
            event_id=event.id,
            event_digest=digest,
            recorded_event=recorded_form(event),
        )
        event.ledger_sequence, event.ledger_hash = n, previous
        items.append(service_pb2.ExportedEvent(event=event, entry=entry))
    return items


def findings_of(items: list[service_pb2.ExportedEvent], window: int) -> list[tuple[int, int]]:
    verifier = LedgerVerifier("acme", VerificationKeys([]))
    verifier.REORDER_WINDOW = window
    for item in items:
        verifier.event(item)
    return sorted((f.kind, f.ledger_sequence) for f in verifier.report.findings)


def swapped(items: list[service_pb2.ExportedEvent], a: int, b: int) -> None:
    """Events a and b stored at each other's places (the server sets each place's positions)."""
    event_a, event_b = audit_event_pb2.AuditEvent(), audit_event_pb2.AuditEvent()
    event_a.CopyFrom(items[a - 1].event)
    event_b.CopyFrom(items[b - 1].event)
    for n, stored in ((a, event_b), (b, event_a)):
        stored.ledger_sequence, stored.ledger_hash = n, items[n - 1].entry.ledger_hash
        items[n - 1].event.CopyFrom(stored)


def test_two_events_swapped_within_the_window_are_named_reordered_and_beyond_it_changed() -> None:
    assert findings_of(exported_ledger(60), window=10) == []
    near = exported_ledger(60)
    swapped(near, 40, 45)
    assert findings_of(near, window=10) == [(Kind.LEDGER_FINDING_KIND_EVENTS_REORDERED, 40)]
    far = exported_ledger(60)
    swapped(far, 5, 45)  # the window (10 recorded digests) forgot 5 when 45 comes
    changed = Kind.LEDGER_FINDING_KIND_EVENT_CHANGED
    assert findings_of(far, window=10) == [(changed, 5), (changed, 45)]
