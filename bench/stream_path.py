"""The stream path as a whole, in process, with warm caches against cold ones.

bench.event_cost times the batch path's steps one at a time; this bench runs what a server
runs for a group of stream messages, in one go: ten messages of 100 co-browsing events from
four streams (40 sessions), each parsed, its events serialized and validated as rpcs.py does and
submitted to an EventWriter; the group committer's one group of 1,000, written by
EventRepository.insert_events with its inserts answered at once (no database, no ledger); each
message's acks (responses.stream_batch_response); everything freed. No gRPC, PyMongo, network
or database: what is left is the service's own work on the events.

The baseline is the same run with warm caches. Each other run writes over N MiB after each
message is submitted and after each is answered (that time left out), as a running server's
steps find their objects: between them the database, gRPC and the other streams go over the
last-level cache this machine shares. The ratio of a cold run to the warm one says how much of
an event's cost is cache misses on what its objects hold rather than the instructions that make
and read them. Each figure is the fastest of its repetitions, in µs per event.

    .venv/bin/python -m bench.stream_path [--repetitions 30] [--output stream_path]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from pymongo import AsyncMongoClient

from auditlog.v1 import service_pb2
from auditlog_service import convert, responses, validation
from auditlog_service.ingest import EventWriter
from auditlog_service.storage import EventRepository
from bench.common import cache_writer, cobrowse_event, code_version, load_average, log, write_result

MESSAGES = 10
EVENTS_PER_MESSAGE = 100
STREAMS = 4
SESSIONS_PER_STREAM = 10
# MiB written over between messages; 0 is the warm baseline. This machine's last-level cache
# is 32 MiB.
WRITTEN_OVER_MIB = (0, 4, 16, 64)
LIMITS = validation.Limits()


def stream_messages() -> list[bytes]:
    """The messages, as the four streams send them in turn."""
    wires = []
    for m in range(MESSAGES):
        stream = m % STREAMS
        events = [
            cobrowse_event(
                "tenant-1", f"c{stream}-s{n % SESSIONS_PER_STREAM}", m * EVENTS_PER_MESSAGE + n
            )
            for n in range(EVENTS_PER_MESSAGE)
        ]
        wires.append(service_pb2.StreamEventsRequest(events=events).SerializeToString())
    return wires


def _writer() -> EventWriter:
    """An EventWriter whose repository answers every insert at once, each session starting
    empty, and has no ledger."""
    client: AsyncMongoClient[Any] = AsyncMongoClient("mongodb://127.0.0.1:1", connect=False)
    repository = EventRepository(client, "bench", 1)

    async def inserted(items: Any, *, ordered: bool) -> list[dict[str, Any]]:
        return []

    async def empty(tenant_id: str, session_id: str) -> int:
        return 0

    repository._insert = inserted  # type: ignore[method-assign]
    repository.cached_head = empty  # type: ignore[method-assign]
    return EventWriter(repository, convert.EventPreparer("bench"), max_group=1000, max_delay_s=0.0)


async def one_pass(
    wires: list[bytes], writer: EventWriter, between: Callable[[], None]
) -> tuple[float, int]:
    """The messages once through the path, `between` after each is submitted and after each
    is answered; seconds (without `between`'s) and the events acknowledged."""
    clock = time.perf_counter
    spent = 0.0
    acked = 0
    started = clock()
    pending = []
    for index, wire in enumerate(wires):
        message = service_pb2.StreamEventsRequest.FromString(wire)
        events = list(message.events)
        serialized = convert.serialized_events(events)
        if validation.batch_violations(events, serialized, LIMITS):
            raise AssertionError("the bench's events are valid")
        pending.append((index, writer.submit_batch(events, serialized)))
        del message, events, serialized
        paused = clock()
        between()
        spent += clock() - paused
    for index, batch in pending:
        outcomes = await batch.outcomes
        _, stored = responses.stream_batch_response(index, list(range(len(outcomes))), outcomes)
        acked += stored
        paused = clock()
        between()
        spent += clock() - paused
    del pending, batch, outcomes
    return clock() - started - spent, acked


async def measure(repetitions: int) -> dict[str, Any]:
    wires = stream_messages()
    writer = _writer()
    events = MESSAGES * EVENTS_PER_MESSAGE
    best: dict[int, float] = {}
    writers = {mib: cache_writer(mib) for mib in WRITTEN_OVER_MIB}  # each buffer made once
    gc_was = gc.isenabled()
    gc.disable()  # a collection in one repetition and not the next is noise here
    try:
        for _ in range(repetitions):
            # Interleaved, so that a slow stretch of the machine hits every setting alike.
            for mib in WRITTEN_OVER_MIB:
                # A pass untimed first: the warm baseline must not start where the last cold
                # setting left the caches.
                await one_pass(wires, writer, writers[0])
                seconds, acked = await one_pass(wires, writer, writers[mib])
                if acked != events:
                    raise AssertionError(f"{acked} of {events} events acknowledged")
                best[mib] = min(best.get(mib, seconds), seconds)
    finally:
        if gc_was:
            gc.enable()
    us = {mib: round(1e6 * seconds / events, 2) for mib, seconds in best.items()}
    return {
        "us_per_event": {str(mib): value for mib, value in us.items()},
        "ratio_to_warm": {str(mib): round(value / us[0], 2) for mib, value in us.items()},
    }


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# The stream path in process, warm caches against cold (issue 11)",
        "",
        f"Code {data['code'][:12]}; {MESSAGES} messages of {EVENTS_PER_MESSAGE} co-browsing "
        f"events from {STREAMS} streams ({STREAMS * SESSIONS_PER_STREAM} sessions), one group of "
        f"{MESSAGES * EVENTS_PER_MESSAGE}; fastest of {data['repetitions']} repetitions, "
        f"settings interleaved; load average before {data['load_before']}, after "
        f"{data['load_after']}. Command: `python -m bench.stream_path`. Baseline: the same run "
        "with warm caches.",
        "",
        "| written over between messages | µs an event | against warm |",
        "|---:|---:|---:|",
    ]
    for mib in WRITTEN_OVER_MIB:
        lines.append(
            f"| {mib} MiB | {data['us_per_event'][str(mib)]:.2f} | "
            f"**{data['ratio_to_warm'][str(mib)]:.2f}** |"
        )
    lines += [
        "",
        "Parse, serialize, validate, prepare, group commit, storage's round (its inserts "
        "answered at once, no ledger), acks, freeing: the service's own work on the events. "
        "Not here: gRPC, PyMongo, the database, the ledger (`ingest.md`, `ledger_cost.md`).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--output", default="stream_path", help="bench/results/<output>.json/.md")
    args = parser.parse_args()
    before = load_average()
    log(f"{args.repetitions} repetitions of {MESSAGES} messages, {len(WRITTEN_OVER_MIB)} settings")
    measured = asyncio.run(measure(args.repetitions))
    data = {
        "code": code_version(),
        "repetitions": args.repetitions,
        **measured,
        "load_before": before,
        "load_after": load_average(),
    }
    write_result(args.output, data, markdown(data))


if __name__ == "__main__":
    main()
