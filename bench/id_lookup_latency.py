"""LogEvent and GetEvent latency of general events as the collection grows (1,000 -> 200,000).

Both are `_id` point lookups/inserts. The baseline is the same measurement at 1,000 events in the
same process; the result is each size's latency as a ratio of that baseline. Run:
`.venv/bin/python -m bench.id_lookup_latency [--sizes 1000,10000,50000,200000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from auditlog import AuditLogClient
from auditlog.v1 import audit_event_pb2
from auditlog_service import convert
from auditlog_service.server import RunningServer
from bench.common import bench_client, database, running_server, summary_ms, write_result

TENANT = "bench"
SAMPLES = 300


def general_event(index: int) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        id=str(uuid.uuid4()),
        tenant_id=TENANT,
        tenant_user_id=f"agent-{index % 50}",
        start_call={"call_id": f"call-{index}", "customer_id": f"cust-{index % 997}"},
    )


PREPARER = convert.EventPreparer("bench")


async def fill(server: RunningServer, count: int, start: int) -> None:
    """Bulk-load documents straight into the collection (the service's own conversion)."""
    repository = server.repository
    now = convert.now_millis()
    for first in range(start, start + count, 5000):
        docs = []
        for index in range(first, min(first + 5000, start + count)):
            prepared = PREPARER.prepare(general_event(index))
            docs.append(convert.to_document(prepared, event_id=prepared.event.id, receive_time=now))
        await repository.events.insert_many(docs, ordered=False)


async def measure(client: AuditLogClient, offset: int) -> dict[str, dict[str, float]]:
    log_times, get_times, ids = [], [], []
    for index in range(SAMPLES):
        event = general_event(offset + index)
        started = time.perf_counter()
        await client.log_event(event)
        log_times.append(time.perf_counter() - started)
        ids.append(event.id)
    for event_id in ids:
        started = time.perf_counter()
        await client.get_event(TENANT, event_id)
        get_times.append(time.perf_counter() - started)
    return {"log_event": summary_ms(log_times), "get_event": summary_ms(get_times)}


async def main(sizes: list[int]) -> None:
    with database() as (uri, backend):
        async with (
            running_server(uri, f"bench_{uuid.uuid4().hex[:8]}") as server,
            bench_client(f"127.0.0.1:{server.port}") as client,
        ):
            rows = []
            have = 0
            for size in sizes:
                await fill(server, size - have, have + 10_000_000)
                have = size
                result = await measure(client, have + 20_000_000)
                have += SAMPLES
                rows.append({"events": size, **result})
    base = rows[0]
    for row in rows:
        for rpc in ("log_event", "get_event"):
            row[rpc]["p50_ratio_to_baseline"] = round(row[rpc]["p50_ms"] / base[rpc]["p50_ms"], 2)
    lines = [
        f"# LogEvent / GetEvent latency vs collection size ({backend})",
        "",
        f"{SAMPLES} sequential calls per size, one client, in-process server; ratio = p50 / p50 "
        f"at {sizes[0]:,} events.",
        "",
        "| events | LogEvent p50 | p99 | ratio | GetEvent p50 | p99 | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        log, get = row["log_event"], row["get_event"]
        lines.append(
            f"| {row['events']:,} | {log['p50_ms']} ms | {log['p99_ms']} ms | "
            f"{log['p50_ratio_to_baseline']} | {get['p50_ms']} ms | {get['p99_ms']} ms | "
            f"{get['p50_ratio_to_baseline']} |"
        )
    write_result("id_lookup_latency", {"backend": backend, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,50000,200000")
    arguments = parser.parse_args()
    asyncio.run(main([int(s) for s in arguments.sizes.split(",")]))
