"""The database's own CPU per insert command and per document, and what it leaves for unary.

Issue 11's unary goal compares the service, which writes every call to the database, with an
echo server that writes nothing, on one machine whose cores the client, the server and the
database share: what the database spends per call is part of the gap whatever the service does.
This bench measures it apart. One caller at a time inserts the service's stored documents
(general events as its conversion makes them, with their outbox ids, BSON made beforehand) in
`insert` commands of k documents, as the service sends them (through PyMongo's async API, the
documents raw), for k from 1 to 1,002, sizes interleaved over rounds, and reads the CPU the
database process (from /proc: FerretDB's; not measured for a MONGODB_URI) and this process used
in each window. One size is also written by 4 callers at once, as the service's groups and the
ledger's inserts are.
(No line is fitted through the sizes: the cost is not linear in k, and a fit that the 1,000-
document inserts dominate put the part per command at twice what a one-document insert costs.)

From an insert of k documents: the database's CPU per unary call when calls are written in
groups of n = k - 2 (a group is one insert of its n events, the ledger outbox and the commit;
the sequencer's blocks, one insert per few groups, are left out), and what that leaves of the
echo's lead: the ratio a service whose calls cost no more than the grouped echo's could reach,
with the echo's and the grouped echo's figures from the last `bench.ingest` run
(bench/results/ingest.json).

    .venv/bin/python -m bench.database_cost [--rounds 3] [--output database_cost]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import bson
from pymongo import AsyncMongoClient

from auditlog_service import convert
from bench.common import (
    RESULTS,
    code_version,
    cpu_seconds,
    database_process,
    general_event,
    load_average,
    log,
    write_result,
)
from bench.ingest import stored_documents

# Inserts that carry groups of 1, 5, 10, 20, 50, 100 and 1,000 unary calls (each with its outbox
# and commit), and one of a single document.
SIZES = (1, 3, 7, 12, 22, 52, 102, 1002)
# Documents per size and round, spread over max(6, DOCS // (k + 4)) commands: a window long
# enough for /proc's 10 ms ticks at every size (0.3-0.7 s of the database's CPU here).
DOCS = 3000
LEDGER_DOCS_PER_GROUP = 2  # the outbox and the commit, in the group's own insert


# The sizes one caller at a time, and one size with concurrent callers: the service has up to
# two groups and the sequencer's inserts in flight at once.
WINDOWS = (*((k, 1) for k in SIZES), (12, 4))


def commands_of(k: int) -> int:
    return max(6, DOCS // (k + 4))


def documents(count: int, start: int) -> list[convert.SentDocument]:
    """The documents the service writes for `count` distinct general events (with their outbox
    ids, as the ingest bench's raw side makes them), as raw BSON."""
    events = [general_event("db-cost", i) for i in range(start, start + count)]
    return [
        convert.SentDocument(bson.encode(doc))
        for docs in stored_documents(events, with_claims=False)
        for doc in docs
    ]


async def measure(uri: str, db_pid: int | None, rounds: int) -> dict[str, Any]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri)
    try:
        database = client.get_database("database_cost")
        name = "events"
        await database.drop_collection(name)
        await database.command({"insert": name, "documents": documents(500, 10**9)})  # warm

        async def insert(batches: list[list[convert.SentDocument]]) -> None:
            for batch in batches:
                reply = await database.command(
                    {"insert": name, "ordered": True, "documents": batch, "writeConcern": {"w": 1}}
                )
                if reply.get("writeErrors"):
                    raise RuntimeError(f"insert failed: {reply['writeErrors'][0]}")

        used = {window: {"db": 0.0, "client": 0.0, "n": 0} for window in WINDOWS}
        made = 0
        for round_index in range(rounds):
            order = WINDOWS if round_index % 2 == 0 else tuple(reversed(WINDOWS))
            for k, callers in order:
                commands = commands_of(k)  # each caller's
                work = [
                    [documents(k, made + (caller * commands + c) * k) for c in range(commands)]
                    for caller in range(callers)
                ]
                made += callers * commands * k
                db_before = cpu_seconds(db_pid) if db_pid else 0.0
                client_before = time.process_time()
                await asyncio.gather(*map(insert, work))
                window = used[(k, callers)]
                window["client"] += time.process_time() - client_before
                window["db"] += (cpu_seconds(db_pid) - db_before) if db_pid else 0.0
                window["n"] += callers * commands
            log(f"round {round_index + 1} of {rounds}: {made:,} documents so far")
    finally:
        await client.close()
    rows = [
        {
            "documents": k,
            "callers": callers,
            "commands": int(w["n"]),
            "database_us": round(w["db"] * 1e6 / w["n"], 1) if db_pid else None,
            "client_us": round(w["client"] * 1e6 / w["n"], 1),
        }
        for (k, callers), w in used.items()
    ]
    return {"per_command": rows}


def group_rows(rows: list[dict[str, Any]]) -> list[tuple[int, int, float | None, float]]:
    """Per insert that carries a group of unary calls (k > 2 documents): (events in the group,
    callers, database CPU per call or None, this process's CPU per call)."""
    groups = []
    for row in rows:
        n = row["documents"] - LEDGER_DOCS_PER_GROUP
        if n >= 1:
            database = row["database_us"]
            groups.append(
                (n, row["callers"], database / n if database else None, row["client_us"] / n)
            )
    return groups


def echo_figures() -> dict[str, float] | None:
    """The machine CPU per call of the echo and the grouped echo in the last ingest run."""
    path = RESULTS / "ingest.json"
    if not path.exists():
        return None
    sides = json.loads(path.read_text()).get("paths", {}).get("unary", {}).get("sides", {})
    if "echo" not in sides or "echo_grouped" not in sides:
        return None
    return {
        name: round(sum(v or 0.0 for v in sides[name]["cpu_us_per_event"].values()), 1)
        for name in ("echo", "echo_grouped")
    } | {"service_database": sides["service"]["cpu_us_per_event"].get("database") or 0.0}


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# The database's CPU per insert command and per document (issue 11, unary)",
        "",
        f"{data['backend']}, {data['rounds']} rounds, sizes interleaved, write "
        f"concern 1; code {data['code'][:12]}; load average before {data['load_before']}, after "
        f"{data['load_after']}. Command: `python -m bench.database_cost`.",
        "",
        "| documents per insert | callers | commands | database CPU per command | per document | "
        "this process (PyMongo async) per command |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["per_command"]:
        k, database = row["documents"], row["database_us"]
        lines.append(
            f"| {k:,} | {row['callers']} | {row['commands']:,} | "
            + (f"{database:,.0f} µs | {database / k:,.0f} µs" if database else "- | -")
            + f" | {row['client_us']:,.0f} µs |"
        )
    lines.append("")
    if not any(row["database_us"] for row in data["per_command"]):
        return "\n".join(lines)  # a database whose process this bench cannot see
    echo = data.get("echo")
    lines += [
        "## A unary call's share, by group size",
        "",
        f"A group of n calls is one insert of n + {LEDGER_DOCS_PER_GROUP} documents (its ledger "
        "outbox and commit; the sequencer's blocks, an insert per few groups, are left out): "
        "the rows above, per call.",
        "",
        "| events per group | callers | database CPU per call | this process's PyMongo CPU per "
        "call |" + (" most a service at the grouped echo's cost could reach |" if echo else ""),
        "|---:|---:|---:|---:|" + ("---:|" if echo else ""),
    ]
    for n, callers, database, client in group_rows(data["per_command"]):
        if database is None:
            continue
        row = f"| {n:,} | {callers} | {database:,.0f} µs | {client:,.0f} µs |"
        if echo:
            row += f" {echo['echo'] / (echo['echo_grouped'] + database):.2f} |"
        lines.append(row)
    if echo:
        lines += [
            "",
            f"The last column: the bare echo's machine CPU per call ({echo['echo']:,.0f} µs: "
            f"server and client) over the grouped echo's ({echo['echo_grouped']:,.0f} µs) plus "
            "the database's per call, from `bench/results/ingest.json`; that run's service side "
            f"used {echo['service_database']:,.0f} µs of the database's CPU a call.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="database_cost", help="bench/results/<output>.json/.md")
    args = parser.parse_args()
    before = load_average()
    with database_process() as (uri, backend, db_pid):
        measured = asyncio.run(measure(uri, db_pid, args.rounds))
    data = {
        "code": code_version(),
        "backend": backend,
        "rounds": args.rounds,
        **measured,
        "echo": echo_figures(),
        "load_before": before,
        "load_after": load_average(),
    }
    write_result(args.output, data, markdown(data))


if __name__ == "__main__":
    main()
