"""SIGKILL soak: two replicas killed in turn under load; nothing acknowledged may be lost.

Two `auditlog serve` processes on one database. Writers send co-browsing and general events
through random replicas and retry every failure with the same ids; SDK tails follow sessions
across both; a checker looks acknowledged events up by id. Every `--kill-every` seconds one
replica is SIGKILLed and started again on its port. At the end, from the database and from what
every client saw:
- every acknowledged event is stored exactly once, at the sequence its ack named;
- every session's sequences are 1..N, and every tail saw exactly 1..N, in order;
- every GetEvent of an acknowledged event is answered (latency figures);
- the worst tail stall: how long after its ack an event reached a tail;
- the tenant ledger holds every acknowledged event once, 1..N, and verifies.

    .venv/bin/python -m bench.soak [--seconds 120] [--kill-every 10]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from auditlog import AuditLogClient, AuditLogError
from auditlog.ids import new_event_id
from auditlog.ledger import verify_ledger
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2
from auditlog_service.ledger import LedgerStore, block_id
from bench.common import (
    ServerProcess,
    bench_client,
    code_version,
    database_process,
    percentile,
    write_result,
)

TENANT = "soak"
Event = audit_event_pb2.AuditEvent


def cobrowse_event(session: str, number: int) -> Event:
    return Event(
        id=new_event_id(),
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(
            session_id=session,
            actor=enums_pb2.ACTOR_CUSTOMER if number % 2 else enums_pb2.ACTOR_AGENT,
        ),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"el-{number}")),
    )


def general_event(number: int) -> Event:
    return Event(
        id=new_event_id(),
        tenant_id=TENANT,
        tenant_user_id=f"agent-{number % 7}",
        start_call=payloads_pb2.StartCallAttributes(call_id=f"call-{number}", customer_id="c-1"),
    )


@dataclasses.dataclass
class Observed:
    acks: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)  # id -> seq, t
    ack_of_sequence: dict[tuple[str, int], float] = dataclasses.field(default_factory=dict)
    conflicts: list[str] = dataclasses.field(default_factory=list)
    rpc_failures: dict[str, int] = dataclasses.field(default_factory=dict)
    event_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    lookups: list[float] = dataclasses.field(default_factory=list)
    lookup_failures: dict[str, int] = dataclasses.field(default_factory=dict)
    stalls: list[float] = dataclasses.field(default_factory=list)
    tails: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    kills: int = 0

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


class Replicas:
    """Two server slots on fixed ports; kill() SIGKILLs one and starts it again."""

    def __init__(self, uri: str, database: str, folder: Path) -> None:
        self.uri, self.database, self.folder = uri, database, folder
        self.servers: list[ServerProcess] = []

    async def start(self) -> None:
        for slot in range(2):
            self.servers.append(self._spawn(slot, None))
        for server in self.servers:
            await server.wait_serving()

    def _spawn(self, slot: int, port: int | None) -> ServerProcess:
        server = ServerProcess(
            self.uri,
            self.database,
            self.folder / f"server{slot}.log",
            env={"AUDITLOG_WRITE_CONCERN": "1", "AUDITLOG_MONGODB_TIMEOUT_MS": "1500"},
            port=port,
        )
        return server

    @property
    def targets(self) -> list[str]:
        return [server.target for server in self.servers]

    async def kill(self, slot: int) -> None:
        victim = self.servers[slot]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        self.servers[slot] = self._spawn(slot, victim.port)
        await self.servers[slot].wait_serving()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


async def writer(
    clients: list[AuditLogClient], sessions: list[str], seen: Observed, until: float, seed: int
) -> None:
    rng = random.Random(seed)
    number = 0
    while time.monotonic() < until:
        batch = []
        for _ in range(rng.randrange(1, 20)):
            number += 1
            if rng.random() < 0.25:
                batch.append(general_event(number))
            else:
                batch.append(cobrowse_event(rng.choice(sessions), number))
        pending = batch
        attempts = 0
        while pending:
            attempts += 1
            client = rng.choice(clients)
            try:
                response = await client.log_events(pending, timeout_s=5)
            except AuditLogError as error:
                seen.count(seen.rpc_failures, error.code.name)
                await asyncio.sleep(min(0.05 * attempts, 1.0))  # backoff before a retry
                continue
            retry = []
            now = time.monotonic()
            for event, result in zip(pending, response.results, strict=True):
                kind = result.WhichOneof("result")
                if kind == "error":
                    seen.count(seen.event_errors, enums_pb2.ErrorReason.Name(result.error.reason))
                    retry.append(event)
                    continue
                sequence = result.event.sequence if kind == "event" else result.ack.sequence
                known = seen.acks.get(event.id)
                if known is not None and known[0] != sequence:
                    seen.conflicts.append(event.id)
                if known is None:
                    seen.acks[event.id] = (sequence, now)
                    if event.HasField("cobrowse"):
                        seen.ack_of_sequence[(event.cobrowse.session_id, sequence)] = now
            pending = retry
            if pending:
                await asyncio.sleep(min(0.05 * attempts, 1.0))


async def follow(client: AuditLogClient, session: str, seen: Observed) -> None:
    """Follows one session until cancelled, recording sequences and how late each came."""
    sequences = seen.tails.setdefault(session, [])
    async for event in client.tail_session(TENANT, session, max_retries=1_000_000):
        sequences.append(event.sequence)
        acked_at = seen.ack_of_sequence.get((session, event.sequence))
        if acked_at is not None:
            seen.stalls.append(max(0.0, time.monotonic() - acked_at))


async def lookups(clients: list[AuditLogClient], seen: Observed, until: float) -> None:
    rng = random.Random(99)
    while time.monotonic() < until:
        if not seen.acks:
            await asyncio.sleep(0.1)  # nothing acknowledged yet
            continue
        event_id = rng.choice(list(seen.acks))
        started = time.monotonic()
        for client in rng.sample(clients, len(clients)):
            try:
                await client.get_event(TENANT, event_id, timeout_s=1.0)
                seen.lookups.append(time.monotonic() - started)
                break
            except AuditLogError as error:
                seen.count(seen.lookup_failures, error.code.name)
        await asyncio.sleep(0.02)  # a lookup every 20 ms, as a console would


async def killer(replicas: Replicas, seen: Observed, every_s: float, until: float) -> None:
    slot = 0
    while time.monotonic() + every_s < until:
        await asyncio.sleep(every_s)  # the schedule of the fault, not synchronisation
        await replicas.kill(slot)
        seen.kills += 1
        slot = 1 - slot


async def check_database(uri: str, database: str, seen: Observed) -> dict[str, Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        events = mongo.get_database(database).get_collection("events")
        stored: dict[str, list[int]] = {}
        sessions: dict[str, list[int]] = {}
        async for doc in events.find(
            {"tenant_id": TENANT}, {"id": 1, "sequence": 1, "cobrowse": 1}
        ):
            stored.setdefault(doc["id"], []).append(doc.get("sequence", 0))
            if "cobrowse" in doc:
                sessions.setdefault(doc["cobrowse"]["session_id"], []).append(doc["sequence"])
        # Placement records: ids whose events moved after a lost race or a writer's death.
        records = await events.count_documents({"_id": {"$regex": "#"}})
    finally:
        await mongo.close()
    missing = [i for i in seen.acks if i not in stored]
    twice = [i for i, seqs in stored.items() if len(seqs) > 1]
    moved = [i for i, (seq, _) in seen.acks.items() if i in stored and stored[i] != [seq]]
    holes = {
        s: seqs for s, seqs in sessions.items() if sorted(seqs) != list(range(1, len(seqs) + 1))
    }
    tails_wrong = {
        s: (len(seqs), len(sessions.get(s, [])))
        for s, seqs in seen.tails.items()
        if seqs != list(range(1, len(sessions.get(s, [])) + 1))
    }
    return {
        "acknowledged": len(seen.acks),
        "stored": len(stored),
        "missing": len(missing),
        "stored_twice": len(twice),
        "at_another_sequence": len(moved),
        "sessions_with_holes": len(holes),
        "tails_not_exactly_1_to_n": tails_wrong,
        "placement_records": records,
    }


async def check_ledger(
    uri: str, database: str, client: AuditLogClient, seen: Observed, wait_s: float = 90.0
) -> dict[str, Any]:
    """The tenant's ledger after the kills: once every acknowledged event is in it (a killed
    writer's outboxes are resolved by the survivors after 10 s, a bounded wait), it holds each
    once, 1..N without a gap, and verifies through the API."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    ledger = mongo.get_database(database).get_collection("ledger")
    store = LedgerStore(ledger, mongo.get_database(database).get_collection("events"))
    keys: list[str] = []
    sequences: list[int] = []
    b = 1
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            block = await ledger.find_one({"_id": block_id(TENANT, b)})
            if block is not None:
                entries = (await store.block_entries(block)).whole()
                for index, entry in enumerate(entries):
                    if entry is not None:  # None: its commit is missing, a gap below
                        keys.append(entry["k"].split("/", 1)[1])
                        sequences.append(block["first"] + index)
                b += 1
                continue
            if set(seen.acks) <= set(keys):
                break
            await asyncio.sleep(0.5)  # bounded wait for the survivors' sequencers
    finally:
        await mongo.close()
    report = await verify_ledger(client, TENANT)
    return {
        "ledger_entries": len(keys),
        "ledger_missing_acknowledged": len(set(seen.acks) - set(keys)),
        "ledger_twice": len(keys) - len(set(keys)),
        "ledger_gap_free": sequences == list(range(1, len(sequences) + 1)),
        "ledger_verifies": report.ok,
        "ledger_findings": [f.detail for f in report.findings[:3]],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seen = Observed()
    with database_process() as (uri, backend, _), tempfile.TemporaryDirectory() as tmp:
        database = "soak"
        replicas = Replicas(uri, database, Path(tmp))
        await replicas.start()
        clients = [bench_client(target) for target in replicas.targets]
        tail_client = bench_client("ipv4:" + ",".join(replicas.targets))
        sessions = [f"soak-{n}" for n in range(args.sessions)]
        until = time.monotonic() + args.seconds
        try:
            followers = [asyncio.create_task(follow(tail_client, s, seen)) for s in sessions]
            await asyncio.gather(
                *(writer(clients, sessions, seen, until, seed) for seed in range(args.writers)),
                lookups(clients, seen, until),
                killer(replicas, seen, args.kill_every, until),
            )
            # Let the tails catch up with the last acknowledged events, then stop them.
            deadline = time.monotonic() + 60
            expected = {
                s: max((seq for (sess, seq) in seen.ack_of_sequence if sess == s), default=0)
                for s in sessions
            }
            while time.monotonic() < deadline and any(  # noqa: ASYNC110
                (seen.tails.get(s) or [0])[-1] < expected[s] for s in sessions
            ):
                await asyncio.sleep(0.2)  # bounded wait for the tails to reach the end
            for follower in followers:
                follower.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
            verdict = await check_database(uri, database, seen)
            verdict.update(await check_ledger(uri, database, clients[0], seen))
        finally:
            for client in [*clients, tail_client]:
                await client.close()
            replicas.stop()
    stalls = seen.stalls or [0.0]
    lookups_ms = [x * 1000 for x in seen.lookups] or [0.0]
    return {
        "backend": backend,
        "seconds": args.seconds,
        "kill_every_s": args.kill_every,
        "kills": seen.kills,
        "writers": args.writers,
        "sessions": args.sessions,
        **verdict,
        "ack_conflicts": len(seen.conflicts),
        "rpc_failures_retried": seen.rpc_failures,
        "event_errors_retried": seen.event_errors,
        "lookups": len(seen.lookups),
        "lookup_p99_ms": round(percentile(lookups_ms, 0.99), 1),
        "lookup_max_ms": round(max(lookups_ms), 1),
        "lookup_failures_then_other_replica": seen.lookup_failures,
        "tail_stall_p99_s": round(percentile(stalls, 0.99), 3),
        "tail_stall_max_s": round(max(stalls), 3),
    }


def passed(result: dict[str, Any]) -> bool:
    return (
        result["missing"] == 0
        and result["stored_twice"] == 0
        and result["at_another_sequence"] == 0
        and result["sessions_with_holes"] == 0
        and not result["tails_not_exactly_1_to_n"]
        and result["ack_conflicts"] == 0
        and result["ledger_missing_acknowledged"] == 0
        and result["ledger_twice"] == 0
        and result["ledger_gap_free"]
        and result["ledger_verifies"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--kill-every", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    lines = [
        "# SIGKILL soak",
        "",
        f"{result['backend']}, two replicas, one SIGKILLed every {args.kill_every:g} s for "
        f"{args.seconds:g} s ({result['kills']} kills), {args.writers} writers retrying through "
        f"random replicas, {args.sessions} sessions each tailed across both, code "
        f"{code_version()[:12]}.",
        "",
        f"**{'PASSED' if passed(result) else 'FAILED'}**",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in result.items()),
        "",
    ]
    write_result("soak", result, "\n".join(lines))
    if not passed(result):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
