"""The native passes of a group write's round (storage._GroupWrite._round) against the same
steps written out in Python."""

from __future__ import annotations

from typing import Any

import bson

from auditlog_service import _native, convert
from auditlog_service.storage import EventWrite, Stored
from tests.event_samples import valid_event_of_each_type
from tests.unit.test_native_prepare import _writes_of


def _mixed_writes() -> list[EventWrite]:
    """Events of every type, co-browsing ones of two sessions (general ones among them), some
    prepared by the rules (no body)."""
    events = list(valid_event_of_each_type("t").values())
    for event in [e for e in events if e.HasField("cobrowse")][::2]:
        event.cobrowse.session_id = "other"
    events.insert(len(events) - 2, events[0])
    return _writes_of(events)


def test_pending_events_split_into_general_items_and_each_sessions_events_in_order() -> None:
    writes = _mixed_writes()
    pending = [i for i in range(len(writes)) if i % 5 != 1]
    main: list[tuple[int, str, Any]] = []
    general: list[int] = []
    sessions: dict[tuple[str, str], list[int]] = {}
    for index in pending:
        write = writes[index]
        if write.session is None:
            main.append((index, "event", write.doc))
            general.append(index)
        else:
            sessions.setdefault(write.session, []).append(index)
    assert len(sessions) == 2
    assert general
    made = _native.split_pending(writes, pending)
    assert made == (main, general, sessions)
    assert all(item is writes[i].doc for i, _, item in made[0])
    assert _native.split_pending(writes, []) == ([], [], {})


def _slotted(writes: list[EventWrite]) -> list[tuple[int, str, Any]]:
    """A round's one insert: an outbox, each session's run (claims and events), the general
    events, a placement record and a commit."""
    batch: list[tuple[int, str, Any]] = [(-1, "outbox", {"_id": "t/ob/1", "keys": ["a"]})]
    runs: dict[tuple[str, str], list[int]] = {}
    for index, write in enumerate(writes):
        if write.session is not None:
            runs.setdefault(write.session, []).append(index)
        write.doc["ob"] = "t/ob/1"
    for n, (session, indexes) in enumerate(runs.items()):
        batch += convert.slot_run(writes, indexes, session, 7 + 100 * n)
    batch += [(i, "event", w.doc) for i, w in enumerate(writes) if w.session is None]
    batch.insert(3, (2, "record", {"_id": "t/x#1", "gen": 1}))
    batch.append((-1, "commit", {"_id": "t/commit/1", "n": 2}))
    return batch


def test_a_batchs_documents_are_the_events_raw_ones_and_the_other_dicts_encoded() -> None:
    writes = _mixed_writes()
    batch = _slotted(writes)
    general = [i for i, w in enumerate(writes) if w.session is None]
    raw = convert.raw_documents(writes, general)
    assert raw
    assert len(raw) < len(general)

    def encode(doc: dict[str, Any]) -> convert.SentDocument:
        return convert.SentDocument(bson.encode(doc))

    expected = []
    for index, role, item in batch:
        sent = raw.get(index, item) if role == "event" else item
        expected.append(sent if not isinstance(sent, dict) else encode(sent))
    made = _native.batch_documents(batch, raw, encode)
    assert [bson.encode(d) for d in made] == [bson.encode(d) for d in expected]
    assert all(not isinstance(d, dict) for d in made)
    assert [type(d) for d in made] == [type(d) for d in expected]


def test_the_events_an_insert_stored_are_noted_up_to_where_it_stopped() -> None:
    writes = _mixed_writes()
    batch = _slotted(writes)
    for inserted in (len(batch), len(batch) - 4, 9, 4, 0):
        outcomes: list[Any] = [None] * len(writes)
        in_sessions, heads, others = _native.note_stored(batch, inserted, writes, outcomes)
        expected: list[Any] = [None] * len(writes)
        expected_heads: dict[tuple[str, str], int] = {}
        expected_sessions = []
        for index, role, _ in batch[:inserted]:
            if role == "event":
                expected[index] = writes[index].doc
                session = writes[index].session
                if session is not None:
                    expected_heads[session] = writes[index].doc["sequence"]
                    expected_sessions.append(index)
        assert [o if o is None else o.doc for o in outcomes] == expected
        assert all(o is None or (isinstance(o, Stored) and not o.already_stored) for o in outcomes)
        assert all(o is None or o.doc is writes[i].doc for i, o in enumerate(outcomes))
        assert heads == expected_heads
        assert in_sessions == expected_sessions
        assert others == [e for e in batch[:inserted] if e[1] not in ("event", "claim")]
        if inserted == len(batch):
            assert len(heads) == 2
            assert [e[1] for e in others] == ["outbox", "record", "commit"]


def test_a_groups_events_are_filed_under_each_tenants_outbox_in_one_pass() -> None:
    # Two tenants' events interleaved: each tenant's outbox is named once, at its first
    # event, in order of first appearance; each document gets its tenant's outbox id.
    events = list(valid_event_of_each_type("t").values())[:6]
    for event in events[1::3]:
        event.tenant_id = "u"
    writes = _writes_of(events)
    named: list[str] = []

    def next_outbox(tenant_id: str) -> str:
        named.append(tenant_id)
        return f"{tenant_id}/ob/{len(named)}"

    outboxes, by_tenant, keys = _native.mark_outboxes(writes, next_outbox)
    assert named == ["t", "u"]
    assert outboxes == {"t": "t/ob/1", "u": "u/ob/2"}
    assert list(by_tenant) == ["t", "u"]
    for tenant_id, tenant_writes in by_tenant.items():
        expected = [w for w in writes if w.doc["tenant_id"] == tenant_id]
        assert all(a is b for a, b in zip(tenant_writes, expected, strict=True))
        assert keys[tenant_id] == [w.doc["key"] for w in expected]
    assert [w.doc["ob"] for w in writes] == [outboxes[w.doc["tenant_id"]] for w in writes]
    assert _native.mark_outboxes([], next_outbox) == ({}, {}, {})
