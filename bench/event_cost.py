"""What each step of the batch ingest path costs per event, in process, against its C floor.

The ingest bench measures the whole server under load, where one run differs from the next by
up to 0.09 of its ratio; the profile bench says where a running server's CPU goes, by sampling.
This bench times the steps a LogEvents batch of 1,000 events goes through before and after the
database, one at a time, in this process, with no server, database or network: its figures
move by a few percent between runs, so a change of 0.3 µs an event shows. The steps are the
server's: the native checker and preparer (service/native) for the events they take, and, in a
row of its own, what preparing by the rules in convert costs.

The baseline is the work no implementation of the contract can skip, all of it C: parsing the
request (protobuf), encoding each stored document (BSON, as PyMongo does) and serializing the
response. The ratio is the steps' sum against it.

Each step is timed over the same 1,000 events (general, then co-browsing), every repetition on a
freshly parsed request (steps change events in place), steps interleaved; a step's figure is
its fastest repetition, in µs per event. With --cold, each step starts after 64 MiB were
written over, with none of the batch in a cache, as the steps of a group in a running server
find it (they run apart, between gRPC's, asyncio's, PyMongo's and the database's work).

    .venv/bin/python -m bench.event_cost [--repetitions 15] [--cold] [--output event_cost]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import bson

from auditlog.v1 import audit_event_pb2, service_pb2
from auditlog_service import convert, validation
from auditlog_service.ingest import EventWriter
from auditlog_service.ledger import compress, group_entries
from auditlog_service.responses import log_events_response
from auditlog_service.storage import EventWrite, Outcome, Stored
from bench.common import (
    cache_writer,
    cobrowse_event,
    code_version,
    general_event,
    load_average,
    log,
    write_result,
)

EVENTS = 1000
LIMITS = validation.Limits()

# (step, whether it is the C floor, what it is): the steps the server runs for each event.
STEPS = [
    ("parse", True, "LogEventsRequest.FromString of the batch, and its events listed"),
    (
        "validate",
        False,
        "each event serialized, and the batch checked as rpcs.py does (the native checker in "
        "one call, validation.event_violations for what it does not vouch for)",
    ),
    (
        "prepare",
        False,
        "EventWriter.prepare_batch, as the server calls it: the native preparer in one call "
        "(document, fingerprint, recorded form, ledger filters, BSON, the write objects), the "
        "rules where it declines",
    ),
    (
        "slots",
        False,
        "convert.slot_run of each session's co-browsing events (one call a session): slot, "
        "sequence and run end set, the id claim as BSON",
    ),
    (
        "ledger entries",
        False,
        "ledger.group_entries (one call for the commit): each entry (key, recorded form, filter "
        "fields, slot) packed as BSON, and its digest and session sequence (the chain input)",
    ),
    ("commit packing", False, "ledger.compress of the packed entries (Zstandard)"),
    (
        "document sent",
        False,
        "convert.raw_documents (one call for the group): the event's BSON as prepared, with "
        "its outbox id (and a co-browsing event's slot, sequence and run end)",
    ),
    ("bson", True, "bson.encode of each stored document (what PyMongo does to send it)"),
    ("response", False, "LogEventsResponse serialized from the stored events' recorded forms"),
    ("response bytes", True, "the response serialized"),
]
# Beside the steps, not in their sum: what preparing an event by the rules in convert costs
# (normalise and fingerprint, document, recorded form, write objects), as every event did
# before the native preparer and as those it declines still do.
RULES_PREPARE = "the rules' prepare"


class _Repository:
    """What an EventWriter takes of its repository: the group's write (never called here)."""

    async def insert_events(self, writes: Any) -> Any:
        raise NotImplementedError  # never written: this bench stops before the database


def batch_wire(kind: str) -> bytes:
    make: Callable[[int], audit_event_pb2.AuditEvent] = (
        (lambda i: general_event("tenant-1", i))
        if kind == "general"
        else (lambda i: cobrowse_event("tenant-1", f"session-{i % 4}", i))
    )
    return service_pb2.LogEventsRequest(events=[make(i) for i in range(EVENTS)]).SerializeToString()


# Written over before each step with --cold: twice this machine's last-level cache (32 MiB).
COLD_MIB = 64


def one_pass(
    wire: bytes,
    writer: EventWriter,
    preparer: convert.EventPreparer,
    before_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Every step once over the batch, `before_step` before each (None: nothing); seconds per
    step."""
    before_step = before_step or cache_writer(0)
    took: dict[str, float] = {}
    clock = time.perf_counter

    before_step()
    started = clock()
    request = service_pb2.LogEventsRequest.FromString(wire)
    events = list(request.events)
    took["parse"] = clock() - started

    # As rpcs.py does: each event serialized once, for the checker and the writer; a path only
    # for a fault.
    before_step()
    started = clock()
    serialized = convert.serialized_events(events)
    validation.batch_violations(events, serialized, LIMITS)
    took["validate"] = clock() - started

    received = convert.stored_time_now()  # as the server receives a batch
    before_step()
    started = clock()
    writes = writer.prepare_batch(events, serialized, received)
    took["prepare"] = clock() - started

    # What storage adds to each document before the insert: the outbox id, and a co-browsing
    # event's slot, sequence and run end (with its id claim); then the ledger's entries of the
    # group and the documents sent, as their BSON.
    for write in writes:
        write.doc["ob"] = "tenant-1/ob/00000000000000000001"
    group = writes
    sessions: dict[tuple[str, str], list[int]] = {}
    for index, write in enumerate(group):
        if write.session is not None:
            sessions.setdefault(write.session, []).append(index)
    before_step()
    started = clock()
    for session, indexes in sessions.items():
        convert.slot_run(group, indexes, session, 1)
    # A batch without sessions has nothing to slot: 0, not the clock's reading of an empty
    # loop, which a preemption between the two readings made 0.01 µs an event once.
    took["slots"] = clock() - started if sessions else 0.0

    before_step()
    started = clock()
    packed, _ = group_entries(group)
    took["ledger entries"] = clock() - started

    before_step()
    started = clock()
    compress(packed)
    took["commit packing"] = clock() - started

    before_step()
    started = clock()
    # (slot_run made the co-browsing events' documents to send with their slots.)
    convert.raw_documents(group, [i for i, w in enumerate(group) if w.session is None])
    took["document sent"] = clock() - started

    # The floor encodes each whole document: the writer's leave out the payload (its BSON is
    # in the body), so the floor's are prepared without slim, with what storage added.
    whole = []
    for ours, full in zip(
        writes, writer.prepare_batch(events, serialized, received, slim=False), strict=True
    ):
        doc = full.doc
        doc.update(convert.additions(ours))
        whole.append(doc)
    before_step()
    started = clock()
    for doc in whole:
        bson.encode(doc)
    took["bson"] = clock() - started

    written: list[tuple[EventWrite, Outcome]] = [(write, Stored(write.doc)) for write in writes]
    before_step()
    started = clock()
    answer, _ = log_events_response(len(writes), {}, written, whole_events=True)
    took["response"] = clock() - started

    # The floor's serialization of such a response, whoever builds it.
    response = service_pb2.LogEventsResponse.FromString(answer.data)
    before_step()
    started = clock()
    response.SerializeToString()
    took["response bytes"] = clock() - started

    # The rules' prepare, on a fresh batch, as EventWriter.prepare ran it for every event
    # before the native preparer.
    events = list(service_pb2.LogEventsRequest.FromString(wire).events)
    before_step()
    started = clock()
    for event in events:
        prepared = preparer.prepare(event, owned=True)
        doc = convert.to_document(prepared, event_id=event.id, receive_time=received)
        form = convert.recorded_event(prepared, event_id=event.id, receive_time=received)
        EventWrite(
            doc,
            prepared.occur_time_given,
            form,
            sequence_at=convert.sequence_position(prepared, form),
        )
    took[RULES_PREPARE] = clock() - started
    return took


def measure(kind: str, repetitions: int, *, cold: bool = False) -> dict[str, Any]:
    wire = batch_wire(kind)
    preparer = convert.EventPreparer("bench")
    writer = EventWriter(_Repository(), preparer, max_group=EVENTS, max_delay_s=0.0)  # type: ignore[arg-type]
    best: dict[str, float] = {}
    before_step = cache_writer(COLD_MIB if cold else 0)
    for _ in range(repetitions):
        passed = one_pass(wire, writer, preparer, before_step)
        for step, seconds in passed.items():
            best[step] = min(best.get(step, seconds), seconds)
    us = {step: round(1e6 * seconds / EVENTS, 2) for step, seconds in best.items()}
    floor = round(sum(us[name] for name, is_floor, _ in STEPS if is_floor), 2)
    total = round(sum(us[name] for name, _, _ in STEPS), 2)
    return {
        "request_bytes_per_event": round(len(wire) / EVENTS),
        "us_per_event": us,
        "floor_us": floor,
        "steps_us": total,
        "ratio": round(total / floor, 2),
    }


def markdown(data: dict[str, Any]) -> str:
    kinds = list(data["kinds"])
    lines = [
        "# The batch ingest path's steps, per event, in process (issue 11)",
        "",
        f"Code {data['code'][:12]}; {EVENTS:,} events a batch, fastest of "
        f"{data['repetitions']} repetitions, steps interleaved"
        + (
            ", each step after 64 MiB written over (caches cold, as in a running server)"
            if data.get("cold")
            else ""
        )
        + f"; load average before {data['load_before']}, after {data['load_after']}. "
        f"Command: `python -m bench.event_cost{' --cold' if data.get('cold') else ''}`. Floor: "
        "the C work any implementation does (parse, BSON, response bytes).",
        "",
        "| step | what | " + " | ".join(f"{kind}, µs an event" for kind in kinds) + " |",
        "|---|---|" + "---:|" * len(kinds),
    ]
    for name, is_floor, what in STEPS:
        cells = " | ".join(f"{data['kinds'][kind]['us_per_event'][name]:.2f}" for kind in kinds)
        lines.append(f"| {name}{' (floor)' if is_floor else ''} | {what} | {cells} |")
    rows = [
        ("all steps", "steps_us"),
        ("the floor's steps", "floor_us"),
        ("all steps / floor", "ratio"),
    ]
    for label, key in rows:
        cells = " | ".join(f"**{data['kinds'][kind][key]}**" for kind in kinds)
        lines.append(f"| {label} | | {cells} |")
    rules = " | ".join(
        f"{data['kinds'][kind]['us_per_event'][RULES_PREPARE]:.2f}" for kind in kinds
    )
    lines += [
        f"| {RULES_PREPARE} | not in the sum: convert's EventPreparer.prepare, to_document, "
        f"recorded_event and the write objects, as every event was prepared before the native "
        f"preparer and as those it declines are | {rules} |",
        "",
        "Not in these steps: what the server does around them under load (gRPC's and asyncio's "
        "callbacks, PyMongo's command and socket writes, the group commit, the ledger worker's "
        "chain and blocks); `profile_ingest.md` has the running server's figure per event.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=15)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="write over 64 MiB before each step, so that it starts with cold caches",
    )
    parser.add_argument("--output", default="event_cost", help="bench/results/<output>.json/.md")
    args = parser.parse_args()
    before = load_average()
    kinds = {}
    for kind in ("general", "cobrowse"):
        log(f"{kind}: {args.repetitions} repetitions of {EVENTS:,} events")
        kinds[kind] = measure(kind, args.repetitions, cold=args.cold)
    data = {
        "code": code_version(),
        "repetitions": args.repetitions,
        "cold": args.cold,
        "kinds": kinds,
        "load_before": before,
        "load_after": load_average(),
    }
    write_result(args.output, data, markdown(data))


if __name__ == "__main__":
    main()
