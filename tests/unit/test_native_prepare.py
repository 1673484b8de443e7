"""The native preparer against the rules in convert: their results byte for byte, or a decline."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from typing import Any

import bson
import pytest
from bson.datetime_ms import DatetimeMS
from bson.objectid import ObjectId
from google.protobuf.message import DecodeError

from auditlog.ledger import chain_hash
from auditlog.v1.audit_event_pb2 import AuditEvent
from auditlog_service import _native, convert, ledger
from auditlog_service.ingest import EventWriter
from auditlog_service.storage import EventWrite
from tests.event_samples import valid_event_of_each_type

PREPARER = convert.EventPreparer("test secret")
NATIVE = PREPARER.native()
RECEIVED = DatetimeMS(1_767_323_045_678)
# Payloads holding free-form data in the samples: the native preparer leaves them to the rules.
FREE_FORM = {"plugin_change", "settings_change", "meeting_change", "custom_event"}


def _by_rules(event: AuditEvent, event_id: str) -> tuple[Any, ...]:
    """What ingest.EventWriter.prepare made of the event before the native preparer."""
    copy = AuditEvent()
    copy.CopyFrom(event)
    prepared = PREPARER.prepare(copy, owned=True)
    doc = convert.to_document(prepared, event_id=event_id, receive_time=RECEIVED)
    recorded = convert.recorded_event(prepared, event_id=event_id, receive_time=RECEIVED)
    return doc, prepared.occur_time_given, recorded, convert.sequence_position(prepared, recorded)


# The keys of each document the native preparer made, by event id (see _assert_raw).
BODY_KEYS: dict[str, int] = {}
# What the writer's (slim) documents leave out beside the payload: only their BSON holds it.
SLIM_LEAVES_OUT = {"tenant_user_id", "cobrowse", "session_id", "customer_id", "call_id"}


def _natively(event: AuditEvent | bytes, event_id: str) -> tuple[Any, ...] | None:
    serialized = event if isinstance(event, bytes) else event.SerializeToString()
    native = NATIVE.prepare(serialized, event_id, RECEIVED, int(RECEIVED))
    if native is not None:
        BODY_KEYS[event_id] = len(native[0])
    return native


def _assert_same(native: tuple[Any, ...], rules: tuple[Any, ...]) -> None:
    doc, given, recorded, sequence_at, filters, body, session = native
    # The ledger entry's filters as BSON, as they would be encoded in the entry.
    assert filters == bson.encode(ledger.filter_fields(rules[0]))
    # The co-browsing event's (tenant, session) that storage keeps its session's order by.
    assert session == convert.session_key(rules[0])
    assert (session is None) == ("cobrowse" not in rules[0])
    # The document's BSON (what is stored, keys in order) and its repr (the Python types too:
    # a DatetimeMS and a datetime make the same BSON date).
    assert bson.encode(doc) == bson.encode(rules[0])
    assert repr(doc) == repr(rules[0])
    assert (given, recorded, sequence_at) == rules[1:]
    # The document as inserted: its BSON, as made and with what storage adds (the outbox; a
    # co-browsing event's slot, sequence and run end, one round and another).
    _assert_raw(body, dict(rules[0]))
    doc = dict(rules[0])
    doc["ob"] = "t/ob/00000000000000000042"
    _assert_raw(body, doc)
    if "cobrowse" in doc:
        for sequence, run_end in ((7, 9), (2**31, 2**40)):
            convert.assign_slot(doc, sequence)
            doc["run_end"] = run_end
            _assert_raw(body, doc)


def _assert_raw(body: bytes, doc: dict[str, Any]) -> None:
    raw = convert.raw_document(body, doc, BODY_KEYS[doc["id"]])
    assert raw is not None
    assert raw.raw == bson.encode(doc)


def _variants(event: AuditEvent) -> list[tuple[str, AuditEvent]]:
    """The event, and the event without its occur time, without its tenant_user_id, without a
    payload's fields, and with long (non-ASCII) names whose lengths take two bytes."""
    variants = []
    for change in ("none", "occur_time", "tenant_user_id", "empty payload", "long names"):
        variant = AuditEvent()
        variant.CopyFrom(event)
        if change == "long names":
            variant.tenant_id = "t" * 200
            variant.tenant_user_id = "ä" * 70
            if variant.HasField("cobrowse"):
                variant.cobrowse.session_id = "s" * 130
        elif change == "empty payload":
            payload = variant.WhichOneof("payload")
            assert payload is not None
            getattr(variant, payload).Clear()
            getattr(variant, payload).SetInParent()
        elif change != "none":
            variant.ClearField(change)
        variants.append((change, variant))
    return variants


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_an_event_stored_as_it_came_is_prepared_natively_as_the_rules_prepare_it(
    field: str,
) -> None:
    sample = valid_event_of_each_type("t")[field]
    if field == "meeting_change":
        sample.meeting_change.conference.ClearField("extra")  # its times stay
    for change, variant in _variants(sample):
        for event_id in (variant.id, "i" * 130, "é-1"):
            native = _natively(variant, event_id)
            if field in FREE_FORM - {"meeting_change"} and change != "empty payload":
                assert native is None  # its free-form data is stored as its JSON reads back
                continue
            assert native is not None, (change, variant)
            _assert_same(native, _by_rules(variant, event_id))


def _needs_the_rules(field: str) -> list[tuple[str, AuditEvent]]:
    """Events of the sample's type that normalisation changes, each with what it changes."""
    cases = []

    def case(name: str) -> AuditEvent:
        event = valid_event_of_each_type("t")[field]
        cases.append((name, event))
        return event

    case("finer than milliseconds").occur_time.nanos += 1
    case("microseconds").occur_time.nanos += 1_000
    case("receive time given").receive_time.seconds = 5
    case("event type given").event_type = 3  # type: ignore[assignment]
    case("sequence given").sequence = 9
    case("ledger sequence given").ledger_sequence = 9
    case("ledger hash given").ledger_hash = b"\x01"
    unknown = case("unknown field")
    unknown.MergeFromString(b"\xf8\x07\x01")  # field 127, a varint
    if field == "scroll":
        case("-0.0").scroll.position.top = -0.0
    if field == "meeting_change":
        event = case("payload time finer than milliseconds")
        event.meeting_change.conference.ClearField("extra")
        event.meeting_change.conference.start_time.nanos += 1_000
    if field == "input":
        case("marked masked").input.masked = True
        sensitive_marked = case("sensitive, marked masked")
        sensitive_marked.input.sensitive = True
        sensitive_marked.input.masked = True
    if field == "click":
        payload_unknown = case("unknown field in the payload")
        payload_unknown.click.element.MergeFromString(b"\xf8\x07\x01")
        case("actor unknown").cobrowse.actor = 7  # type: ignore[assignment]
        case("no co-browsing context").ClearField("cobrowse")
    if field == "meeting_change":
        event = case("enum value unknown")
        event.meeting_change.ClearField("conference")
        event.meeting_change.action = 77  # type: ignore[assignment]
    return cases


@pytest.mark.parametrize("field", list(valid_event_of_each_type("t")))
def test_events_that_normalisation_changes_are_declined(field: str) -> None:
    for name, event in _needs_the_rules(field):
        assert _natively(event, event.id) is None, name


def _sensitive_inputs() -> list[tuple[str, AuditEvent]]:
    cases = []
    for text in ("Musterstraße 12", "", "x" * 300, "pin 1234"):
        for keep_element in (True, False):
            event = valid_event_of_each_type("t")["input"]
            event.input.text = text
            event.input.sensitive = True
            if not keep_element:
                event.input.ClearField("element")
            cases.append((f"{text[:10]!r}, element {keep_element}", event))
    return cases


@pytest.mark.parametrize(("name", "event"), _sensitive_inputs())
def test_a_sensitive_input_is_masked_natively_as_the_rules_mask_it(
    name: str, event: AuditEvent
) -> None:
    """Its text replaced by the mask, `masked` set, and its secret's HMAC in the fingerprint."""
    for change, variant in _variants(event):
        if change == "empty payload":
            continue
        native = _natively(variant, variant.id)
        assert native is not None, change
        _assert_same(native, _by_rules(variant, variant.id))
        stored = AuditEvent.FromString(native[2])
        assert (stored.input.text, stored.input.masked) == (convert.INPUT_MASK, True)
        assert native[0]["input"]["text"] == convert.INPUT_MASK


def test_the_fingerprint_of_a_sensitive_input_depends_on_its_secret_and_the_key() -> None:
    event = valid_event_of_each_type("t")["input"]
    event.input.sensitive = True
    other_text = AuditEvent()
    other_text.CopyFrom(event)
    other_text.input.text += "!"
    other_key = convert.EventPreparer("another secret")

    def fingerprint(native: _native.Preparer, event: AuditEvent) -> str:
        made = native.prepare(event.SerializeToString(), "x", RECEIVED, int(RECEIVED))
        assert made is not None
        return str(made[0]["fingerprint"])

    fingerprints = [
        fingerprint(NATIVE, event),
        fingerprint(NATIVE, other_text),
        fingerprint(other_key.native(), event),
    ]
    assert len(set(fingerprints)) == 3
    # Each as the rules of its key make it.
    assert fingerprints[0] == PREPARER.prepare(event).fingerprint
    assert fingerprints[2] == other_key.prepare(event).fingerprint


def test_an_event_without_a_payload_is_declined() -> None:
    event = valid_event_of_each_type("t")["start_call"]
    event.ClearField("start_call")
    assert _natively(event, event.id) is None


def test_a_longer_encoding_than_protobuf_writes_is_declined() -> None:
    """A length written in two bytes where one does: protobuf reads it, and writes it in one."""
    event = valid_event_of_each_type("t")["start_call"]
    event.ClearField("id")
    serialized = event.SerializeToString()
    assert serialized[0] == 0x12  # tenant_id first
    assert serialized[1] < 0x80  # its length in one byte
    longer = b"\x12" + bytes((serialized[1] | 0x80, 0)) + serialized[2:]
    assert AuditEvent.FromString(longer) == event
    assert _natively(serialized, "x") is not None
    assert _natively(longer, "x") is None


def _mutated(serialized: bytes, rng: random.Random) -> bytes:
    data = bytearray(serialized)
    how = rng.randrange(4)
    at = rng.randrange(len(data))
    if how == 0:
        data[at] = rng.randrange(256)
    elif how == 1:
        del data[at:]
    elif how == 2:
        data.insert(at, rng.randrange(256))
    else:
        data[at] ^= 1 << rng.randrange(8)
    return bytes(data)


def test_any_bytes_give_the_rules_result_or_a_decline() -> None:
    """Mutated serializations of every type: whatever the native preparer accepts, the rules
    prepare the same way (where the rules fail, it declines); it never fails itself."""
    rng = random.Random(20261206)
    samples = [e.SerializeToString() for e in valid_event_of_each_type("t").values()]
    samples += [e.SerializeToString() for _, e in _sensitive_inputs()]
    accepted = 0
    for _ in range(6000):
        data = _mutated(rng.choice(samples), rng)
        native = _natively(data, "id-1")
        try:
            event = AuditEvent.FromString(data)
            rules: tuple[Any, ...] | None = _by_rules(event, "id-1")
        except (DecodeError, KeyError, ValueError):
            rules = None
        if native is None:
            continue
        assert rules is not None, data
        _assert_same(native, rules)
        accepted += 1
    assert accepted > 1000  # most mutations of a string's text keep the event valid


def test_the_native_preparer_receives_at_the_given_time() -> None:
    """And without an occur time the event's is the receive time, before 1970 too."""
    event = valid_event_of_each_type("t")["start_call"]
    event.ClearField("occur_time")
    received = DatetimeMS(-1_500)  # before 1970: seconds -2, 500 ms
    native = NATIVE.prepare(event.SerializeToString(), "x", received, int(received))
    assert native is not None
    stored = AuditEvent.FromString(native[2])
    assert (stored.receive_time.seconds, stored.receive_time.nanos) == (-2, 500_000_000)
    assert stored.occur_time == stored.receive_time
    assert native[0]["occur_time"] is received
    assert convert.datetime_to_millis(native[0]["receive_time"]) == -1_500
    assert isinstance(RECEIVED, dt.datetime) is False  # a DatetimeMS, as the server passes


def test_chained_hashes_are_the_ledgers_chain_hash_in_turn() -> None:
    rng = random.Random(3)
    entries = [
        {
            "q": rng.choice([0, 1, 2**40]),
            "d": bson.Binary(rng.randbytes(32)) if n % 2 else rng.randbytes(32),
        }
        for n in range(7)
    ]
    previous = rng.randbytes(32)
    expected, running = [], previous
    for n, entry in enumerate(entries):
        running = chain_hash(running, 1000 + 1 + n, entry["q"], bytes(entry["d"]))
        expected.append(running)
    chain = b"".join(e["q"].to_bytes(8, "big") + bytes(e["d"]) for e in entries)
    assert ledger.entries_chain(entries) == chain
    assert _native.chain_hashes(previous, 1000, chain) == expected
    assert _native.chain_hashes(previous, 1000, b"") == []
    with pytest.raises(ValueError, match="40 bytes an entry"):
        _native.chain_hashes(previous, 1000, chain[:-1])


def _chain_of(entries: list[dict[str, Any]]) -> bytes:
    """A chain input made from entries as commit_entry makes them, by hashlib."""
    return b"".join(
        e.get("q", 0).to_bytes(8, "big") + hashlib.sha256(e["r"]).digest() for e in entries
    )


def test_the_chain_input_of_packed_entries_is_read_without_decoding_them() -> None:
    rng = random.Random(9)
    entries: list[dict[str, Any]] = []
    for n in range(40):
        entry: dict[str, Any] = {"k": f"t/{n}", "r": rng.randbytes(rng.choice([0, 7, 500]))}
        entry["x"] = {"type": "CLICK", "n": [1, {"a": None}], "f": 1.5, "ok": True}
        if n % 3:
            entry["e"] = f"t/s/{n:012d}"
            entry["q"] = rng.choice([1, 2**31 - 1, 2**31, 2**40])  # int32 and int64 in BSON
        entries.append(entry)
    packed = ledger.pack_entries(entries)
    assert _native.packed_chain(packed) == _chain_of(entries)
    # Completed entries (a digest `d` written) give the same chain input.
    completed = [ledger.complete_entry(dict(e)) for e in entries]
    assert _native.packed_chain(bson.encode({"e": completed})) == _chain_of(entries)
    assert _native.packed_chain(bson.encode({"e": []})) == b""
    # Laid out otherwise, or holding a type it does not read: left to the decoder.
    assert _native.packed_chain(bson.encode({"x": 1, "e": completed})) is None
    assert _native.packed_chain(packed[:-1]) is None
    assert _native.packed_chain(bson.encode({"e": [{**entries[0], "o": ObjectId()}]})) is None
    assert _native.packed_chain(bson.encode({"e": [{**entries[0], "q": "1"}]})) is None
    # The commit's chain input from wherever it is read.
    zipped = {ledger.ZIPPED_ENTRIES: ledger.compress(packed)}
    oldest = {"entries": completed}  # written before entries were packed
    own = ledger.Commit.of_entries("t", "w", 1, [dict(e) for e in entries], None)
    assert own.chain == _chain_of(entries)
    for doc in (zipped, oldest, {ledger.PACKED_ENTRIES: own.packed, ledger.CHAIN_INPUT: own.chain}):
        assert ledger.commit_chain(doc) == _chain_of(entries)


def test_entries_completed_natively_are_those_complete_entry_completes() -> None:
    rng = random.Random(5)
    entries = [
        {"k": "t/a", "r": rng.randbytes(90), "x": {"t": "CLICK"}},
        {"k": "t/b", "r": bson.Binary(rng.randbytes(40)), "e": "t/s/000000000001", "q": 1},
        {"k": "t/c", "r": b"", "d": b"kept", "e": "t/c", "q": 0},
    ]
    expected = [ledger.complete_entry(dict(entry)) for entry in entries]
    _native.complete_entries(entries)
    assert repr(entries) == repr(expected)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "bytes", "bool", "int", "float", "none"]
    if depth < 3:
        kinds += ["dict", "list"]
    kind = rng.choice(kinds)
    if kind == "str":
        return rng.choice(["", "t/abc", "é✅", "x" * 300])
    if kind == "bytes":
        return rng.randbytes(rng.randrange(40))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1])
    if kind == "float":
        return rng.choice([0.0, -0.0, 1.5, float("inf")])
    if kind == "none":
        return None
    if kind == "dict":
        return {rng.choice("kqrxtoe") + str(n): _random_value(rng, depth + 1) for n in range(3)}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_entries_packed_natively_are_what_bson_encodes() -> None:
    """Or nothing, for a type it leaves to PyMongo (BSON's Binary, a date)."""
    rng = random.Random(11)
    for _ in range(300):
        entries = [{"k": "t/a", "r": rng.randbytes(60), "x": _random_value(rng)} for _ in range(3)]
        assert _native.pack_entries(entries) == bson.encode({"e": entries})
    for odd in (bson.Binary(b"x", 5), DatetimeMS(5), 2**64, {"a\0b": 1}, {1: 2}):
        assert _native.pack_entries([{"k": "t/a", "x": odd}]) is None
    entries = [{"k": "t/a", "r": b"r", "x": {"t": "CLICK", "o": 17}}]
    assert ledger.pack_entries(entries) == bson.encode({"e": entries})


def test_a_raw_document_is_left_to_pymongo_when_an_added_value_is_of_another_type() -> None:
    event = valid_event_of_each_type("t")["start_call"]
    native = _natively(event, "x")
    assert native is not None
    doc, body = native[0], native[5]
    keys = len(doc)
    doc["ob"] = "t/ob/1"
    doc["late"] = [1.5, None, {"n": 2**40, "b": True}]
    raw = convert.raw_document(body, doc, keys)
    assert raw is not None
    assert raw.raw == bson.encode(doc)
    doc["later"] = DatetimeMS(5)
    assert convert.raw_document(body, doc, keys) is None


def _whole_docs(events: list[AuditEvent], writes: list[EventWrite]) -> list[dict[str, Any]]:
    """Each write's document with what only its body holds (the writer's documents leave
    out the payload): the native preparer's document made without slim (byte for byte the
    rules', see _assert_same); the write's own for an event the rules prepared."""
    whole = []
    for event, write in zip(events, writes, strict=True):
        if write.body is None:
            whole.append(write.doc)
            continue
        native = _natively(event, write.doc["id"])
        assert native is not None
        left_out = {event.WhichOneof("payload"), *SLIM_LEAVES_OUT} & native[0].keys()
        assert native[0].keys() - write.doc.keys() == left_out
        whole.append(native[0])
    return whole


def test_a_groups_raw_documents_are_each_events_raw_document() -> None:
    # Events of every type, prepared as the writer does (some by the rules: no body), stored
    # with their outbox, co-browsing ones in slots; one with an addition left to PyMongo.
    events = list(valid_event_of_each_type("t").values())
    writes = _writes_of(events)
    whole = _whole_docs(events, writes)
    for n, write in enumerate(writes):
        # Once each: an event the rules prepared has its own document as its whole one.
        for doc in {id(d): d for d in (write.doc, whole[n])}.values():
            doc["ob"] = "t/ob/00000000000000000007"
            if write.session is not None:
                convert.assign_slot(doc, 40 + n, write.session)
                doc["run_end"] = 99
    assert writes[3].body is not None
    for doc in (writes[3].doc, whole[3]):
        doc["later"] = DatetimeMS(5)
    pending = [i for i in range(len(writes)) if i != 1]
    made = convert.raw_documents(writes, pending)
    expected = {
        i: raw
        for i in pending
        if writes[i].body is not None
        and (raw := convert.raw_document(writes[i].body, writes[i].doc, writes[i].body_keys))
    }
    assert 3 not in expected  # left to PyMongo: the whole document, from the body
    assert {i: r.raw for i, r in made.items() if i != 3} == {i: r.raw for i, r in expected.items()}
    assert 1 not in made
    assert any(w.body is None for w in writes)  # the rules' events have none
    assert len(made) >= len(writes) // 2
    for i, raw in made.items():
        assert raw.raw == bson.encode(whole[i])


def test_a_sessions_run_is_its_slots_and_id_claims_as_each_events_own() -> None:
    # Co-browsing events of two sessions, some interleaved with general ones (the group's order
    # is kept inside a run), against assign_slot and id_claim event by event.
    events = list(valid_event_of_each_type("t").values())
    cobrowsing = [e for e in events if e.HasField("cobrowse")]
    for event in cobrowsing[::2]:
        event.cobrowse.session_id = "other é"
    events.insert(len(events) - 2, events[0])  # a general event inside the runs
    by_rules = AuditEvent()
    by_rules.CopyFrom(cobrowsing[0])
    by_rules.id += "-2"
    by_rules.occur_time.nanos += 1  # finer than milliseconds: the rules prepare it
    events.append(by_rules)
    writes = _writes_of(events)
    whole = _whole_docs(events, writes)
    runs: dict[tuple[str, str], list[int]] = {}
    for index, write in enumerate(writes):
        if write.session is not None:
            runs.setdefault(write.session, []).append(index)
    assert len(runs) == 2
    assert any(writes[i].body is None for indexes in runs.values() for i in indexes)
    for session, indexes in runs.items():
        # Zero-padded slots, and slots that cross a power of ten past the padding's digits.
        first = 10**convert.SEQUENCE_DIGITS - 2 if session[1] == "other é" else 5
        expected = []
        sent = []
        for offset, index in enumerate(indexes):
            doc, whole_doc = dict(writes[index].doc), dict(whole[index])
            for each in (doc, whole_doc):
                convert.assign_slot(each, first + offset, session)
                each["run_end"] = first + len(indexes) - 1
            expected.append((index, "claim", convert.id_claim(doc)))
            expected.append((index, "event", doc))
            sent.append((index, "claim", convert.id_claim(doc)))
            sent.append((index, "event", whole_doc))
        run = convert.slot_run(writes, indexes, session, first)
        # Each event as sent: the BSON of its whole document as raw_document makes it from the
        # native preparer's body; the dict itself for an event the rules prepared (no body).
        made = [(i, role, bson.encode(item)) for i, role, item in run]
        assert made == [(i, role, bson.encode(item)) for i, role, item in sent]
        for (i, role, item), (_, _, wanted) in zip(run, expected, strict=True):
            if role == "event":
                write = writes[i]
                assert repr(write.doc) == repr(wanted)  # assigned in place, Python types too
                if write.body is None:
                    assert item is write.doc
                    continue
                raw = convert.raw_document(write.body, write.doc, write.body_keys)
                assert raw is not None
                assert item.raw == raw.raw


def test_a_commits_entries_are_each_events_entry_completed_and_packed() -> None:
    # Events of every type, stored (co-browsing ones in slots), some by the rules (no filters
    # made with the document); a filter of a type left to PyMongo leaves the whole commit to
    # the Python.
    writes = _writes_of(list(valid_event_of_each_type("t").values()))
    for n, write in enumerate(writes):
        if write.session is not None:
            # A sequence BSON holds as int64.
            convert.assign_slot(write.doc, 2**31 + n, write.session)
    assert any(w.filters is None for w in writes)
    # Filters the native preparer made are BSON; filters given as a dict are encoded, unless
    # a value is of a type left to PyMongo.
    start_call = valid_event_of_each_type("t")["start_call"]
    plain, odd = _writes_of([start_call] * 2)
    assert isinstance(plain.filters, bytes)
    assert isinstance(odd.filters, bytes)
    # As a dict: filter_fields of the whole document (see _assert_same).
    plain_whole, odd_whole = _whole_docs([start_call] * 2, [plain, odd])
    plain = _with_filters(plain, ledger.filter_fields(plain_whole))
    odd = _with_filters(odd, {**ledger.filter_fields(odd_whole), "o": DatetimeMS(5)})
    for group in (writes, [*writes, plain], [*writes, plain, odd]):
        entries = [ledger.commit_entry(w.doc, w.recorded, w.filters) for w in group]
        packed = bson.encode({"e": entries})
        completed = [ledger.complete_entry(dict(e)) for e in entries]
        assert ledger.group_entries(group) == (packed, _chain_of(entries))
        assert ledger.entries_chain(completed) == _chain_of(entries)
        declined = _native.commit_entries(group, ledger.filter_fields) is None
        assert declined == (group[-1] is odd)


def _with_filters(write: EventWrite, filters: dict[str, Any]) -> EventWrite:
    """The write with other filters (given as a dict, as the rules' writes hold them)."""
    return EventWrite(
        write.doc,
        write.occur_time_given,
        write.recorded,
        filters,
        write.body,
        write.body_keys,
        write.session,
        write.sequence_at,
    )


def _writer() -> EventWriter:
    return EventWriter(
        _NoDatabase(),  # type: ignore[arg-type]
        PREPARER,
        max_group=1000,
        max_delay_s=0.0,
    )


def _writes_of(events: list[AuditEvent]) -> list[EventWrite]:
    """The events as EventWriter prepares them (natively, or by the rules), one by one."""
    writer = _writer()
    return [writer.prepare(e, RECEIVED) for e in events]


class _NoDatabase:
    async def insert_events(self, writes: Any) -> Any:
        raise NotImplementedError  # nothing here is written


def test_a_batch_is_prepared_as_each_event_is() -> None:
    # Every event type (those with free-form data declined), each again of another tenant,
    # user and session, and of the first tenant with the other session; one without an id (it
    # gets the new one), one in bytes the preparer declines.
    events = []
    for event in valid_event_of_each_type("t").values():
        events.append(event)
        for tenant in ("u", "t"):
            other = AuditEvent()
            other.CopyFrom(event)
            other.id += f"-{tenant}"
            other.tenant_id = tenant
            other.tenant_user_id += "-2"
            if other.HasField("cobrowse"):
                other.cobrowse.session_id += "-2"
            events.append(other)
    anonymous = AuditEvent()
    anonymous.CopyFrom(events[0])
    anonymous.ClearField("id")
    batch = [e.SerializeToString() for e in [*events, anonymous]] + [b"\x0a\x01"]
    made, declined = NATIVE.prepare_batch(batch, RECEIVED, int(RECEIVED), lambda: "new-id-1")
    assert len(made) == len(batch)
    ids = [e.id for e in events] + ["new-id-1", "x"]
    assert declined == [i for i, data in enumerate(batch) if _natively(data, ids[i]) is None]
    assert declined[-1] == len(batch) - 1
    assert len(declined) < len(batch) // 2
    for index, (ready, data, event_id) in enumerate(zip(made, batch, ids, strict=True)):
        one = _natively(data, event_id)
        if one is None:
            assert ready is None
            continue
        assert isinstance(ready, EventWrite)
        write = ready
        doc, given, recorded, sequence_at, filters, body, session = one
        assert repr(write.doc) == repr(doc)
        assert write.doc["id"] == event_id
        assert (write.occur_time_given, write.recorded, write.sequence_at) == (
            given,
            recorded,
            sequence_at,
        )
        assert (write.filters, write.body, write.body_keys, write.session) == (
            filters,
            body,
            len(doc),
            session,
        ), index


def test_a_slim_batch_is_the_batch_without_the_payloads_objects() -> None:
    # The writer's batches (slim): each write as without slim, but for its document, which
    # leaves out the payload, the user, the co-browsing context, the session id and the ids
    # lifted to the top (their BSON is in the body) and counts its own keys.
    events = list(valid_event_of_each_type("t").values())
    batch = [e.SerializeToString() for e in events]
    made = {
        slim: NATIVE.prepare_batch(batch, RECEIVED, int(RECEIVED), lambda: "new-id", slim)
        for slim in (False, True)
    }
    assert made[True][1] == made[False][1]
    assert len(made[True][1]) < len(batch)  # free-form data is declined either way
    for event, full, slim in zip(events, made[False][0], made[True][0], strict=True):
        if full is None:
            assert slim is None
            continue
        payload = event.WhichOneof("payload")
        assert payload in full.doc
        assert repr(slim.doc) == repr(
            {k: v for k, v in full.doc.items() if k not in {payload, *SLIM_LEAVES_OUT}}
        )
        left_out = len(full.doc) - len(slim.doc)
        assert left_out == len({payload, *SLIM_LEAVES_OUT} & full.doc.keys())
        assert slim.body_keys == len(slim.doc) == full.body_keys - left_out
        for name in ("occur_time_given", "recorded", "filters", "body", "session", "sequence_at"):
            assert getattr(slim, name) == getattr(full, name), name
        # Sent, with what storage adds, it is the whole document all the same.
        for doc in (slim.doc, full.doc):
            doc["ob"] = "t/ob/00000000000000000001"
        assert convert.raw_documents([slim], [0])[0].raw == bson.encode(full.doc)


def test_a_whole_document_is_made_from_the_body_where_an_addition_is_left_to_pymongo() -> None:
    event = valid_event_of_each_type("t")["start_call"]
    (write,) = _writes_of([event])
    (whole,) = _whole_docs([event], [write])
    for doc in (write.doc, whole):
        doc["ob"] = "t/ob/1"
        doc["later"] = DatetimeMS(5)
    assert convert.raw_document(write.body, write.doc, write.body_keys) is None
    assert convert.whole_document(write).raw == bson.encode(whole)
    assert convert.raw_documents([write], [0])[0].raw == bson.encode(whole)


def test_a_batchs_events_of_one_tenant_and_session_share_those_objects() -> None:
    # Two sessions' events interleaved, then another tenant's with the same session id, then
    # the first tenant's again: each tenant's run shares its tenant string and each session's
    # key, made anew where the tenant changes, equal to what the event alone gets; the events
    # of one user share its id.
    click = valid_event_of_each_type("t")["click"]
    events = []
    runs = [("t", "s"), ("t", "r"), ("t", "s"), ("u", "s"), ("u", "s"), ("t", "s"), ("t", "r")]
    for n, (tenant, session) in enumerate(runs):
        event = AuditEvent()
        event.CopyFrom(click)
        event.id, event.tenant_id, event.cobrowse.session_id = f"e{n}", tenant, session
        events.append(event)
    # The documents made whole (slim ones leave the user and the session out).
    writes = _writer().prepare_batch(events, None, RECEIVED, slim=False)
    keys = [write.session for write in writes]
    assert keys == [(e.tenant_id, e.cobrowse.session_id) for e in events]
    assert keys[0] is keys[2]
    assert keys[1] is not keys[0]
    assert keys[3] is keys[4]
    assert keys[2] is not keys[3]
    assert keys[4] is not keys[5]
    assert keys[5] == keys[0]
    assert keys[5] is not keys[0]  # the tenant changed back: made again
    assert keys[6] == keys[1]
    assert writes[0].doc["tenant_id"] is writes[2].doc["tenant_id"] is keys[1][0]
    assert writes[0].doc["cobrowse"]["session_id"] is keys[0][1]
    assert writes[0].doc["session_id"] is keys[0][1]
    users = [write.doc["tenant_user_id"] for write in writes]
    assert users[0] == click.tenant_user_id
    assert all(user is users[0] for user in users)
    assert writes[0].doc["cobrowse"] is not writes[2].doc["cobrowse"]  # documents own dicts
